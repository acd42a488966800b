//! Capability and dataset bundles: a directory packed as a gzip'd tar, parsed and validated.
//!
//! Parsing is all-or-nothing: a bundle either yields a complete [`Capability`] / [`Dataset`]
//! or a [`BundleError`] naming the file (and field or line) that is wrong, so a registry can
//! store it in one transaction or not at all.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use gepard_core::names::{parse_version, ArtifactName};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Most files a bundle may hold.
pub const MAX_FILES: usize = 2_000;
/// Most bytes a bundle may hold once unpacked (guards against gzip bombs).
pub const MAX_UNPACKED_BYTES: u64 = 256 * 1024 * 1024;
/// Most rows a dataset version may hold.
pub const MAX_ROWS: usize = 500_000;

/// What is wrong with a bundle. `file` is the bundle-relative path; `field` a dotted field name.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BundleError {
    /// The body is not a readable gzip'd tar.
    #[error("the bundle is not a readable gzip'd tar archive: {0}")]
    Archive(String),
    /// The gzip stream fails its own integrity check (CRC-32 or length trailer wrong or cut
    /// off): the unpacked files cannot be trusted to be the ones that were packed.
    #[error("the bundle's gzip data is corrupt: {0}")]
    Corrupt(String),
    /// An entry escapes the bundle root or is not a plain file or directory.
    #[error("`{path}`: {reason}")]
    UnsafeEntry {
        /// The entry's path as given.
        path: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Too many files or bytes.
    #[error("the bundle is too large: {0}")]
    TooLarge(String),
    /// A required file is absent.
    #[error("`{file}` is missing: {hint}")]
    MissingFile {
        /// The file that should be there.
        file: String,
        /// What the file is for.
        hint: &'static str,
    },
    /// A file's content (or one of its fields) is invalid.
    #[error("`{file}`{}: {message}", field.as_ref().map(|f| format!(" field `{f}`")).unwrap_or_default())]
    Invalid {
        /// The offending file.
        file: String,
        /// The offending field, when one can be named.
        field: Option<String>,
        /// What is wrong, as a sentence.
        message: String,
    },
    /// A dataset row is invalid.
    #[error("`{file}` line {line}: {message}")]
    Row {
        /// The rows file.
        file: String,
        /// 1-based line (for csv, counting the header).
        line: usize,
        /// What is wrong.
        message: String,
    },
}

impl BundleError {
    fn invalid(file: &str, field: Option<&str>, message: impl Into<String>) -> Self {
        Self::Invalid {
            file: file.to_owned(),
            field: field.map(str::to_owned),
            message: message.into(),
        }
    }

    /// Where the error is, as a path of names (file, then field or line), for API error locations.
    pub fn location(&self) -> Vec<String> {
        match self {
            Self::Archive(_) | Self::Corrupt(_) | Self::TooLarge(_) => vec![],
            Self::UnsafeEntry { path, .. } => vec![path.clone()],
            Self::MissingFile { file, .. } => vec![file.clone()],
            Self::Invalid { file, field, .. } => {
                let mut loc = vec![file.clone()];
                loc.extend(field.iter().flat_map(|f| f.split('.').map(str::to_owned)));
                loc
            }
            Self::Row { file, line, .. } => vec![file.clone(), format!("line {line}")],
        }
    }
}

/// One file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleFile {
    /// Bundle-relative path with `/` separators.
    pub path: String,
    /// The raw bytes.
    pub content: Vec<u8>,
    /// Hex SHA-256 of `content`.
    pub sha256: String,
}

impl BundleFile {
    /// A file from its path and bytes.
    pub fn new(path: impl Into<String>, content: Vec<u8>) -> Self {
        let sha256 = hex::encode(Sha256::digest(&content));
        Self {
            path: path.into(),
            content,
            sha256,
        }
    }

    /// The content as UTF-8 text, without a leading byte-order mark: editors on Windows write
    /// one, and left in place it hides the first key (`name`) from the YAML parser, which then
    /// reports a misleading missing field.
    fn text(&self) -> Result<&str, BundleError> {
        let text = std::str::from_utf8(&self.content)
            .map(|text| text.strip_prefix('\u{feff}').unwrap_or(text))
            .map_err(|_| BundleError::invalid(&self.path, None, "is not valid UTF-8 text"))?;
        if text.contains('\0') {
            return Err(BundleError::invalid(&self.path, None, NUL_IN_TEXT));
        }
        Ok(text)
    }
}

/// The files of a bundle, sorted by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    files: Vec<BundleFile>,
}

impl Bundle {
    /// A bundle from files (sorted here, so the digest does not depend on input order).
    pub fn from_files(mut files: Vec<BundleFile>) -> Self {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Self { files }
    }

    /// The files, sorted by path.
    pub fn files(&self) -> &[BundleFile] {
        &self.files
    }

    /// Consumes the bundle into its files.
    pub fn into_files(self) -> Vec<BundleFile> {
        self.files
    }

    /// The file at `path`, if present.
    pub fn get(&self, path: &str) -> Option<&BundleFile> {
        self.files.iter().find(|f| f.path == path)
    }

    /// Content digest: SHA-256 over every `(path, file digest)` pair in path order, so equal
    /// content means an equal digest whatever the archive's entry order or timestamps.
    pub fn sha256(&self) -> String {
        let mut h = Sha256::new();
        for f in &self.files {
            h.update(f.path.as_bytes());
            h.update([0]);
            h.update(f.sha256.as_bytes());
            h.update([b'\n']);
        }
        hex::encode(h.finalize())
    }

    /// Unpacks a gzip'd tar. Directories are skipped; anything but plain files and directories,
    /// absolute paths and `..` components are refused; size limits are enforced while reading.
    pub fn from_tar_gz(bytes: &[u8]) -> Result<Self, BundleError> {
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
        let entries = archive
            .entries()
            .map_err(|e| BundleError::Archive(e.to_string()))?;
        let mut files: BTreeMap<String, BundleFile> = BTreeMap::new();
        let mut total: u64 = 0;
        for entry in entries {
            let mut entry = entry.map_err(|e| BundleError::Archive(e.to_string()))?;
            let raw_path = entry
                .path()
                .map_err(|e| BundleError::Archive(e.to_string()))?
                .to_string_lossy()
                .into_owned();
            let kind = entry.header().entry_type();
            if kind.is_dir() {
                continue;
            }
            // pax headers carry metadata for the next entry; tar reads them for us.
            if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
                continue;
            }
            if !kind.is_file() {
                return Err(BundleError::UnsafeEntry {
                    path: raw_path,
                    reason: "only regular files are allowed in a bundle (no links or devices)",
                });
            }
            let path = normalize_entry_path(&raw_path)?;
            if files.len() >= MAX_FILES {
                return Err(BundleError::TooLarge(format!(
                    "more than {MAX_FILES} files"
                )));
            }
            let mut content = Vec::new();
            let budget = MAX_UNPACKED_BYTES - total;
            (&mut entry)
                .take(budget + 1)
                .read_to_end(&mut content)
                .map_err(|e| BundleError::Archive(format!("`{path}`: {e}")))?;
            total += content.len() as u64;
            if total > MAX_UNPACKED_BYTES {
                return Err(BundleError::TooLarge(format!(
                    "more than {} MiB once unpacked",
                    MAX_UNPACKED_BYTES / 1024 / 1024
                )));
            }
            if files.contains_key(&path) {
                // Which copy is meant is anyone's guess (tar's "last one wins" included).
                return Err(BundleError::Archive(format!(
                    "`{path}` appears twice in the archive"
                )));
            }
            files.insert(path.clone(), BundleFile::new(path, content));
        }
        // The tar reader stops at the end-of-archive marker, before the gzip trailer, so the
        // CRC-32 and length checks (done by the decoder only once it reaches the end of the
        // stream) would never run and a flipped bit or a cut-off trailer would go unnoticed.
        // Reading on to the end makes them run. What is left still counts against the
        // unpacked budget, so trailing padding cannot be a gzip bomb.
        let budget = MAX_UNPACKED_BYTES - total;
        let rest = std::io::copy(
            &mut archive.into_inner().take(budget + 1),
            &mut std::io::sink(),
        )
        .map_err(|e| {
            BundleError::Corrupt(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                "the stream ends early (its CRC-32 and length trailer is missing or cut short)"
                    .to_owned()
            } else {
                e.to_string()
            })
        })?;
        if rest > budget {
            return Err(BundleError::TooLarge(format!(
                "more than {} MiB once unpacked",
                MAX_UNPACKED_BYTES / 1024 / 1024
            )));
        }
        if files.is_empty() {
            return Err(BundleError::Archive("the archive holds no files".into()));
        }
        Ok(Self::from_files(files.into_values().collect()))
    }

    /// Packs the files as a gzip'd tar with fixed metadata (so equal content packs equally).
    pub fn to_tar_gz(&self) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut builder = tar::Builder::new(gz);
        for f in &self.files {
            let mut header = tar::Header::new_gnu();
            header.set_size(f.content.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            // Writing into a Vec cannot fail for I/O reasons; path errors were excluded when
            // the bundle was built (relative, no `..`).
            builder
                .append_data(&mut header, &f.path, f.content.as_slice())
                .expect("appending to an in-memory tar");
        }
        let gz = builder.into_inner().expect("finishing an in-memory tar");
        gz.finish().expect("finishing an in-memory gzip")
    }

    /// Reads a directory into a bundle, skipping hidden files and directories (`.git`, …).
    /// A symbolic link to a regular file is read as that file (its target's content under the
    /// link's name); a dangling link, a link to anything else and an entry that is neither a
    /// file nor a directory are errors naming the path, never silently left out.
    pub fn from_dir(dir: &Path) -> std::io::Result<Self> {
        let mut files = Vec::new();
        collect_dir(dir, dir, &mut files)?;
        if files.len() > MAX_FILES {
            return Err(std::io::Error::other(format!(
                "{} holds more than {MAX_FILES} files",
                dir.display()
            )));
        }
        Ok(Self::from_files(files))
    }
}

