//! Where things live: the data directory, the database URL and the credentials file.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Whether to colour output written to a stream that `is_terminal` says is (or is not) a
/// terminal: only a terminal renders escape codes, and a file or pipe would keep them as
/// noise; `NO_COLOR` (no-color.org) turns colour off everywhere.
pub fn use_color(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").is_none()
}

/// The per-user default data directory: `$XDG_DATA_HOME/gepard`, else
/// `$HOME/.local/share/gepard`, else `./.gepard`.
pub fn default_data_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("gepard");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home).join(".local/share/gepard");
    }
    PathBuf::from(".gepard")
}

/// The data directory from a flag or `GEPARD_DATA_DIR` (clap fills both), else the default,
/// made absolute: run-job children work in their own directories and must find the same one.
pub fn data_dir(flag: Option<&Path>) -> PathBuf {
    let dir = flag.map_or_else(default_data_dir, Path::to_path_buf);
    std::path::absolute(&dir).unwrap_or(dir)
}

/// Creates the data directory (and any missing parents) readable by its owner only, as the
/// credentials file is: the directory holds the database with its key hashes, prompts and
/// rows. An existing directory keeps its mode, which may be the operator's choice (a group
/// shared on purpose).
pub fn create_data_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// The SQLite URL of the database file inside a data directory.
pub fn sqlite_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("gepard.db").display())
}

/// What the server writes at first start so the CLI on the same machine works without flags.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Credentials {
    /// The server the key belongs to.
    pub server: String,
    /// The organization of the key.
    pub org: String,
    /// The admin key.
    pub api_key: String,
}

/// The credentials file inside a data directory.
pub fn credentials_path(data_dir: &Path) -> PathBuf {
    data_dir.join("credentials.json")
}

/// Writes the credentials file, readable by its owner only.
pub fn write_credentials(data_dir: &Path, creds: &Credentials) -> anyhow::Result<PathBuf> {
    let path = credentials_path(data_dir);
    let text = serde_json::to_string_pretty(creds)? + "\n";
    write_private(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Written beside the file, then renamed over it: a reader (or a crash) never sees it half
/// written, which a rewrite at a later start would otherwise risk.
#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&temp, path)
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

/// The server and API key a client command uses, from its flags (or their environment
/// variables) and the credentials file.
///
/// The file is one pair, the server that wrote it and its admin key, and is used as a pair:
/// its server is the default only when no key was given either, and only when it is on this
/// machine (a loopback or any-address listener; a file naming another host is ignored, so a
/// stray file cannot send commands elsewhere); its key is sent only to its own server.
pub fn server_and_key(
    server: Option<&str>,
    key: Option<&str>,
    file: Option<&Credentials>,
) -> (String, Option<String>) {
    let file_server = file.and_then(|c| local_server(&c.server));
    let server = match (server, key) {
        (Some(s), _) => s.to_owned(),
        (None, None) => file_server
            .clone()
            .unwrap_or_else(|| crate::commands::DEFAULT_SERVER.to_owned()),
        (None, Some(_)) => crate::commands::DEFAULT_SERVER.to_owned(),
    };
    let key = key.map(str::to_owned).or_else(|| {
        let c = file?;
        let trimmed = |u: &str| u.trim_end_matches('/').to_owned();
        let ours = trimmed(&server) == trimmed(&c.server)
            || file_server.is_some_and(|f| trimmed(&f) == trimmed(&server));
        ours.then(|| c.api_key.clone())
    });
    (server, key)
}

/// `server` (as the server writes it, `http://ADDR:PORT`) as a URL of this machine, or `None`
/// when it names another host. An any-address listener is reached on loopback.
fn local_server(server: &str) -> Option<String> {
    let addr: std::net::SocketAddr = server
        .strip_prefix("http://")?
        .trim_end_matches('/')
        .parse()
        .ok()?;
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip if ip.is_loopback() => ip,
        _ => return None,
    };
    Some(format!(
        "http://{}",
        std::net::SocketAddr::new(ip, addr.port())
    ))
}

/// Reads the credentials file, if there is one.
pub fn read_credentials(data_dir: &Path) -> Option<Credentials> {
    let text = std::fs::read_to_string(credentials_path(data_dir)).ok()?;
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(server: &str) -> Credentials {
        Credentials {
            server: server.into(),
            org: "local".into(),
            api_key: "gpd_file".into(),
        }
    }

    #[test]
    fn the_credentials_file_is_used_as_a_pair_and_only_for_a_server_on_this_machine() {
        let pick = |server: Option<&str>, key: Option<&str>, f: Option<&Credentials>| {
            let (s, k) = server_and_key(server, key, f);
            (s, k.as_deref().map(str::to_owned))
        };
        let own = file("http://127.0.0.1:9301");
        let key = Some("gpd_file".to_owned());
        // Nothing given: the file's server with its key.
        assert_eq!(
            pick(None, None, Some(&own)),
            ("http://127.0.0.1:9301".into(), key.clone())
        );
        // Its key goes to its own server only, however the URL is written.
        assert_eq!(
            pick(Some("http://127.0.0.1:9301/"), None, Some(&own)),
            ("http://127.0.0.1:9301/".into(), key.clone())
        );
        assert_eq!(
            pick(Some("https://gepard.example"), None, Some(&own)),
            ("https://gepard.example".into(), None)
        );
        // A key of the user's own is not sent to the file's server.
        assert_eq!(
            pick(None, Some("gpd_mine"), Some(&own)),
            (
                crate::commands::DEFAULT_SERVER.into(),
                Some("gpd_mine".into())
            )
        );
        // An any-address listener is reached on loopback, with the key.
        let any = file("http://0.0.0.0:8400");
        assert_eq!(
            pick(None, None, Some(&any)),
            ("http://127.0.0.1:8400".into(), key.clone())
        );
        // A file naming another host is ignored: the default server, no key.
        let elsewhere = file("http://10.1.2.3:8321");
        assert_eq!(
            pick(None, None, Some(&elsewhere)),
            (crate::commands::DEFAULT_SERVER.into(), None)
        );
        assert_eq!(
            pick(None, None, None),
            (crate::commands::DEFAULT_SERVER.into(), None)
        );
    }
}
