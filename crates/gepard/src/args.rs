//! Checks for command-line values, run by clap while it parses: a malformed value is a usage
//! error (exit code 2, with clap's message naming the flag) before anything is sent.

use gepard_core::ArtifactRef;

/// A `NAME@VERSION` (or `ORG/NAME@VERSION`) reference, kept as written.
pub fn artifact_ref(s: &str) -> Result<String, String> {
    ArtifactRef::parse(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

/// A JSON object, kept as written.
pub fn json_object(s: &str) -> Result<String, String> {
    match serde_json::from_str::<serde_json::Value>(s) {
        Ok(v) if v.is_object() => Ok(s.to_owned()),
        Ok(_) => Err("expected a JSON object, such as '{\"needle\": \"yes\"}'".to_owned()),
        Err(e) => Err(format!("not valid JSON: {e}")),
    }
}

/// A comma-separated list of key scopes, kept as written.
pub fn scopes(s: &str) -> Result<String, String> {
    gepard_core::Scopes::parse_list(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
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
    fn malformed_values_are_refused_with_a_reason_and_good_ones_kept_as_written() {
        assert_eq!(
            artifact_ref("acme/sentiment@1.0.0").unwrap(),
            "acme/sentiment@1.0.0"
        );
        assert!(artifact_ref("sentiment").is_err());
        assert_eq!(json_object(r#"{"a": 1}"#).unwrap(), r#"{"a": 1}"#);
        assert!(json_object("[1]").unwrap_err().contains("JSON object"));
        assert!(json_object("notjson")
            .unwrap_err()
            .contains("not valid JSON"));
        assert!(scopes("read,write").is_ok());
        assert!(scopes("read,bogus").unwrap_err().contains("bogus"));
        assert!(server_url("https://gepard.internal:8321/").is_ok());
        assert!(server_url("notaurl").is_err());
        assert!(server_url("http://").is_err());
    }
}
