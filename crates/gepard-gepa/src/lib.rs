//! The GEPA engine (placeholder; being written).
