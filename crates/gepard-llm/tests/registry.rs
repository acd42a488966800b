//! Model ids, provider configuration and the registry's extension point.

use std::sync::Arc;

use async_trait::async_trait;
use gepard_llm::{
    ChatModel, ChatRequest, ChatResponse, LlmError, Message, ModelId, ModelRegistry,
    ProviderFactory, ProvidersConfig, Usage,
};

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn an_id_without_a_slash_is_rejected_with_the_expected_shape() {
    let registry = ModelRegistry::from_config_with_env(&ProvidersConfig::default(), &no_env);
    let err = registry.resolve("gpt-4o-mini").err().unwrap();
    assert!(matches!(err, LlmError::InvalidModelId { .. }));
    assert!(err.is_fatal_for_run());
    assert!(
        err.to_string()
            .contains("model id must look like provider/model"),
        "{err}"
    );
    for bad in ["/gpt", "openai/", "OpenAI/gpt-4o", "openai/gpt 4o"] {
        let err = ModelId::parse(bad).unwrap_err();
        assert!(err.to_string().contains("provider/model"), "{bad}: {err}");
    }
}

#[test]
fn the_model_part_may_contain_slashes() {
    let id = ModelId::parse("vllm/Qwen/Qwen2.5-7B-Instruct").unwrap();
    assert_eq!(id.provider, "vllm");
    assert_eq!(id.model, "Qwen/Qwen2.5-7B-Instruct");
    assert_eq!(id.to_string(), "vllm/Qwen/Qwen2.5-7B-Instruct");
}

#[test]
fn an_unknown_provider_error_names_the_known_ones() {
    let registry = ModelRegistry::from_config_with_env(&ProvidersConfig::default(), &no_env);
    let err = registry.resolve("mistral/large").err().unwrap();
    assert!(matches!(err, LlmError::UnknownProvider { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("`mistral`") && msg.contains("anthropic, openai"),
        "{msg}"
    );
}

#[test]
fn providers_config_deserializes_and_named_providers_resolve() {
    let config: ProvidersConfig = serde_json::from_value(serde_json::json!({
        "vllm": {"kind": "openai", "base_url": "http://gpu:8000/v1", "max_concurrency": 16},
        "corp": {"kind": "anthropic", "base_url": "https://gw.corp/anthropic",
                 "api_key_env": "CORP_KEY", "timeout_secs": 300, "max_retries": 6}
    }))
    .unwrap();
    let env = |name: &str| (name == "CORP_KEY").then(|| "k-corp-123456".to_owned());
    let registry = ModelRegistry::from_config_with_env(&config, &env);
    assert_eq!(
        registry.provider_names(),
        vec!["anthropic", "corp", "openai", "vllm"]
    );
    assert_eq!(
        registry.resolve("vllm/qwen2.5").unwrap().id(),
        "vllm/qwen2.5"
    );
    assert_eq!(
        registry.resolve("corp/claude-x").unwrap().id(),
        "corp/claude-x"
    );
    // Unknown fields are refused rather than silently ignored.
    let bad = serde_json::from_value::<ProvidersConfig>(serde_json::json!({
        "x": {"kind": "openai", "base_url": "http://a", "api_key_envv": "K"}
    }));
    assert!(bad.is_err());
}

#[test]
fn misconfigured_providers_fail_at_resolve_with_the_reason() {
    let config: ProvidersConfig = serde_json::from_value(serde_json::json!({
        "nourl": {"kind": "openai"},
        "nokey": {"kind": "anthropic", "base_url": "https://gw", "api_key_env": "MISSING_KEY"}
    }))
    .unwrap();
    let registry = ModelRegistry::from_config_with_env(&config, &no_env);
    let err = registry.resolve("nourl/m").err().unwrap();
    assert!(err.to_string().contains("no base_url"), "{err}");
    let err = registry.resolve("nokey/m").err().unwrap();
    assert!(err.to_string().contains("MISSING_KEY"), "{err}");
    // Built-ins at the public endpoints need their key variable.
    let err = registry.resolve("openai/gpt-4o-mini").err().unwrap();
    assert!(err.to_string().contains("OPENAI_API_KEY"), "{err}");
    assert!(err.is_fatal_for_run());
    let err = registry
        .resolve("anthropic/claude-3-5-haiku-latest")
        .err()
        .unwrap();
    assert!(err.to_string().contains("ANTHROPIC_API_KEY"), "{err}");
}

#[test]
fn builtins_read_their_base_url_and_key_from_the_environment() {
    let env = |name: &str| match name {
        "OPENAI_BASE_URL" => Some("http://localhost:11434/v1".to_owned()),
        "ANTHROPIC_API_KEY" => Some("sk-ant-1234567".to_owned()),
        _ => None,
    };
    let registry = ModelRegistry::from_config_with_env(&ProvidersConfig::default(), &env);
    // A local OpenAI-compatible server needs no key.
    assert!(registry.resolve("openai/llama3").is_ok());
    assert!(registry
        .resolve("anthropic/claude-3-5-haiku-latest")
        .is_ok());
}

#[test]
fn provider_config_debug_output_hides_the_key() {
    let config: ProvidersConfig = serde_json::from_value(serde_json::json!({
        "x": {"kind": "openai", "base_url": "http://a", "api_key": "sk-very-secret"}
    }))
    .unwrap();
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("sk-very-secret") && shown.contains("[redacted]"),
        "{shown}"
    );
    let serialized = serde_json::to_string(&config).unwrap();
    assert!(!serialized.contains("sk-very-secret"), "{serialized}");
}

struct Echo(String);

#[async_trait]
impl ChatModel for Echo {
    fn id(&self) -> &str {
        &self.0
    }
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let last = match request.messages.last() {
            Some(Message::User { content }) => content.clone(),
            _ => String::new(),
        };
        Ok(ChatResponse {
            content: Some(last),
            tool_calls: vec![],
            usage: Usage {
                input_tokens: 5,
                output_tokens: 1,
            },
            finish_reason: None,
        })
    }
}

