//! Resolving `provider/model` ids into chat models.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;

use crate::anthropic::AnthropicProvider;
use crate::config::{ProviderConfig, ProviderKind, ProvidersConfig};
use crate::error::LlmError;
use crate::openai::OpenAiProvider;
use crate::types::{ChatRequest, ChatResponse};
use crate::usage::UsageCounter;
use crate::{ChatModel, ProviderFactory};

/// A parsed model id: `provider/model`. The model part may itself contain slashes
/// (`vllm/Qwen/Qwen2.5-7B-Instruct`): the id is split at the first one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelId {
    /// The provider name (`openai`, `anthropic`, a configured name, `local`, …).
    pub provider: String,
    /// The provider-side model name.
    pub model: String,
}

impl ModelId {
    /// Parses `provider/model`. The provider is lowercase letters, digits, `-`, `_` or `.`; the
    /// model is not empty and has no whitespace.
    pub fn parse(id: &str) -> Result<Self, LlmError> {
        let invalid = |reason: &str| LlmError::InvalidModelId {
            id: id.to_owned(),
            reason: if reason.is_empty() {
                String::new()
            } else {
                format!("; {reason}")
            },
        };
        let Some((provider, model)) = id.split_once('/') else {
            return Err(invalid("there is no `/`"));
        };
        if provider.is_empty() {
            return Err(invalid("the provider part is empty"));
        }
        if model.trim().is_empty() {
            return Err(invalid("the model part is empty"));
        }
        if !provider.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || c == '.'
        }) {
            return Err(invalid(
                "the provider may only hold lowercase letters, digits, `-`, `_` and `.`",
            ));
        }
        if model.chars().any(char::is_whitespace) {
            return Err(invalid("the model part contains whitespace"));
        }
        Ok(Self {
            provider: provider.to_owned(),
            model: model.to_owned(),
        })
    }
}

impl FromStr for ModelId {
    type Err = LlmError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

/// Provider name → factory, plus the usage counter every resolved model reports to.
///
/// Cheap to share behind an `Arc`; [`ModelRegistry::register_provider`] takes `&self`, so another
/// crate can add an in-process provider (e.g. `local`) to a registry that is already shared.
pub struct ModelRegistry {
    providers: RwLock<BTreeMap<String, Arc<dyn ProviderFactory>>>,
    usage: Arc<UsageCounter>,
}

impl fmt::Debug for ModelRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelRegistry")
            .field("providers", &self.provider_names())
            .field("usage", &self.usage.snapshot())
            .finish()
    }
}

impl Default for ModelRegistry {
    fn default() -> Self {
        Self::empty()
    }
}

impl ModelRegistry {
    /// A registry with no providers at all.
    pub fn empty() -> Self {
        Self {
            providers: RwLock::new(BTreeMap::new()),
            usage: Arc::new(UsageCounter::new()),
        }
    }

    /// The built-in `openai` and `anthropic` providers, configured from the process environment.
    pub fn from_env() -> Self {
        Self::from_config(&ProvidersConfig::default())
    }

    /// The built-ins plus the configured providers, reading the process environment.
    pub fn from_config(config: &ProvidersConfig) -> Self {
        Self::from_config_with_env(config, &|name| std::env::var(name).ok())
    }

    /// Like [`ModelRegistry::from_config`], reading environment variables through `env` (for
    /// tests and sandboxes). A provider whose configuration cannot work (missing key variable,
    /// no base URL) is still listed: resolving one of its models returns the configuration error,
    /// so the server starts and a job naming it is refused with the reason.
    pub fn from_config_with_env(
        config: &ProvidersConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Self {
        let registry = Self::empty();
        let mut entries: BTreeMap<String, ProviderConfig> = BTreeMap::new();
        entries.insert("openai".into(), ProviderConfig::new(ProviderKind::Openai));
        entries.insert(
            "anthropic".into(),
            ProviderConfig::new(ProviderKind::Anthropic),
        );
        entries.extend(config.providers.clone());
        for (name, entry) in entries {
            let factory = build_factory(&name, &entry, env);
            registry.register_provider(&name, factory);
        }
        registry
    }

    /// Uses `counter` for every model resolved from now on (to share one tally with a caller).
    pub fn with_usage_counter(mut self, counter: Arc<UsageCounter>) -> Self {
        self.usage = counter;
        self
    }

    /// The counter every resolved model reports calls and tokens to.
    pub fn usage(&self) -> Arc<UsageCounter> {
        Arc::clone(&self.usage)
    }

    /// Adds (or replaces) the provider `name`: ids `name/…` resolve through `factory`.
    pub fn register_provider(&self, name: &str, factory: Arc<dyn ProviderFactory>) {
        self.providers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.to_owned(), factory);
    }

    /// The provider names, sorted.
    pub fn provider_names(&self) -> Vec<String> {
        self.providers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// Resolves `provider/model` into a model that counts its usage into [`Self::usage`].
    /// Errors: a malformed id, an unknown provider (the message lists the known ones), or the
    /// provider's configuration error.
    pub fn resolve(&self, id: &str) -> Result<Arc<dyn ChatModel>, LlmError> {
        let parsed = ModelId::parse(id)?;
        let factory = {
            let providers = self
                .providers
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match providers.get(&parsed.provider) {
                Some(f) => Arc::clone(f),
                None => {
                    let known: Vec<&str> = providers.keys().map(String::as_str).collect();
                    return Err(LlmError::UnknownProvider {
                        provider: parsed.provider.clone(),
                        id: id.to_owned(),
                        known: if known.is_empty() {
                            "(none)".to_owned()
                        } else {
                            known.join(", ")
                        },
                    });
                }
            }
        };
        let inner = factory.model(&parsed.model)?;
        Ok(Arc::new(CountingModel::new(inner, self.usage())))
    }
}

fn build_factory(
    name: &str,
    entry: &ProviderConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Arc<dyn ProviderFactory> {
    let built = entry.settings(name, env).and_then(|settings| {
        Ok(match entry.kind {
            ProviderKind::Openai => {
                Arc::new(OpenAiProvider::new(settings)?) as Arc<dyn ProviderFactory>
            }
            ProviderKind::Anthropic => Arc::new(AnthropicProvider::new(settings)?),
        })
    });
    built.unwrap_or_else(|error| Arc::new(MisconfiguredProvider { error }))
}

/// A provider whose configuration cannot work; every model request returns the reason.
struct MisconfiguredProvider {
    error: LlmError,
}

impl ProviderFactory for MisconfiguredProvider {
    fn model(&self, _name: &str) -> Result<Arc<dyn ChatModel>, LlmError> {
        Err(self.error.clone())
    }
}

/// Wraps a model so every call is tallied in a [`UsageCounter`].
pub struct CountingModel {
    inner: Arc<dyn ChatModel>,
    usage: Arc<UsageCounter>,
}

impl CountingModel {
    /// Counts `inner`'s calls into `usage`.
    pub fn new(inner: Arc<dyn ChatModel>, usage: Arc<UsageCounter>) -> Self {
        Self { inner, usage }
    }
}

#[async_trait]
impl ChatModel for CountingModel {
    fn id(&self) -> &str {
        self.inner.id()
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let result = self.inner.chat(request).await;
        match &result {
            Ok(response) => self.usage.record(response.usage),
            Err(_) => self.usage.record_failure(),
        }
        result
    }
}
