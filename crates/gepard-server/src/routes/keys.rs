//! API key management (admin scope): create, list, revoke.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use gepard_core::auth::{ApiKeySecret, Scope, Scopes};
use gepard_core::model::{ApiKeyInfo, CreatedApiKey};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::AppState;

/// Body of `POST /org/{org}/keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// What the key is for (shown in listings).
    pub name: String,
    /// Scopes: any of `read`, `write`, `promote`, `admin`, `runner`.
    pub scopes: Vec<String>,
    /// Limit the key to one workspace (key); omitted → the whole organization.
    #[serde(default)]
    pub workspace: Option<String>,
}

/// `POST /org/{org}/keys`: creates a key; the only response that carries its secret.
#[utoipa::path(post, path = "/api/v1/org/{org}/keys", tag = "keys",
    params(("org" = String, Path, description = "organization key")),
    request_body = CreateKey,
    responses((status = 201, body = CreatedApiKey), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(org): ApiPath<String>,
    body: Result<ApiJson<CreateKey>, ApiError>,
) -> ApiResult<(StatusCode, Json<CreatedApiKey>)> {
    // Access first (401, 404, 403), then the body's faults, as on every route.
    let org = caller.org(&state, &org, Scope::Admin).await?;
    let ApiJson(body) = body?;
    let name = body.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(ApiError::invalid(
            &["body", "name"],
            "must be 1 to 200 characters",
        ));
    }
    let scopes = body
        .scopes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse::<Scope>()
                .map_err(|e| ApiError::invalid(&["body", "scopes", &i.to_string()], e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if scopes.is_empty() {
        return Err(ApiError::invalid(
            &["body", "scopes"],
            "give at least one scope",
        ));
    }
    let workspace_id = match body.workspace.as_deref() {
        None => caller.key.workspace_id,
        Some(ws_key) => {
            let ws = state
                .store
                .workspace_by_key(org.id, ws_key)
                .await?
                .filter(|ws| caller.sees_workspace(ws))
                .ok_or_else(|| {
                    ApiError::invalid(
                        &["body", "workspace"],
                        format!("workspace `{ws_key}` not found"),
                    )
                })?;
            Some(ws.id)
        }
    };
    // A workspace-limited admin must not mint keys that reach beyond its workspace.
    if caller.key.workspace_id.is_some() && workspace_id != caller.key.workspace_id {
        return Err(ApiError::forbidden(
            "a workspace-limited key can only create keys for its own workspace",
        ));
    }
    let secret = ApiKeySecret::generate();
    let info = state
        .store
        .create_api_key(
            org.id,
            workspace_id,
            caller.key.info.user_id,
            name,
            &Scopes::new(scopes),
            &secret,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKey {
            info,
            key: secret.expose().to_owned(),
        }),
    ))
}

/// `GET /org/{org}/keys`: the keys this caller may manage (never their secrets).
#[utoipa::path(get, path = "/api/v1/org/{org}/keys", tag = "keys",
    params(("org" = String, Path, description = "organization key")),
    responses((status = 200, body = Vec<ApiKeyInfo>), (status = 403, body = ErrorBody)))]
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(org): ApiPath<String>,
) -> ApiResult<Json<Vec<ApiKeyInfo>>> {
    let org = caller.org(&state, &org, Scope::Admin).await?;
    let keys = state.store.list_api_keys(org.id).await?;
    Ok(Json(
        keys.into_iter()
            .filter(|k| visible_key(&caller, k))
            .collect(),
    ))
}

fn visible_key(caller: &Caller, key: &ApiKeyInfo) -> bool {
    caller.key.workspace_id.is_none() || key.workspace == caller.key.info.workspace
}

/// `DELETE /org/{org}/keys/{id}`: revokes a key at once; 409 for the organization's last
/// admin key that is not limited to a workspace (nothing could manage the org without it).
#[utoipa::path(delete, path = "/api/v1/org/{org}/keys/{id}", tag = "keys",
    params(("org" = String, Path, description = "organization key"), ("id" = String, Path, description = "key id")),
    responses((status = 200, body = ApiKeyInfo), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org, id)): ApiPath<(String, String)>,
) -> ApiResult<Json<ApiKeyInfo>> {
    let org = caller.org(&state, &org, Scope::Admin).await?;
    let not_found = || ApiError::not_found(format!("API key `{id}` not found"));
    let key_id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let key = state
        .store
        .api_key(org.id, key_id)
        .await?
        .filter(|k| visible_key(&caller, k))
        .ok_or_else(not_found)?;
    Ok(Json(state.store.revoke_api_key(org.id, key.id).await?))
}
