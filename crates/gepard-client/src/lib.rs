//! Typed HTTP client for the gepard API.
