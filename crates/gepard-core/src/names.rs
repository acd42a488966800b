//! Validated names: tenancy keys and artifact (capability / dataset) refs.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a key, name or ref was rejected. The message names the offending value and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// A tenancy key broke the `[a-z0-9-]` rule.
    #[error("invalid key `{value}`: {reason}")]
    Key {
        /// The rejected value.
        value: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// An artifact name broke the naming rule.
    #[error("invalid name `{value}`: {reason}")]
    Name {
        /// The rejected value.
        value: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// A version was not `X.Y.Z` semver.
    #[error("invalid version `{value}`: expected a semantic version such as 1.0.0 ({reason})")]
    Version {
        /// The rejected value.
        value: String,
        /// The parser's complaint.
        reason: String,
    },
    /// A version longer than [`MAX_VERSION_LEN`]. Only its start is kept: echoing a
    /// megabyte-long value back in an error would make the error as large as the abuse.
    #[error(
        "invalid version `{start}…` ({len} characters): a version must be at most \
         {MAX_VERSION_LEN} characters"
    )]
    VersionTooLong {
        /// The first characters of the rejected value.
        start: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A version carried build metadata (`+…`).
    #[error(
        "invalid version `{value}`: build metadata (`+{build}`) is not allowed: semver gives \
         versions that differ only in it the same precedence, and a version here names exactly \
         one content; use a new version number (or a pre-release such as 1.0.0-rc.1) instead"
    )]
    BuildMetadata {
        /// The rejected value.
        value: String,
        /// The build metadata, without its `+`.
        build: String,
    },
    /// A ref was not `name@version` or `org/name@version`.
    #[error("invalid ref `{value}`: expected NAME@VERSION or ORG/NAME@VERSION")]
    Ref {
        /// The rejected value.
        value: String,
    },
}

/// Longest key or name we accept; long enough for real names, short enough for URLs and logs.
const MAX_LEN: usize = 63;

/// Longest version we accept. Versions sit in URLs, refs and logs like names, but get more
/// room: a pre-release part may carry a date and a commit hash (`1.4.0-rc.1.20250101.<sha>`).
pub const MAX_VERSION_LEN: usize = 128;

/// A tenancy key (organization, workspace, project): lowercase `[a-z0-9-]`, 1 to 63
/// characters, starting and ending with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TenantKey(String);

