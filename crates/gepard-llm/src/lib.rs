//! Chat models for gepard: one provider-neutral [`ChatModel`] trait, an OpenAI-compatible
//! provider (OpenAI, vLLM, llama.cpp server, Ollama, …), an Anthropic provider, named providers
//! from server config, and a [`ModelRegistry`] that turns `provider/model` ids into models.
//!
//! Every HTTP call has a timeout, retries 429 / 5xx / connection errors / timeouts with
//! exponential backoff and full jitter (honouring `Retry-After`), is bounded by a per-provider
//! concurrency limit, and reports its tokens to a shared [`UsageCounter`]. Errors are classified
//! ([`LlmError::is_fatal_for_run`]) so a run can fail fast on bad credentials or a wrong model.
//!
//! ```no_run
//! # async fn demo() -> Result<(), gepard_llm::LlmError> {
//! use gepard_llm::{ChatRequest, Message, ModelRegistry};
//! let registry = ModelRegistry::from_env();
//! let model = registry.resolve("openai/gpt-4o-mini")?;
//! let answer = model
//!     .chat(&ChatRequest::new(vec![Message::system("Be brief."), Message::user("Hi")]))
//!     .await?;
//! println!("{:?} ({:?})", answer.content, registry.usage().snapshot());
//! # Ok(()) }
//! ```

use std::sync::Arc;

use async_trait::async_trait;

pub mod anthropic;
pub mod config;
pub mod error;
pub mod http;
pub mod openai;
pub mod provider;
pub mod registry;
pub mod schema;
pub mod types;
pub mod usage;

pub use anthropic::{Anthropic, AnthropicModel, AnthropicProvider};
pub use config::{ProviderConfig, ProviderKind, ProvidersConfig};
pub use error::LlmError;
pub use http::{ProviderSettings, RetryPolicy};
pub use openai::{OpenAi, OpenAiModel, OpenAiProvider};
pub use provider::{HttpModel, HttpProvider, Wire};
pub use registry::{CountingModel, ModelId, ModelRegistry};
pub use schema::normalize_schema;
pub use types::{ChatRequest, ChatResponse, FinishReason, Message, ToolCall, ToolSpec, Usage};
pub use usage::{UsageCounter, UsageSnapshot};

/// A chat model: takes a conversation (and tools), returns text and/or tool calls.
#[async_trait]
pub trait ChatModel: Send + Sync {
    /// The full id, `provider/model`.
    fn id(&self) -> &str;

    /// One completion. Implementations retry transient failures themselves; an error returned
    /// here is final for this call.
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError>;
}

/// Makes models of one provider. Register one with [`ModelRegistry::register_provider`] to add a
/// provider (e.g. an in-process `local` one) without touching this crate.
pub trait ProviderFactory: Send + Sync {
    /// The model `name` (the part after `provider/`). May fail, e.g. for an unknown local model.
    fn model(&self, name: &str) -> Result<Arc<dyn ChatModel>, LlmError>;
}
