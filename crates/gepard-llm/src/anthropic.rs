//! Anthropic Messages API (`POST {base}/v1/messages`).

use serde_json::{json, Map, Value};

use crate::http::ProviderSettings;
use crate::provider::{short, HttpModel, HttpProvider, Wire};
use crate::schema::normalize_schema;
use crate::types::{ChatRequest, ChatResponse, FinishReason, Message, ToolCall, Usage};

/// Default base URL when neither config nor `ANTHROPIC_BASE_URL` gives one.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// The API version sent as `anthropic-version`.
pub const API_VERSION: &str = "2023-06-01";
/// `max_tokens` is required by the Messages API; this is sent when the request has none. A
/// reflection answer restates the whole instruction text, which 1,024 tokens cut short for
/// long instructions (and a cut-off proposal is discarded); 4,096 is the most every current
/// Claude model can give.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// The Anthropic Messages wire format.
pub struct Anthropic;

impl Wire for Anthropic {
    fn path(settings: &ProviderSettings) -> &'static str {
        // A base that already ends in `/v1` (some gateways are configured so) works too.
        if settings.base_url.trim_end_matches('/').ends_with("/v1") {
            "messages"
        } else {
            "v1/messages"
        }
    }

    fn headers(settings: &ProviderSettings) -> Vec<(&'static str, String)> {
        let mut headers = vec![("anthropic-version", API_VERSION.to_owned())];
        if let Some(key) = &settings.api_key {
            headers.push(("x-api-key", key.clone()));
        }
        headers
    }

    fn request_body(request: &ChatRequest, model: &str) -> Value {
        request_body(request, model)
    }

    fn parse_response(value: &Value) -> Result<ChatResponse, String> {
        parse_response(value)
    }
}

/// An Anthropic endpoint (e.g. `https://api.anthropic.com`; a base that already ends in `/v1`
/// works too); hands out models that share its client, retries and concurrency limit.
pub type AnthropicProvider = HttpProvider<Anthropic>;

/// One Anthropic model.
pub type AnthropicModel = HttpModel<Anthropic>;

/// The JSON body of a Messages request: system messages joined into the top-level `system`,
/// tool results sent as `tool_result` blocks in a user turn, consecutive turns of the same role
/// merged (the API wants them alternating).
pub fn request_body(request: &ChatRequest, model: &str) -> Value {
    let mut system: Vec<&str> = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    let mut push = |role: &'static str, blocks: Vec<Value>| match turns.last_mut() {
        Some((last, existing)) if *last == role => existing.extend(blocks),
        _ => turns.push((role, blocks)),
    };
    for message in &request.messages {
        match message {
            Message::System { content } => system.push(content),
            Message::User { content } => {
                push("user", vec![json!({"type": "text", "text": content})]);
            }
            Message::Assistant {
                content,
                tool_calls,
            } => {
                let mut blocks = Vec::new();
                if let Some(text) = content.as_deref().filter(|t| !t.is_empty()) {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for call in tool_calls {
                    let input = match &call.arguments {
                        Value::Object(_) => call.arguments.clone(),
                        other => json!({ "value": other }),
                    };
                    blocks.push(json!({
                        "type": "tool_use", "id": call.id, "name": call.name, "input": input,
                    }));
                }
                push("assistant", blocks);
            }
            Message::Tool {
                tool_call_id,
                content,
                ..
            } => push(
                "user",
                vec![
                    json!({"type": "tool_result", "tool_use_id": tool_call_id, "content": content}),
                ],
            ),
        }
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert(
        "max_tokens".into(),
        json!(request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
    );
    if !system.is_empty() {
        body.insert("system".into(), json!(system.join("\n\n")));
    }
    body.insert("messages".into(), Value::Array(messages));
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "description": t.description,
                    "input_schema": normalize_schema(&t.parameters),
                })
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(t) = request.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if !request.stop.is_empty() {
        body.insert("stop_sequences".into(), json!(request.stop));
    }
    Value::Object(body)
}

/// Reads a Messages answer: text blocks joined, `tool_use` blocks as tool calls.
pub fn parse_response(value: &Value) -> Result<ChatResponse, String> {
    let blocks = value
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("no `content` array in {}", short(value)))?;
    let mut text = String::new();
    let mut has_text = false;
    let mut tool_calls = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                let t = block
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("content block {i} is text without a `text` string"))?;
                text.push_str(t);
                has_text = true;
            }
            Some("tool_use") => {
                let name = block
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("tool_use block {i} has no `name`"))?;
                let id = block
                    .get("id")
                    .and_then(Value::as_str)
                    .map_or_else(|| format!("call_{i}"), str::to_owned);
                let arguments = block.get("input").cloned().unwrap_or_else(|| json!({}));
                tool_calls.push(ToolCall {
                    id,
                    name: name.to_owned(),
                    arguments,
                });
            }
            // thinking, redacted_thinking, server tool blocks…: not part of the answer.
            _ => {}
        }
    }
    let usage = value
        .get("usage")
        .map(|u| Usage {
            input_tokens: u.get("input_tokens").and_then(Value::as_u64).unwrap_or(0),
            output_tokens: u.get("output_tokens").and_then(Value::as_u64).unwrap_or(0),
        })
        .unwrap_or_default();
    let finish_reason = value
        .get("stop_reason")
        .and_then(Value::as_str)
        .map(|s| FinishReason::from(s.to_owned()));
    Ok(ChatResponse {
        content: has_text.then_some(text),
        tool_calls,
        usage,
        finish_reason,
    })
}