struct LocalFactory;

impl ProviderFactory for LocalFactory {
    fn model(&self, name: &str) -> Result<Arc<dyn ChatModel>, LlmError> {
        if name == "tiny" {
            Ok(Arc::new(Echo(format!("local/{name}"))))
        } else {
            Err(LlmError::Config {
                provider: "local".into(),
                message: format!("model `{name}` is not pulled"),
            })
        }
    }
}

#[tokio::test]
async fn another_crate_can_register_an_in_process_provider() {
    let registry = Arc::new(ModelRegistry::from_config_with_env(
        &ProvidersConfig::default(),
        &no_env,
    ));
    assert!(registry.resolve("local/tiny").is_err());
    registry.register_provider("local", Arc::new(LocalFactory));
    let model = registry.resolve("local/tiny").unwrap();
    let answer = model
        .chat(&ChatRequest::new(vec![Message::user("ping")]))
        .await
        .unwrap();
    assert_eq!(answer.content.as_deref(), Some("ping"));
    assert_eq!(registry.usage().snapshot().model_calls, 1);
    assert_eq!(registry.usage().snapshot().input_tokens, 5);
    let err = registry.resolve("local/big").err().unwrap();
    assert!(err.to_string().contains("not pulled"));
}

/// An operator learns from the README which variables configure the built-in providers; a
/// variable the code reads but the README never names is a setting nobody finds.
#[test]
fn the_readme_names_every_environment_variable_the_built_in_providers_read() {
    let read = std::sync::Mutex::new(std::collections::BTreeSet::new());
    let recording = |name: &str| {
        read.lock().unwrap().insert(name.to_owned());
        None
    };
    let registry = ModelRegistry::from_config_with_env(&ProvidersConfig::default(), &recording);
    for id in ["openai/m", "anthropic/m"] {
        let _ = registry.resolve(id);
    }
    let read = read.into_inner().unwrap();
    for var in [
        "OPENAI_BASE_URL",
        "OPENAI_API_KEY",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_API_KEY",
    ] {
        assert!(read.contains(var), "{var} is no longer read: {read:?}");
    }
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    for var in &read {
        assert!(
            readme.contains(var.as_str()),
            "README.md never mentions {var}"
        );
    }
}
