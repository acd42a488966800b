//! Domain types of gepard, shared by every other crate.
//!
//! What lives here: tenancy keys (`[a-z0-9-]`), artifact refs (`org/name@X.Y.Z`), API keys and
//! their scopes, pagination bounds and the timestamp format. Everything is pure: no I/O, no
//! async, no database, no HTTP. Other gepard crates depend on this one; it depends on none of
//! them.

pub mod auth;
pub mod job;
pub mod model;
pub mod names;
pub mod page;
pub mod progress;
pub mod time;

pub use auth::{ApiKeySecret, Scope, Scopes};
pub use names::{ArtifactName, ArtifactRef, NameError, TenantKey};
pub use page::{PageError, PageRequest};