fn collect_dir(root: &Path, dir: &Path, out: &mut Vec<BundleFile>) -> std::io::Result<()> {
    let mut entries = std::fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>()?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type()?;
        let is_file = if kind.is_dir() {
            collect_dir(root, &path, out)?;
            continue;
        } else if kind.is_symlink() {
            linked_file(&path)?;
            true
        } else {
            kind.is_file()
        };
        if !is_file {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "{}: is neither a regular file nor a directory (a socket, pipe or device \
                     cannot be part of a bundle)",
                    path.display()
                ),
            ));
        }
        let rel = path
            .strip_prefix(root)
            .expect("walked paths are under the root");
        let rel = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>();
        let content = std::fs::read(&path).map_err(|e| {
            std::io::Error::new(e.kind(), format!("{}: cannot read: {e}", path.display()))
        })?;
        out.push(BundleFile::new(rel.join("/"), content));
    }
    Ok(())
}

/// Checks that the symbolic link `path` leads to a regular file. Links to directories are not
/// followed: a link back up the tree would make the walk endless, and a bundle is meant to be
/// one self-contained directory.
fn linked_file(path: &Path) -> std::io::Result<()> {
    let target =
        std::fs::read_link(path).map_or_else(|_| "?".to_owned(), |t| t.display().to_string());
    let refuse = |kind, why: &str| {
        Err(std::io::Error::new(
            kind,
            format!("{}: symbolic link to {target} {why}", path.display()),
        ))
    };
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(meta) if meta.is_dir() => refuse(
            std::io::ErrorKind::InvalidInput,
            "is a link to a directory; only links to regular files are followed (copy the \
             directory in instead)",
        ),
        Ok(_) => refuse(
            std::io::ErrorKind::InvalidInput,
            "leads to something that is not a regular file",
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => refuse(
            std::io::ErrorKind::NotFound,
            "is dangling: the target does not exist",
        ),
        Err(e) => refuse(e.kind(), &format!("cannot be followed: {e}")),
    }
}

fn normalize_entry_path(raw: &str) -> Result<String, BundleError> {
    let unsafe_entry = |reason| BundleError::UnsafeEntry {
        path: raw.to_owned(),
        reason,
    };
    if raw.starts_with('/') || raw.contains('\\') {
        return Err(unsafe_entry("paths must be relative and use '/'"));
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(unsafe_entry("paths must not contain '..'")),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(unsafe_entry("empty path"));
    }
    Ok(parts.join("/"))
}

/// Why text holding U+0000 is refused: PostgreSQL cannot store it in text, so one store would
/// take a bundle the other refuses.
const NUL_IN_TEXT: &str = "holds the NUL character (U+0000), which gepard does not store";

fn parse_yaml<T: for<'de> Deserialize<'de>>(file: &BundleFile) -> Result<T, BundleError> {
    yaml_from(&file.path, file.text()?)
}

/// Most `[` and `{` characters a YAML document of a bundle may hold. The YAML parser's time
/// grows with the number of tokens times the depth of flow nesting (`[[[…]]]`: 80,000 levels
/// in 419 gzip'd bytes took 21 s of a request thread), and the depth can never exceed the
/// number of openers, wherever they stand (in quotes or not), so this bounds the work with a
/// plain count. Manifests and front matter use a handful.
const MAX_YAML_FLOW_OPENERS: usize = 1024;

/// Reads YAML text into `T`, refusing strings that an escape (`"\0"`, `"\x00"`) turned into
/// U+0000: the raw text is checked for NUL already, the decoded values only here.
fn yaml_from<T: for<'de> Deserialize<'de>>(path: &str, text: &str) -> Result<T, BundleError> {
    let openers = text.bytes().filter(|b| matches!(b, b'[' | b'{')).count();
    if openers > MAX_YAML_FLOW_OPENERS {
        return Err(BundleError::invalid(
            path,
            None,
            format!(
                "holds {openers} `[` / `{{` characters, more than the {MAX_YAML_FLOW_OPENERS} a \
                 manifest or front matter may have (deeply nested YAML is slow to parse)"
            ),
        ));
    }
    let typed = serde_yaml_ng::from_str(text).map_err(|e| yaml_error(path, &e))?;
    let untyped: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| yaml_error(path, &e))?;
    if let Some(field) = yaml_nul_at(&untyped) {
        return Err(BundleError::invalid(path, Some(&field), NUL_IN_TEXT));
    }
    Ok(typed)
}

/// The top-level key under which a YAML string (or key) holds U+0000, if any.
fn yaml_nul_at(value: &serde_yaml_ng::Value) -> Option<String> {
    use serde_yaml_ng::Value as Y;
    fn holds(v: &Y) -> bool {
        match v {
            Y::String(s) => s.contains('\0'),
            Y::Sequence(items) => items.iter().any(holds),
            Y::Mapping(map) => map.iter().any(|(k, v)| holds(k) || holds(v)),
            Y::Tagged(t) => holds(&t.value),
            _ => false,
        }
    }
    match value {
        Y::Mapping(map) => map
            .iter()
            .find(|(k, v)| holds(k) || holds(v))
            .map(|(k, _)| {
                k.as_str()
                    .map_or_else(|| "(a key)".to_owned(), |k| k.replace('\0', "\\u0000"))
            }),
        other => holds(other).then(String::new),
    }
}

/// Turns a serde_yaml error into a bundle error, extracting the field name serde reports
/// (`missing field `version``) so the API can point at it.
fn yaml_error(file: &str, e: &serde_yaml_ng::Error) -> BundleError {
    let msg = e.to_string();
    let field = msg
        .split('`')
        .nth(1)
        .filter(|_| msg.contains("field"))
        .map(str::to_owned);
    BundleError::Invalid {
        file: file.to_owned(),
        field,
        message: msg,
    }
}

fn checked_name(file: &str, field: &str, value: &str) -> Result<ArtifactName, BundleError> {
    ArtifactName::parse(value).map_err(|e| BundleError::invalid(file, Some(field), e.to_string()))
}

fn checked_version(file: &str, value: &str) -> Result<semver::Version, BundleError> {
    parse_version(value).map_err(|e| BundleError::invalid(file, Some("version"), e.to_string()))
}

/// `capability.yaml`.
#[derive(Debug, Deserialize)]
struct CapabilityManifest {
    #[serde(default)]
    schema: Option<Value>,
    name: String,
    version: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    agents: Option<Vec<String>>,
}

/// Front matter of an `agents/*.md` file.
#[derive(Debug, Default, Deserialize)]
struct AgentFrontMatter {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    tools: Option<Value>,
}

/// One agent of a capability.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Agent {
    /// The agent's name (front matter `name`, else the file stem).
    pub name: String,
    /// What the agent does.
    pub description: Option<String>,
    /// The model the agent was written for, if it says.
    pub model: Option<String>,
    /// Tools the agent may use, as written in its front matter.
    pub tools: Value,
    /// The markdown body: the agent's instructions (its system prompt).
    pub instructions: String,
    /// The file the agent came from.
    pub path: String,
}

