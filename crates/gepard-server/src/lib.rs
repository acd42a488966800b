//! The gepard HTTP API.
//!
//! Layout: [`router`] builds the axum `Router` over an [`AppState`]; [`auth`] turns headers
//! into a [`auth::Caller`] and enforces the 401 / 404 / 403 order; [`error`] is the single
//! error envelope; [`routes`] holds one module per area of API.md; [`page`] is the embedded
//! Optimization page at `/`; [`metrics`] counts requests and serves `/metrics`. [`serve`]
//! runs the router with graceful shutdown.
//!
//! Only this crate names `axum`. It depends on the store and the domain crates, never on the
//! binary or the GEPA engine.

pub mod auth;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod page;
pub mod routes;
pub mod sse;

use std::future::Future;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;
use std::sync::Arc;
use std::time::Duration;

use gepard_store::{LocalNotifier, Notifier, Store};
use utoipa::OpenApi;

use crate::error::ApiError;
use crate::routes::{jobs, keys, openai, ops, promotion, registry, tenancy};

/// Shared state of every request.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// Where committed job changes are announced to live watchers.
    pub notifier: Arc<dyn Notifier>,
    /// In-process models offered on `/v1/chat/completions` (none unless the binary adds them).
    pub models: Option<Arc<gepard_llm::ModelRegistry>>,
    /// Request counters and the open-stream gauge behind `/metrics`.
    pub metrics: Arc<metrics::Metrics>,
    /// Cancelled when the server shuts down. Event streams end on it: a graceful shutdown
    /// waits for open connections, and a stream of a running job would otherwise hold the
    /// process until that job finishes (clients reconnect elsewhere with `Last-Event-ID`).
    pub shutdown: tokio_util::sync::CancellationToken,
    /// How long an outside runtime holds a job it reports on (`POST …/progress`) without
    /// reporting again; then the job goes back to the queue.
    pub runtime_lease: Duration,
    /// How often an open event stream checks that the key it was opened with is still valid,
    /// so that revoking a key also ends the streams it holds open.
    pub key_recheck: Duration,
}

/// Default of [`AppState::key_recheck`]: a revoked key stops seeing a job within seconds, at one
/// small read per open stream each time.
pub const DEFAULT_KEY_RECHECK: Duration = Duration::from_secs(5);

/// Default of [`AppState::runtime_lease`]: long enough for a slow model call between two
/// reports, short enough that a dead runtime's job is soon picked up again.
pub const DEFAULT_RUNTIME_LEASE: Duration = Duration::from_secs(120);

impl AppState {
    /// State over a connected store, with an in-process notifier.
    pub fn new(store: Store) -> Self {
        Self::with_notifier(store, Arc::new(LocalNotifier::default()))
    }

    /// State with a given notifier (shared with embedded workers).
    pub fn with_notifier(store: Store, notifier: Arc<dyn Notifier>) -> Self {
        Self {
            store,
            notifier,
            models: None,
            metrics: Arc::default(),
            shutdown: tokio_util::sync::CancellationToken::new(),
            runtime_lease: DEFAULT_RUNTIME_LEASE,
            key_recheck: DEFAULT_KEY_RECHECK,
        }
    }
}

/// The OpenAPI document of everything this server routes.
#[derive(OpenApi)]
#[openapi(
    info(title = "gepard", description = "Control plane for improving LLM agents with GEPA."),
    paths(
        ops::healthz, ops::readyz, ops::openapi, metrics::metrics,
        tenancy::current_user, tenancy::get_org, tenancy::list_workspaces, tenancy::create_workspace, tenancy::get_workspace,
        tenancy::list_projects, tenancy::create_project, tenancy::get_project,
        keys::create_key, keys::list_keys, keys::revoke_key,
        registry::publish_capability, registry::list_capabilities, registry::get_capability,
        registry::capability_versions, registry::capability_version, registry::capability_file,
        registry::publish_dataset, registry::list_datasets, registry::get_dataset,
        registry::dataset_versions, registry::dataset_version, registry::dataset_file, registry::dataset_rows,
        jobs::create_job, jobs::list_jobs, jobs::get_job, jobs::cancel_job, jobs::retry_job, jobs::job_logs,
        jobs::job_artifacts, jobs::job_attempts, jobs::job_candidates, jobs::job_progress, jobs::job_events,
        promotion::promotion_preview, promotion::promote_job, promotion::audit_log,
        openai::chat_completions, openai::models,
    ),
    components(schemas(error::ErrorBody, error::FieldError, jobs::JobBrief)),
    modifiers(&SecurityAddon, &CommonResponses),
    security(("api_key" = []), ("bearer" = [])),
)]
pub struct ApiDoc;

struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The answers every route can give, declared once instead of on each route: a client
/// generated from the document (and schemathesis, which found them missing) must know them.
/// Also: the operations routes need no key, a promotion's body may be left out, and a bundle
/// upload is binary.
struct CommonResponses;

impl utoipa::Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{
            Content, KnownFormat, ObjectBuilder, Ref, Required, ResponseBuilder, SchemaFormat, Type,
        };
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    Content::new(Some(Ref::from_schema_name("ErrorBody"))),
                )
                .build()
        };
        for (path, item) in &mut openapi.paths.paths {
            // The OpenAI-compatible routes take a key (as a Bearer token), the rest outside
            // `/api/v1/` none.
            let public = !path.starts_with("/api/v1/") && !path.starts_with("/v1/");
            let has_params = path.contains('{');
            let in_org = path.contains("{org}");
            for op in [
                item.get.as_mut(),
                item.post.as_mut(),
                item.put.as_mut(),
                item.delete.as_mut(),
                item.patch.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                if public {
                    op.security = Some(Vec::new());
                    continue;
                }
                let (has_body, json_body) = op.request_body.as_ref().map_or((false, false), |b| {
                    (true, b.content.contains_key("application/json"))
                });
                let mut add = |status: &str, description: &str| {
                    op.responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| error(description).into());
                };
                add("401", "no API key, or an unknown or revoked one");
                if path != "/api/v1/user" {
                    add("403", "the key lacks the scope this action needs");
                }
                if in_org {
                    add(
                        "404",
                        "not found, or not visible to this key (another organization or workspace)",
                    );
                }
                if has_params {
                    add("422", "a path or query parameter is malformed");
                }
                if json_body {
                    add("400", "the body is not well-formed JSON");
                }
                if has_body {
                    add("415", "the body has the wrong Content-Type");
                }
                if let Some(body) = op.request_body.as_mut() {
                    if let Some(gzip) = body.content.get_mut("application/gzip") {
                        gzip.schema = Some(
                            ObjectBuilder::new()
                                .schema_type(Type::String)
                                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
                                .into(),
                        );
                    }
                    if path.ends_with("/promote") {
                        body.required = Some(Required::False);
                    }
                }
            }
        }
    }
}

