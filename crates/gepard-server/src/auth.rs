//! Who is calling, and what they may reach.
//!
//! The order of checks is part of the contract (API.md): no or unknown key → 401; a tenancy
//! the key is not scoped to → 404 exactly as if it did not exist, so existence never leaks;
//! then a missing scope → 403.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use gepard_core::model::{Organization, Workspace};
use gepard_core::Scope;
use gepard_store::AuthenticatedKey;

use crate::error::ApiError;
use crate::AppState;

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key that authenticated the request.
    pub key: AuthenticatedKey,
}

/// Reads the key from `X-API-Key` or `Authorization: Bearer`.
fn presented_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    if let Some(v) = headers.get("x-api-key") {
        let v = v
            .to_str()
            .map_err(|_| ApiError::unauthorized("the X-API-Key header is not valid text"))?;
        return Ok(Some(v.trim()));
    }
    if let Some(v) = headers.get(axum::http::header::AUTHORIZATION) {
        let v = v
            .to_str()
            .map_err(|_| ApiError::unauthorized("the Authorization header is not valid text"))?;
        // The scheme name is case-insensitive (RFC 9110 §11.1).
        let token = v
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token)
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be `Bearer <key>`")
            })?;
        return Ok(Some(token.trim()));
    }
    Ok(None)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let key = presented_key(&parts.headers)?.ok_or_else(|| {
            ApiError::unauthorized(
                "an API key is required: send `X-API-Key: <key>` or `Authorization: Bearer <key>`",
            )
        })?;
        let key = state
            .store
            .authenticate(key)
            .await?
            .ok_or_else(|| ApiError::unauthorized("the API key is unknown or revoked"))?;
        Ok(Self { key })
    }
}

impl Caller {
    /// Fails with 403 unless the key holds `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.key.info.scopes.allows(scope) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this API key lacks the `{scope}` scope (it has: {})",
                self.key.info.scopes.to_list()
            )))
        }
    }

    /// The organization in the path, if this key belongs to it (else 404); no scope check.
    async fn visible_org(&self, state: &AppState, org_key: &str) -> Result<Organization, ApiError> {
        let not_found = || ApiError::not_found(format!("organization `{org_key}` not found"));
        let org = state
            .store
            .org_by_key(org_key)
            .await?
            .ok_or_else(not_found)?;
        if org.id != self.key.org_id {
            return Err(not_found());
        }
        Ok(org)
    }

    /// The organization in the path, if this key belongs to it (else 404), then the scope check.
    pub async fn org(
        &self,
        state: &AppState,
        org_key: &str,
        scope: Scope,
    ) -> Result<Organization, ApiError> {
        let org = self.visible_org(state, org_key).await?;
        self.require(scope)?;
        Ok(org)
    }

    /// Whether this key may see the workspace (org-wide keys see all of their org's).
    pub fn sees_workspace(&self, ws: &Workspace) -> bool {
        self.key.workspace_id.is_none_or(|id| id == ws.id)
    }

    /// The workspace in the path, if this key may see it (else 404), then the scope check.
    pub async fn workspace(
        &self,
        state: &AppState,
        org_key: &str,
        ws_key: &str,
        scope: Scope,
    ) -> Result<(Organization, Workspace), ApiError> {
        let org = self.visible_org(state, org_key).await?;
        let not_found = || {
            ApiError::not_found(format!(
                "workspace `{ws_key}` not found in organization `{org_key}`"
            ))
        };
        let ws = state
            .store
            .workspace_by_key(org.id, ws_key)
            .await?
            .ok_or_else(not_found)?;
        if !self.sees_workspace(&ws) {
            return Err(not_found());
        }
        self.require(scope)?;
        Ok((org, ws))
    }
}