impl TenantKey {
    /// Validates `value` as a tenancy key.
    pub fn parse(value: &str) -> Result<Self, NameError> {
        let err = |reason| NameError::Key {
            value: value.to_owned(),
            reason,
        };
        if value.is_empty() {
            return Err(err("must not be empty"));
        }
        if value.len() > MAX_LEN {
            return Err(err("must be at most 63 characters"));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(err("only lowercase letters, digits and '-' are allowed"));
        }
        if value.starts_with('-') || value.ends_with('-') {
            return Err(err("must start and end with a letter or digit"));
        }
        Ok(Self(value.to_owned()))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TenantKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The name of a capability or dataset: lowercase letters, digits, `-`, `_` and `.`, 1 to 63
/// characters, starting with a letter or digit. Names appear in URLs, so no `/` or `@`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ArtifactName(String);

impl ArtifactName {
    /// Validates `value` as an artifact name.
    pub fn parse(value: &str) -> Result<Self, NameError> {
        let err = |reason| NameError::Name {
            value: value.to_owned(),
            reason,
        };
        if value.is_empty() {
            return Err(err("must not be empty"));
        }
        if value.len() > MAX_LEN {
            return Err(err("must be at most 63 characters"));
        }
        if !value.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        }) {
            return Err(err(
                "only lowercase letters, digits, '-', '_' and '.' are allowed",
            ));
        }
        if !value.as_bytes()[0].is_ascii_alphanumeric() {
            return Err(err("must start with a letter or digit"));
        }
        Ok(Self(value.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ArtifactName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ArtifactName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Parses a capability or dataset version: full `X.Y.Z[-pre]` semver, without build metadata,
/// at most [`MAX_VERSION_LEN`] characters.
///
/// Build metadata is refused rather than ignored: semver orders `1.0.0+build.1` and
/// `1.0.0+build.2` equal, yet as strings they are two versions, so the registry would hold
/// two immutable "1.0.0"s with different content and a ref could not say which one it pins.
/// Refusing keeps one version string per precedence, and `latest` well defined.
pub fn parse_version(value: &str) -> Result<semver::Version, NameError> {
    if value.len() > MAX_VERSION_LEN {
        return Err(NameError::VersionTooLong {
            start: value.chars().take(20).collect(),
            len: value.len(),
        });
    }
    let version = semver::Version::parse(value).map_err(|e| NameError::Version {
        value: value.to_owned(),
        reason: e.to_string(),
    })?;
    if !version.build.is_empty() {
        return Err(NameError::BuildMetadata {
            value: value.to_owned(),
            build: version.build.to_string(),
        });
    }
    Ok(version)
}

/// Splits an optional `org/` prefix off a name (`acme/support` → (`Some(acme)`, `support`)).
pub fn split_org_prefix(value: &str) -> Result<(Option<TenantKey>, ArtifactName), NameError> {
    match value.split_once('/') {
        Some((org, name)) => Ok((Some(TenantKey::parse(org)?), ArtifactName::parse(name)?)),
        None => Ok((None, ArtifactName::parse(value)?)),
    }
}

/// A pinned reference to one version of a capability or dataset: `[org/]name@X.Y.Z`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRef {
    /// The organization prefix, when the ref carried one.
    pub org: Option<TenantKey>,
    /// The artifact name.
    pub name: ArtifactName,
    /// The exact version; refs never mean "latest".
    pub version: semver::Version,
}

impl ArtifactRef {
    /// Parses `name@version` or `org/name@version`.
    pub fn parse(value: &str) -> Result<Self, NameError> {
        let (name, version) = value.rsplit_once('@').ok_or_else(|| NameError::Ref {
            value: value.to_owned(),
        })?;
        let (org, name) = split_org_prefix(name)?;
        Ok(Self {
            org,
            name,
            version: parse_version(version)?,
        })
    }
}

impl fmt::Display for ArtifactRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(org) = &self.org {
            write!(f, "{org}/")?;
        }
        write!(f, "{}@{}", self.name, self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_keys_accept_lowercase_digits_and_inner_dashes() {
        for ok in ["local", "default", "team-2", "a", "0x"] {
            assert_eq!(TenantKey::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn tenant_keys_reject_uppercase_underscores_edges_and_length() {
        for bad in ["", "Local", "a_b", "-a", "a-", "a b", "é", &"a".repeat(64)] {
            assert!(TenantKey::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn a_version_longer_than_the_limit_is_refused_without_echoing_it_whole() {
        let longest = format!("1.0.0-{}", "a".repeat(MAX_VERSION_LEN - 6));
        assert!(parse_version(&longest).is_ok());
        let long = format!("1.0.0-{}", "a".repeat(1024 * 1024));
        let err = parse_version(&long).unwrap_err();
        assert!(
            matches!(&err, NameError::VersionTooLong { len, .. } if *len == long.len()),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains("at most 128 characters"), "{text}");
        assert!(text.len() < 200, "the error echoes the whole value");
        assert!(ArtifactRef::parse(&format!("support@{long}")).is_err());
    }

    #[test]
    fn refs_parse_with_and_without_org_prefix() {
        let r = ArtifactRef::parse("acme/support@1.2.3").unwrap();
        assert_eq!(r.org.unwrap().as_str(), "acme");
        assert_eq!(r.name.as_str(), "support");
        assert_eq!(r.version, semver::Version::new(1, 2, 3));
        let r = ArtifactRef::parse("support@0.1.0-rc.1").unwrap();
        assert!(r.org.is_none());
        assert_eq!(r.to_string(), "support@0.1.0-rc.1");
    }

    #[test]
    fn refs_without_a_full_version_are_rejected_with_the_reason() {
        assert!(matches!(
            ArtifactRef::parse("support"),
            Err(NameError::Ref { .. })
        ));
        let err = ArtifactRef::parse("support@1.2").unwrap_err();
        assert!(err.to_string().contains("semantic version"), "{err}");
        assert!(ArtifactRef::parse("Bad/x@1.0.0").is_err());
        let err = ArtifactRef::parse("support@1.0.0+build.1").unwrap_err();
        assert!(
            matches!(&err, NameError::BuildMetadata { build, .. } if build == "build.1"),
            "{err}"
        );
        assert!(ArtifactRef::parse("a/b/c@1.0.0").is_err());
    }
}
