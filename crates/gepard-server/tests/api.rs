//! Pins the HTTP contract of the foundation over the real router on SQLite and PostgreSQL:
//! authentication and scoping (401 / 404 / 403), tenancy lookups, the capability and dataset
//! registries, and one test per class of bad input, each answered with the error envelope
//! and never with a 500.

#[macro_use]
mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{capability_tar, dataset_tar, tar, TestApp};
use serde_json::{json, Value};

#[tokio::test]
async fn the_committed_openapi_document_matches_the_code() {
    let app = TestApp::spawn().await;
    let served = app
        .call(Method::GET, "/openapi.json", None, None)
        .await
        .body;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let pretty = serde_json::to_string_pretty(&served).unwrap() + "\n";
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(path, &pretty).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == pretty,
        "docs/openapi.json is out of date: run `UPDATE_OPENAPI=1 cargo test -p gepard-server --test api` and commit it"
    );
    for route in [
        "/api/v1/org/{org}/capabilities",
        "/api/v1/org/{org}/datasets/{name}/{version}/rows",
        "/api/v1/user",
        "/v1/chat/completions",
        "/v1/models",
    ] {
        assert!(served["paths"][route].is_object(), "{route} is documented");
    }
    // Every path parameter is in its path template, and query parameters are declared as such
    // (a query parameter declared `in: path` makes the document invalid for generators).
    let mut queries = 0;
    for (route, item) in served["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for param in op["parameters"].as_array().into_iter().flatten() {
                let name = param["name"].as_str().unwrap();
                match param["in"].as_str().unwrap() {
                    "path" => assert!(
                        route.contains(&format!("{{{name}}}")),
                        "{method} {route}: path parameter `{name}` is not in the template"
                    ),
                    "query" => queries += 1,
                    "header" => assert!(
                        ["Idempotency-Key", "Last-Event-ID", "Prefer"].contains(&name),
                        "{method} {route}: header `{name}`"
                    ),
                    other => panic!("{method} {route}: `{name}` is in {other}"),
                }
            }
            // Every answer a route can give is declared: a key's absence, a missing scope,
            // another organization, a malformed parameter or body. The operations routes
            // need no key; the OpenAI-compatible ones (`/v1/…`) take one as a Bearer token.
            let responses = op["responses"].as_object().unwrap();
            if route.starts_with("/api/v1/") || route.starts_with("/v1/") {
                assert!(responses.contains_key("401"), "{method} {route}: 401");
                if route.contains("{org}") {
                    for status in ["403", "404", "422"] {
                        assert!(responses.contains_key(status), "{method} {route}: {status}");
                    }
                }
                if op["requestBody"]["content"]["application/json"].is_object() {
                    assert!(responses.contains_key("400"), "{method} {route}: 400");
                }
            } else {
                assert_eq!(op["security"], json!([]), "{method} {route} needs no key");
            }
            if let Some(gzip) = op["requestBody"]["content"]["application/gzip"].as_object() {
                assert_eq!(
                    gzip["schema"],
                    json!({"type": "string", "format": "binary"})
                );
            }
        }
    }
    let promote =
        &served["paths"]["/api/v1/org/{org}/ws/{ws}/optimization/jobs/{id}/promote"]["post"];
    assert_eq!(
        promote["requestBody"]["required"], false,
        "an empty body takes the defaults"
    );
    assert!(
        queries >= 10,
        "the list, logs, rows and audit queries are documented"
    );
    let list = &served["paths"]["/api/v1/org/{org}/ws/{ws}/optimization/jobs"]["get"];
    let page = list["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "page")
        .unwrap();
    assert_eq!(page["in"], "query");
    assert!(
        page["schema"]["type"].to_string().contains("integer"),
        "{page}"
    );
}

/// A scripted in-process model, standing in for `local/…` behind the registry.
struct Echo;

#[async_trait::async_trait]
impl gepard_llm::ChatModel for Echo {
    fn id(&self) -> &str {
        "local/echo"
    }
    async fn chat(
        &self,
        req: &gepard_llm::ChatRequest,
    ) -> Result<gepard_llm::ChatResponse, gepard_llm::LlmError> {
        let last = match req.messages.last() {
            Some(gepard_llm::Message::User { content }) => content.clone(),
            _ => String::new(),
        };
        // Scripted failures: a request the model refuses, and one it fails on inside.
        let failure = |status: u16, message: &str| (status, message.to_owned());
        let failed = match last.as_str() {
            "too long" => Some(failure(
                400,
                "the prompt has 4121 tokens but the context holds 2048",
            )),
            "crash" => Some(failure(
                500,
                "tensor shape mismatch in /opt/secret/model.gguf",
            )),
            _ => None,
        };
        if last == "unavailable" {
            return Err(gepard_llm::LlmError::Config {
                provider: "local".into(),
                message: "cannot load /opt/secret/model.gguf".into(),
            });
        }
        if let Some((status, message)) = failed {
            let (provider, url) = ("local".to_owned(), "in-process".to_owned());
            return Err(if status == 400 {
                gepard_llm::LlmError::InvalidRequest {
                    provider,
                    url,
                    status,
                    message,
                }
            } else {
                gepard_llm::LlmError::Server {
                    provider,
                    url,
                    status,
                    attempts: 1,
                    message,
                }
            });
        }
        Ok(gepard_llm::ChatResponse {
            content: Some(format!("echo: {last} (max {:?})", req.max_tokens)),
            tool_calls: vec![],
            usage: gepard_llm::Usage {
                input_tokens: 7,
                output_tokens: 3,
            },
            finish_reason: Some(gepard_llm::FinishReason::Stop),
        })
    }
}

