//! Route handlers, one module per area of API.md.

pub mod jobs;
pub mod keys;
pub mod openai;
pub mod ops;
pub mod promotion;
pub mod registry;
pub mod tenancy;
