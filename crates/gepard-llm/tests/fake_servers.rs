//! Providers against fake servers started in-process on 127.0.0.1 (random ports).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use gepard_llm::{
    AnthropicProvider, ChatModel, ChatRequest, FinishReason, LlmError, Message, ModelRegistry,
    OpenAiProvider, ProviderConfig, ProviderKind, ProviderSettings, ProvidersConfig, RetryPolicy,
    ToolCall, ToolSpec,
};
use serde_json::{json, Value};

/// What a fake server saw: one entry per request (arrival time, headers, body).
#[derive(Clone, Default)]
struct Seen {
    requests: Arc<Mutex<Vec<(Instant, HeaderMap, Value)>>>,
}

impl Seen {
    fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
    fn body(&self, i: usize) -> Value {
        self.requests.lock().unwrap()[i].2.clone()
    }
    fn header(&self, i: usize, name: &str) -> Option<String> {
        self.requests.lock().unwrap()[i]
            .1
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }
    fn gap(&self, a: usize, b: usize) -> Duration {
        let r = self.requests.lock().unwrap();
        r[b].0.duration_since(r[a].0)
    }
}

type Reply = Arc<dyn Fn(usize, &Value) -> Response + Send + Sync>;

/// Starts a server answering `path` with `reply(attempt_index, body)`; returns its base URL.
async fn serve(path: &str, reply: Reply) -> (String, Seen) {
    let seen = Seen::default();
    let state = (seen.clone(), reply);
    let app =
        Router::new()
            .route(
                path,
                post(
                    |State((seen, reply)): State<(Seen, Reply)>,
                     headers: HeaderMap,
                     body: String| async move {
                        let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                        let index = {
                            let mut r = seen.requests.lock().unwrap();
                            r.push((Instant::now(), headers, json.clone()));
                            r.len() - 1
                        };
                        reply(index, &json)
                    },
                ),
            )
            .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

fn fast_settings(name: &str, base_url: &str) -> ProviderSettings {
    let mut s = ProviderSettings::new(name, base_url).with_api_key("sk-test-secret-1234");
    s.retry = RetryPolicy {
        max_retries: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(20),
        max_retry_after: Duration::from_secs(5),
    };
    s.timeout = Duration::from_secs(10);
    s
}

fn openai_ok(text: &str) -> Response {
    Json(json!({
        "id": "x", "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
    }))
    .into_response()
}

fn status(code: u16, body: Value) -> Response {
    (StatusCode::from_u16(code).unwrap(), Json(body)).into_response()
}

fn hello() -> ChatRequest {
    ChatRequest::new(vec![Message::system("Be brief."), Message::user("Hi")])
}

fn openai_model(settings: ProviderSettings) -> Arc<dyn ChatModel> {
    OpenAiProvider::new(settings).unwrap().model_arc("gpt-test")
}

trait ModelArc {
    fn model_arc(&self, name: &str) -> Arc<dyn ChatModel>;
}

impl ModelArc for OpenAiProvider {
    fn model_arc(&self, name: &str) -> Arc<dyn ChatModel> {
        Arc::new(self.chat_model(name))
    }
}

#[tokio::test]
async fn a_429_with_retry_after_is_retried_after_the_given_delay() {
    let (base, seen) = serve(
        "/v1/chat/completions",
        Arc::new(|i, _| {
            if i == 0 {
                let mut r = status(429, json!({"error": {"message": "slow down"}}));
                r.headers_mut().insert("retry-after", "1".parse().unwrap());
                r
            } else {
                openai_ok("hello")
            }
        }),
    )
    .await;
    let model = openai_model(fast_settings("openai", &format!("{base}/v1")));
    let answer = model.chat(&hello()).await.unwrap();
    assert_eq!(answer.content.as_deref(), Some("hello"));
    assert_eq!(seen.count(), 2, "the 429 is retried exactly once");
    // The backoff alone would be at most 20 ms: only Retry-After explains a 1 s gap.
    assert!(
        seen.gap(0, 1) >= Duration::from_millis(950),
        "second request came after {:?}",
        seen.gap(0, 1)
    );
}

#[tokio::test]
async fn server_errors_are_retried_until_the_call_succeeds() {
    let (base, seen) = serve(
        "/chat/completions",
        Arc::new(|i, _| match i {
            0 => status(500, json!({"error": {"message": "boom"}})),
            1 => status(503, json!({"error": {"message": "overloaded"}})),
            _ => openai_ok("third time lucky"),
        }),
    )
    .await;
    let model = openai_model(fast_settings("vllm", &base));
    let answer = model.chat(&hello()).await.unwrap();
    assert_eq!(answer.content.as_deref(), Some("third time lucky"));
    assert_eq!(seen.count(), 3);
}

#[tokio::test]
async fn server_errors_that_persist_end_in_a_server_error_naming_provider_url_and_status() {
    let (base, seen) = serve(
        "/chat/completions",
        Arc::new(|_, _| status(502, json!({"error": {"message": "bad gateway"}}))),
    )
    .await;
    let mut settings = fast_settings("vllm", &base);
    settings.retry.max_retries = 2;
    let err = openai_model(settings).chat(&hello()).await.unwrap_err();
    assert_eq!(seen.count(), 3, "first attempt plus two retries");
    assert!(
        matches!(
            err,
            LlmError::Server {
                status: 502,
                attempts: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_fatal_for_run());
    let msg = err.to_string();
    assert!(
        msg.contains("`vllm`") && msg.contains("502") && msg.contains(&base),
        "{msg}"
    );
    assert!(msg.contains("bad gateway"), "{msg}");
}

#[tokio::test]
async fn a_request_that_times_out_is_retried_then_reported_as_a_timeout() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&hits);
    let app = Router::new().route(
        "/chat/completions",
        post(move || {
            let h = Arc::clone(&h);
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                // Far longer than the client's timeout.
                tokio::time::sleep(Duration::from_secs(30)).await;
                openai_ok("too late")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut settings = fast_settings("slow", &base);
    settings.timeout = Duration::from_millis(150);
    settings.retry.max_retries = 1;
    let err = openai_model(settings).chat(&hello()).await.unwrap_err();
    assert!(
        matches!(err, LlmError::Timeout { attempts: 2, .. }),
        "{err:?}"
    );
    assert!(!err.is_fatal_for_run());
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "the timed-out call was retried once"
    );
    assert!(err.to_string().contains("150 ms"), "{err}");
}

#[tokio::test]
async fn a_refused_connection_is_unreachable_and_fatal_after_retries() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let base = format!("http://{addr}/v1");
    let mut settings = fast_settings("ollama", &base);
    settings.retry.max_retries = 2;
    let err = openai_model(settings).chat(&hello()).await.unwrap_err();
    assert!(
        matches!(err, LlmError::Unreachable { attempts: 3, .. }),
        "{err:?}"
    );
    assert!(err.is_fatal_for_run());
    let msg = err.to_string();
    assert!(msg.contains("`ollama`") && msg.contains(&base), "{msg}");
}

#[tokio::test]
async fn malformed_json_gives_a_bad_response_error_saying_what_was_wrong() {
    let (base, seen) = serve(
        "/chat/completions",
        Arc::new(|i, _| {
            if i == 0 {
                (StatusCode::OK, "{\"choices\": [oops").into_response()
            } else {
                Json(json!({"object": "chat.completion", "data": []})).into_response()
            }
        }),
    )
    .await;
    let model = openai_model(fast_settings("vllm", &base));
    let err = model.chat(&hello()).await.unwrap_err();
    assert!(matches!(err, LlmError::BadResponse { .. }), "{err:?}");
    assert!(err.to_string().contains("not valid JSON"), "{err}");
    assert!(err.to_string().contains("{\\\"choices\\\": [oops"), "{err}");
    let err = model.chat(&hello()).await.unwrap_err();
    assert!(err.to_string().contains("no `choices` array"), "{err}");
    assert_eq!(seen.count(), 2, "malformed answers are not retried");
}

#[tokio::test]
async fn a_401_is_not_retried_is_fatal_and_never_shows_the_key() {
    let (base, seen) = serve(
        "/chat/completions",
        Arc::new(|_, _| {
            status(
                401,
                json!({"error": {"message": "Incorrect API key provided: sk-test-secret-1234"}}),
            )
        }),
    )
    .await;
    let err = openai_model(fast_settings("openai", &base))
        .chat(&hello())
        .await
        .unwrap_err();
    assert_eq!(seen.count(), 1);
    assert!(matches!(err, LlmError::Auth { status: 401, .. }), "{err:?}");
    assert!(err.is_fatal_for_run());
    let msg = err.to_string();
    assert!(!msg.contains("sk-test-secret-1234"), "{msg}");
    assert!(msg.contains("[redacted]") && msg.contains("401"), "{msg}");
    assert!(!format!("{err:?}").contains("sk-test-secret-1234"));
}

#[tokio::test]
async fn a_404_or_a_model_not_found_message_is_fatal_and_not_retried() {
    let (base, seen) = serve(
        "/chat/completions",
        Arc::new(|i, _| {
            if i == 0 {
                status(
                    404,
                    json!({"error": "model \"qwen9\" not found, try pulling it first"}),
                )
            } else {
                status(
                    400,
                    json!({"object": "error", "message": "The model `qwen9` does not exist."}),
                )
            }
        }),
    )
    .await;
    let model = openai_model(fast_settings("ollama", &base));
    for _ in 0..2 {
        let err = model.chat(&hello()).await.unwrap_err();
        assert!(matches!(err, LlmError::ModelNotFound { .. }), "{err:?}");
        assert!(err.is_fatal_for_run());
        assert!(err.to_string().contains("gpt-test"), "{err}");
    }
    assert_eq!(seen.count(), 2);
}

#[tokio::test]
async fn a_400_is_an_invalid_request_that_fails_only_its_call_and_is_not_retried() {
    let (base, seen) = serve(
        "/chat/completions",
        Arc::new(|_, _| {
            status(
                400,
                json!({"error": {"message": "messages: field required"}}),
            )
        }),
    )
    .await;
    let err = openai_model(fast_settings("vllm", &base))
        .chat(&hello())
        .await
        .unwrap_err();
    assert_eq!(seen.count(), 1);
    assert!(
        matches!(err, LlmError::InvalidRequest { status: 400, .. }),
        "{err:?}"
    );
    // Usually about the one example (over the context length, a content filter): that
    // example scores 0 and the run goes on.
    assert!(!err.is_fatal_for_run());
    assert!(err.to_string().contains("messages: field required"));
}

/// A server that answers `status_line` with a body that promises 500 bytes, sends 20 and hangs
/// up; its base URL and how many requests it took.
async fn broken_body_server(status_line: &'static str) -> (String, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let mut buf = vec![0u8; 65536];
            let _ = socket.read(&mut buf).await;
            let head = format!(
                "HTTP/1.1 {status_line}\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n"
            );
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(b"{\"choices\": [{\"mess").await;
            let _ = socket.shutdown().await;
        }
    });
    (format!("http://{addr}/v1"), answered)
}