/// A parsed, validated capability version.
#[derive(Debug, Clone)]
pub struct Capability {
    /// The capability's name.
    pub name: ArtifactName,
    /// Its version.
    pub version: semver::Version,
    /// Its description.
    pub description: Option<String>,
    /// Manifest `schema` value, kept as written.
    pub schema: Option<Value>,
    /// Agents, in manifest order (or file order when the manifest lists none).
    pub agents: Vec<Agent>,
    /// Content digest of all files.
    pub sha256: String,
    /// The bundle it came from.
    pub bundle: Bundle,
}

/// The manifest file name of a capability.
pub const CAPABILITY_MANIFEST: &str = "capability.yaml";
/// The manifest file name of a dataset.
pub const DATASET_MANIFEST: &str = "dataset.yaml";

impl Capability {
    /// Parses and validates a capability bundle.
    pub fn parse(bundle: Bundle) -> Result<Self, BundleError> {
        let manifest_file = bundle
            .get(CAPABILITY_MANIFEST)
            .ok_or(BundleError::MissingFile {
                file: CAPABILITY_MANIFEST.into(),
                hint: "a capability needs capability.yaml with name and version",
            })?;
        let manifest: CapabilityManifest = parse_yaml(manifest_file)?;
        let name = checked_name(CAPABILITY_MANIFEST, "name", &manifest.name)?;
        let version = checked_version(CAPABILITY_MANIFEST, &manifest.version)?;

        let mut agents = Vec::new();
        for file in bundle.files() {
            let Some(stem) = file
                .path
                .strip_prefix("agents/")
                .and_then(|p| p.strip_suffix(".md"))
            else {
                continue;
            };
            if stem.contains('/') {
                continue;
            }
            agents.push(parse_agent(file, stem)?);
        }
        if agents.is_empty() {
            return Err(BundleError::MissingFile {
                file: "agents/*.md".into(),
                hint: "a capability needs at least one agent file under agents/",
            });
        }
        let mut seen = std::collections::HashSet::new();
        for a in &agents {
            if !seen.insert(a.name.clone()) {
                return Err(BundleError::invalid(
                    &a.path,
                    Some("name"),
                    format!("agent name `{}` is used by more than one file", a.name),
                ));
            }
        }
        if let Some(order) = &manifest.agents {
            let mut ordered = Vec::with_capacity(order.len());
            for (i, wanted) in order.iter().enumerate() {
                if let Some(first) = order[..i].iter().position(|a| a == wanted) {
                    return Err(BundleError::invalid(
                        CAPABILITY_MANIFEST,
                        Some(&format!("agents.{i}")),
                        format!(
                            "lists agent `{wanted}` twice (entries {} and {}); list each agent once",
                            first + 1,
                            i + 1
                        ),
                    ));
                }
                let pos = agents
                    .iter()
                    .position(|a| &a.name == wanted)
                    .ok_or_else(|| {
                        BundleError::invalid(
                            CAPABILITY_MANIFEST,
                            Some(&format!("agents.{i}")),
                            format!("lists agent `{wanted}` but no agents/*.md file defines it"),
                        )
                    })?;
                ordered.push(agents.remove(pos));
            }
            // Agents present but not listed keep file order after the listed ones.
            ordered.append(&mut agents);
            agents = ordered;
        }
        Ok(Self {
            name,
            version,
            description: manifest.description,
            schema: manifest.schema,
            agents,
            sha256: bundle.sha256(),
            bundle,
        })
    }
}

impl Capability {
    /// A new version of this capability, identical except for its name and version in
    /// `capability.yaml` and the instructions (markdown body) of agent `agent`: the agent's
    /// front matter and every other file stay byte for byte. This is what promotion writes,
    /// so the result is a real bundle that downloads and parses like any published one.
    ///
    /// The manifest keeps its layout (only the `name:` and `version:` lines change) unless
    /// those keys are not plain top-level lines, in which case it is re-serialized.
    pub fn with_agent_instructions(
        &self,
        name: &ArtifactName,
        version: &semver::Version,
        agent: &str,
        instructions: &str,
    ) -> Result<Capability, BundleError> {
        let instructions = instructions.trim();
        let source = self
            .agents
            .iter()
            .find(|a| a.name == agent)
            .ok_or_else(|| {
                BundleError::invalid(
                    CAPABILITY_MANIFEST,
                    Some("agents"),
                    format!(
                        "capability {}@{} has no agent `{agent}`",
                        self.name, self.version
                    ),
                )
            })?;
        let mut files = Vec::with_capacity(self.bundle.files().len());
        for f in self.bundle.files() {
            let content = if f.path == CAPABILITY_MANIFEST {
                rewrite_manifest(f, name.as_str(), &version.to_string())?
            } else if f.path == source.path {
                replace_body(f, instructions)?
            } else {
                f.content.clone()
            };
            files.push(BundleFile::new(f.path.clone(), content));
        }
        let derived = Capability::parse(Bundle::from_files(files))?;
        // Line endings follow the file (see `replace_body`): compare the text, not them.
        let lf = |t: &str| t.replace("\r\n", "\n");
        let written = derived.agents.iter().find(|a| a.name == agent);
        if derived.name != *name
            || derived.version != *version
            || written.map(|a| lf(&a.instructions)) != Some(lf(instructions))
        {
            return Err(BundleError::invalid(
                &source.path,
                None,
                "the new instructions do not survive a round trip through the bundle format",
            ));
        }
        Ok(derived)
    }
}

/// Sets the top-level `name` and `version` of a capability manifest.
fn rewrite_manifest(file: &BundleFile, name: &str, version: &str) -> Result<Vec<u8>, BundleError> {
    let text = file.text()?;
    let mut seen = (0, 0);
    let lines: Vec<String> = text
        .split_inclusive('\n')
        .map(|line| {
            let ending = &line[line.trim_end_matches(['\r', '\n']).len()..];
            if line.starts_with("name:") {
                seen.0 += 1;
                format!("name: {name}{ending}")
            } else if line.starts_with("version:") {
                seen.1 += 1;
                format!("version: {version}{ending}")
            } else {
                line.to_owned()
            }
        })
        .collect();
    let edited = lines.concat();
    let plain_edit_ok = seen == (1, 1)
        && serde_yaml_ng::from_str::<CapabilityManifest>(&edited)
            .is_ok_and(|m| m.name == name && m.version == version);
    if plain_edit_ok {
        return Ok(format!("{}{edited}", bom(file)).into_bytes());
    }
    // Flow style, block scalars, quoting a plain value would need: rewrite the mapping.
    let mut doc: serde_yaml_ng::Mapping =
        serde_yaml_ng::from_str(text).map_err(|e| yaml_error(&file.path, &e))?;
    doc.insert("name".into(), name.into());
    doc.insert("version".into(), version.into());
    serde_yaml_ng::to_string(&doc)
        .map(|yaml| format!("{}{yaml}", bom(file)).into_bytes())
        .map_err(|e| BundleError::invalid(&file.path, None, e.to_string()))
}

/// Replaces an agent file's markdown body, keeping its front matter, leading blank lines, byte
/// order mark and line endings (a file written with CRLF gets its new body in CRLF too).
fn replace_body(file: &BundleFile, instructions: &str) -> Result<Vec<u8>, BundleError> {
    let text = file.text()?;
    let (_, body) = split_front_matter(text)
        .ok_or_else(|| BundleError::invalid(&file.path, None, "has no front matter"))?;
    let head = &text[..text.len() - body.len()];
    let leading = &body[..body.len() - body.trim_start_matches(['\r', '\n']).len()];
    let lf = instructions.replace("\r\n", "\n");
    let (body, newline) = if head.ends_with("\r\n") {
        (lf.replace('\n', "\r\n"), "\r\n")
    } else {
        (lf, "\n")
    };
    Ok(format!("{}{head}{leading}{body}{newline}", bom(file)).into_bytes())
}

/// The UTF-8 byte order mark when `file` starts with one ([`BundleFile::text`] reads past it),
/// so that an edit writes it back.
fn bom(file: &BundleFile) -> &'static str {
    if file.content.starts_with("\u{feff}".as_bytes()) {
        "\u{feff}"
    } else {
        ""
    }
}

/// Splits `---\n<yaml>\n---\n<body>` into front matter and body.
fn split_front_matter(text: &str) -> Option<(&str, &str)> {
    let rest = text
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))?;
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end() == "---" {
            return Some((&rest[..offset], &rest[offset + line.len()..]));
        }
        offset += line.len();
    }
    None
}

