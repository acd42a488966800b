//! Promotion of a job's best candidate into a new capability version: the preview (read
//! scope) and the promotion itself (promote scope), plus the organization's audit log.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use gepard_core::model::{
    AuditEntry, CapabilityVersion, Organization, Page, PromotionPreview, Workspace,
};
use gepard_core::names::{parse_version, split_org_prefix, ArtifactName};
use gepard_core::Scope;
use gepard_store::{Promoter, PromotionRequest, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{bytes_rejection, from_json_body, json_value, ApiPath, ApiQuery};
use crate::routes::jobs::job_id;
use crate::routes::registry::page_request;
use crate::AppState;

/// The query of the promotion preview: the target it would write. Unknown parameters are
/// ignored, as on every other route (clients of the Dreadnode API may send their own).
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PreviewQuery {
    /// Capability name to write (default: the source capability's); may carry this org's prefix.
    /// Another name that already exists must be linked to the source by an earlier promotion
    /// (one was promoted from the other), else the promotion is refused.
    #[serde(default)]
    pub name: Option<String>,
    /// Version to write (default: under the source's name, the source version's next free
    /// patch; under another name, the patch after that name's highest version, or the
    /// source's version when it has none).
    #[serde(default)]
    pub version: Option<String>,
}

/// The target of a promotion: the body of the promotion, and the preview's query.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteTarget {
    /// Capability name to write (default: the source capability's); may carry this org's prefix.
    /// Another name that already exists must be linked to the source by an earlier promotion
    /// (one was promoted from the other), else the promotion is refused.
    #[serde(default)]
    pub name: Option<String>,
    /// Version to write (default: under the source's name, the source version's next free
    /// patch; under another name, the patch after that name's highest version, or the
    /// source's version when it has none).
    #[serde(default)]
    pub version: Option<String>,
}

impl PromoteTarget {
    /// Validates the target against the organization, naming the wrong field.
    fn parse(
        &self,
        org: &Organization,
        at: &str,
    ) -> Result<(Option<ArtifactName>, Option<semver::Version>), ApiError> {
        let name = match self
            .name
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            None => None,
            Some(n) => match split_org_prefix(n) {
                Ok((Some(o), _)) if o.as_str() != org.key => {
                    return Err(ApiError::invalid(
                        &[at, "name"],
                        format!(
                            "organization `{o}` is not this job's organization `{}`",
                            org.key
                        ),
                    ))
                }
                Ok((_, name)) => Some(name),
                Err(e) => return Err(ApiError::invalid(&[at, "name"], e.to_string())),
            },
        };
        let version = match self
            .version
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            None => None,
            Some(v) => Some(
                parse_version(v).map_err(|e| ApiError::invalid(&[at, "version"], e.to_string()))?,
            ),
        };
        Ok((name, version))
    }
}

fn request(
    org: &Organization,
    ws: &Workspace,
    id: &str,
    target: &PromoteTarget,
    at: &str,
) -> Result<PromotionRequest, ApiError> {
    let job_id = job_id(id)?;
    let (name, version) = target.parse(org, at)?;
    Ok(PromotionRequest {
        org_id: org.id,
        workspace_id: ws.id,
        job_id,
        name,
        version,
    })
}

/// A job outside the path's workspace is a 404 with the same words as every job route.
fn job_error(e: StoreError, ws: &str, id: &str) -> ApiError {
    match e {
        StoreError::NotFound(_) => {
            ApiError::not_found(format!("job `{id}` not found in workspace `{ws}`"))
        }
        other => other.into(),
    }
}

/// `GET …/{id}/promotion-preview`: source and optimized instructions, their diff, the scores,
/// the version a promotion would write, and whether it may (with the reasons when not).
#[utoipa::path(get, path = "/api/v1/org/{org}/ws/{ws}/optimization/jobs/{id}/promotion-preview", tag = "jobs",
    params(("org" = String, Path, description = "organization key"), ("ws" = String, Path, description = "workspace key"), ("id" = String, Path, description = "job id"), PreviewQuery),
    responses((status = 200, body = PromotionPreview), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn promotion_preview(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org, ws, id)): ApiPath<(String, String, String)>,
    query: Result<ApiQuery<PreviewQuery>, ApiError>,
) -> ApiResult<Json<PromotionPreview>> {
    let (org_rec, ws_rec) = caller.workspace(&state, &org, &ws, Scope::Read).await?;
    let ApiQuery(PreviewQuery { name, version }) = query?;
    let target = PromoteTarget { name, version };
    let req = request(&org_rec, &ws_rec, &id, &target, "query")?;
    Ok(Json(
        state
            .store
            .promotion_preview(&req)
            .await
            .map_err(|e| job_error(e, &ws, &id))?,
    ))
}

fn target_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<PromoteTarget> {
    let bytes = body.map_err(|e| bytes_rejection(&e))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(PromoteTarget::default());
    }
    let value = json_value(headers, &bytes)?;
    from_json_body(&value)
}

/// `POST …/{id}/promote`: writes the job's best candidate as a new, immutable capability
/// version (201 with its detail, provenance included). 409 when the job may not be promoted
/// (every reason named) or the version exists. Needs the `promote` scope.
#[utoipa::path(post, path = "/api/v1/org/{org}/ws/{ws}/optimization/jobs/{id}/promote", tag = "jobs",
    params(("org" = String, Path, description = "organization key"), ("ws" = String, Path, description = "workspace key"), ("id" = String, Path, description = "job id")),
    request_body(content = PromoteTarget, description = "target name and version; both optional, the body too"),
    responses((status = 201, body = CapabilityVersion), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn promote_job(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org, ws, id)): ApiPath<(String, String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<CapabilityVersion>)> {
    // Authorization comes before the body is even looked at (401 → 404 → 403, then 4xx).
    let (org_rec, ws_rec) = caller.workspace(&state, &org, &ws, Scope::Promote).await?;
    let target = target_body(&headers, body)?;
    let req = request(&org_rec, &ws_rec, &id, &target, "body")?;
    let info = &caller.key.info;
    let by = Promoter {
        user_id: info.user_id,
        key_id: info.id,
        key_name: info.name.clone(),
        key_prefix: info.prefix.clone(),
    };
    let version = state
        .store
        .promote_job(state.notifier.as_ref(), &req, &by)
        .await
        .map_err(|e| job_error(e, &ws, &id))?;
    Ok((StatusCode::CREATED, Json(version)))
}

/// Query of `GET /org/{org}/audit`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// 1-based page.
    #[param(value_type = Option<u64>, minimum = 1)]
    pub page: Option<String>,
    /// Items per page (1–100, default 20).
    #[param(value_type = Option<u64>, minimum = 1, maximum = 100)]
    pub page_size: Option<String>,
}

/// `GET /org/{org}/audit`: the organization's audit log, newest first (admin scope); a key
/// limited to one workspace sees only that workspace's entries.
#[utoipa::path(get, path = "/api/v1/org/{org}/audit", tag = "audit",
    params(("org" = String, Path, description = "organization key"), AuditQuery),
    responses((status = 200, body = Page<AuditEntry>), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn audit_log(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(org): ApiPath<String>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<Page<AuditEntry>>> {
    let org = caller.org(&state, &org, Scope::Admin).await?;
    let page = page_request(q.page.as_deref(), q.page_size.as_deref())?;
    Ok(Json(
        state
            .store
            .audit_log(org.id, caller.key.workspace_id, page)
            .await?,
    ))
}