struct EchoFactory;

impl gepard_llm::ProviderFactory for EchoFactory {
    fn model(
        &self,
        _name: &str,
    ) -> Result<std::sync::Arc<dyn gepard_llm::ChatModel>, gepard_llm::LlmError> {
        Ok(std::sync::Arc::new(Echo))
    }
}

#[tokio::test]
async fn in_process_models_answer_on_the_openai_compatible_route() {
    let mut app = TestApp::spawn().await;
    let registry = gepard_llm::ModelRegistry::from_config_with_env(&Default::default(), &|_| None);
    registry.register_provider("local", std::sync::Arc::new(EchoFactory));
    let mut state = gepard_server::AppState::new(app.store.clone());
    state.models = Some(std::sync::Arc::new(registry));
    app.router = gepard_server::router(state);
    let body = json!({"model": "smollm2-135m-instruct", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}], "max_tokens": 5});
    let r = app.post("/v1/chat/completions", body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["object"], "chat.completion");
    assert_eq!(r.body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        r.body["choices"][0]["message"]["content"],
        "echo: hi (max Some(5))"
    );
    assert_eq!(r.body["usage"]["total_tokens"], 10);
    // A request the model refuses is the client's to fix: 422 with the model's reason.
    let ask = |content: &str| json!({"model": "local/smollm2-135m-instruct", "messages": [{"role": "user", "content": content}]});
    let refused = app.post("/v1/chat/completions", ask("too long")).await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.body
    );
    assert_eq!(
        refused.body["errors"][0]["loc"],
        json!(["body", "messages"])
    );
    assert!(
        refused.body["errors"][0]["msg"]
            .as_str()
            .unwrap()
            .contains("4121 tokens"),
        "{}",
        refused.body
    );
    // A failure inside the model, and a model that cannot be loaded (not worth trying
    // again), are 503s that say which and nothing of the internals.
    for (content, detail) in [
        ("crash", "the local model could not answer; try again"),
        (
            "unavailable",
            "the local model is not available on this server",
        ),
    ] {
        let failed = app.post("/v1/chat/completions", ask(content)).await;
        assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE, "{content}");
        assert_eq!(failed.body["detail"], detail);
        assert!(
            !failed.body.to_string().contains("secret"),
            "{}",
            failed.body
        );
    }
    let remote = app
        .post(
            "/v1/chat/completions",
            json!({"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(
        remote.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "not a proxy for remote models"
    );
    let models = app.get("/v1/models").await;
    assert_eq!(models.body["data"][0]["id"], "local/smollm2-135m-instruct");
    assert_eq!(
        app.call(Method::GET, "/v1/models", None, None).await.status,
        StatusCode::UNAUTHORIZED
    );
}

on_both_databases! {
    TestApp::on;

    async fn requests_without_a_key_or_with_an_unknown_key_are_401(app) {
        let r = app.call(Method::GET, "/api/v1/org/local", None, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.body["type"], "unauthorized");
        assert_eq!(r.headers["www-authenticate"], "Bearer");
        let r = app
            .get_as(
                "gpd_0000000000000000000000000000000000000000",
                "/api/v1/org/local",
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        let req = Request::get("/api/v1/org/local")
            .header("authorization", "Basic abc")
            .body(Body::empty())
            .unwrap();
        assert_eq!(app.send(req).await.status, StatusCode::UNAUTHORIZED);
    }

    async fn bearer_and_x_api_key_headers_both_authenticate(app) {
        let req = Request::get("/api/v1/user")
            .header("authorization", format!("Bearer {}", app.admin_key))
            .body(Body::empty())
            .unwrap();
        let r = app.send(req).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body["username"], "admin");
        assert_eq!(app.get("/api/v1/user").await.body["username"], "admin");
        // The scheme name is case-insensitive.
        let req = Request::get("/api/v1/user")
            .header("authorization", format!("BEARER {}", app.admin_key))
            .body(Body::empty())
            .unwrap();
        assert_eq!(app.send(req).await.status, StatusCode::OK);
    }

    async fn unreadable_query_strings_and_paths_answer_with_the_envelope(app) {
        let preview = format!(
            "/api/v1/org/local/ws/default/optimization/jobs/{}/promotion-preview",
            uuid::Uuid::new_v4()
        );
        // An unknown parameter is ignored, as everywhere; a wrong value of a known one is not.
        let unknown = app.get(&format!("{preview}?foo=1")).await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.body);
        let malformed = app.get("/api/v1/org/local/capabilities?page=x").await;
        assert_eq!(malformed.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", malformed.body);
        assert_eq!(malformed.body["errors"][0]["loc"], json!(["query", "page"]));
        let huge = app.get("/api/v1/org/local/capabilities?page=4294967296").await;
        assert_eq!(huge.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", huge.body);
        assert_eq!(
            huge.body["errors"][0]["msg"],
            "must be a whole number from 1 to 4294967295, got `4294967296`"
        );
        // The range named is the parameter's own, not its integer type's.
        let rows = app.get("/api/v1/org/local/datasets/train/1.0.0/rows?limit=99999999999999999999").await;
        assert_eq!(rows.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", rows.body);
        assert_eq!(
            rows.body["errors"][0]["msg"],
            "must be a whole number from 1 to 1000, got `99999999999999999999`"
        );
        let twice = app.get("/api/v1/org/local/capabilities?page=1&page=2").await;
        assert_eq!(twice.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", twice.body);
        assert_eq!(twice.body["errors"][0]["loc"], json!(["query", "page"]));
        assert_eq!(twice.body["errors"][0]["msg"], "is given more than once");
        let bad_path = app.get("/api/v1/org/local/capabilities/%FF/1.0.0").await;
        assert_eq!(bad_path.status, StatusCode::BAD_REQUEST, "{}", bad_path.body);
        assert_eq!(bad_path.body["code"], 400);
        assert!(
            bad_path.body["detail"].as_str().unwrap().starts_with("the URL path cannot be read"),
            "{}",
            bad_path.body
        );
    }

    async fn first_start_tenancy_is_visible_through_the_api(app) {
        let org = app.get("/api/v1/org/local").await;
        assert_eq!(org.status, StatusCode::OK);
        assert_eq!(org.body["key"], "local");
        assert_eq!(org.body["is_active"], true);
        assert!(
            org.body["effective_max_sandbox_runtime_seconds"]
                .as_i64()
                .unwrap()
                > 0
        );
        let ws = app.get("/api/v1/org/local/ws").await;
        assert_eq!(ws.body.as_array().unwrap().len(), 1);
        assert_eq!(ws.body[0]["key"], "default");
        assert_eq!(ws.body[0]["is_default"], true);
        assert_eq!(ws.body[0]["project_count"], 1);
        let projects = app.get("/api/v1/org/local/ws/default/projects").await;
        assert_eq!(projects.body[0]["key"], "default");
        assert_eq!(projects.body[0]["is_default"], true);
        let id = projects.body[0]["id"].as_str().unwrap().to_owned();
        let by_id = app
            .get(&format!("/api/v1/org/local/ws/default/projects/{id}"))
            .await;
        assert_eq!(by_id.body["key"], "default");
        assert_eq!(by_id.body["runtime_count"], 0);
    }

    async fn unknown_orgs_workspaces_and_projects_are_404(app) {
        assert_eq!(
            app.get("/api/v1/org/acme").await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            app.get("/api/v1/org/local/ws/nope").await.status,
            StatusCode::NOT_FOUND
        );
        let r = app.get("/api/v1/org/local/ws/default/projects/nope").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert!(r.body["detail"].as_str().unwrap().contains("nope"));
        assert_eq!(
            app.get("/api/v1/no/such/route").await.status,
            StatusCode::NOT_FOUND
        );
    }

    async fn projects_can_be_created_once_per_key(app) {
        let r = app
            .post(
                "/api/v1/org/local/ws/default/projects",
                json!({"key": "research", "name": "Research"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
        assert_eq!(r.body["is_default"], false);
        let again = app
            .post(
                "/api/v1/org/local/ws/default/projects",
                json!({"key": "research"}),
            )
            .await;
        assert_eq!(again.status, StatusCode::CONFLICT);
        assert!(again.body["detail"].as_str().unwrap().contains("research"));
        let bad = app
            .post(
                "/api/v1/org/local/ws/default/projects",
                json!({"key": "Bad Key"}),
            )
            .await;
        assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(bad.body["errors"][0]["loc"], json!(["body", "key"]));
    }

    async fn a_workspace_key_gets_404_on_another_workspace_and_sees_only_its_own(app) {
        let r = app
            .post("/api/v1/org/local/ws", json!({"key": "team-b"}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let key_a = app.key(&["read", "write"], Some("default")).await;
        let r = app.get_as(&key_a, "/api/v1/org/local/ws/team-b").await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "no existence leak across workspaces"
        );
        assert_eq!(
            app.get_as(&key_a, "/api/v1/org/local/ws/team-b/projects")
                .await
                .status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            app.get_as(&key_a, "/api/v1/org/local/ws/default")
                .await
                .status,
            StatusCode::OK
        );
        let listed = app.get_as(&key_a, "/api/v1/org/local/ws").await;
        let keys: Vec<_> = listed
            .body
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, ["default"]);
        // The admin key is org-wide and sees both.
        assert_eq!(
            app.get("/api/v1/org/local/ws")
                .await
                .body
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    async fn missing_scopes_are_403_after_visibility_is_settled(app) {
        let reader = app.key(&["read"], None).await;
        let r = app
            .upload_as(
                &reader,
                "/api/v1/org/local/capabilities",
                capability_tar("1.0.0", "Classify."),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert!(r.body["detail"].as_str().unwrap().contains("write"));
        assert_eq!(
            app.get_as(&reader, "/api/v1/org/local/keys").await.status,
            StatusCode::FORBIDDEN
        );
        // Another org is 404 for any key, whatever its scopes.
        assert_eq!(
            app.get_as(&reader, "/api/v1/org/acme/keys").await.status,
            StatusCode::NOT_FOUND
        );
        // The caller can learn what its own key may do (the page greys out actions with it).
        let me = app.get_as(&reader, "/api/v1/user").await;
        assert_eq!(me.status, StatusCode::OK);
        assert_eq!(me.body["username"], "admin");
        assert_eq!(me.body["api_key"]["scopes"], json!(["read"]));
        assert_eq!(me.body["allowed"], json!(["read"]));
        let admin_me = app.get("/api/v1/user").await;
        assert_eq!(
            admin_me.body["allowed"],
            json!(["read", "write", "promote", "admin"]),
            "admin implies every scope but the runner's"
        );
        assert_eq!(me.body["api_key"]["org"], "local");
        assert!(
            !me.raw.windows(reader.len()).any(|w| w == reader.as_bytes()),
            "the key's secret is never echoed"
        );
        let runner = app.key(&["runner"], None).await;
        assert_eq!(
            app.get_as(&runner, "/api/v1/org/local/capabilities")
                .await
                .status,
            StatusCode::FORBIDDEN
        );
    }

    async fn access_is_settled_before_the_body_or_query_is_judged(app) {
        // 401, then 404, then 403, then what is wrong with the request: a caller without
        // access learns nothing from how its body would have been judged.
        let reader = app.key(&["read"], None).await;
        let runner = app.key(&["runner"], None).await;
        let bad = json!({"key": 1, "bogus": true});
        let missing_job = "/api/v1/org/local/ws/default/optimization/jobs/00000000-0000-0000-0000-000000000000";
        let progress = format!("{missing_job}/progress");
        let cases: Vec<(Option<&str>, &str, Option<Value>, StatusCode)> = vec![
            (Some(&reader), "/api/v1/org/local/ws/default/projects", Some(bad.clone()), StatusCode::FORBIDDEN),
            (Some(&reader), "/api/v1/org/local/ws", Some(bad.clone()), StatusCode::FORBIDDEN),
            (Some(&reader), "/api/v1/org/local/keys", Some(bad.clone()), StatusCode::FORBIDDEN),
            (None, "/api/v1/org/acme/ws/default/projects", Some(bad.clone()), StatusCode::NOT_FOUND),
            (None, "/api/v1/org/acme/ws", Some(bad.clone()), StatusCode::NOT_FOUND),
            (None, "/api/v1/org/acme/keys", Some(bad.clone()), StatusCode::NOT_FOUND),
            (Some(&runner), &progress, Some(bad.clone()), StatusCode::NOT_FOUND),
            (Some(&reader), &progress, Some(bad.clone()), StatusCode::FORBIDDEN),
        ];
        for (key, path, body, expected) in cases {
            let key = key.map_or_else(|| app.admin_key.clone(), str::to_owned);
            let r = app.call(Method::POST, path, Some(&key), body).await;
            assert_eq!(r.status, expected, "POST {path}: {}", r.body);
        }
        let r = app.get(&format!("{missing_job}/logs?limit=0&after=x")).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
        // With access, the body's fault is what is reported.
        let r = app
            .call(Method::POST, "/api/v1/org/local/ws/default/projects", Some(&app.admin_key.clone()), Some(bad))
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    }

    async fn the_last_organization_wide_admin_key_cannot_be_revoked(app) {
        let me = app.get("/api/v1/user").await.body;
        let bootstrap = me["api_key"]["id"].as_str().unwrap().to_owned();
        let path = format!("/api/v1/org/local/keys/{bootstrap}");
        let admin = app.admin_key.clone();
        // A workspace-limited admin does not count: it cannot manage the organization.
        app.key(&["admin"], Some("default")).await;
        let r = app.call(Method::DELETE, &path, Some(&admin), None).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
        assert!(r.body["detail"].as_str().unwrap().contains("last admin key"), "{}", r.body);
        assert_eq!(app.get("/api/v1/user").await.status, StatusCode::OK, "still usable");
        // With a second organization-wide admin, the first can go.
        let second = app.key(&["admin"], None).await;
        let r = app.call(Method::DELETE, &path, Some(&second), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(app.get("/api/v1/user").await.status, StatusCode::UNAUTHORIZED);
    }

    async fn keys_can_be_listed_without_secrets_and_revoked(app) {
        let secret = app.key(&["read"], None).await;
        assert!(secret.starts_with("gpd_"));
        let list = app.get("/api/v1/org/local/keys").await;
        assert_eq!(list.body.as_array().unwrap().len(), 2);
        assert!(
            !list
                .raw
                .windows(secret.len())
                .any(|w| w == secret.as_bytes()),
            "listing must not contain secrets"
        );
        let id = list
            .body
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["scopes"] == json!(["read"]))
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let r = app
            .call(
                Method::DELETE,
                &format!("/api/v1/org/local/keys/{id}"),
                Some(&app.admin_key.clone()),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.body["revoked_at"].is_string());
        assert_eq!(
            app.get_as(&secret, "/api/v1/user").await.status,
            StatusCode::UNAUTHORIZED
        );
        let r = app
            .call(
                Method::DELETE,
                "/api/v1/org/local/keys/not-a-uuid",
                Some(&app.admin_key.clone()),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
    }

    async fn key_creation_rejects_unknown_scopes_and_workspace_escalation(app) {
        let r = app
            .post(
                "/api/v1/org/local/keys",
                json!({"name": "x", "scopes": ["read", "root"]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(r.body["errors"][0]["loc"], json!(["body", "scopes", "1"]));
        let r = app
            .post("/api/v1/org/local/keys", json!({"name": "x", "scopes": []}))
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        app.post("/api/v1/org/local/ws", json!({"key": "team-b"}))
            .await;
        let ws_admin = app.key(&["admin"], Some("default")).await;
        let r = app
            .call(
                Method::POST,
                "/api/v1/org/local/keys",
                Some(&ws_admin),
                Some(json!({"name": "x", "scopes": ["read"], "workspace": "team-b"})),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "team-b is invisible to this key: {}",
            r.body
        );
        let r = app
            .call(
                Method::POST,
                "/api/v1/org/local/ws",
                Some(&ws_admin),
                Some(json!({"key": "team-c"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }

    async fn publishing_a_capability_creates_then_is_idempotent_then_conflicts(app) {
        let r = app
            .upload(
                "/api/v1/org/local/capabilities",
                capability_tar("1.0.0", "Classify the sentiment."),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(r.body["name"], "sentiment");
        assert_eq!(
            r.body["agents"][0]["instructions"],
            "Classify the sentiment."
        );
        assert_eq!(r.body["files"].as_array().unwrap().len(), 2);
        let sha = r.body["sha256"].clone();

        let again = app
            .upload(
                "/api/v1/org/local/capabilities",
                capability_tar("1.0.0", "Classify the sentiment."),
            )
            .await;
        assert_eq!(again.status, StatusCode::OK);
        assert_eq!(again.body["sha256"], sha);

        let other = app
            .upload(
                "/api/v1/org/local/capabilities",
                capability_tar("1.0.0", "Something else."),
            )
            .await;
        assert_eq!(other.status, StatusCode::CONFLICT);
        assert!(other.body["detail"]
            .as_str()
            .unwrap()
            .contains("already published with different content"));

        let detail = app
            .get("/api/v1/org/local/capabilities/sentiment/1.0.0")
            .await;
        assert_eq!(
            detail.body["agents"][0]["instructions"], "Classify the sentiment.",
            "the conflict changed nothing"
        );
        let file = app
            .get("/api/v1/org/local/capabilities/sentiment/1.0.0/files/agents/classifier.md")
            .await;
        assert!(String::from_utf8(file.raw)
            .unwrap()
            .contains("Classify the sentiment."));
        let versions = app
            .get("/api/v1/org/local/capabilities/sentiment/versions")
            .await;
        assert_eq!(versions.body.as_array().unwrap().len(), 1);
        let summary = app.get("/api/v1/org/local/capabilities/sentiment").await;
        assert_eq!(summary.body["latest_version"], "1.0.0");
    }

    async fn versions_with_build_metadata_are_422_naming_the_version_field_and_publish_nothing(app) {
        for (collection, bundle, file) in [
            ("capabilities", capability_tar("1.0.0+build.1", "x"), "capability.yaml"),
            ("datasets", dataset_tar("train", "1.0.0+build.1", 2), "dataset.yaml"),
        ] {
            let r = app
                .upload(&format!("/api/v1/org/local/{collection}"), bundle)
                .await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
            assert_eq!(r.body["errors"][0]["loc"], json!(["body", file, "version"]));
            let msg = r.body["errors"][0]["msg"].as_str().unwrap();
            assert!(msg.contains("build metadata (`+build.1`) is not allowed"), "{msg}");
            assert_eq!(
                app.get(&format!("/api/v1/org/local/{collection}")).await.body["total"],
                0
            );
        }
        // Nor can a path name one: there is nothing it could mean.
        let r = app
            .get("/api/v1/org/local/capabilities/sentiment/1.0.0+build.1")
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(r.body["errors"][0]["loc"], json!(["path", "version"]));
    }

    async fn capability_listings_page_and_search(app) {
        for name in ["alpha", "beta", "gamma"] {
            let t = tar(&[
                (
                    "capability.yaml",
                    &format!("name: {name}\nversion: 1.0.0\n"),
                ),
                ("agents/a.md", "---\n---\nHi"),
            ]);
            assert_eq!(
                app.upload("/api/v1/org/local/capabilities", t).await.status,
                StatusCode::CREATED
            );
        }
        let page = app
            .get("/api/v1/org/local/capabilities?page=2&page_size=2")
            .await;
        assert_eq!(page.body["total"], 3);
        assert_eq!(page.body["page"], 2);
        assert_eq!(page.body["items"][0]["name"], "gamma");
        let found = app.get("/api/v1/org/local/capabilities?search=et").await;
        assert_eq!(found.body["items"].as_array().unwrap().len(), 1);
        assert_eq!(found.body["items"][0]["name"], "beta");
    }

    async fn datasets_publish_with_schema_and_page_their_rows(app) {
        let r = app
            .upload(
                "/api/v1/org/local/datasets",
                dataset_tar("reviews", "1.0.0", 45),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(r.body["row_count"], 45);
        assert_eq!(r.body["schema"]["goal"]["types"], json!(["string"]));
        assert_eq!(r.body["format"], "jsonl");
        assert_eq!(
            app.upload(
                "/api/v1/org/local/datasets",
                dataset_tar("reviews", "1.0.0", 45)
            )
            .await
            .status,
            StatusCode::OK
        );
        assert_eq!(
            app.upload(
                "/api/v1/org/local/datasets",
                dataset_tar("reviews", "1.0.0", 46)
            )
            .await
            .status,
            StatusCode::CONFLICT
        );
        let rows = app
            .get("/api/v1/org/local/datasets/reviews/1.0.0/rows?offset=40&limit=10")
            .await;
        assert_eq!(rows.body["items"].as_array().unwrap().len(), 5);
        assert_eq!(rows.body["items"][0]["goal"], "text 40");
        assert_eq!(rows.body["total"], 45);
        let list = app.get("/api/v1/org/local/datasets").await;
        assert_eq!(list.body["items"][0]["name"], "reviews");
        assert_eq!(
            app.get("/api/v1/org/local/capabilities").await.body["total"],
            0,
            "datasets are not capabilities"
        );
    }

    async fn a_parquet_dataset_publishes_and_serves_its_rows_as_json(app) {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../gepard-agent/tests/fixtures/parquet");
        let parquet = std::fs::read(format!("{fixtures}/tools.nested.parquet")).unwrap();
        let twin: Vec<serde_json::Value> = std::fs::read_to_string(format!("{fixtures}/tools.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let bundle = gepard_agent::bundle::Bundle::from_files(vec![
            gepard_agent::bundle::BundleFile::new("dataset.yaml", b"name: calls\nversion: 1.0.0\n".to_vec()),
            gepard_agent::bundle::BundleFile::new("calls.parquet", parquet.clone()),
        ]);
        let r = app.upload("/api/v1/org/local/datasets", bundle.to_tar_gz()).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(r.body["format"], "parquet");
        assert_eq!(r.body["row_count"], 3);
        assert_eq!(r.body["schema"]["tools"]["types"], json!(["array"]));
        let rows = app.get("/api/v1/org/local/datasets/calls/1.0.0/rows").await;
        assert_eq!(rows.body["items"], json!(twin));
        // The stored file is the uploaded one, byte for byte.
        let file = app
            .get("/api/v1/org/local/datasets/calls/1.0.0/files/calls.parquet")
            .await;
        assert_eq!(file.headers["content-type"], "application/octet-stream");
        assert_eq!(file.raw, parquet);
    }

    async fn each_malformed_bundle_is_422_naming_the_file_and_leaves_no_trace(app) {
        let cases: Vec<(Vec<u8>, Vec<&str>)> = vec![
            (b"definitely not gzip".to_vec(), vec!["body"]),
            (
                tar(&[("agents/a.md", "---\n---\nHi")]),
                vec!["body", "capability.yaml"],
            ),
            (
                tar(&[
                    ("capability.yaml", "name: x\n"),
                    ("agents/a.md", "---\n---\nHi"),
                ]),
                vec!["body", "capability.yaml", "version"],
            ),
            (
                tar(&[
                    ("capability.yaml", "name: x\nversion: 1.0.0\n"),
                    ("agents/a.md", "no front matter"),
                ]),
                vec!["body", "agents/a.md"],
            ),
            (
                tar(&[("capability.yaml", "name: x\nversion: 1.0.0\n")]),
                vec!["body", "agents/*.md"],
            ),
            // A few hundred gzip'd bytes of nesting, which took the YAML parser seconds.
            (
                tar(&[
                    (
                        "capability.yaml",
                        &format!(
                            "name: x\nversion: 1.0.0\ndescription: {}{}\n",
                            "[".repeat(80_000),
                            "]".repeat(80_000)
                        ),
                    ),
                    ("agents/a.md", "---\n---\nHi"),
                ]),
                vec!["body", "capability.yaml"],
            ),
        ];
        for (bytes, loc) in cases {
            let r = app.upload("/api/v1/org/local/capabilities", bytes).await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
            assert_eq!(r.body["errors"][0]["loc"], json!(loc), "{}", r.body);
        }
        let r = app
            .upload(
                "/api/v1/org/local/datasets",
                tar(&[
                    ("dataset.yaml", "name: d\nversion: 1.0.0\n"),
                    ("rows.jsonl", "{}\n{oops\n"),
                ]),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            r.body["errors"][0]["loc"],
            json!(["body", "rows.jsonl", "line 2"])
        );
        let deep = format!(
            "name: d\nversion: 1.0.0\ndescription: {}\n",
            "{".repeat(5000)
        );
        let r = app
            .upload(
                "/api/v1/org/local/datasets",
                tar(&[("dataset.yaml", &deep), ("rows.jsonl", "{\"goal\": \"g\"}\n")]),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(r.body["errors"][0]["loc"], json!(["body", "dataset.yaml"]));
        assert_eq!(
            app.get("/api/v1/org/local/capabilities").await.body["total"],
            0
        );
        assert_eq!(app.get("/api/v1/org/local/datasets").await.body["total"], 0);
    }

    async fn a_bundle_whose_gzip_checksum_fails_or_whose_trailer_is_cut_is_422_and_not_stored(app) {
        for (collection, good) in [
            ("capabilities", capability_tar("1.0.0", "Label the text.")),
            ("datasets", dataset_tar("calls", "1.0.0", 3)),
        ] {
            // The last 8 bytes are the gzip trailer: CRC-32, then the length.
            let mut bad_crc = good.clone();
            let at = bad_crc.len() - 8;
            bad_crc[at] ^= 0x01;
            let cut = good[..good.len() - 8].to_vec();
            for bytes in [bad_crc, cut] {
                let r = app
                    .upload(&format!("/api/v1/org/local/{collection}"), bytes)
                    .await;
                assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
                assert_eq!(r.body["errors"][0]["loc"], json!(["body"]), "{}", r.body);
                assert!(
                    r.body["errors"][0]["msg"]
                        .as_str()
                        .unwrap()
                        .starts_with("the bundle's gzip data is corrupt"),
                    "{}",
                    r.body
                );
            }
            assert_eq!(
                app.get(&format!("/api/v1/org/local/{collection}"))
                    .await
                    .body["total"],
                0,
                "{collection}: nothing stored"
            );
        }
    }

    async fn bundles_need_the_gzip_content_type(app) {
        let req = Request::post("/api/v1/org/local/capabilities")
            .header("x-api-key", &app.admin_key)
            .header("content-type", "application/json")
            .body(Body::from(capability_tar("1.0.0", "x")))
            .unwrap();
        let r = app.send(req).await;
        assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(r.body["detail"]
            .as_str()
            .unwrap()
            .contains("application/gzip"));
    }

    async fn oversized_bundles_are_413_naming_the_limit(app) {
        for collection in ["capabilities", "datasets"] {
            let r = app
                .upload(
                    &format!("/api/v1/org/local/{collection}"),
                    vec![0u8; 65 * 1024 * 1024],
                )
                .await;
            assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
            assert!(
                r.body["detail"].as_str().unwrap().contains("64 MiB"),
                "{}",
                r.body
            );
            // Above the JSON routes' 2 MiB but within the bundle limit: read, then judged on
            // its content (not a gzip'd tar), not refused for its size.
            let r = app
                .upload(
                    &format!("/api/v1/org/local/{collection}"),
                    vec![7u8; 3 * 1024 * 1024],
                )
                .await;
            assert_ne!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
        }
    }

    async fn oversized_json_bodies_are_413_naming_the_limit(app) {
        let r = app
            .post(
                "/api/v1/org/local/ws/default/optimization/jobs",
                json!({"name": "x".repeat(3 * 1024 * 1024)}),
            )
            .await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
        assert!(
            r.body["detail"].as_str().unwrap().contains("2 MiB"),
            "{}",
            r.body
        );
    }

    async fn bad_versions_in_refs_are_422_and_unknown_versions_404(app) {
        app.upload(
            "/api/v1/org/local/capabilities",
            capability_tar("1.0.0", "x"),
        )
        .await;
        let r = app
            .get("/api/v1/org/local/capabilities/sentiment/latest")
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(r.body["errors"][0]["loc"], json!(["path", "version"]));
        let r = app
            .get("/api/v1/org/local/capabilities/sentiment/2.0.0")
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert!(r.body["detail"]
            .as_str()
            .unwrap()
            .contains("sentiment@2.0.0"));
        assert_eq!(
            app.get("/api/v1/org/local/capabilities/nope/versions")
                .await
                .status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            app.get("/api/v1/org/local/capabilities/sentiment/1.0.0/files/nope.md")
                .await
                .status,
            StatusCode::NOT_FOUND
        );
    }

    async fn out_of_range_or_malformed_paging_is_422_naming_the_parameter(app) {
        app.upload(
            "/api/v1/org/local/datasets",
            dataset_tar("reviews", "1.0.0", 3),
        )
        .await;
        for (query, param) in [
            ("/api/v1/org/local/capabilities?page_size=101", "page_size"),
            ("/api/v1/org/local/capabilities?page_size=0", "page_size"),
            ("/api/v1/org/local/capabilities?page=0", "page"),
            ("/api/v1/org/local/capabilities?page=abc", "page"),
            (
                "/api/v1/org/local/datasets/reviews/1.0.0/rows?limit=5000",
                "limit",
            ),
            (
                "/api/v1/org/local/datasets/reviews/1.0.0/rows?offset=-1",
                "offset",
            ),
            (
                "/api/v1/org/local/datasets/reviews/1.0.0/rows?limit=x",
                "limit",
            ),
        ] {
            let r = app.get(query).await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
            assert_eq!(
                r.body["errors"][0]["loc"],
                json!(["query", param]),
                "{query}"
            );
        }
    }

    async fn malformed_json_bodies_are_400_or_422_at_the_field(app) {
        let req = Request::post("/api/v1/org/local/ws/default/projects")
            .header("x-api-key", &app.admin_key)
            .header("content-type", "application/json")
            .body(Body::from("{not json"))
            .unwrap();
        assert_eq!(app.send(req).await.status, StatusCode::BAD_REQUEST);
        let r = app
            .post("/api/v1/org/local/ws/default/projects", json!({"key": 5}))
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            r.body["errors"][0]["loc"],
            json!(["body", "key"]),
            "{}",
            r.body
        );
        for not_an_object in [json!([]), json!(["a", "b"]), json!("text"), json!(7)] {
            let r = app
                .post(
                    "/api/v1/org/local/ws/default/optimization/jobs",
                    not_an_object.clone(),
                )
                .await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(
                r.body["detail"], "invalid body: the body must be a JSON object",
                "{not_an_object}: {}",
                r.body
            );
        }
        // Read positionally, an array would act as the object it lines up with.
        for positional in [json!(["proj-arr", "Arr"]), json!([])] {
            let r = app.post("/api/v1/org/local/ws/default/projects", positional.clone()).await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{positional}");
            assert_eq!(r.body["errors"][0]["msg"], "the body must be a JSON object");
        }
        assert_eq!(
            app.get("/api/v1/org/local/ws/default/projects/proj-arr").await.status,
            StatusCode::NOT_FOUND,
            "nothing was created"
        );
        // A missing field is located at the field itself.
        let r = app.post("/api/v1/org/local/ws/default/projects", json!({})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            r.body["errors"],
            json!([{"loc": ["body", "key"], "msg": "field required", "type": "missing"}])
        );
        let r = app.post("/api/v1/org/local/ws/default/optimization/jobs", json!({})).await;
        assert_eq!(r.body["errors"][0]["loc"], json!(["body", "model"]), "{}", r.body);
        assert_eq!(r.body["errors"][0]["type"], "missing");
        let r = app
            .post(
                "/api/v1/org/local/ws/default/projects",
                json!({"key": "ok", "colour": "red"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            r.body["detail"].as_str().unwrap().contains("colour"),
            "{}",
            r.body
        );
        let req = Request::post("/api/v1/org/local/ws/default/projects")
            .header("x-api-key", &app.admin_key)
            .body(Body::from("{}"))
            .unwrap();
        assert_eq!(
            app.send(req).await.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        let r = app
            .call(
                Method::PUT,
                "/api/v1/org/local/ws",
                Some(&app.admin_key.clone()),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    }

    async fn nul_characters_are_refused_wherever_they_come_from_and_nothing_is_stored(app) {
        let r = app
            .post(
                "/api/v1/org/local/ws/default/projects",
                json!({"key": "nul", "name": "a\u{0}b"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        assert_eq!(r.body["errors"][0]["loc"], json!(["body", "name"]));
        assert_eq!(r.body["errors"][0]["msg"], "must not contain the NUL character (U+0000)");
        let r = app
            .post(
                "/api/v1/org/local/ws/default/optimization/jobs",
                json!({"tags": ["ok", "\u{0}"]}),
            )
            .await;
        assert_eq!(r.body["errors"][0]["loc"], json!(["body", "tags", "1"]), "{}", r.body);
        let r = app.get("/api/v1/org/local/ws/default/optimization/jobs?search=%00").await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        assert_eq!(r.body["errors"][0]["loc"], json!(["query", "search"]));
        for path in ["/api/v1/org/%00", "/api/v1/org/local/capabilities/a%00/versions"] {
            let r = app.get(path).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.body);
            assert!(r.body["detail"].as_str().unwrap().contains("NUL"), "{}", r.body);
        }
        assert_eq!(
            app.get("/api/v1/org/local/ws/default/projects/nul").await.status,
            StatusCode::NOT_FOUND
        );
    }

    async fn health_and_readiness_answer_without_a_key(app) {
        for prefix in ["", "/api/v1"] {
            for route in ["healthz", "readyz"] {
                let r = app.call(Method::GET, &format!("{prefix}/{route}"), None, None).await;
                assert_eq!(r.body["status"], "ok", "{prefix}/{route}");
            }
            let r = app.call(Method::GET, &format!("{prefix}/metrics"), None, None).await;
            assert_eq!(r.status, StatusCode::OK, "{prefix}/metrics");
        }
        assert_eq!(
            app.call(Method::GET, "/healthz", None, None).await.body["status"],
            "ok"
        );
        assert_eq!(
            app.call(Method::GET, "/readyz", None, None).await.body["status"],
            "ok"
        );
        app.store.close().await;
        assert_eq!(
            app.call(Method::GET, "/readyz", None, None).await.status,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
