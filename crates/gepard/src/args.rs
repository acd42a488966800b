//! Parsers for command-line values, run by clap while it parses: a malformed value is a usage
//! error (exit code 2, with clap's message naming the flag) before anything is sent, and the
//! commands receive the parsed value, never the text to parse again.

use gepard_core::names::{split_org_prefix, ArtifactName, TenantKey};
use gepard_core::{ArtifactRef, Scopes};
use serde_json::Value;

/// A `NAME@VERSION` (or `ORG/NAME@VERSION`) reference.
pub fn artifact_ref(s: &str) -> Result<ArtifactRef, String> {
    ArtifactRef::parse(s).map_err(|e| e.to_string())
}

/// A capability or dataset name without a version: `NAME` or `ORG/NAME`, the same prefix rule
/// as in refs, so `versions local/sentiment` means what `show local/sentiment@1.0.0` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixedName {
    /// The organization prefix, when one was given.
    pub org: Option<TenantKey>,
    /// The name.
    pub name: ArtifactName,
}

/// A `NAME` or `ORG/NAME`.
pub fn prefixed_name(s: &str) -> Result<PrefixedName, String> {
    let (org, name) = split_org_prefix(s).map_err(|e| e.to_string())?;
    Ok(PrefixedName { org, name })
}

/// A capability or dataset version (`X.Y.Z[-pre]`), kept as the text given.
pub fn version(s: &str) -> Result<String, String> {
    gepard_core::names::parse_version(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

/// A job status (`queued`, `running`, `completed`, …).
pub fn job_status(s: &str) -> Result<gepard_core::job::JobStatus, String> {
    s.parse().map_err(|_| {
        let names: Vec<&str> = gepard_core::job::JobStatus::ALL
            .iter()
            .map(|s| s.as_str())
            .collect();
        format!("expected one of {}", names.join(", "))
    })
}

/// A JSON object.
pub fn json_object(s: &str) -> Result<Value, String> {
    match serde_json::from_str::<Value>(s) {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Err("expected a JSON object, such as '{\"needle\": \"yes\"}'".to_owned()),
        Err(e) => Err(format!("not valid JSON: {e}")),
    }
}

/// A comma-separated list of key scopes, at least one.
pub fn scopes(s: &str) -> Result<Scopes, String> {
    let scopes = Scopes::parse_list(s).map_err(|e| e.to_string())?;
    // `--scope ''` (or `,`) parses to no scope at all, which the server refuses: say so here,
    // as a usage error, instead of sending a request that can only fail.
    if scopes.as_slice().is_empty() {
        let names: Vec<&str> = gepard_core::Scope::ALL.iter().map(|s| s.as_str()).collect();
        return Err(format!(
            "at least one scope is required ({})",
            names.join(", ")
        ));
    }
    Ok(scopes)
}

/// A server base URL: `http://` or `https://` and a host.
pub fn server_url(s: &str) -> Result<String, String> {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .ok_or_else(|| "expected a URL starting with http:// or https://".to_owned())?;
    if rest.split('/').next().unwrap_or("").is_empty() {
        return Err("the URL has no host".to_owned());
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_values_are_refused_with_a_reason_and_good_ones_parsed() {
        assert_eq!(
            artifact_ref("acme/sentiment@1.0.0").unwrap().to_string(),
            "acme/sentiment@1.0.0"
        );
        assert!(artifact_ref("sentiment").is_err());
        let named = prefixed_name("acme/sentiment").unwrap();
        assert_eq!(
            (named.org.unwrap().as_str(), named.name.as_str()),
            ("acme", "sentiment")
        );
        assert!(prefixed_name("sentiment").unwrap().org.is_none());
        assert!(prefixed_name("Sentiment")
            .unwrap_err()
            .contains("lowercase"));
        assert!(prefixed_name("a/b/c").is_err());
        assert_eq!(
            json_object(r#"{"a": 1}"#).unwrap(),
            serde_json::json!({"a": 1})
        );
        assert!(json_object("[1]").unwrap_err().contains("JSON object"));
        assert!(json_object("notjson")
            .unwrap_err()
            .contains("not valid JSON"));
        assert_eq!(scopes("read,write").unwrap().to_list(), "read,write");
        assert!(scopes("read,bogus").unwrap_err().contains("bogus"));
        for empty in ["", " ", ","] {
            assert!(scopes(empty).unwrap_err().contains("at least one scope"));
        }
        assert!(server_url("https://gepard.internal:8321/").is_ok());
        assert!(server_url("notaurl").is_err());
        assert!(server_url("http://").is_err());
    }
}

/// The client flags (`--server`, `--api-key`, `--org`, `--workspace`, `--project`, `--json`)
/// are global, so clap would list them in the help of commands that talk to no server
/// (`serve`, `worker`, `optimize local`). Declaring hidden args with the same ids in such a
/// command keeps clap from adding the global ones to it (it skips a global whose id the
/// subcommand already has). They cannot be refused when given: clap copies the global values
/// (defaults and environment included) into them, so they are accepted and ignored.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct HiddenClientFlags {
    #[arg(long, hide = true)]
    server: Option<String>,
    #[arg(long, hide = true)]
    api_key: Option<String>,
    #[arg(long, hide = true)]
    org: Option<String>,
    #[arg(long, hide = true)]
    workspace: Option<String>,
    #[arg(long, hide = true)]
    project: Option<String>,
}

/// [`HiddenClientFlags`] plus `--json`, for commands without output of their own to format.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct HiddenClientAndJsonFlags {
    #[command(flatten)]
    client: HiddenClientFlags,
    #[arg(long, hide = true)]
    json: bool,
}