/// The whole API as a router.
pub fn router(state: AppState) -> Router {
    let org = Router::new()
        .route("/", get(tenancy::get_org))
        .route(
            "/ws",
            get(tenancy::list_workspaces).post(tenancy::create_workspace),
        )
        .route("/ws/{ws}", get(tenancy::get_workspace))
        .route(
            "/ws/{ws}/projects",
            get(tenancy::list_projects).post(tenancy::create_project),
        )
        .route("/ws/{ws}/projects/{project}", get(tenancy::get_project))
        .route(
            "/ws/{ws}/optimization/jobs",
            get(jobs::list_jobs).post(jobs::create_job),
        )
        .route("/ws/{ws}/optimization/jobs/{id}", get(jobs::get_job))
        .route(
            "/ws/{ws}/optimization/jobs/{id}/cancel",
            post(jobs::cancel_job),
        )
        .route(
            "/ws/{ws}/optimization/jobs/{id}/retry",
            post(jobs::retry_job),
        )
        .route("/ws/{ws}/optimization/jobs/{id}/logs", get(jobs::job_logs))
        .route(
            "/ws/{ws}/optimization/jobs/{id}/artifacts",
            get(jobs::job_artifacts),
        )
        .route(
            "/ws/{ws}/optimization/jobs/{id}/attempts",
            get(jobs::job_attempts),
        )
        .route(
            "/ws/{ws}/optimization/jobs/{id}/candidates",
            get(jobs::job_candidates),
        )
        .route(
            "/ws/{ws}/optimization/jobs/{id}/promotion-preview",
            get(promotion::promotion_preview),
        )
        .route(
            "/ws/{ws}/optimization/jobs/{id}/promote",
            post(promotion::promote_job),
        )
        .route(
            "/ws/{ws}/optimization/jobs/{id}/progress",
            post(jobs::job_progress),
        )
        .route(
            "/ws/{ws}/optimization/jobs/{id}/events",
            get(jobs::job_events),
        )
        .route("/keys", get(keys::list_keys).post(keys::create_key))
        .route("/audit", get(promotion::audit_log))
        .route("/keys/{id}", delete(keys::revoke_key))
        .route(
            "/capabilities",
            get(registry::list_capabilities)
                .post(registry::publish_capability)
                .layer(DefaultBodyLimit::max(registry::MAX_BUNDLE_BYTES)),
        )
        .route("/capabilities/{name}", get(registry::get_capability))
        .route(
            "/capabilities/{name}/versions",
            get(registry::capability_versions),
        )
        .route(
            "/capabilities/{name}/{version}",
            get(registry::capability_version),
        )
        .route(
            "/capabilities/{name}/{version}/files/{*path}",
            get(registry::capability_file),
        )
        .route(
            "/datasets",
            get(registry::list_datasets)
                .post(registry::publish_dataset)
                .layer(DefaultBodyLimit::max(registry::MAX_BUNDLE_BYTES)),
        )
        .route("/datasets/{name}", get(registry::get_dataset))
        .route("/datasets/{name}/versions", get(registry::dataset_versions))
        .route("/datasets/{name}/{version}", get(registry::dataset_version))
        .route(
            "/datasets/{name}/{version}/files/{*path}",
            get(registry::dataset_file),
        )
        .route(
            "/datasets/{name}/{version}/rows",
            get(registry::dataset_rows),
        );
    let api = Router::new()
        .route("/user", get(tenancy::current_user))
        .route("/openapi.json", get(ops::openapi))
        // API.md puts every route under /api/v1; probes and scrapers usually use the root
        // paths, so the operations routes answer at both.
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(metrics::metrics))
        .nest("/org/{org}", org)
        // The bundle routes' own limit is set closer to them, and so wins over this one.
        .layer(DefaultBodyLimit::max(extract::MAX_JSON_BYTES));
    Router::new()
        .route("/", get(page::index))
        .route("/assets/{*path}", get(page::asset))
        .route("/metrics", get(metrics::metrics))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/openapi.json", get(ops::openapi))
        .nest("/api/v1", api)
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/models", get(openai::models))
        .fallback(|uri: axum::http::Uri| async move {
            ApiError::not_found(format!("no route for {}", uri.path()))
        })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .route_layer(axum::middleware::from_fn(metrics::expose_matched_path))
        .layer(
            // One structured log line per request (method, path, status, latency), and a
            // panicking handler becomes an enveloped 500 instead of a dropped connection.
            tower::ServiceBuilder::new()
                .layer(
                    tower_http::trace::TraceLayer::new_for_http()
                        .make_span_with(
                            tower_http::trace::DefaultMakeSpan::new().level(tracing::Level::INFO),
                        )
                        .on_response(
                            tower_http::trace::DefaultOnResponse::new().level(tracing::Level::INFO),
                        ),
                )
                .layer(tower_http::catch_panic::CatchPanicLayer::custom(
                    panic_response,
                )),
        )
        // Outermost, so panics answered as 500 and unrouted 404s are counted too.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state)
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    use axum::response::IntoResponse;
    tracing::error!("a request handler panicked");
    ApiError::internal(&std::io::Error::other("handler panicked")).into_response()
}

/// Serves `router` on `listener` until `shutdown` completes, then lets in-flight requests
/// finish (graceful shutdown).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