fn parse_agent(file: &BundleFile, stem: &str) -> Result<Agent, BundleError> {
    let text = file.text()?;
    let (front, body) = split_front_matter(text).ok_or_else(|| {
        BundleError::invalid(
            &file.path,
            None,
            "must start with YAML front matter between `---` lines (name, description, model, tools)",
        )
    })?;
    let meta: AgentFrontMatter = if front.trim().is_empty() {
        AgentFrontMatter::default()
    } else {
        yaml_from(&file.path, front)?
    };
    let name = meta.name.unwrap_or_else(|| stem.to_owned());
    checked_name(&file.path, "name", &name)?;
    let instructions = body.trim().to_owned();
    if instructions.is_empty() {
        return Err(BundleError::invalid(
            &file.path,
            None,
            "has no instructions: the markdown body after the front matter is empty",
        ));
    }
    let tools = match meta.tools {
        None | Some(Value::Null) => Value::Array(vec![]),
        Some(v @ Value::Array(_)) => v,
        Some(_) => {
            return Err(BundleError::invalid(
                &file.path,
                Some("tools"),
                "must be a list",
            ));
        }
    };
    Ok(Agent {
        name,
        description: meta.description,
        model: meta.model,
        tools,
        instructions,
        path: file.path.clone(),
    })
}

/// `dataset.yaml`.
#[derive(Debug, Deserialize)]
struct DatasetManifest {
    name: String,
    version: String,
    #[serde(default)]
    description: Option<String>,
    /// The rows file; defaults to the bundle's only `.jsonl` / `.csv` / `.parquet` file.
    #[serde(default)]
    file: Option<String>,
}

/// Row file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RowFormat {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated with a header row.
    Csv,
    /// Apache Parquet (what pandas, Polars and Hugging Face datasets write).
    Parquet,
}

/// A parsed, validated dataset version.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The dataset's name.
    pub name: ArtifactName,
    /// Its version.
    pub version: semver::Version,
    /// Its description.
    pub description: Option<String>,
    /// The rows file it was read from.
    pub rows_file: String,
    /// The rows file's format.
    pub format: RowFormat,
    /// Every row, a JSON object each.
    pub rows: Vec<Map<String, Value>>,
    /// Inferred schema: per field, the JSON types seen and whether every row has it.
    pub schema: Value,
    /// Content digest of all files.
    pub sha256: String,
    /// The bundle it came from.
    pub bundle: Bundle,
}

impl Dataset {
    /// Parses and validates a dataset bundle.
    pub fn parse(bundle: Bundle) -> Result<Self, BundleError> {
        let manifest_file = bundle
            .get(DATASET_MANIFEST)
            .ok_or(BundleError::MissingFile {
                file: DATASET_MANIFEST.into(),
                hint: "a dataset needs dataset.yaml with name and version",
            })?;
        let manifest: DatasetManifest = parse_yaml(manifest_file)?;
        let name = checked_name(DATASET_MANIFEST, "name", &manifest.name)?;
        let version = checked_version(DATASET_MANIFEST, &manifest.version)?;
        let rows_path = match manifest.file {
            Some(path) => path,
            None => {
                let candidates: Vec<_> = bundle
                    .files()
                    .iter()
                    .filter(|f| row_format(&f.path).is_some())
                    .map(|f| f.path.clone())
                    .collect();
                match candidates.as_slice() {
                    [one] => one.clone(),
                    [] => {
                        return Err(BundleError::MissingFile {
                            file: "*.jsonl, *.csv or *.parquet".into(),
                            hint: "a dataset needs a rows file (jsonl, csv or parquet)",
                        })
                    }
                    _ => {
                        return Err(BundleError::invalid(
                            DATASET_MANIFEST,
                            Some("file"),
                            format!(
                                "the bundle holds several rows files ({}); name one in `file`",
                                candidates.join(", ")
                            ),
                        ))
                    }
                }
            }
        };
        let format = row_format(&rows_path).ok_or_else(|| {
            BundleError::invalid(
                DATASET_MANIFEST,
                Some("file"),
                "must name a .jsonl, .csv or .parquet file",
            )
        })?;
        let rows_file = bundle.get(&rows_path).ok_or_else(|| {
            BundleError::invalid(
                DATASET_MANIFEST,
                Some("file"),
                format!("names `{rows_path}`, which is not in the bundle"),
            )
        })?;
        let rows = match format {
            RowFormat::Jsonl => parse_jsonl(rows_file)?,
            RowFormat::Csv => parse_csv(rows_file)?,
            RowFormat::Parquet => parse_parquet(rows_file)?,
        };
        if rows.is_empty() {
            return Err(BundleError::invalid(&rows_path, None, "holds no rows"));
        }
        if rows.len() > MAX_ROWS {
            return Err(BundleError::TooLarge(format!("more than {MAX_ROWS} rows")));
        }
        let schema = infer_schema(&rows);
        Ok(Self {
            name,
            version,
            description: manifest.description,
            rows_file: rows_path,
            format,
            rows,
            schema,
            sha256: bundle.sha256(),
            bundle,
        })
    }
}

/// The rows of one rows file outside a bundle (a local run's `--dataset rows.csv`), read as a
/// dataset bundle's rows file is: CSV and Parquet by their `.csv` and `.parquet` extensions,
/// anything else as JSON lines.
pub fn rows_of_file(path: &str, content: Vec<u8>) -> Result<Vec<Map<String, Value>>, BundleError> {
    let file = BundleFile::new(path, content);
    match row_format(path) {
        Some(RowFormat::Csv) => parse_csv(&file),
        Some(RowFormat::Parquet) => parse_parquet(&file),
        _ => parse_jsonl(&file),
    }
}

fn row_format(path: &str) -> Option<RowFormat> {
    if path.ends_with(".jsonl") {
        Some(RowFormat::Jsonl)
    } else if path.ends_with(".csv") {
        Some(RowFormat::Csv)
    } else if path.ends_with(".parquet") {
        Some(RowFormat::Parquet)
    } else {
        None
    }
}

fn parse_jsonl(file: &BundleFile) -> Result<Vec<Map<String, Value>>, BundleError> {
    let text = file.text()?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row_err = |message: String| BundleError::Row {
            file: file.path.clone(),
            line: i + 1,
            message,
        };
        match serde_json::from_str::<JsonRow>(line) {
            Ok(JsonRow::Object(map)) => {
                if row_holds_nul(&map) {
                    return Err(row_err(format!("a value {NUL_IN_TEXT}")));
                }
                rows.push(map);
            }
            Ok(JsonRow::Other(kind)) => {
                return Err(row_err(format!(
                    "each row must be a JSON object, found {kind}"
                )))
            }
            // Valid JSON that a row cannot be (a field given twice): the message alone.
            Err(e) if e.is_data() => {
                let full = e.to_string();
                let position = format!(" at line {} column {}", e.line(), e.column());
                return Err(row_err(
                    full.strip_suffix(&position).unwrap_or(&full).to_owned(),
                ));
            }
            Err(e) => return Err(row_err(format!("invalid JSON: {e}"))),
        }
    }
    Ok(rows)
}

/// One jsonl line: a row object whose fields are all distinct, or the JSON type of any other
/// value (which the caller refuses).
enum JsonRow {
    Object(Map<String, Value>),
    Other(&'static str),
}

impl<'de> serde::Deserialize<'de> for JsonRow {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, IgnoredAny, MapAccess, SeqAccess, Visitor};

        struct RowVisitor;

        impl<'de> Visitor<'de> for RowVisitor {
            type Value = JsonRow;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonRow, A::Error> {
                let mut row = Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    // serde_json would keep the last value, and the row would silently lose
                    // the first (e.g. `goal` written twice).
                    if row.contains_key(&key) {
                        return Err(A::Error::custom(format_args!(
                            "the field `{key}` appears twice"
                        )));
                    }
                    let value = map.next_value::<Value>()?;
                    row.insert(key, value);
                }
                Ok(JsonRow::Object(row))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JsonRow, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(JsonRow::Other("array"))
            }

            fn visit_str<E: Error>(self, _: &str) -> Result<JsonRow, E> {
                Ok(JsonRow::Other("string"))
            }

            fn visit_bool<E: Error>(self, _: bool) -> Result<JsonRow, E> {
                Ok(JsonRow::Other("boolean"))
            }

            fn visit_i64<E: Error>(self, _: i64) -> Result<JsonRow, E> {
                Ok(JsonRow::Other("integer"))
            }

            fn visit_u64<E: Error>(self, _: u64) -> Result<JsonRow, E> {
                Ok(JsonRow::Other("integer"))
            }

            fn visit_f64<E: Error>(self, _: f64) -> Result<JsonRow, E> {
                Ok(JsonRow::Other("number"))
            }

