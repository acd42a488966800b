//! OpenAI-compatible chat completions (`POST {base}/chat/completions`): OpenAI, vLLM,
//! llama.cpp server, Ollama, LM Studio, gateways.

use serde_json::{json, Map, Value};

use crate::http::ProviderSettings;
use crate::provider::{short, HttpModel, HttpProvider, Wire};
use crate::schema::normalize_schema;
use crate::types::{ChatRequest, ChatResponse, FinishReason, Message, ToolCall, Usage};

/// Default base URL when neither config nor `OPENAI_BASE_URL` gives one.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// The OpenAI chat-completions wire format.
pub struct OpenAi;

impl Wire for OpenAi {
    fn path(_settings: &ProviderSettings) -> &'static str {
        "chat/completions"
    }

    fn headers(settings: &ProviderSettings) -> Vec<(&'static str, String)> {
        settings
            .api_key
            .iter()
            .map(|key| ("authorization", format!("Bearer {key}")))
            .collect()
    }

    fn request_body(request: &ChatRequest, model: &str) -> Value {
        request_body(request, model)
    }

    fn parse_response(value: &Value) -> Result<ChatResponse, String> {
        parse_response(value)
    }
}

/// An OpenAI-compatible endpoint (`settings.base_url` should end in `/v1` for most servers);
/// hands out models that share its client, retries and concurrency limit.
pub type OpenAiProvider = HttpProvider<OpenAi>;

/// One model at an OpenAI-compatible endpoint.
pub type OpenAiModel = HttpModel<OpenAi>;

/// The JSON body of a chat-completions request.
pub fn request_body(request: &ChatRequest, model: &str) -> Value {
    let messages: Vec<Value> = request.messages.iter().map(message_json).collect();
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("messages".into(), Value::Array(messages));
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|t| {
                json!({
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": normalize_schema(&t.parameters),
                    }
                })
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(t) = request.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(m) = request.max_tokens {
        body.insert("max_tokens".into(), json!(m));
    }
    if !request.stop.is_empty() {
        body.insert("stop".into(), json!(request.stop));
    }
    Value::Object(body)
}

fn message_json(message: &Message) -> Value {
    match message {
        Message::System { content } => json!({"role": "system", "content": content}),
        Message::User { content } => json!({"role": "user", "content": content}),
        Message::Assistant {
            content,
            tool_calls,
        } => {
            let mut m = Map::new();
            m.insert("role".into(), json!("assistant"));
            m.insert("content".into(), json!(content));
            if !tool_calls.is_empty() {
                let calls: Vec<Value> = tool_calls
                    .iter()
                    .map(|c| {
                        let arguments = match &c.arguments {
                            Value::String(raw) => raw.clone(),
                            other => other.to_string(),
                        };
                        json!({
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": arguments},
                        })
                    })
                    .collect();
                m.insert("tool_calls".into(), Value::Array(calls));
            }
            Value::Object(m)
        }
        Message::Tool {
            tool_call_id,
            name,
            content,
        } => {
            let mut m = json!({"role": "tool", "tool_call_id": tool_call_id, "content": content});
            if let Some(name) = name {
                m["name"] = json!(name);
            }
            m
        }
    }
}

/// Reads a chat-completions answer. Tolerates a missing `usage`, `content: null` next to tool
/// calls, arguments given as an object instead of a string, missing tool-call ids, and extra
/// fields. The error says what was wrong.
pub fn parse_response(value: &Value) -> Result<ChatResponse, String> {
    let choices = value
        .get("choices")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("no `choices` array in {}", short(value)))?;
    let choice = choices
        .first()
        .ok_or_else(|| "`choices` is empty".to_owned())?;
    let message = choice
        .get("message")
        .filter(|m| m.is_object())
        .ok_or_else(|| format!("`choices[0].message` is missing in {}", short(value)))?;
    let mut content = match message.get("content") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        // Some servers send content parts: [{"type":"text","text":"…"}].
        Some(Value::Array(parts)) => Some(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<String>(),
        ),
        Some(other) => {
            return Err(format!(
                "`choices[0].message.content` should be a string or null, got {}",
                short(other)
            ))
        }
    };
    let mut tool_calls = Vec::new();
    if let Some(calls) = message.get("tool_calls").filter(|c| !c.is_null()) {
        let calls = calls
            .as_array()
            .ok_or_else(|| "`choices[0].message.tool_calls` should be an array".to_owned())?;
        for (i, call) in calls.iter().enumerate() {
            let function = call
                .get("function")
                .ok_or_else(|| format!("tool call {i} has no `function`"))?;
            let name = function
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("tool call {i} has no `function.name`"))?;
            let arguments = match function.get("arguments") {
                None | Some(Value::Null) => json!({}),
                Some(Value::String(raw)) => parse_arguments(raw),
                Some(other) => other.clone(),
            };
            let id = call
                .get("id")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map_or_else(|| format!("call_{i}"), str::to_owned);
            tool_calls.push(ToolCall {
                id,
                name: name.to_owned(),
                arguments,
            });
        }
    }
    if !tool_calls.is_empty() && content.as_deref().is_some_and(|c| c.trim().is_empty()) {
        content = None;
    }
    let usage = value
        .get("usage")
        .map(|u| Usage {
            input_tokens: u.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0),
            output_tokens: u
                .get("completion_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(0),
        })
        .unwrap_or_default();
    let finish_reason = choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .map(|s| FinishReason::from(s.to_owned()));
    Ok(ChatResponse {
        content,
        tool_calls,
        usage,
        finish_reason,
    })
}

/// Tool-call arguments arrive as a JSON string: parse it, keeping the raw text as a string when
/// it is not valid JSON. An empty string means no arguments.
pub fn parse_arguments(raw: &str) -> Value {
    if raw.trim().is_empty() {
        return json!({});
    }
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
}
