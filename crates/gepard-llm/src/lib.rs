//! Chat-model providers (placeholder; being written).
