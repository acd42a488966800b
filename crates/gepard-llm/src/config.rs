//! Server configuration of named providers.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::LlmError;
use crate::http::{ProviderSettings, RetryPolicy};
use crate::{anthropic, openai};

/// Which API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI chat completions (OpenAI, vLLM, llama.cpp server, Ollama, LM Studio, gateways).
    Openai,
    /// Anthropic Messages.
    Anthropic,
}

impl ProviderKind {
    fn env_prefix(self) -> &'static str {
        match self {
            Self::Openai => "OPENAI",
            Self::Anthropic => "ANTHROPIC",
        }
    }

    fn default_base_url(self) -> &'static str {
        match self {
            Self::Openai => openai::DEFAULT_BASE_URL,
            Self::Anthropic => anthropic::DEFAULT_BASE_URL,
        }
    }
}

/// Named providers, as found in the server config, e.g. (YAML):
///
/// ```yaml
/// vllm:
///   kind: openai
///   base_url: http://gpu-box:8000/v1
///   max_concurrency: 16
/// corp-claude:
///   kind: anthropic
///   base_url: https://llm-gateway.corp/anthropic
///   api_key_env: CORP_ANTHROPIC_KEY
///   timeout_secs: 300
///   max_retries: 6
/// ```
///
/// The built-in `openai` and `anthropic` providers always exist (configured from
/// `OPENAI_BASE_URL` / `OPENAI_API_KEY` and `ANTHROPIC_BASE_URL` / `ANTHROPIC_API_KEY`); an entry
/// with one of those names replaces the built-in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProvidersConfig {
    /// Provider name → its configuration.
    pub providers: BTreeMap<String, ProviderConfig>,
}

/// One named provider.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The API it speaks.
    pub kind: ProviderKind,
    /// Base URL. Required for names other than `openai` / `anthropic`; for those it defaults to
    /// `{KIND}_BASE_URL` from the environment, then the public endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The key itself (prefer `api_key_env`). Never serialized back out.
    #[serde(default, skip_serializing)]
    pub api_key: Option<String>,
    /// Name of the environment variable holding the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Requests in flight at once for this provider (default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<usize>,
    /// Per-request timeout in seconds (default 120).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Retries after the first attempt (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// First backoff step in milliseconds (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_base_delay_ms: Option<u64>,
}

impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("api_key_env", &self.api_key_env)
            .field("max_concurrency", &self.max_concurrency)
            .field("timeout_secs", &self.timeout_secs)
            .field("max_retries", &self.max_retries)
            .field("retry_base_delay_ms", &self.retry_base_delay_ms)
            .finish()
    }
}

impl ProviderConfig {
    /// A config of this kind with everything else left to defaults.
    pub fn new(kind: ProviderKind) -> Self {
        Self {
            kind,
            base_url: None,
            api_key: None,
            api_key_env: None,
            max_concurrency: None,
            timeout_secs: None,
            max_retries: None,
            retry_base_delay_ms: None,
        }
    }

    /// Resolves this entry into concrete settings, reading the environment through `env`.
    /// Fails (with a message naming the provider and the missing piece) when the base URL or a
    /// required key is missing.
    pub fn settings(
        &self,
        name: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ProviderSettings, LlmError> {
        let builtin = name == "openai" || name == "anthropic";
        let prefix = self.kind.env_prefix();
        let non_empty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        let base_url = match non_empty(self.base_url.clone()) {
            Some(url) => url,
            None if builtin => non_empty(env(&format!("{prefix}_BASE_URL")))
                .unwrap_or_else(|| self.kind.default_base_url().to_owned()),
            None => {
                return Err(LlmError::Config {
                    provider: name.to_owned(),
                    message: "it has no base_url (only the built-in openai and anthropic \
                              providers have a default)"
                        .to_owned(),
                })
            }
        };
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(LlmError::Config {
                provider: name.to_owned(),
                message: format!("base_url `{base_url}` must start with http:// or https://"),
            });
        }
        let api_key = if let Some(key) = non_empty(self.api_key.clone()) {
            Some(key)
        } else if let Some(var) = &self.api_key_env {
            Some(non_empty(env(var)).ok_or_else(|| LlmError::Config {
                provider: name.to_owned(),
                message: format!("its API key variable {var} is not set"),
            })?)
        } else if builtin {
            non_empty(env(&format!("{prefix}_API_KEY")))
        } else {
            None
        };
        let base = base_url.trim_end_matches('/');
        let is_public_endpoint = base == self.kind.default_base_url()
            || (self.kind == ProviderKind::Anthropic && base == "https://api.anthropic.com/v1");
        if api_key.is_none() && is_public_endpoint {
            let hint = if builtin {
                format!("set {prefix}_API_KEY")
            } else {
                "set api_key_env in its config".to_owned()
            };
            return Err(LlmError::Config {
                provider: name.to_owned(),
                message: format!("it has no API key for {base_url}: {hint}"),
            });
        }
        let mut settings = ProviderSettings::new(name, base_url);
        settings.api_key = api_key;
        if let Some(n) = self.max_concurrency {
            settings.max_concurrency = n.max(1);
        }
        if let Some(secs) = self.timeout_secs {
            settings.timeout = Duration::from_secs(secs.max(1));
        }
        let mut retry = RetryPolicy::default();
        if let Some(n) = self.max_retries {
            retry.max_retries = n;
        }
        if let Some(ms) = self.retry_base_delay_ms {
            retry.base_delay = Duration::from_millis(ms);
        }
        settings.retry = retry;
        Ok(settings)
    }
}
