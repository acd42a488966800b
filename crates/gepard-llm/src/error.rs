//! Errors of model calls, classified so a caller can tell what is fatal for a whole run.

/// Why a model call (or resolving a model id) failed.
///
/// Messages are whole sentences naming the provider, the URL and the HTTP status; they never
/// contain the API key (provider messages are scrubbed of it before they are stored here).
#[derive(Debug, Clone, thiserror::Error)]
pub enum LlmError {
    /// 401 / 403: the key is missing, wrong or not allowed to use this model.
    #[error("provider `{provider}` rejected the credentials (HTTP {status}) at {url}: {message}")]
    Auth {
        /// Provider name (e.g. `openai`, `vllm`).
        provider: String,
        /// The URL called.
        url: String,
        /// HTTP status.
        status: u16,
        /// What the provider said.
        message: String,
    },
    /// 404, or a provider message saying the model does not exist.
    #[error("provider `{provider}` does not know model `{model}` (HTTP {status}) at {url}: {message} (check the model name, and that the base URL is right, e.g. ends in /v1 for OpenAI-compatible servers)")]
    ModelNotFound {
        /// Provider name.
        provider: String,
        /// Provider-side model name.
        model: String,
        /// The URL called.
        url: String,
        /// HTTP status.
        status: u16,
        /// What the provider said.
        message: String,
    },
    /// The server could not be reached at all (connection refused, DNS failure, TLS failure),
    /// after all retries.
    #[error(
        "provider `{provider}` is unreachable at {url} after {attempts} attempt(s): {message}"
    )]
    Unreachable {
        /// Provider name.
        provider: String,
        /// The URL called.
        url: String,
        /// How many attempts were made.
        attempts: u32,
        /// The underlying error.
        message: String,
    },
    /// 429 on every attempt.
    #[error("provider `{provider}` kept rate-limiting requests (HTTP 429) at {url} after {attempts} attempt(s): {message}")]
    RateLimited {
        /// Provider name.
        provider: String,
        /// The URL called.
        url: String,
        /// How many attempts were made.
        attempts: u32,
        /// What the provider said.
        message: String,
    },
    /// 5xx (or another unexpected status) on every attempt.
    #[error("provider `{provider}` failed with HTTP {status} at {url} after {attempts} attempt(s): {message}")]
    Server {
        /// Provider name.
        provider: String,
        /// The URL called.
        url: String,
        /// HTTP status of the last attempt.
        status: u16,
        /// How many attempts were made.
        attempts: u32,
        /// What the provider said.
        message: String,
    },
    /// No answer within the request timeout, on every attempt.
    #[error("provider `{provider}` did not answer within {timeout_ms} ms at {url} after {attempts} attempt(s)")]
    Timeout {
        /// Provider name.
        provider: String,
        /// The URL called.
        url: String,
        /// How many attempts were made.
        attempts: u32,
        /// The per-request timeout, in milliseconds.
        timeout_ms: u64,
    },
    /// A success status with a body that is not what the API promises.
    #[error("provider `{provider}` sent a response that could not be understood (HTTP {status}) at {url}: {detail}")]
    BadResponse {
        /// Provider name.
        provider: String,
        /// The URL called.
        url: String,
        /// HTTP status.
        status: u16,
        /// What was wrong.
        detail: String,
    },
    /// 400 / 422 (other than "model not found"): the request itself is wrong.
    #[error(
        "provider `{provider}` rejected the request as invalid (HTTP {status}) at {url}: {message}"
    )]
    InvalidRequest {
        /// Provider name.
        provider: String,
        /// The URL called.
        url: String,
        /// HTTP status.
        status: u16,
        /// What the provider said.
        message: String,
    },
    /// A model id that is not `provider/model`.
    #[error("invalid model id `{id}`: model id must look like provider/model (e.g. openai/gpt-4o-mini){reason}")]
    InvalidModelId {
        /// The id as given.
        id: String,
        /// Extra detail (starts with "; " when not empty).
        reason: String,
    },
    /// A model id whose provider is not configured.
    #[error("unknown provider `{provider}` in model id `{id}`; known providers: {known}")]
    UnknownProvider {
        /// The provider part of the id.
        provider: String,
        /// The id as given.
        id: String,
        /// The configured provider names, comma-separated.
        known: String,
    },
    /// The provider configuration cannot work (e.g. its API key variable is not set).
    #[error("provider `{provider}` is misconfigured: {message}")]
    Config {
        /// Provider name.
        provider: String,
        /// What is wrong.
        message: String,
    },
}

impl LlmError {
    /// True when retrying other examples of the same run cannot succeed either, so the run should
    /// fail fast with this message instead of burning its budget: bad credentials, unknown model,
    /// unreachable server, bad model id or provider configuration.
    ///
    /// Rate limits, timeouts, server errors, malformed responses and invalid requests are
    /// per-call problems: the call scores 0 and the run goes on. An invalid request is usually
    /// about the one example (a prompt over the context length, a content filter); a request
    /// that every example gets refused shows as every call failing, which callers catch by
    /// counting failures in a row.
    pub fn is_fatal_for_run(&self) -> bool {
        matches!(
            self,
            Self::Auth { .. }
                | Self::ModelNotFound { .. }
                | Self::Unreachable { .. }
                | Self::InvalidModelId { .. }
                | Self::UnknownProvider { .. }
                | Self::Config { .. }
        )
    }

    /// The HTTP status behind this error, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Auth { status, .. }
            | Self::ModelNotFound { status, .. }
            | Self::Server { status, .. }
            | Self::BadResponse { status, .. }
            | Self::InvalidRequest { status, .. } => Some(*status),
            Self::RateLimited { .. } => Some(429),
            _ => None,
        }
    }
}
