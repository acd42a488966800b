//! Capability and dataset registries (organization scoped).
//!
//! Publishing takes a gzip'd tar of the bundle directory. Parsing happens before any write,
//! and the store writes a version in one transaction, so an invalid or half-sent bundle
//! leaves no trace.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use gepard_agent::bundle::{Bundle, BundleError, Capability, Dataset};
use gepard_core::model::{
    ArtifactKind, ArtifactSummary, CapabilityVersion, DatasetVersion, Page, RowsPage,
    VersionSummary,
};
use gepard_core::{PageRequest, Scope};
use gepard_store::Published;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{bytes_rejection, query_number, ApiPath, ApiQuery};
use crate::AppState;

/// Most bytes a published bundle may have on the wire.
pub const MAX_BUNDLE_BYTES: usize = 64 * 1024 * 1024;
/// Most rows one rows request returns.
pub const MAX_ROWS_LIMIT: i64 = 1_000;

/// Query of the list routes.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Substring of the name.
    pub search: Option<String>,
    /// 1-based page.
    #[param(value_type = Option<u64>, minimum = 1)]
    pub page: Option<String>,
    /// Items per page (1–100, default 20).
    #[param(value_type = Option<u64>, minimum = 1, maximum = 100)]
    pub page_size: Option<String>,
}

/// Query of the rows route.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RowsQuery {
    /// Index of the first row (default 0).
    #[param(value_type = Option<u64>)]
    pub offset: Option<String>,
    /// Most rows to return (1–1000, default 20).
    #[param(value_type = Option<u64>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
}

/// Validates `page` / `page_size` query values, naming the bad one.
pub fn page_request(page: Option<&str>, page_size: Option<&str>) -> Result<PageRequest, ApiError> {
    let page_no = query_number("page", page, 1..=u32::MAX)?;
    let size = query_number("page_size", page_size, 1..=gepard_core::page::MAX_PAGE_SIZE)?;
    PageRequest::new(page_no, size).map_err(|e| match e {
        gepard_core::PageError::Page => ApiError::invalid(&["query", "page"], e.to_string()),
        gepard_core::PageError::PageSize => {
            ApiError::invalid(&["query", "page_size"], e.to_string())
        }
    })
}

fn check_bundle_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if matches!(
        mime,
        "application/gzip"
            | "application/x-gzip"
            | "application/octet-stream"
            | "application/x-tar+gzip"
    ) {
        Ok(())
    } else {
        Err(ApiError::unsupported_media_type(format!(
            "send the bundle as a gzip'd tar with `Content-Type: application/gzip` (got `{mime}`)"
        )))
    }
}

/// The body of a publish, checked for its type, size and presence.
fn read_bundle(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, ApiError> {
    check_bundle_type(headers)?;
    let body = body.map_err(|e| {
        // The generic answer ("larger than this route accepts") leaves a publisher guessing
        // how much to cut; this route knows its limit, so it says it.
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(format!(
                "the bundle is larger than the {} MiB a publish accepts (gzip'd tar on the wire)",
                MAX_BUNDLE_BYTES / (1024 * 1024)
            ))
        } else {
            bytes_rejection(&e)
        }
    })?;
    if body.is_empty() {
        return Err(ApiError::invalid(
            &["body"],
            "the body is empty: send a gzip'd tar of the bundle directory",
        ));
    }
    Ok(body)
}

/// Unpacks and parses a bundle off the async threads: a bundle may unpack to 256 MiB of rows
/// to decompress and parse, and on a request thread that would hold up every other request.
async fn parse_bundle<T: Send + 'static>(
    body: Bytes,
    parse: fn(Bundle) -> Result<T, BundleError>,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(move || parse(Bundle::from_tar_gz(&body)?))
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(ApiError::from)
}

fn published<T: serde::Serialize>(p: Published<T>) -> Response {
    match p {
        Published::Created(v) => (StatusCode::CREATED, Json(v)).into_response(),
        Published::Existing(v) => (StatusCode::OK, Json(v)).into_response(),
    }
}

