//! Identity and tenancy routes: the caller, organizations, workspaces, projects.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use gepard_core::model::{ApiKeyInfo, Organization, Project, User, Workspace};
use gepard_core::{Scope, TenantKey};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::AppState;

/// `GET /user`'s answer: the user, plus (gepard's extra field) the key that asked, so a client
/// such as the Optimization page can offer only the actions the key's scopes allow.
#[derive(Debug, Serialize, ToSchema)]
pub struct CurrentUser {
    /// The user the key acts for.
    #[serde(flatten)]
    pub user: User,
    /// The key that authenticated this request (never its secret).
    pub api_key: ApiKeyInfo,
    /// Every scope whose actions this key may take (admin implies write, promote and read;
    /// write and promote imply read), decided by the same rule the server checks with, so a
    /// client need not restate it.
    #[schema(value_type = Vec<String>)]
    pub allowed: Vec<Scope>,
}

/// `GET /user`: the user the key acts for, and the key itself.
#[utoipa::path(get, path = "/api/v1/user", tag = "identity",
    responses((status = 200, body = CurrentUser), (status = 401, body = ErrorBody)))]
pub async fn current_user(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<CurrentUser>> {
    let user = state
        .store
        .user(caller.key.info.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("the key's user no longer exists"))?;
    let allowed = Scope::ALL
        .into_iter()
        .filter(|s| caller.key.info.scopes.allows(*s))
        .collect();
    Ok(Json(CurrentUser {
        user,
        api_key: caller.key.info,
        allowed,
    }))
}

/// `GET /org/{org}`.
#[utoipa::path(get, path = "/api/v1/org/{org}", tag = "identity",
    params(("org" = String, Path, description = "organization key")),
    responses((status = 200, body = Organization), (status = 404, body = ErrorBody)))]
pub async fn get_org(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(org): ApiPath<String>,
) -> ApiResult<Json<Organization>> {
    Ok(Json(caller.org(&state, &org, Scope::Read).await?))
}

/// `GET /org/{org}/ws`: the workspaces this key may see.
#[utoipa::path(get, path = "/api/v1/org/{org}/ws", tag = "identity",
    params(("org" = String, Path, description = "organization key")),
    responses((status = 200, body = Vec<Workspace>), (status = 404, body = ErrorBody)))]
pub async fn list_workspaces(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(org): ApiPath<String>,
) -> ApiResult<Json<Vec<Workspace>>> {
    let org = caller.org(&state, &org, Scope::Read).await?;
    let all = state.store.list_workspaces(org.id).await?;
    Ok(Json(
        all.into_iter()
            .filter(|ws| caller.sees_workspace(ws))
            .collect(),
    ))
}

/// Body of `POST /org/{org}/ws`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    /// URL key, `[a-z0-9-]`.
    pub key: String,
    /// Display name (defaults to the key).
    #[serde(default)]
    pub name: Option<String>,
}

/// `POST /org/{org}/ws`: creates a workspace with its default project (admin, org-wide key).
#[utoipa::path(post, path = "/api/v1/org/{org}/ws", tag = "identity",
    params(("org" = String, Path, description = "organization key")),
    request_body = CreateWorkspace,
    responses((status = 201, body = Workspace), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_workspace(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(org): ApiPath<String>,
    body: Result<ApiJson<CreateWorkspace>, ApiError>,
) -> ApiResult<(StatusCode, Json<Workspace>)> {
    // Access first (401, 404, 403), then the body's faults, as on every route.
    let org = caller.org(&state, &org, Scope::Admin).await?;
    if caller.key.workspace_id.is_some() {
        return Err(ApiError::forbidden(
            "a workspace-limited key cannot create workspaces",
        ));
    }
    let ApiJson(body) = body?;
    let key = TenantKey::parse(&body.key)
        .map_err(|e| ApiError::invalid(&["body", "key"], e.to_string()))?;
    let name = display_name(body.name.as_deref(), &key)?;
    let ws = state
        .store
        .create_workspace(org.id, key.as_str(), name)
        .await?;
    Ok((StatusCode::CREATED, Json(ws)))
}

/// A trimmed display name (1–200 characters), defaulting to the key.
fn display_name<'a>(name: Option<&'a str>, key: &'a TenantKey) -> Result<&'a str, ApiError> {
    let name = name
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .unwrap_or(key.as_str());
    if name.len() > 200 {
        return Err(ApiError::invalid(
            &["body", "name"],
            "must be at most 200 characters",
        ));
    }
    Ok(name)
}

/// `GET /org/{org}/ws/{ws}`.
#[utoipa::path(get, path = "/api/v1/org/{org}/ws/{ws}", tag = "identity",
    params(("org" = String, Path, description = "organization key"), ("ws" = String, Path, description = "workspace key")),
    responses((status = 200, body = Workspace), (status = 404, body = ErrorBody)))]
