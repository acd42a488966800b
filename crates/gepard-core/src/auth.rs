//! API keys and scopes.
//!
//! A key is `gpd_` followed by 40 random base62 characters (about 238 bits). Only its SHA-256
//! is stored: keys are high-entropy, so a fast hash is enough and lookups stay one index probe.
//! The first 12 characters are kept in clear as a display prefix so people can tell keys apart.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The recognizable prefix of every gepard key, so leaked keys are easy to grep for.
pub const KEY_PREFIX: &str = "gpd_";
const KEY_RANDOM_LEN: usize = 40;
const DISPLAY_PREFIX_LEN: usize = 12;

/// What a key may do.
///
/// `admin` implies every other scope; `write` and `promote` imply `read`. `runner` is for
/// runtimes reporting job progress and implies nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read anything in the key's org or workspace.
    Read,
    /// Publish artifacts, create projects, submit and manage jobs.
    Write,
    /// Promote a job's result into a new capability version.
    Promote,
    /// Manage API keys; implies everything.
    Admin,
    /// Report progress of jobs (runtimes only).
    Runner,
}

impl Scope {
    /// Every scope, in display order.
    pub const ALL: [Scope; 5] = [
        Scope::Read,
        Scope::Write,
        Scope::Promote,
        Scope::Admin,
        Scope::Runner,
    ];

    /// The scope's name as used in the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Promote => "promote",
            Scope::Admin => "admin",
            Scope::Runner => "runner",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown scope name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope `{0}`: expected one of read, write, promote, admin, runner")]
pub struct UnknownScope(pub String);

impl FromStr for Scope {
    type Err = UnknownScope;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| UnknownScope(s.to_owned()))
    }
}

/// The set of scopes a key holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    /// A set from a list (deduplicated, sorted).
    pub fn new(mut scopes: Vec<Scope>) -> Self {
        scopes.sort();
        scopes.dedup();
        Self(scopes)
    }

    /// Parses a comma-separated list such as `read,write`.
    pub fn parse_list(s: &str) -> Result<Self, UnknownScope> {
        let scopes = s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(Scope::from_str)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(scopes))
    }

    /// Whether these scopes allow an action that needs `needed`.
    pub fn allows(&self, needed: Scope) -> bool {
        self.0.iter().any(|&held| {
            held == needed
                || held == Scope::Admin && needed != Scope::Runner
                || matches!(held, Scope::Write | Scope::Promote) && needed == Scope::Read
        })
    }

    /// The scopes as a slice.
    pub fn as_slice(&self) -> &[Scope] {
        &self.0
    }

    /// Comma-separated form, as stored.
    pub fn to_list(&self) -> String {
        self.0
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A plaintext API key. Only ever held in memory, shown once, then stored as its hash.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySecret(String);

impl fmt::Debug for ApiKeySecret {
    // Never print the secret, even in debug logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeySecret({}…)", self.display_prefix())
    }
}

/// A supplied key that cannot be a gepard key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an API key must be at least 20 printable characters without spaces")]
pub struct MalformedKey;

impl ApiKeySecret {
    /// A fresh random key from the operating system's RNG.
    pub fn generate() -> Self {
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut rng = rand::rng();
        let random: String = (0..KEY_RANDOM_LEN)
            .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
            .collect();
        Self(format!("{KEY_PREFIX}{random}"))
    }

    /// Wraps a key supplied by an operator (`GEPARD_ADMIN_KEY`) or a client.
    ///
    /// Operator keys need not carry our prefix, but must be long enough to be secret.
    pub fn from_supplied(value: &str) -> Result<Self, MalformedKey> {
        if value.len() < 20 || !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(MalformedKey);
        }
        Ok(Self(value.to_owned()))
    }

    /// The plaintext, to show once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Hex SHA-256 of the key, the only form that is stored.
    pub fn hash(&self) -> String {
        hash_key(&self.0)
    }

    /// The first characters, stored in clear so people can tell keys apart.
    pub fn display_prefix(&self) -> &str {
        let end = self.0.len().min(DISPLAY_PREFIX_LEN);
        &self.0[..end]
    }
}

/// Hex SHA-256 of a presented key, for lookup.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_carry_the_prefix_and_differ() {
        let a = ApiKeySecret::generate();
        let b = ApiKeySecret::generate();
        assert!(a.expose().starts_with("gpd_"));
        assert_eq!(a.expose().len(), 44);
        assert_ne!(a, b);
        assert_eq!(a.hash(), hash_key(a.expose()));
        assert!(
            !format!("{a:?}").contains(&a.expose()[12..]),
            "debug must not leak the key"
        );
    }

    #[test]
    fn admin_implies_all_but_runner_and_write_implies_read() {
        let admin = Scopes::new(vec![Scope::Admin]);
        assert!(
            admin.allows(Scope::Read) && admin.allows(Scope::Write) && admin.allows(Scope::Promote)
        );
        assert!(!admin.allows(Scope::Runner));
        let write = Scopes::new(vec![Scope::Write]);
        assert!(
            write.allows(Scope::Read)
                && !write.allows(Scope::Promote)
                && !write.allows(Scope::Admin)
        );
        let read = Scopes::new(vec![Scope::Read]);
        assert!(!read.allows(Scope::Write));
    }

    #[test]
    fn scope_lists_parse_and_reject_unknown_names() {
        let s = Scopes::parse_list("write, read,read").unwrap();
        assert_eq!(s.to_list(), "read,write");
        assert_eq!(
            Scopes::parse_list("read,root").unwrap_err(),
            UnknownScope("root".into())
        );
    }

    #[test]
    fn supplied_keys_must_be_long_and_printable() {
        assert!(ApiKeySecret::from_supplied("short").is_err());
        assert!(ApiKeySecret::from_supplied("has a space in it but is long").is_err());
        assert!(ApiKeySecret::from_supplied("ci-admin-key-0123456789").is_ok());
    }
}