            fn visit_unit<E: Error>(self) -> Result<JsonRow, E> {
                Ok(JsonRow::Other("null"))
            }
        }

        d.deserialize_any(RowVisitor)
    }
}

/// Whether a JSON string (or key) anywhere in `value` holds U+0000.
fn json_holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(json_holds_nul),
        Value::Object(map) => row_holds_nul(map),
        _ => false,
    }
}

/// Whether a key or value anywhere in a row (or any JSON object) holds U+0000.
fn row_holds_nul(map: &Map<String, Value>) -> bool {
    map.iter()
        .any(|(k, v)| k.contains('\0') || json_holds_nul(v))
}

/// Row fields that hold JSON structures. Tabular formats often carry them as JSON text.
const STRUCTURED_COLUMNS: [&str; 3] = ["metadata", "tools", "expected_trajectory"];

/// A structured column's text cell: the JSON it holds, else the text itself (the recipe's
/// row check then names the field).
fn structured_from_text(cell: &str) -> Value {
    serde_json::from_str(cell).unwrap_or_else(|_| Value::String(cell.to_owned()))
}

/// Parquet rows, in file order across row groups, each as the JSON object its jsonl twin
/// would be. Two differences from JSON need care:
/// - Parquet has no "absent": every row has every column, and a struct column has the union
///   of every row's keys (pyarrow writes a tool's `parameters` with the properties of all
///   tools). So a null inside an object is read as an absent key, at any depth; nulls inside
///   lists are kept.
/// - The structured columns are often stored as JSON text; text that parses is read as JSON,
///   as in CSV.
///
/// The decoder runs on bytes a client sent, so a panic in it is caught and reported as an
/// unreadable file rather than taking the request (or a local run) down with it.
fn parse_parquet(file: &BundleFile) -> Result<Vec<Map<String, Value>>, BundleError> {
    DECODING_UNTRUSTED.with(|d| d.set(true));
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode_parquet(file)));
    DECODING_UNTRUSTED.with(|d| d.set(false));
    decoded.unwrap_or_else(|_| {
        Err(BundleError::invalid(
            &file.path,
            None,
            "is not a readable Parquet file: its data is malformed",
        ))
    })
}

thread_local! {
    /// Set while this thread runs a decoder of client bytes under `catch_unwind`.
    static DECODING_UNTRUSTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether a panic on this thread comes from decoding a client's malformed file (a Parquet
/// decoder's panic, caught and reported as an unreadable file) rather than from a bug. A
/// process's panic hook uses it so that such a panic does not print a crash report (the hook
/// runs before `catch_unwind` returns, on the panicking thread).
pub fn panic_is_expected_here() -> bool {
    DECODING_UNTRUSTED.with(std::cell::Cell::get)
}

/// The parquet crate's error, cut short: some of its messages quote the offending value whole
/// (a broken string comes back as its every byte in decimal), and an answer must not grow
/// with the client's file.
fn parquet_reason(e: &parquet::errors::ParquetError) -> String {
    const MAX_CHARS: usize = 200;
    let text = e.to_string();
    // "Error reading BYTE_ARRAY as String. Bytes: [87, 104, …]": the bytes say nothing.
    let text = text.split(" Bytes: [").next().unwrap_or_default();
    match text.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

fn decode_parquet(file: &BundleFile) -> Result<Vec<Map<String, Value>>, BundleError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let unreadable = |e: parquet::errors::ParquetError| {
        BundleError::invalid(
            &file.path,
            None,
            format!("is not a readable Parquet file: {}", parquet_reason(&e)),
        )
    };
    let reader =
        SerializedFileReader::new(bytes::Bytes::from(file.content.clone())).map_err(unreadable)?;
    // The footer says how big the data is: refuse what the limits refuse before decoding it.
    let meta = reader.metadata();
    if usize::try_from(meta.file_metadata().num_rows()).map_or(true, |n| n > MAX_ROWS) {
        return Err(BundleError::TooLarge(format!(
            "`{}` holds more than {MAX_ROWS} rows",
            file.path
        )));
    }
    let unpacked: i64 = meta
        .row_groups()
        .iter()
        .map(|g| g.total_byte_size().max(0))
        .sum();
    if u64::try_from(unpacked).map_or(true, |n| n > MAX_UNPACKED_BYTES) {
        return Err(BundleError::TooLarge(format!(
            "`{}` unpacks to more than {} MiB",
            file.path,
            MAX_UNPACKED_BYTES / (1024 * 1024)
        )));
    }
    let mut rows = Vec::new();
    for (i, row) in reader.get_row_iter(None).map_err(unreadable)?.enumerate() {
        let row_err = |message: String| {
            BundleError::invalid(&file.path, None, format!("row {}: {message}", i + 1))
        };
        let row = row.map_err(|e| row_err(format!("cannot be read: {}", parquet_reason(&e))))?;
        let Value::Object(fields) = without_null_fields(row.to_json_value()) else {
            return Err(row_err("is not a record".into()));
        };
        let mut map = Map::new();
        for (k, v) in fields {
            let v = match v {
                Value::String(text) if STRUCTURED_COLUMNS.contains(&k.as_str()) => {
                    structured_from_text(&text)
                }
                other => other,
            };
            map.insert(k, v);
        }
        if row_holds_nul(&map) {
            return Err(row_err(format!("a value {NUL_IN_TEXT}")));
        }
        rows.push(map);
    }
    Ok(rows)
}

/// `value` with every null-valued object key removed, at any depth (see [`parse_parquet`]).
fn without_null_fields(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_null_fields(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_null_fields).collect()),
        other => other,
    }
}

/// CSV cells are text; `reward` cells that parse as numbers become numbers, and cells of the
/// structured columns (`metadata`, `tools`, `expected_trajectory`) that parse as JSON become
/// JSON, so a csv row means the same as its jsonl twin.
fn parse_csv(file: &BundleFile) -> Result<Vec<Map<String, Value>>, BundleError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(file.content.as_slice());
    let headers = reader
        .headers()
        .map_err(|e| BundleError::Row {
            file: file.path.clone(),
            line: 1,
            message: e.to_string(),
        })?
        .clone();
    if headers.iter().any(str::is_empty) {
        return Err(BundleError::Row {
            file: file.path.clone(),
            line: 1,
            message: "a header cell is empty".into(),
        });
    }
    if let Some(twice) = headers
        .iter()
        .enumerate()
        .find_map(|(i, h)| headers.iter().skip(i + 1).any(|o| o == h).then_some(h))
    {
        // A row keeps one value per field: the other column's cells would be dropped.
        return Err(BundleError::Row {
            file: file.path.clone(),
            line: 1,
            message: format!("the column `{twice}` appears twice in the header"),
        });
    }
    let mut rows = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        // Lines come from the reader, not from the record count: a quoted cell may span lines.
        let starts_at = reader.position().line();
        let more = reader.read_record(&mut record).map_err(|e| {
            let line = e.position().map_or(starts_at, csv::Position::line);
            let message = match e.kind() {
                csv::ErrorKind::UnequalLengths {
                    expected_len, len, ..
                } => format!("the row has {len} cells but the header has {expected_len}"),
                _ => e.to_string(),
            };
            BundleError::Row {
                file: file.path.clone(),
                line: usize::try_from(line).unwrap_or(usize::MAX),
                message,
            }
        })?;
        if !more {
            break;
        }
        let mut row = Map::new();
        for (h, cell) in headers.iter().zip(record.iter()) {
            // A blank cell is how CSV leaves a value out: a row without a reward.
            if h == "reward" && cell.trim().is_empty() {
                continue;
            }
            let value = match h {
                "reward" => cell
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map_or_else(|| Value::String(cell.to_owned()), Value::Number),
                h if STRUCTURED_COLUMNS.contains(&h) => structured_from_text(cell),
                _ => Value::String(cell.to_owned()),
            };
            row.insert(h.to_owned(), value);
        }
        rows.push(row);
    }
    Ok(rows)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `{field: {"types": [...], "required": bool}}`, fields in name order.
