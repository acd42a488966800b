//! The in-process server the binary's end-to-end tests drive: the real router over a real
//! SQLite file, bootstrapped like a first start, served on a free 127.0.0.1 port, so a test
//! can run the real CLI against it and also reach the store (to play a worker or a runtime);
//! and a fake OpenAI-compatible chat model on 127.0.0.1 for runs that call a model. The
//! execution benches (`benches/exec_*.rs`) include this file too.

#![allow(dead_code)]

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::Json;

use gepard_agent::bundle::Bundle;
use gepard_client::Client;
use gepard_core::auth::ApiKeySecret;
use gepard_server::{router, AppState};
use gepard_store::testing::TestDatabase;
use gepard_store::{Backend, Bootstrap, LocalNotifier, Notifier, Store};
use serde_json::{json, Value};
use uuid::Uuid;

/// A running server and what tests need to reach it.
pub struct TestServer {
    /// Base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    /// The bootstrap admin key.
    pub key: String,
    /// The store behind the server.
    pub store: Store,
    /// The notifier the server's live events use.
    pub notifier: Arc<dyn Notifier>,
    /// Id of workspace `default`.
    pub ws: Uuid,
    /// Holds the database file (and whatever else a test puts there).
    pub dir: tempfile::TempDir,
    /// The PostgreSQL database, when on PostgreSQL (dropped with it).
    pub database: Option<TestDatabase>,
}

/// Starts a server on a fresh SQLite database.
pub async fn spawn_server() -> TestServer {
    spawn_server_on(Backend::Sqlite, "")
        .await
        .expect("SQLite is always available")
}

/// Starts a server on a fresh database of `backend`; `None` when the PostgreSQL variant of
/// `test` is skipped (`GEPARD_TEST_POSTGRES_URL` unset; see `gepard_store::testing`).
pub async fn spawn_server_on(backend: Backend, test: &str) -> Option<TestServer> {
    let dir = tempfile::tempdir().unwrap();
    let (store, database) = match backend {
        Backend::Sqlite => (
            Store::connect(&format!("sqlite://{}", dir.path().join("g.db").display()))
                .await
                .unwrap(),
            None,
        ),
        Backend::Postgres => {
            let database = TestDatabase::postgres(test).await?;
            (database.store().await, Some(database))
        }
    };
    let key = ApiKeySecret::generate();
    store
        .bootstrap(&Bootstrap::first_start(key.clone()))
        .await
        .unwrap();
    let notifier: Arc<dyn Notifier> = Arc::new(LocalNotifier::default());
    let app = router(AppState::with_notifier(store.clone(), notifier.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        gepard_server::serve(listener, app, std::future::pending())
            .await
            .unwrap();
    });
    let org = store.org_by_key("local").await.unwrap().unwrap();
    let ws = store
        .workspace_by_key(org.id, "default")
        .await
        .unwrap()
        .unwrap()
        .id;
    Some(TestServer {
        url,
        key: key.expose().to_owned(),
        store,
        notifier,
        ws,
        dir,
        database,
    })
}

impl TestServer {
    /// A client with the admin key.
    pub fn client(&self) -> Client {
        Client::new(&self.url, Some(self.key.clone()))
    }

    /// Publishes the example capability and the sentiment train / val datasets, and returns a
    /// new runner key (to report progress as a runtime would).
    pub async fn publish_examples(&self) -> String {
        let client = self.client();
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let cap = Bundle::from_dir(&examples.join("capabilities/sentiment"))
            .unwrap()
            .to_tar_gz();
        client.publish_capability("local", cap).await.unwrap();
        for ds in ["sentiment-train", "sentiment-val"] {
            let b = Bundle::from_dir(&examples.join("datasets").join(ds))
                .unwrap()
                .to_tar_gz();
            client.publish_dataset("local", b).await.unwrap();
        }
        client
            .create_key("local", "runtime", &["runner".into()], None)
            .await
            .unwrap()
            .key
    }
}

/// The real CLI binary aimed at `url` with `key`, inheriting no `GEPARD_*` setting of the
/// environment the tests run in.
pub fn cli(url: &str, key: &str, data_dir: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_gepard"));
    for (k, _) in std::env::vars() {
        if k.starts_with("GEPARD_") {
            c.env_remove(k);
        }
    }
    c.env("GEPARD_SERVER", url)
        .env("GEPARD_API_KEY", key)
        .env("GEPARD_DATA_DIR", data_dir);
    c
}

/// Runs a CLI command with `args` and stdin closed (so it is not a terminal), off the runtime.
pub async fn run_cli(mut cmd: std::process::Command, args: &[&str]) -> std::process::Output {
    cmd.args(args).stdin(std::process::Stdio::null());
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// How a fake model answers one chat call: `(system message, last user message)` to the reply.
pub type Answer = dyn Fn(&str, &str) -> String + Send + Sync;

/// A fake OpenAI-compatible chat model serving `POST /v1/chat/completions` on 127.0.0.1.
#[derive(Clone)]
pub struct FakeModel {
    /// Base URL, `http://127.0.0.1:PORT/v1` (what `OPENAI_BASE_URL` takes).
    pub url: String,
    /// Chat calls received, counted on arrival (before the delay), so a caller can tell that a
    /// call is in flight.
    pub calls: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct FakeState {
    delay: Duration,
    answer: Arc<Answer>,
    calls: Arc<AtomicUsize>,
}

async fn fake_chat(State(fake): State<FakeState>, Json(req): Json<Value>) -> Json<Value> {
    fake.calls.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(fake.delay).await;
    let messages = req["messages"].as_array().cloned().unwrap_or_default();
    let content_of = |role: &str| {
        messages
            .iter()
            .rev()
            .find(|m| m["role"] == role)
            .and_then(|m| m["content"].as_str())
            .unwrap_or("")
            .to_owned()
    };
    let content = (fake.answer)(&content_of("system"), &content_of("user"));
    Json(json!({
        "id": "x", "object": "chat.completion", "model": req["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
    }))
}

/// Starts a fake model: every call waits `delay`, then answers `answer(system, user)`.
pub async fn fake_model(
    delay: Duration,
    answer: impl Fn(&str, &str) -> String + Send + Sync + 'static,
) -> FakeModel {
    let state = FakeState {
        delay,
        answer: Arc::new(answer),
        calls: Arc::new(AtomicUsize::new(0)),
    };
    let calls = Arc::clone(&state.calls);
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(fake_chat))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    FakeModel { url, calls }
}

/// The current instruction of a GEPA reflection prompt (its first fenced block), or `None`
/// when `user` is a task call.
pub fn reflection_of(user: &str) -> Option<&str> {
    if user.contains("```") && user.contains("feedback") {
        Some(user.split("```").nth(1).unwrap_or("").trim())
    } else {
        None
    }
}