fn checked_version(version: &str) -> Result<String, ApiError> {
    gepard_core::names::parse_version(version)
        .map(|v| v.to_string())
        .map_err(|e| ApiError::invalid(&["path", "version"], e.to_string()))
}

async fn list(
    state: &AppState,
    caller: &Caller,
    org: &str,
    kind: ArtifactKind,
    q: &ListQuery,
) -> ApiResult<Json<Page<ArtifactSummary>>> {
    let org = caller.org(state, org, Scope::Read).await?;
    let page = page_request(q.page.as_deref(), q.page_size.as_deref())?;
    let search = q.search.as_deref().map(str::trim).filter(|s| !s.is_empty());
    Ok(Json(
        state
            .store
            .list_artifacts(org.id, kind, search, page)
            .await?,
    ))
}

async fn get(
    state: &AppState,
    caller: &Caller,
    org: &str,
    kind: ArtifactKind,
    name: &str,
) -> ApiResult<Json<ArtifactSummary>> {
    let org = caller.org(state, org, Scope::Read).await?;
    let found = state.store.artifact(org.id, kind, name).await?;
    Ok(Json(found.ok_or_else(|| {
        ApiError::not_found(format!("{} `{name}` not found", kind.as_str()))
    })?))
}

async fn versions(
    state: &AppState,
    caller: &Caller,
    org: &str,
    kind: ArtifactKind,
    name: &str,
) -> ApiResult<Json<Vec<VersionSummary>>> {
    let org = caller.org(state, org, Scope::Read).await?;
    let found = state.store.list_versions(org.id, kind, name).await?;
    Ok(Json(found.ok_or_else(|| {
        ApiError::not_found(format!("{} `{name}` not found", kind.as_str()))
    })?))
}

async fn file(
    state: &AppState,
    caller: &Caller,
    org: &str,
    kind: ArtifactKind,
    name: &str,
    version: &str,
    path: &str,
) -> ApiResult<Response> {
    let org = caller.org(state, org, Scope::Read).await?;
    let version = checked_version(version)?;
    let content = state
        .store
        .file_content(org.id, kind, name, &version, path)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "file `{path}` not found in {} {name}@{version}",
                kind.as_str()
            ))
        })?;
    let ct = if std::str::from_utf8(&content).is_ok() {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    };
    Ok(([(header::CONTENT_TYPE, ct)], content).into_response())
}

/// `POST /org/{org}/capabilities`: publish a capability bundle (gzip'd tar).
#[utoipa::path(post, path = "/api/v1/org/{org}/capabilities", tag = "capabilities",
    params(("org" = String, Path, description = "organization key")),
    request_body(content = Vec<u8>, content_type = "application/gzip", description = "gzip'd tar of the capability directory"),
    responses((status = 201, body = CapabilityVersion, description = "published"),
              (status = 200, body = CapabilityVersion, description = "this exact content was already published"),
              (status = 409, body = ErrorBody), (status = 413, body = ErrorBody, description = "the bundle is over 64 MiB"),
              (status = 422, body = ErrorBody)))]
pub async fn publish_capability(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(org): ApiPath<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let org = caller.org(&state, &org, Scope::Write).await?;
    let cap = parse_bundle(read_bundle(&headers, body)?, Capability::parse).await?;
    Ok(published(
        state
            .store
            .publish_capability(org.id, &cap, Some(caller.key.info.user_id))
            .await?,
    ))
}

/// `GET /org/{org}/capabilities`.
#[utoipa::path(get, path = "/api/v1/org/{org}/capabilities", tag = "capabilities",
    params(("org" = String, Path, description = "organization key"), ListQuery),
    responses((status = 200, body = Page<ArtifactSummary>), (status = 422, body = ErrorBody)))]
pub async fn list_capabilities(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(org): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<ArtifactSummary>>> {
    list(&state, &caller, &org, ArtifactKind::Capability, &q).await
}

/// `GET /org/{org}/capabilities/{name}`.
#[utoipa::path(get, path = "/api/v1/org/{org}/capabilities/{name}", tag = "capabilities",
    params(("org" = String, Path, description = "organization key"), ("name" = String, Path, description = "capability name")),
    responses((status = 200, body = ArtifactSummary), (status = 404, body = ErrorBody)))]