fn infer_schema(rows: &[Map<String, Value>]) -> Value {
    let mut fields: BTreeMap<&str, (std::collections::BTreeSet<&'static str>, usize)> =
        BTreeMap::new();
    for row in rows {
        for (k, v) in row {
            let entry = fields.entry(k.as_str()).or_default();
            entry.0.insert(type_name(v));
            entry.1 += 1;
        }
    }
    let mut out = Map::new();
    for (name, (types, count)) in fields {
        out.insert(
            name.to_owned(),
            serde_json::json!({ "types": types, "required": count == rows.len() }),
        );
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, text: &str) -> BundleFile {
        BundleFile::new(path, text.as_bytes().to_vec())
    }

    fn capability(files: &[(&str, &str)]) -> Result<Capability, BundleError> {
        Capability::parse(Bundle::from_files(
            files.iter().map(|(p, t)| file(p, t)).collect(),
        ))
    }

    const MANIFEST: &str = "schema: 1\nname: support\nversion: 1.0.0\ndescription: Help desk\n";
    const AGENT: &str = "---\nname: triage\ndescription: Routes tickets\nmodel: openai/gpt-4o-mini\ntools: [search]\n---\n\nYou route tickets.\n";

    #[test]
    fn a_capability_bundle_yields_its_agents_with_instructions() {
        let cap =
            capability(&[("capability.yaml", MANIFEST), ("agents/triage.md", AGENT)]).unwrap();
        assert_eq!(cap.name.as_str(), "support");
        assert_eq!(cap.version.to_string(), "1.0.0");
        assert_eq!(cap.agents.len(), 1);
        assert_eq!(cap.agents[0].name, "triage");
        assert_eq!(cap.agents[0].instructions, "You route tickets.");
        assert_eq!(cap.agents[0].tools, serde_json::json!(["search"]));
    }

    #[test]
    fn deeply_nested_yaml_is_refused_before_it_is_parsed() {
        let deep = format!(
            "schema: 1\nname: deep\nversion: 1.0.0\ndescription: {}{}\n",
            "[".repeat(80_000),
            "]".repeat(80_000)
        );
        let err =
            capability(&[("capability.yaml", &deep), ("agents/triage.md", AGENT)]).unwrap_err();
        assert_eq!(err.location(), ["capability.yaml"]);
        assert!(err.to_string().contains("80000 `[` / `{`"), "{err}");
        let front = format!(
            "---\nname: a\ntools: {}{}\n---\nHi\n",
            "[".repeat(2000),
            "]".repeat(2000)
        );
        let err =
            capability(&[("capability.yaml", MANIFEST), ("agents/a.md", &front)]).unwrap_err();
        assert_eq!(err.location(), ["agents/a.md"]);
        // Ordinary flow style is far below the bound.
        let flow = "---\nname: a\ntools: [search, {name: fetch, args: [url]}]\n---\nHi\n";
        assert!(capability(&[("capability.yaml", MANIFEST), ("agents/a.md", flow)]).is_ok());
    }

    /// A valid bundle's tar.gz, its gzip stream holding the tar uncompressed (stored deflate
    /// blocks), so a byte of a file's content can be found in it and changed.
    fn stored_tar_gz(files: &[(&str, &str)]) -> Vec<u8> {
        let packed =
            Bundle::from_files(files.iter().map(|(p, t)| file(p, t)).collect()).to_tar_gz();
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(packed.as_slice())
            .read_to_end(&mut tar)
            .unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn a_bundle_whose_gzip_data_fails_its_checksum_or_lost_its_trailer_is_refused() {
        let files = [("capability.yaml", MANIFEST), ("agents/triage.md", AGENT)];
        let good = stored_tar_gz(&files);
        assert!(Bundle::from_tar_gz(&good).is_ok());
        // One flipped bit in a file's content: the deflate data still decodes, and only the
        // CRC-32 tells; before, the altered text was taken as the bundle.
        let at = good
            .windows(5)
            .position(|w| w == b"route")
            .expect("the agent's text is stored as is");
        let mut flipped = good.clone();
        flipped[at] ^= 0x01;
        // Its checksum written wrong, on the ordinary (compressed) packing.
        let mut bad_crc =
            Bundle::from_files(files.iter().map(|(p, t)| file(p, t)).collect()).to_tar_gz();
        let crc_at = bad_crc.len() - 8;
        bad_crc[crc_at] ^= 0x80;
        // The 8-byte trailer (CRC-32 and length) cut off.
        let cut = good[..good.len() - 8].to_vec();
        for (case, bytes) in [("flipped bit", flipped), ("bad crc", bad_crc), ("cut", cut)] {
            let err = Bundle::from_tar_gz(&bytes).unwrap_err();
            assert!(matches!(err, BundleError::Corrupt(_)), "{case}: {err:?}");
            assert!(
                err.to_string()
                    .starts_with("the bundle's gzip data is corrupt: "),
                "{case}: {err}"
            );
            assert!(err.location().is_empty(), "{case}");
        }
    }

    #[test]
    fn the_digest_ignores_archive_order_and_tracks_content() {
        let a = capability(&[("capability.yaml", MANIFEST), ("agents/triage.md", AGENT)]).unwrap();
        let b = capability(&[("agents/triage.md", AGENT), ("capability.yaml", MANIFEST)]).unwrap();
        let c = capability(&[
            ("capability.yaml", MANIFEST),
            ("agents/triage.md", &AGENT.replace("route", "sort")),
        ])
        .unwrap();
        assert_eq!(a.sha256, b.sha256);
        assert_ne!(a.sha256, c.sha256);
    }

    #[test]
    fn tar_gz_round_trips_and_keeps_the_digest() {
        let bundle = Bundle::from_files(vec![
            file("capability.yaml", MANIFEST),
            file("agents/triage.md", AGENT),
        ]);
        let back = Bundle::from_tar_gz(&bundle.to_tar_gz()).unwrap();
        assert_eq!(back, bundle);
        assert_eq!(back.sha256(), bundle.sha256());
    }

    #[test]
    fn manifest_agent_order_is_kept_and_unknown_agents_are_named() {
        let m = format!("{MANIFEST}agents: [b, a]\n");
        let a = "---\nname: a\n---\nA.";
        let b = "---\nname: b\n---\nB.";
        let cap = capability(&[
            ("capability.yaml", &m),
            ("agents/a.md", a),
            ("agents/b.md", b),
        ])
        .unwrap();
        assert_eq!(
            cap.agents
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>(),
            ["b", "a"]
        );
        let m = format!("{MANIFEST}agents: [c]\n");
        let err = capability(&[("capability.yaml", &m), ("agents/a.md", a)]).unwrap_err();
        assert_eq!(err.location(), ["capability.yaml", "agents", "0"]);
        assert!(err.to_string().contains("`c`"), "{err}");
    }

    /// Bundle files, and the error location they must produce.
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);

    #[test]
    fn each_bad_capability_names_the_file_and_field() {
        let cases: &[Case] = &[
            (&[("agents/triage.md", AGENT)], &["capability.yaml"]),
            (
                &[
                    ("capability.yaml", "name: support\n"),
                    ("agents/triage.md", AGENT),
                ],
                &["capability.yaml", "version"],
            ),
            (
                &[
                    ("capability.yaml", "name: Support\nversion: 1.0.0\n"),
                    ("agents/triage.md", AGENT),
                ],
                &["capability.yaml", "name"],
            ),
            (
                &[
                    ("capability.yaml", "name: support\nversion: one\n"),
                    ("agents/triage.md", AGENT),
                ],
                &["capability.yaml", "version"],
            ),
            (
                &[
                    ("capability.yaml", "name: [\n"),
                    ("agents/triage.md", AGENT),
                ],
                &["capability.yaml"],
            ),
            (&[("capability.yaml", MANIFEST)], &["agents/*.md"]),
            (
                &[
                    ("capability.yaml", MANIFEST),
                    ("agents/x.md", "no front matter"),
                ],
                &["agents/x.md"],
            ),
            (
                &[
                    ("capability.yaml", MANIFEST),
                    ("agents/x.md", "---\nname: x\n---\n  \n"),
                ],
                &["agents/x.md"],
            ),
            (
                &[
                    ("capability.yaml", MANIFEST),
                    ("agents/x.md", "---\ntools: 3\n---\nHi"),
                ],
                &["agents/x.md", "tools"],
            ),
        ];
        for (files, loc) in cases {
            let err = capability(files).unwrap_err();
            assert_eq!(err.location(), *loc, "{err}");
        }
    }

    #[test]
    fn unsafe_archive_entries_are_refused() {
        for bad in ["/etc/passwd", "../x", "a/../../x"] {
            assert!(
                matches!(
                    normalize_entry_path(bad),
                    Err(BundleError::UnsafeEntry { .. })
                ),
                "{bad}"
            );
        }
        assert_eq!(
            normalize_entry_path("./agents//a.md").unwrap(),
            "agents/a.md"
        );
        assert!(matches!(
            Bundle::from_tar_gz(b"not gzip"),
            Err(BundleError::Archive(_))
        ));
    }

    #[test]
    fn an_archive_holding_one_path_twice_is_refused_naming_it() {
        for second in ["agents/a.md", "./agents/a.md"] {
            let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            let mut builder = tar::Builder::new(gz);
            for (path, text) in [("agents/a.md", "first"), (second, "second")] {
                let mut header = tar::Header::new_gnu();
                header.set_size(text.len() as u64);
                header.set_mode(0o644);
                header.set_cksum();
                builder
                    .append_data(&mut header, path, text.as_bytes())
                    .unwrap();
            }
            let bytes = builder.into_inner().unwrap().finish().unwrap();
            let err = Bundle::from_tar_gz(&bytes).unwrap_err();
            assert_eq!(
                err.to_string(),
                BundleError::Archive("`agents/a.md` appears twice in the archive".into())
                    .to_string(),
                "{second}"
            );
        }
    }

    fn dataset(files: &[(&str, &str)]) -> Result<Dataset, BundleError> {
        Dataset::parse(Bundle::from_files(
            files.iter().map(|(p, t)| file(p, t)).collect(),
        ))
    }

    #[test]
    fn jsonl_datasets_count_rows_and_infer_a_schema() {
        let rows = "{\"goal\": \"a\", \"expected_output\": \"x\"}\n\n{\"goal\": \"b\", \"expected_output\": \"y\", \"reward\": 0.5}\n";
        let ds = dataset(&[
            ("dataset.yaml", "name: s\nversion: 0.1.0\n"),
            ("rows.jsonl", rows),
        ])
        .unwrap();
        assert_eq!(ds.rows.len(), 2);
        assert_eq!(ds.format, RowFormat::Jsonl);
        assert_eq!(
            ds.schema["goal"],
            serde_json::json!({"types": ["string"], "required": true})
        );
        assert_eq!(
            ds.schema["reward"],
            serde_json::json!({"types": ["number"], "required": false})
        );
    }

    #[test]
    fn text_holding_nul_is_refused_naming_the_file_and_field() {
        let agent = "---\nname: classifier\n---\nClassify.\n";
        // An escape in a YAML string, a raw NUL byte, and an escape in an agent's front matter.
        for (files, at) in [
            (
                vec![
                    (
                        "capability.yaml",
                        "name: c\nversion: 1.0.0\ndescription: \"a\\0b\"\n",
                    ),
                    ("agents/classifier.md", agent),
                ],
                ("capability.yaml", Some("description")),
            ),
            (
                vec![
                    (
                        "capability.yaml",
                        "name: c\nversion: 1.0.0\ndescription: a\0b\n",
                    ),
                    ("agents/classifier.md", agent),
                ],
                ("capability.yaml", None),
            ),
            (
                vec![
                    ("capability.yaml", "name: c\nversion: 1.0.0\n"),
                    (
                        "agents/classifier.md",
                        "---\nname: classifier\ndescription: \"\\x00\"\n---\nGo.\n",
                    ),
                ],
                ("agents/classifier.md", Some("description")),
            ),
        ] {
            match capability(&files).unwrap_err() {
                BundleError::Invalid {
                    file,
                    field,
                    message,
                } => {
                    assert_eq!((file.as_str(), field.as_deref()), at);
                    assert!(message.contains("NUL"), "{message}");
                }
                other => panic!("{other:?}"),
            }
        }
        let err = dataset(&[
            ("dataset.yaml", "name: s\nversion: 0.1.0\n"),
            (
                "rows.jsonl",
                "{\"goal\": \"ok\"}\n{\"goal\": \"a\\u0000b\"}\n",
            ),
        ])
        .unwrap_err();
        assert!(
            matches!(&err, BundleError::Row { line: 2, message, .. } if message.contains("NUL")),
            "{err:?}"
        );
    }

    #[test]
    fn a_lone_rows_file_is_read_by_its_extension_like_a_bundles() {
        let csv = rows_of_file("val.csv", b"goal,expected_output\nhi,x\n".to_vec()).unwrap();
        assert_eq!(csv[0]["goal"], "hi");
        let jsonl = rows_of_file("val.txt", b"{\"goal\": \"hi\"}\n[1]\n".to_vec()).unwrap_err();
        assert!(
            matches!(&jsonl, BundleError::Row { file, line: 2, .. } if file == "val.txt"),
            "{jsonl:?}"
        );
    }

    #[test]
    fn csv_datasets_read_numbers_and_json_cells() {
        let rows = "goal,expected_output,reward,metadata\nhi,x,1,\"{\"\"k\"\": 1}\"\n";
        let ds = dataset(&[
            ("dataset.yaml", "name: s\nversion: 0.1.0\nfile: r.csv\n"),
            ("r.csv", rows),
        ])
        .unwrap();
        assert_eq!(ds.rows[0]["reward"], serde_json::json!(1.0));
        assert_eq!(ds.rows[0]["metadata"], serde_json::json!({"k": 1}));
        assert_eq!(ds.rows[0]["goal"], serde_json::json!("hi"));
        let blank = dataset(&[
            ("dataset.yaml", "name: s\nversion: 0.1.0\nfile: r.csv\n"),
            ("r.csv", "goal,reward\nhi, \n"),
        ])
        .unwrap();
        assert_eq!(
            blank.rows[0].get("reward"),
            None,
            "a blank reward cell is no reward"
        );
    }

    #[test]
    fn a_bad_csv_row_after_a_multi_line_cell_is_reported_at_its_real_line() {
        let rows =
            "goal,expected_output\n\"line one\nline two\",positive\nok,negative\nbad,row,extra\n";
        let err = dataset(&[
            ("dataset.yaml", "name: s\nversion: 0.1.0\n"),
            ("rows.csv", rows),
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`rows.csv` line 5: the row has 3 cells but the header has 2"
        );
        assert_eq!(err.location(), ["rows.csv", "line 5"]);
    }

    #[test]
    fn a_field_given_twice_in_a_row_is_refused_instead_of_keeping_one_value() {
        let m = "name: s\nversion: 0.1.0\n";
        for (file, rows, message) in [
            (
                "rows.csv",
                "goal,goal,expected_output\na,b,c\n",
                "`rows.csv` line 1: the column `goal` appears twice in the header",
            ),
            (
                "rows.jsonl",
                "{\"goal\": \"x\", \"expected_output\": \"y\"}\n{\"goal\": \"a\", \"goal\": \"b\"}\n",
                "`rows.jsonl` line 2: the field `goal` appears twice",
            ),
        ] {
            let err = dataset(&[("dataset.yaml", m), (file, rows)]).unwrap_err();
            assert_eq!(err.to_string(), message);
        }
        // Nested objects and other JSON values are read as before.
        let ds = dataset(&[
            ("dataset.yaml", m),
            (
                "rows.jsonl",
                "{\"goal\": \"g\", \"metadata\": {\"k\": [1, 2.5, null, true]}}\n",
            ),
        ])
        .unwrap();
        assert_eq!(
            ds.rows[0]["metadata"],
            serde_json::json!({"k": [1, 2.5, null, true]})
        );
        for (line, kind) in [
            ("[1]", "array"),
            ("\"x\"", "string"),
            ("3", "integer"),
            ("null", "null"),
        ] {
            let err = dataset(&[("dataset.yaml", m), ("rows.jsonl", line)]).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("`rows.jsonl` line 1: each row must be a JSON object, found {kind}")
            );
        }
    }

    #[test]
    fn each_bad_dataset_names_the_file_and_line_or_field() {
        let m = "name: s\nversion: 0.1.0\n";
        let cases: &[Case] = &[
            (&[("rows.jsonl", "{}")], &["dataset.yaml"]),
            (&[("dataset.yaml", m)], &["*.jsonl, *.csv or *.parquet"]),
            (
                &[("dataset.yaml", m), ("rows.jsonl", "{\"a\":1}\nnot json\n")],
                &["rows.jsonl", "line 2"],
            ),
            (
                &[("dataset.yaml", m), ("rows.jsonl", "[1,2]\n")],
                &["rows.jsonl", "line 1"],
            ),
            (
                &[("dataset.yaml", m), ("rows.jsonl", "\n")],
                &["rows.jsonl"],
            ),
            (
                &[("dataset.yaml", m), ("a.jsonl", "{}"), ("b.jsonl", "{}")],
                &["dataset.yaml", "file"],
            ),
            (
                &[
                    ("dataset.yaml", "name: s\nversion: 0.1.0\nfile: x.jsonl\n"),
                    ("a.jsonl", "{}"),
                ],
                &["dataset.yaml", "file"],
            ),
            (
                &[("dataset.yaml", m), ("r.csv", "a,b\n1,2,3\n")],
                &["r.csv", "line 2"],
            ),
        ];
        for (files, loc) in cases {
            let err = dataset(files).unwrap_err();
            assert_eq!(err.location(), *loc, "{err}");
        }
    }

    #[test]
    fn a_manifest_version_longer_than_the_limit_is_refused_naming_the_field() {
        let long = format!("1.0.0-{}", "a".repeat(1024 * 1024));
        let err = capability(&[
            (
                "capability.yaml",
                &format!("name: support\nversion: {long}\n"),
            ),
            ("agents/triage.md", AGENT),
        ])
        .unwrap_err();
        assert_eq!(err.location(), ["capability.yaml", "version"], "{err}");
        assert!(err.to_string().contains("at most 128 characters"), "{err}");
        let err = dataset(&[
            ("dataset.yaml", &format!("name: s\nversion: {long}\n")),
            ("rows.jsonl", "{}\n"),
        ])
        .unwrap_err();
        assert_eq!(err.location(), ["dataset.yaml", "version"], "{err}");
    }

    #[test]
    fn directories_pack_without_hidden_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("agents")).unwrap();
        std::fs::create_dir_all(dir.path().join(".git")).unwrap();
        std::fs::write(dir.path().join("capability.yaml"), MANIFEST).unwrap();
        std::fs::write(dir.path().join("agents/triage.md"), AGENT).unwrap();
        std::fs::write(dir.path().join(".git/HEAD"), "x").unwrap();
        std::fs::write(dir.path().join(".DS_Store"), "x").unwrap();
        let bundle = Bundle::from_dir(dir.path()).unwrap();
        let paths: Vec<_> = bundle.files().iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["agents/triage.md", "capability.yaml"]);
    }

    #[cfg(unix)]
    #[test]
    fn a_symlinked_file_is_packed_with_its_targets_content_and_a_bad_link_is_named() {
        use std::os::unix::fs::symlink;
        let elsewhere = tempfile::tempdir().unwrap();
        let target = elsewhere.path().join("triage.md");
        std::fs::write(&target, AGENT).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("agents")).unwrap();
        std::fs::write(dir.path().join("capability.yaml"), MANIFEST).unwrap();
        symlink(&target, dir.path().join("agents/triage.md")).unwrap();
        let bundle = Bundle::from_dir(dir.path()).unwrap();
        let file = bundle
            .get("agents/triage.md")
            .expect("the linked agent is packed");
        assert_eq!(file.content, AGENT.as_bytes());
        assert_eq!(Capability::parse(bundle).unwrap().agents[0].name, "triage");

        let dangling = dir.path().join("agents/gone.md");
        symlink(elsewhere.path().join("nope.md"), &dangling).unwrap();
        let err = Bundle::from_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&dangling.display().to_string()) && err.contains("dangling"),
            "{err}"
        );
        std::fs::remove_file(&dangling).unwrap();

        let to_dir = dir.path().join("shared");
        symlink(elsewhere.path(), &to_dir).unwrap();
        let err = Bundle::from_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&to_dir.display().to_string()) && err.contains("link to a directory"),
            "{err}"
        );
    }

    #[test]
    fn a_byte_order_mark_before_a_manifest_an_agent_or_jsonl_rows_is_ignored() {
        let bom = |text: &str| format!("\u{feff}{text}");
        let cap = capability(&[
            ("capability.yaml", &bom(MANIFEST)),
            ("agents/triage.md", &bom(AGENT)),
        ])
        .unwrap();
        assert_eq!(cap.version.to_string(), "1.0.0");
        assert_eq!(cap.agents[0].instructions, "You route tickets.");
        let ds = dataset(&[
            ("dataset.yaml", &bom("name: s\nversion: 0.1.0\n")),
            ("rows.jsonl", &bom("{\"goal\": \"a\"}\n")),
        ])
        .unwrap();
        assert_eq!(ds.rows[0]["goal"], "a");
    }

    #[test]
    fn an_agent_listed_twice_in_the_manifest_is_named_as_listed_twice() {
        let manifest = format!("{MANIFEST}agents: [triage, triage]\n");
        let err =
            capability(&[("capability.yaml", &manifest), ("agents/triage.md", AGENT)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`capability.yaml` field `agents.1`: lists agent `triage` twice (entries 1 and 2); \
             list each agent once"
        );
    }

    #[test]
    fn a_derived_version_changes_only_the_manifest_lines_and_the_agent_body() {
        let helper = "---\nname: helper\n---\nHelp.\n";
        let manifest = "# the help desk\nschema: 1\nname: support\nversion: 1.0.0 # first\ndescription: Help desk\nagents: [triage, helper]\n";
        let cap = capability(&[
            ("capability.yaml", manifest),
            ("agents/triage.md", AGENT),
            ("agents/helper.md", helper),
            ("README.md", "docs"),
        ])
        .unwrap();
        let v = semver::Version::new(1, 0, 1);
        let new = cap
            .with_agent_instructions(
                &cap.name,
                &v,
                "triage",
                "  Route tickets fast.\n\nBe kind.\n",
            )
            .unwrap();
        assert_eq!(new.version, v);
        assert_eq!(
            new.agents[0].instructions,
            "Route tickets fast.\n\nBe kind."
        );
        assert_eq!(
            new.agents[0].tools,
            serde_json::json!(["search"]),
            "front matter kept"
        );
        assert_eq!(new.agents[1].instructions, "Help.");
        let text = |c: &Capability, p: &str| {
            String::from_utf8(c.bundle.get(p).unwrap().content.clone()).unwrap()
        };
        assert_eq!(
            text(&new, "capability.yaml"),
            "# the help desk\nschema: 1\nname: support\nversion: 1.0.1\ndescription: Help desk\nagents: [triage, helper]\n"
        );
        assert_eq!(
            text(&new, "agents/triage.md"),
            AGENT.replace("You route tickets.", "Route tickets fast.\n\nBe kind.")
        );
        assert_eq!(new.bundle.get("README.md"), cap.bundle.get("README.md"));
        assert_eq!(
            new.bundle.get("agents/helper.md"),
            cap.bundle.get("agents/helper.md")
        );
        // What is packed parses back to the same version.
        let again =
            Capability::parse(Bundle::from_tar_gz(&new.bundle.to_tar_gz()).unwrap()).unwrap();
        assert_eq!(again.sha256, new.sha256);
        assert_ne!(new.sha256, cap.sha256);
    }

    #[test]
    fn a_derived_version_keeps_the_byte_order_mark_and_crlf_line_endings_of_its_files() {
        let manifest = "\u{feff}schema: 1\r\nname: support\r\nversion: 1.0.0\r\n";
        let agent = "\u{feff}---\r\nname: triage\r\n---\r\n\r\nYou route tickets.\r\n";
        let cap =
            capability(&[("capability.yaml", manifest), ("agents/triage.md", agent)]).unwrap();
        let new = cap
            .with_agent_instructions(
                &cap.name,
                &semver::Version::new(1, 0, 1),
                "triage",
                "Route tickets fast.\n\nBe kind.",
            )
            .unwrap();
        let bytes = |p: &str| new.bundle.get(p).unwrap().content.clone();
        assert_eq!(
            bytes("agents/triage.md"),
            "\u{feff}---\r\nname: triage\r\n---\r\n\r\nRoute tickets fast.\r\n\r\nBe kind.\r\n"
                .as_bytes()
        );
        assert_eq!(
            bytes("capability.yaml"),
            "\u{feff}schema: 1\r\nname: support\r\nversion: 1.0.1\r\n".as_bytes()
        );
    }

    #[test]
    fn a_derived_version_may_take_another_name_even_from_a_flow_style_manifest() {
        let cap = capability(&[
            (
                "capability.yaml",
                "{name: support, version: 1.0.0, description: Help desk}\n",
            ),
            ("agents/triage.md", AGENT),
        ])
        .unwrap();
        let name = ArtifactName::parse("support-tuned").unwrap();
        let new = cap
            .with_agent_instructions(&name, &semver::Version::new(2, 0, 0), "triage", "Sort.")
            .unwrap();
        assert_eq!(new.name, name);
        assert_eq!(new.version.to_string(), "2.0.0");
        assert_eq!(new.description.as_deref(), Some("Help desk"));
        assert_eq!(new.agents[0].instructions, "Sort.");
        let err = cap
            .with_agent_instructions(&name, &semver::Version::new(2, 0, 0), "ghost", "Sort.")
            .unwrap_err();
        assert!(err.to_string().contains("no agent `ghost`"), "{err}");
        let empty =
            cap.with_agent_instructions(&name, &semver::Version::new(2, 0, 0), "triage", " \n");
        assert!(empty.is_err(), "an empty body is not a valid agent");
    }
}