pub async fn get_workspace(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org, ws)): ApiPath<(String, String)>,
) -> ApiResult<Json<Workspace>> {
    Ok(Json(
        caller.workspace(&state, &org, &ws, Scope::Read).await?.1,
    ))
}

/// `GET /org/{org}/ws/{ws}/projects`.
#[utoipa::path(get, path = "/api/v1/org/{org}/ws/{ws}/projects", tag = "identity",
    params(("org" = String, Path, description = "organization key"), ("ws" = String, Path, description = "workspace key")),
    responses((status = 200, body = Vec<Project>), (status = 404, body = ErrorBody)))]
pub async fn list_projects(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org, ws)): ApiPath<(String, String)>,
) -> ApiResult<Json<Vec<Project>>> {
    let (_, ws) = caller.workspace(&state, &org, &ws, Scope::Read).await?;
    Ok(Json(state.store.list_projects(ws.id).await?))
}

/// Body of `POST …/projects`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    /// URL key, `[a-z0-9-]`.
    pub key: String,
    /// Display name (defaults to the key).
    #[serde(default)]
    pub name: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
}

/// `POST /org/{org}/ws/{ws}/projects`.
#[utoipa::path(post, path = "/api/v1/org/{org}/ws/{ws}/projects", tag = "identity",
    params(("org" = String, Path, description = "organization key"), ("ws" = String, Path, description = "workspace key")),
    request_body = CreateProject,
    responses((status = 201, body = Project), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_project(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org, ws)): ApiPath<(String, String)>,
    body: Result<ApiJson<CreateProject>, ApiError>,
) -> ApiResult<(StatusCode, Json<Project>)> {
    // Access first (401, 404, 403), then the body's faults, as on every route.
    let (_, ws) = caller.workspace(&state, &org, &ws, Scope::Write).await?;
    let ApiJson(body) = body?;
    let key = TenantKey::parse(&body.key)
        .map_err(|e| ApiError::invalid(&["body", "key"], e.to_string()))?;
    let name = display_name(body.name.as_deref(), &key)?;
    let project = state
        .store
        .create_project(ws.id, key.as_str(), name, body.description.as_deref())
        .await?;
    Ok((StatusCode::CREATED, Json(project)))
}

/// `GET /org/{org}/ws/{ws}/projects/{project}` (key or id).
#[utoipa::path(get, path = "/api/v1/org/{org}/ws/{ws}/projects/{project}", tag = "identity",
    params(("org" = String, Path, description = "organization key"), ("ws" = String, Path, description = "workspace key"),
           ("project" = String, Path, description = "project key or id")),
    responses((status = 200, body = Project), (status = 404, body = ErrorBody)))]
pub async fn get_project(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org, ws, project)): ApiPath<(String, String, String)>,
) -> ApiResult<Json<Project>> {
    let (_, ws) = caller.workspace(&state, &org, &ws, Scope::Read).await?;
    let project = state.store.project(ws.id, &project).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "project `{project}` not found in workspace `{}`",
            ws.key
        ))
    })?;
    Ok(Json(project))
}