pub async fn get_capability(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org, name)): ApiPath<(String, String)>,
) -> ApiResult<Json<ArtifactSummary>> {
    get(&state, &caller, &org, ArtifactKind::Capability, &name).await
}

/// `GET /org/{org}/capabilities/{name}/versions`: highest first.
#[utoipa::path(get, path = "/api/v1/org/{org}/capabilities/{name}/versions", tag = "capabilities",
    params(("org" = String, Path, description = "organization key"), ("name" = String, Path, description = "capability name")),
    responses((status = 200, body = Vec<VersionSummary>), (status = 404, body = ErrorBody)))]
pub async fn capability_versions(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org, name)): ApiPath<(String, String)>,
) -> ApiResult<Json<Vec<VersionSummary>>> {
    versions(&state, &caller, &org, ArtifactKind::Capability, &name).await
}

/// `GET /org/{org}/capabilities/{name}/{version}`.
#[utoipa::path(get, path = "/api/v1/org/{org}/capabilities/{name}/{version}", tag = "capabilities",
    params(("org" = String, Path, description = "organization key"), ("name" = String, Path, description = "capability name"),
           ("version" = String, Path, description = "exact version, e.g. 1.0.0")),
    responses((status = 200, body = CapabilityVersion), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn capability_version(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org, name, version)): ApiPath<(String, String, String)>,
) -> ApiResult<Json<CapabilityVersion>> {
    let org = caller.org(&state, &org, Scope::Read).await?;
    let version = checked_version(&version)?;
    let found = state
        .store
        .capability_version(org.id, &name, &version)
        .await?;
    Ok(Json(found.ok_or_else(|| {
        ApiError::not_found(format!("capability {name}@{version} not found"))
    })?))
}

/// `GET /org/{org}/capabilities/{name}/{version}/files/{path}`: one stored file, raw.
#[utoipa::path(get, path = "/api/v1/org/{org}/capabilities/{name}/{version}/files/{path}", tag = "capabilities",
    params(("org" = String, Path, description = "organization key"), ("name" = String, Path, description = "capability name"),
           ("version" = String, Path, description = "exact version"), ("path" = String, Path, description = "bundle-relative file path")),
    responses((status = 200, description = "the file's bytes"), (status = 404, body = ErrorBody)))]
pub async fn capability_file(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org, name, version, path)): ApiPath<(String, String, String, String)>,
) -> ApiResult<Response> {
    file(
        &state,
        &caller,
        &org,
        ArtifactKind::Capability,
        &name,
        &version,
        &path,
    )
    .await
}

/// `POST /org/{org}/datasets`: publish a dataset bundle (gzip'd tar).
#[utoipa::path(post, path = "/api/v1/org/{org}/datasets", tag = "datasets",
    params(("org" = String, Path, description = "organization key")),
    request_body(content = Vec<u8>, content_type = "application/gzip", description = "gzip'd tar of the dataset directory"),
    responses((status = 201, body = DatasetVersion, description = "published"),
              (status = 200, body = DatasetVersion, description = "this exact content was already published"),
              (status = 409, body = ErrorBody), (status = 413, body = ErrorBody, description = "the bundle is over 64 MiB"),
              (status = 422, body = ErrorBody)))]
pub async fn publish_dataset(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(org): ApiPath<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let org = caller.org(&state, &org, Scope::Write).await?;
    let ds = parse_bundle(read_bundle(&headers, body)?, Dataset::parse).await?;
    Ok(published(
        state
            .store
            .publish_dataset(org.id, &ds, Some(caller.key.info.user_id))
            .await?,
    ))
}

/// `GET /org/{org}/datasets`.
#[utoipa::path(get, path = "/api/v1/org/{org}/datasets", tag = "datasets",
    params(("org" = String, Path, description = "organization key"), ListQuery),
    responses((status = 200, body = Page<ArtifactSummary>), (status = 422, body = ErrorBody)))]
