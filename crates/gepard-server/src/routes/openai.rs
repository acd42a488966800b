//! An OpenAI-compatible face for the models this server runs in-process (`local/…`), so other
//! tools (including the reference GEPA) can be measured against the very same model:
//! `POST /v1/chat/completions` (non-streaming, text only) and `GET /v1/models`.
//!
//! Any valid gepard API key may call them (`Authorization: Bearer <key>`, as OpenAI clients
//! send it). Only in-process providers are offered: this is not a proxy for remote APIs.

use axum::extract::State;
use axum::Json;
use gepard_core::Scope;
use gepard_llm::{ChatRequest, Message};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::ApiJson;
use crate::AppState;

/// Providers served here.
const IN_PROCESS: &[&str] = &["local", "builtin"];

/// One message of an OpenAI request (text content only).
#[derive(Debug, Deserialize, ToSchema)]
pub struct OpenAiMessage {
    /// `system` (or `developer`), `user` or `assistant`.
    role: String,
    /// A string, or a list of content parts whose `text` parts are kept in order.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    content: Option<Value>,
}

/// The part of an OpenAI chat-completions request this route honours.
#[derive(Debug, Deserialize, ToSchema)]
pub struct OpenAiRequest {
    /// An in-process model: `local/smollm2-135m-instruct` (or just `smollm2-135m-instruct`)
    /// or `builtin/rules`.
    model: String,
    /// The conversation, at least one message.
    messages: Vec<OpenAiMessage>,
    /// Sampling temperature.
    #[serde(default)]
    temperature: Option<f32>,
    /// Most tokens to generate (`max_completion_tokens` wins when both are given).
    #[serde(default)]
    max_tokens: Option<u32>,
    /// Most tokens to generate.
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    /// A stop string or a list of them.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    stop: Option<Value>,
    /// Must be absent or `false`: answers are not streamed.
    #[serde(default)]
    stream: Option<bool>,
}

fn text(content: Option<&Value>) -> Result<String, ApiError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        // Content parts: keep the text ones, in order.
        Some(Value::Array(parts)) => Ok(parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("")),
        Some(_) => Err(ApiError::invalid(
            &["body", "messages", "content"],
            "must be a string or a list of text parts",
        )),
    }
}

fn model_id(model: &str) -> String {
    if model.contains('/') {
        model.to_owned()
    } else {
        format!("local/{model}")
    }
}

/// `POST /v1/chat/completions`.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "models", request_body = OpenAiRequest,
    responses(
        (status = 200, description = "An OpenAI `chat.completion` object: one choice, with token usage"),
        (status = 404, body = ErrorBody, description = "This server runs no in-process models"),
        (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "The local model is not available or could not answer"),
    ))]
pub async fn chat_completions(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<OpenAiRequest>,
) -> ApiResult<Json<Value>> {
    caller.require(Scope::Read)?;
    let registry = state
        .models
        .as_ref()
        .ok_or_else(|| ApiError::not_found("this server runs no in-process models"))?;
    if req.stream == Some(true) {
        return Err(ApiError::invalid(
            &["body", "stream"],
            "streaming is not supported; send stream: false",
        ));
    }
    let id = model_id(&req.model);
    if !IN_PROCESS.iter().any(|p| id.starts_with(&format!("{p}/"))) {
        return Err(ApiError::invalid(
            &["body", "model"],
            format!(
                "`{}` is not an in-process model (try local/smollm2-135m-instruct)",
                req.model
            ),
        ));
    }
    let model = registry
        .resolve(&id)
        .map_err(|e| ApiError::invalid(&["body", "model"], e.to_string()))?;
    let mut messages = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        let content = text(m.content.as_ref())?;
        messages.push(match m.role.as_str() {
            "system" | "developer" => Message::system(content),
            "user" => Message::user(content),
            "assistant" => Message::assistant(content),
            other => {
                return Err(ApiError::invalid(
                    &["body", "messages", "role"],
                    format!("role `{other}` is not supported here"),
                ))
            }
        });
    }
    if messages.is_empty() {
        return Err(ApiError::invalid(
            &["body", "messages"],
            "give at least one message",
        ));
    }
    let stop = match req.stop {
        None | Some(Value::Null) => vec![],
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(_) => {
            return Err(ApiError::invalid(
                &["body", "stop"],
                "must be a string or a list of strings",
            ))
        }
    };
    let mut request = ChatRequest::new(messages);
    request.temperature = req.temperature;
    request.max_tokens = req.max_completion_tokens.or(req.max_tokens);
    request.stop = stop;
    let response = model.chat(&request).await.map_err(|e| match e {
        // The model refused this request (e.g. a prompt longer than its context): the client's
        // to fix, and sending it again would fail again.
        gepard_llm::LlmError::InvalidRequest { message, .. } => {
            ApiError::invalid(&["body", "messages"], message)
        }
        // Not there at all (cannot be fetched or loaded): trying again will not help.
        gepard_llm::LlmError::Config { .. } => {
            tracing::warn!(error = %e, "in-process model unavailable");
            ApiError::unavailable("the local model is not available on this server")
        }
        other => {
            tracing::warn!(error = %other, "in-process model failed");
            ApiError::unavailable("the local model could not answer; try again")
        }
    })?;
    let finish = match response.finish_reason {
        Some(gepard_llm::FinishReason::Length) => "length",
        _ => "stop",
    };
    Ok(Json(json!({
        "id": format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        "object": "chat.completion",
        "created": chrono::Utc::now().timestamp(),
        "model": req.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": response.content.unwrap_or_default()}, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": response.usage.input_tokens,
            "completion_tokens": response.usage.output_tokens,
            "total_tokens": response.usage.input_tokens + response.usage.output_tokens,
        },
    })))
}

/// `GET /v1/models`: the in-process models this server can run.
#[utoipa::path(get, path = "/v1/models", tag = "models",
    responses((status = 200, description = "An OpenAI model list (`object: list`, `data: [{id, object, owned_by}]`)")))]
pub async fn models(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require(Scope::Read)?;
    let names = if state.models.is_some() {
        vec!["local/smollm2-135m-instruct", "builtin/rules"]
    } else {
        vec![]
    };
    let data: Vec<Value> = names
        .iter()
        .map(|id| json!({"id": id, "object": "model", "owned_by": "gepard"}))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}
