//! A real router over a real SQLite file (or, with `spawn_on`, a fresh PostgreSQL database),
//! bootstrapped like a first start, driven in-process.

#![allow(dead_code)]

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use gepard_agent::bundle::{Bundle, BundleFile};
use gepard_core::auth::ApiKeySecret;
use gepard_server::{router, AppState};
use gepard_store::testing::TestDatabase;
use gepard_store::{Backend, Bootstrap, Store};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

pub struct TestApp {
    pub router: axum::Router,
    pub store: Store,
    pub admin_key: String,
    /// The notifier the router's watchers listen to.
    pub notifier: std::sync::Arc<dyn gepard_store::Notifier>,
    /// The database, when this app owns it (`spawn_on`); `on` borrows the caller's.
    _database: Option<TestDatabase>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
    pub raw: Vec<u8>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_on(Backend::Sqlite, "")
            .await
            .expect("SQLite is always available")
    }

    /// An app on a fresh database of `backend`; `None` when the PostgreSQL variant of `test`
    /// is skipped (`GEPARD_TEST_POSTGRES_URL` unset; see `gepard_store::testing`).
    pub async fn spawn_on(backend: Backend, test: &str) -> Option<Self> {
        let database = TestDatabase::new(backend, test).await?;
        let mut app = Self::on(&database).await;
        app._database = Some(database);
        Some(app)
    }

    /// An app on `db` (which must outlive it), bootstrapped like a first start.
    pub async fn on(db: &TestDatabase) -> Self {
        let store = db.store().await;
        let key = ApiKeySecret::generate();
        store
            .bootstrap(&Bootstrap::first_start(key.clone()))
            .await
            .unwrap();
        let mut state = AppState::new(store.clone());
        // Quick, so that a test of a revoked key's open stream does not wait seconds.
        state.key_recheck = std::time::Duration::from_millis(100);
        Self {
            notifier: state.notifier.clone(),
            router: router(state),
            store,
            admin_key: key.expose().to_owned(),
            _database: None,
        }
    }

    pub async fn send(&self, req: Request<Body>) -> Reply {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let raw = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        assert_ne!(
            status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "a client request produced a 500: {body}"
        );
        if !status.is_success() {
            assert_eq!(
                body["code"],
                status.as_u16(),
                "error responses use the envelope: {body}"
            );
            assert!(
                body["detail"].is_string(),
                "error responses carry a detail: {body}"
            );
        }
        Reply {
            status,
            headers,
            body,
            raw,
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        json: Option<Value>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(key) = key {
            req = req.header("x-api-key", key);
        }
        let body = match json {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.send(req.body(body).unwrap()).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, Some(&self.admin_key.clone()), None)
            .await
    }

    pub async fn get_as(&self, key: &str, path: &str) -> Reply {
        self.call(Method::GET, path, Some(key), None).await
    }

    pub async fn post(&self, path: &str, json: Value) -> Reply {
        self.call(
            Method::POST,
            path,
            Some(&self.admin_key.clone()),
            Some(json),
        )
        .await
    }

    pub async fn upload_as(&self, key: &str, path: &str, bytes: Vec<u8>) -> Reply {
        let req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("x-api-key", key)
            .header("content-type", "application/gzip")
            .body(Body::from(bytes))
            .unwrap();
        self.send(req).await
    }

    pub async fn upload(&self, path: &str, bytes: Vec<u8>) -> Reply {
        self.upload_as(&self.admin_key.clone(), path, bytes).await
    }

    /// Creates a key through the API and returns its secret.
    pub async fn key(&self, scopes: &[&str], workspace: Option<&str>) -> String {
        let r = self
            .post(
                "/api/v1/org/local/keys",
                serde_json::json!({"name": "test", "scopes": scopes, "workspace": workspace}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body["key"].as_str().unwrap().to_owned()
    }
}

pub fn tar(files: &[(&str, &str)]) -> Vec<u8> {
    Bundle::from_files(
        files
            .iter()
            .map(|(p, t)| BundleFile::new(*p, t.as_bytes().to_vec()))
            .collect(),
    )
    .to_tar_gz()
}

pub fn capability_tar(version: &str, instructions: &str) -> Vec<u8> {
    tar(&[
        (
            "capability.yaml",
            &format!(
                "schema: 1\nname: sentiment\nversion: {version}\ndescription: Sentiment agent\n"
            ),
        ),
        (
            "agents/classifier.md",
            &format!("---\nname: classifier\ndescription: Labels text\n---\n{instructions}\n"),
        ),
    ])
}

pub fn dataset_tar(name: &str, version: &str, rows: usize) -> Vec<u8> {
    let body: String = (0..rows)
        .map(|i| format!("{{\"goal\": \"text {i}\", \"expected_output\": \"positive\"}}\n"))
        .collect();
    tar(&[
        (
            "dataset.yaml",
            &format!("name: {name}\nversion: {version}\n"),
        ),
        ("rows.jsonl", &body),
    ])
}

/// The job routes of workspace `default`.
pub const JOBS: &str = "/api/v1/org/local/ws/default/optimization/jobs";

/// An app with capability sentiment@1.0.0 (agent classifier: "Classify."), datasets
/// train@1.0.0 (12 rows) and val@1.0.0 (8 rows).
pub async fn app_with_registry() -> TestApp {
    app_with_registry_on(Backend::Sqlite, "")
        .await
        .expect("SQLite is always available")
}

/// [`app_with_registry`] on `backend`; `None` when the PostgreSQL variant of `test` is skipped.
pub async fn app_with_registry_on(backend: Backend, test: &str) -> Option<TestApp> {
    Some(with_registry(TestApp::spawn_on(backend, test).await?).await)
}

/// [`app_with_registry`] on `db` (which must outlive the app).
pub async fn app_with_registry_in(db: &TestDatabase) -> TestApp {
    with_registry(TestApp::on(db).await).await
}

/// Publishes [`app_with_registry`]'s capability and datasets into `app`.
async fn with_registry(app: TestApp) -> TestApp {
    assert_eq!(
        app.upload(
            "/api/v1/org/local/capabilities",
            capability_tar("1.0.0", "Classify.")
        )
        .await
        .status,
        StatusCode::CREATED
    );
    assert_eq!(
        app.upload(
            "/api/v1/org/local/datasets",
            dataset_tar("train", "1.0.0", 12)
        )
        .await
        .status,
        StatusCode::CREATED
    );
    assert_eq!(
        app.upload("/api/v1/org/local/datasets", dataset_tar("val", "1.0.0", 8))
            .await
            .status,
        StatusCode::CREATED
    );
    app
}

/// A valid create body over [`app_with_registry`]'s registry.
pub fn body() -> Value {
    json!({
        "name": "first", "backend": "gepa", "target_kind": "capability_agent", "model": "openai/gpt-4o-mini",
        "project": null, "run_ref": null, "capability_ref": {"name": "sentiment", "version": "1.0.0"},
        "agent_name": null, "dataset_ref": {"name": "local/train", "version": "1.0.0"},
        "val_dataset_ref": {"name": "val", "version": "1.0.0"},
        "reward_recipe": {"name": "exact_match_v1", "params": {}}, "components": ["instructions"],
        "objective": null, "tags": ["t1"], "config": {"seed": 0, "max_metric_calls": 100, "concurrency": 1, "max_trials": null}
    })
}

/// Submits a job and returns it, asserting it was created.
pub async fn submit(app: &TestApp, b: Value) -> Value {
    let r = app.post(JOBS, b).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body
}

/// Runs each test body on both databases, through `gepard_store::conformance_tests!`:
/// `sqlite::NAME` on a fresh SQLite file and `postgres::NAME` on a fresh PostgreSQL database
/// (printed as skipped without `GEPARD_TEST_POSTGRES_URL`). `$make(&TestDatabase)` builds the
/// app bound to `$app`, e.g. [`TestApp::on`] or [`app_with_registry_in`].
#[allow(unused_macros)]
macro_rules! on_both_databases {
    ($make:path; $( $(#[$meta:meta])* async fn $name:ident($app:ident) $body:block )*) => {
        gepard_store::conformance_tests! {
            $(
                $(#[$meta])*
                async fn $name(db) {
                    let $app = $make(db).await;
                    $body
                }
            )*
        }
    };
}
