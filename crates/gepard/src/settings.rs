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

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

/// Reads the credentials file, if there is one.
pub fn read_credentials(data_dir: &Path) -> Option<Credentials> {
    let text = std::fs::read_to_string(credentials_path(data_dir)).ok()?;
    serde_json::from_str(&text).ok()
}