#[tokio::test]
async fn a_body_that_breaks_off_is_retried_and_then_a_bad_response_not_an_unreachable_server() {
    let (base, answered) = broken_body_server("200 OK").await;
    let mut settings = fast_settings("vllm", &base);
    settings.retry.max_retries = 1;
    let err = openai_model(settings).chat(&hello()).await.unwrap_err();
    assert!(
        matches!(err, LlmError::BadResponse { status: 200, .. }),
        "{err:?}"
    );
    assert!(!err.is_fatal_for_run());
    assert!(err.to_string().contains("broke off"), "{err}");
    assert_eq!(answered.load(Ordering::SeqCst), 2, "retried once");
}

#[tokio::test]
async fn an_error_status_whose_body_breaks_off_is_still_classified_by_its_status() {
    let (base, answered) = broken_body_server("401 Unauthorized").await;
    let mut settings = fast_settings("vllm", &base);
    settings.retry.max_retries = 2;
    let err = openai_model(settings).chat(&hello()).await.unwrap_err();
    assert!(matches!(err, LlmError::Auth { status: 401, .. }), "{err:?}");
    assert!(err.is_fatal_for_run());
    assert_eq!(answered.load(Ordering::SeqCst), 1, "not retried");
}

#[tokio::test]
async fn openai_tool_calls_are_parsed_and_tools_are_sent_with_dict_mapped_to_object_and_safe_names()
{
    let (base, seen) = serve(
        "/chat/completions",
        Arc::new(|_, _| {
            Json(json!({
                "choices": [{"message": {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_a", "type": "function",
                     "function": {"name": "maps_shortest_path", "arguments": "{\"start_location\": \"NYC\", \"mode\": \"walk\"}"}},
                    {"type": "function", "function": {"name": "broken", "arguments": "{not json"}}
                ]}, "finish_reason": "tool_calls"}],
                "system_fingerprint": "extra fields are fine"
            }))
            .into_response()
        }),
    )
    .await;
    let mut request = hello();
    request.tools = vec![ToolSpec {
        name: "maps.shortest_path".into(),
        description: "Find the shortest path.".into(),
        parameters: json!({"type": "dict", "properties": {
            "start_location": {"type": "string"},
            "opts": {"type": "dict", "properties": {}}
        }, "required": ["start_location"]}),
    }];
    request.temperature = Some(0.0);
    request.max_tokens = Some(64);
    request.stop = vec!["END".into()];
    let answer = openai_model(fast_settings("openai", &base))
        .chat(&request)
        .await
        .unwrap();
    assert_eq!(answer.content, None);
    assert_eq!(answer.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(
        answer.tool_calls[0],
        ToolCall {
            id: "call_a".into(),
            name: "maps.shortest_path".into(),
            arguments: json!({"start_location": "NYC", "mode": "walk"}),
        }
    );
    assert_eq!(
        answer.tool_calls[1].arguments,
        Value::String("{not json".into())
    );
    assert_eq!(
        answer.tool_calls[1].id, "call_1",
        "missing ids are generated"
    );
    assert_eq!(
        answer.usage.input_tokens + answer.usage.output_tokens,
        0,
        "no usage sent"
    );

    let body = seen.body(0);
    assert_eq!(body["model"], "gpt-test");
    assert_eq!(
        body["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(body["tools"][0]["type"], "function");
    assert_eq!(
        body["tools"][0]["function"]["name"], "maps_shortest_path",
        "dots are not allowed in tool names on the wire"
    );
    let params = &body["tools"][0]["function"]["parameters"];
    assert_eq!(params["type"], "object");
    assert_eq!(params["properties"]["opts"]["type"], "object");
    assert_eq!(body["max_tokens"], 64);
    assert_eq!(body["stop"], json!(["END"]));
    assert_eq!(
        seen.header(0, "authorization").as_deref(),
        Some("Bearer sk-test-secret-1234")
    );
}

#[tokio::test]
async fn an_assistant_tool_call_turn_is_sent_back_in_openai_shape() {
    let (base, seen) = serve("/chat/completions", Arc::new(|_, _| openai_ok("done"))).await;
    let request = ChatRequest::new(vec![
        Message::user("go"),
        Message::Assistant {
            content: None,
            tool_calls: vec![ToolCall {
                id: "c1".into(),
                name: "f".into(),
                arguments: json!({"x": 1}),
            }],
        },
        Message::tool_result("c1", "42"),
    ]);
    openai_model(fast_settings("openai", &base))
        .chat(&request)
        .await
        .unwrap();
    let body = seen.body(0);
    assert_eq!(body["messages"][1]["content"], Value::Null);
    assert_eq!(
        body["messages"][1]["tool_calls"][0]["function"]["arguments"],
        "{\"x\":1}"
    );
    assert_eq!(
        body["messages"][2],
        json!({"role": "tool", "tool_call_id": "c1", "content": "42"})
    );
}

#[tokio::test]
async fn an_anthropic_answer_with_text_and_tool_use_is_mapped_to_the_common_types() {
    let (base, seen) = serve(
        "/v1/messages",
        Arc::new(|_, _| {
            Json(json!({
                "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
                "content": [
                    {"type": "text", "text": "Let me look that up."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
                ],
                "stop_reason": "tool_use",
                "usage": {"input_tokens": 120, "output_tokens": 30}
            }))
            .into_response()
        }),
    )
    .await;
    let provider = AnthropicProvider::new(fast_settings("anthropic", &base)).unwrap();
    let model = provider.chat_model("claude-x");
    let request = ChatRequest {
        messages: vec![
            Message::system("You are terse."),
            Message::user("Weather in Paris?"),
            Message::Assistant {
                content: None,
                tool_calls: vec![ToolCall {
                    id: "toolu_0".into(),
                    name: "get_weather".into(),
                    arguments: json!({"city": "Paris"}),
                }],
            },
            Message::tool_result("toolu_0", "sunny"),
            Message::user("And now?"),
        ],
        tools: vec![ToolSpec {
            name: "get_weather".into(),
            description: "Weather".into(),
            parameters: json!({"type": "dict", "properties": {"city": {"type": "string"}}}),
        }],
        stop: vec!["STOP".into()],
        ..ChatRequest::default()
    };
    let answer = model.chat(&request).await.unwrap();
    assert_eq!(answer.content.as_deref(), Some("Let me look that up."));
    assert_eq!(answer.tool_calls.len(), 1);
    assert_eq!(answer.tool_calls[0].id, "toolu_1");
    assert_eq!(answer.tool_calls[0].arguments, json!({"city": "Paris"}));
    assert_eq!(answer.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(answer.usage.input_tokens, 120);
    assert_eq!(answer.usage.output_tokens, 30);

    assert_eq!(
        seen.header(0, "x-api-key").as_deref(),
        Some("sk-test-secret-1234")
    );
    assert_eq!(
        seen.header(0, "anthropic-version").as_deref(),
        Some("2023-06-01")
    );
    let body = seen.body(0);
    assert_eq!(body["system"], "You are terse.");
    assert_eq!(body["max_tokens"], 4096);
    assert_eq!(body["stop_sequences"], json!(["STOP"]));
    assert_eq!(body["tools"][0]["input_schema"]["type"], "object");
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(
        messages.len(),
        3,
        "tool result and next user text share one user turn"
    );
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[1]["content"][0]["type"], "tool_use");
    assert_eq!(messages[2]["role"], "user");
    assert_eq!(
        messages[2]["content"][0],
        json!({"type": "tool_result", "tool_use_id": "toolu_0", "content": "sunny"})
    );
    assert_eq!(messages[2]["content"][1]["text"], "And now?");
}

#[tokio::test]
async fn usage_is_counted_per_call_and_accumulated_across_models_of_the_registry() {
    let (base, _seen) = serve(
        "/v1/chat/completions",
        Arc::new(|i, _| {
            if i == 2 {
                status(401, json!({"error": {"message": "nope"}}))
            } else {
                openai_ok("ok")
            }
        }),
    )
    .await;
    let mut entry = ProviderConfig::new(ProviderKind::Openai);
    entry.base_url = Some(format!("{base}/v1"));
    entry.retry_base_delay_ms = Some(1);
    let config = ProvidersConfig {
        providers: [("vllm".to_owned(), entry)].into_iter().collect(),
    };
    let registry = ModelRegistry::from_config_with_env(&config, &|_| None);
    let a = registry.resolve("vllm/qwen2.5").unwrap();
    let b = registry.resolve("vllm/Qwen/Qwen2.5-7B").unwrap();
    assert_eq!(b.id(), "vllm/Qwen/Qwen2.5-7B");
    let first = a.chat(&hello()).await.unwrap();
    assert_eq!(first.usage.input_tokens, 11);
    b.chat(&hello()).await.unwrap();
    assert!(a.chat(&hello()).await.is_err());
    let usage = registry.usage().snapshot();
    assert_eq!(usage.model_calls, 2);
    assert_eq!(usage.failed_calls, 1);
    assert_eq!(usage.input_tokens, 22);
    assert_eq!(usage.output_tokens, 6);
}

#[tokio::test]
async fn the_concurrency_limit_is_shared_by_all_models_of_a_provider() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max_seen = Arc::new(AtomicUsize::new(0));
    let (f, m) = (Arc::clone(&in_flight), Arc::clone(&max_seen));
    let app = Router::new().route(
        "/chat/completions",
        post(move || {
            let (f, m) = (Arc::clone(&f), Arc::clone(&m));
            async move {
                let now = f.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(80)).await;
                f.fetch_sub(1, Ordering::SeqCst);
                openai_ok("ok")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut settings = fast_settings("vllm", &base);
    settings.max_concurrency = 2;
    let provider = OpenAiProvider::new(settings).unwrap();
    let models = [provider.model_arc("a"), provider.model_arc("b")];
    let calls = (0..8).map(|i| {
        let model = Arc::clone(&models[i % 2]);
        tokio::spawn(async move { model.chat(&hello()).await })
    });
    for call in calls.collect::<Vec<_>>() {
        call.await.unwrap().unwrap();
    }
    assert_eq!(
        max_seen.load(Ordering::SeqCst),
        2,
        "never more than 2 in flight, and 2 used"
    );
    assert_eq!(in_flight.load(Ordering::SeqCst), 0);
}