pub async fn list_datasets(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(org): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<ArtifactSummary>>> {
    list(&state, &caller, &org, ArtifactKind::Dataset, &q).await
}

/// `GET /org/{org}/datasets/{name}`.
#[utoipa::path(get, path = "/api/v1/org/{org}/datasets/{name}", tag = "datasets",
    params(("org" = String, Path, description = "organization key"), ("name" = String, Path, description = "dataset name")),
    responses((status = 200, body = ArtifactSummary), (status = 404, body = ErrorBody)))]
pub async fn get_dataset(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org, name)): ApiPath<(String, String)>,
) -> ApiResult<Json<ArtifactSummary>> {
    get(&state, &caller, &org, ArtifactKind::Dataset, &name).await
}

/// `GET /org/{org}/datasets/{name}/versions`: highest first.
#[utoipa::path(get, path = "/api/v1/org/{org}/datasets/{name}/versions", tag = "datasets",
    params(("org" = String, Path, description = "organization key"), ("name" = String, Path, description = "dataset name")),
    responses((status = 200, body = Vec<VersionSummary>), (status = 404, body = ErrorBody)))]
pub async fn dataset_versions(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org, name)): ApiPath<(String, String)>,
) -> ApiResult<Json<Vec<VersionSummary>>> {
    versions(&state, &caller, &org, ArtifactKind::Dataset, &name).await
}

/// `GET /org/{org}/datasets/{name}/{version}`.
#[utoipa::path(get, path = "/api/v1/org/{org}/datasets/{name}/{version}", tag = "datasets",
    params(("org" = String, Path, description = "organization key"), ("name" = String, Path, description = "dataset name"),
           ("version" = String, Path, description = "exact version, e.g. 1.0.0")),
    responses((status = 200, body = DatasetVersion), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn dataset_version(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org, name, version)): ApiPath<(String, String, String)>,
) -> ApiResult<Json<DatasetVersion>> {
    let org = caller.org(&state, &org, Scope::Read).await?;
    let version = checked_version(&version)?;
    let found = state.store.dataset_version(org.id, &name, &version).await?;
    Ok(Json(found.ok_or_else(|| {
        ApiError::not_found(format!("dataset {name}@{version} not found"))
    })?))
}

/// `GET /org/{org}/datasets/{name}/{version}/files/{path}`: one stored file, raw.
#[utoipa::path(get, path = "/api/v1/org/{org}/datasets/{name}/{version}/files/{path}", tag = "datasets",
    params(("org" = String, Path, description = "organization key"), ("name" = String, Path, description = "dataset name"),
           ("version" = String, Path, description = "exact version"), ("path" = String, Path, description = "bundle-relative file path")),
    responses((status = 200, description = "the file's bytes"), (status = 404, body = ErrorBody)))]
pub async fn dataset_file(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org, name, version, path)): ApiPath<(String, String, String, String)>,
) -> ApiResult<Response> {
    file(
        &state,
        &caller,
        &org,
        ArtifactKind::Dataset,
        &name,
        &version,
        &path,
    )
    .await
}

/// `GET /org/{org}/datasets/{name}/{version}/rows?offset=&limit=`.
#[utoipa::path(get, path = "/api/v1/org/{org}/datasets/{name}/{version}/rows", tag = "datasets",
    params(("org" = String, Path, description = "organization key"), ("name" = String, Path, description = "dataset name"),
           ("version" = String, Path, description = "exact version"), RowsQuery),
    responses((status = 200, body = RowsPage), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn dataset_rows(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org, name, version)): ApiPath<(String, String, String)>,
    ApiQuery(q): ApiQuery<RowsQuery>,
) -> ApiResult<Json<RowsPage>> {
    let org = caller.org(&state, &org, Scope::Read).await?;
    let version = checked_version(&version)?;
    let offset = query_number("offset", q.offset.as_deref(), 0..=i64::MAX)?.unwrap_or(0);
    let limit = query_number("limit", q.limit.as_deref(), 1..=MAX_ROWS_LIMIT)?.unwrap_or(20);
    let rows = state
        .store
        .dataset_rows(org.id, &name, &version, offset, limit)
        .await?;
    Ok(Json(rows.ok_or_else(|| {
        ApiError::not_found(format!("dataset {name}@{version} not found"))
    })?))
}
