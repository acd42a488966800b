//! The HTTP API (axum): routes, auth, error envelope, OpenAPI, SSE.
