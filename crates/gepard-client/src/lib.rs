//! Typed HTTP client for the gepard API (the CLI's only way to talk to a server).
//!
//! Every method maps one route of API.md; errors keep the server's envelope so callers can
//! show its `detail` and field locations. Depends on the domain types only, never on the
//! server crate.

use gepard_core::model::{
    ApiKeyInfo, ArtifactSummary, CapabilityVersion, CreatedApiKey, DatasetVersion, ErrorBody,
    Organization, Page, Project, RowsPage, User, VersionSummary, Workspace,
};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// What can go wrong talking to a server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error envelope.
    #[error("{}", describe(.status, .body))]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// The envelope.
        body: ErrorBody,
    },
    /// The server could not be reached or the connection failed.
    #[error("cannot reach the gepard server at {url}: {source}")]
    Transport {
        /// The URL requested.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered something that is not the expected JSON.
    #[error("unexpected response from {url} ({status}): {message}")]
    Decode {
        /// The URL requested.
        url: String,
        /// HTTP status.
        status: StatusCode,
        /// What was wrong.
        message: String,
    },
}

fn describe(status: &StatusCode, body: &ErrorBody) -> String {
    let mut s = format!("{} ({})", body.detail, status.as_u16());
    for e in body.errors.iter().flatten().skip(1) {
        s.push_str(&format!("; {}: {}", e.loc.join("."), e.msg));
    }
    s
}

impl ClientError {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Api { status, .. } | Self::Decode { status, .. } => Some(*status),
            Self::Transport { .. } => None,
        }
    }
}

/// Result alias for client calls.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Whether a publish created a version or found it already published.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishOutcome<T> {
    /// `true` for 201 (new version), `false` for 200 (same content already there).
    pub created: bool,
    /// The version.
    pub version: T,
}

/// A client for one server, one key.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Client {
    /// A client for `server` (e.g. `http://127.0.0.1:8321`) using `api_key`.
    pub fn new(server: &str, api_key: Option<String>) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: server.trim_end_matches('/').to_owned(),
            key: api_key,
        }
    }

    /// The server's base URL.
    pub fn server(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, self.url(path));
        if let Some(key) = &self.key {
            req = req.header("X-API-Key", key);
        }
        req
    }

    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        path: &str,
    ) -> Result<(StatusCode, T)> {
        let url = self.url(path);
        let resp = req.send().await.map_err(|source| ClientError::Transport {
            url: url.clone(),
            source,
        })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| ClientError::Transport {
                url: url.clone(),
                source,
            })?;
        if !status.is_success() {
            let body = serde_json::from_slice::<ErrorBody>(&bytes).unwrap_or_else(|_| ErrorBody {
                code: status.as_u16(),
                kind: "http_error".into(),
                detail: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
                errors: None,
            });
            return Err(ClientError::Api { status, body });
        }
        let value = serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            url,
            status,
            message: e.to_string(),
        })?;
        Ok((status, value))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        Ok(self.send(self.request(Method::GET, path), path).await?.1)
    }

    async fn post_json<T: DeserializeOwned, B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        Ok(self
            .send(self.request(Method::POST, path).json(body), path)
            .await?
            .1)
    }

    async fn publish<T: DeserializeOwned>(
        &self,
        path: &str,
        bundle: Vec<u8>,
    ) -> Result<PublishOutcome<T>> {
        let req = self
            .request(Method::POST, path)
            .header("Content-Type", "application/gzip")
            .body(bundle);
        let (status, version) = self.send(req, path).await?;
        Ok(PublishOutcome {
            created: status == StatusCode::CREATED,
            version,
        })
    }

    /// `GET /healthz`.
    pub async fn healthz(&self) -> Result<serde_json::Value> {
        self.get("/healthz").await
    }

    /// `GET /api/v1/user`.
    pub async fn user(&self) -> Result<User> {
        self.get("/api/v1/user").await
    }

    /// `GET /api/v1/org/{org}`.
    pub async fn org(&self, org: &str) -> Result<Organization> {
        self.get(&format!("/api/v1/org/{org}")).await
    }

    /// `GET /api/v1/org/{org}/ws`.
    pub async fn workspaces(&self, org: &str) -> Result<Vec<Workspace>> {
        self.get(&format!("/api/v1/org/{org}/ws")).await
    }

    /// `GET /api/v1/org/{org}/ws/{ws}/projects`.
    pub async fn projects(&self, org: &str, ws: &str) -> Result<Vec<Project>> {
        self.get(&format!("/api/v1/org/{org}/ws/{ws}/projects"))
            .await
    }

    /// `POST /api/v1/org/{org}/keys`.
    pub async fn create_key(
        &self,
        org: &str,
        name: &str,
        scopes: &[String],
        workspace: Option<&str>,
    ) -> Result<CreatedApiKey> {
        let body = serde_json::json!({"name": name, "scopes": scopes, "workspace": workspace});
        self.post_json(&format!("/api/v1/org/{org}/keys"), &body)
            .await
    }

    /// `GET /api/v1/org/{org}/keys`.
    pub async fn list_keys(&self, org: &str) -> Result<Vec<ApiKeyInfo>> {
        self.get(&format!("/api/v1/org/{org}/keys")).await
    }

    /// `DELETE /api/v1/org/{org}/keys/{id}`.
    pub async fn revoke_key(&self, org: &str, id: &str) -> Result<ApiKeyInfo> {
        let path = format!("/api/v1/org/{org}/keys/{id}");
        Ok(self
            .send(self.request(Method::DELETE, &path), &path)
            .await?
            .1)
    }

    /// `POST /api/v1/org/{org}/capabilities` with a gzip'd tar.
    pub async fn publish_capability(
        &self,
        org: &str,
        bundle: Vec<u8>,
    ) -> Result<PublishOutcome<CapabilityVersion>> {
        self.publish(&format!("/api/v1/org/{org}/capabilities"), bundle)
            .await
    }

    /// `POST /api/v1/org/{org}/datasets` with a gzip'd tar.
    pub async fn publish_dataset(
        &self,
        org: &str,
        bundle: Vec<u8>,
    ) -> Result<PublishOutcome<DatasetVersion>> {
        self.publish(&format!("/api/v1/org/{org}/datasets"), bundle)
            .await
    }

    /// `GET /api/v1/org/{org}/{capabilities|datasets}?page=&page_size=&search=`.
    pub async fn list_artifacts(
        &self,
        org: &str,
        kind: gepard_core::model::ArtifactKind,
        search: Option<&str>,
        page: u32,
        page_size: u32,
    ) -> Result<Page<ArtifactSummary>> {
        let collection = collection(kind);
        let mut path = format!("/api/v1/org/{org}/{collection}?page={page}&page_size={page_size}");
        if let Some(s) = search {
            path.push_str("&search=");
            path.push_str(&encode(s));
        }
        self.get(&path).await
    }

    /// `GET /api/v1/org/{org}/{capabilities|datasets}/{name}/versions`.
    pub async fn versions(
        &self,
        org: &str,
        kind: gepard_core::model::ArtifactKind,
        name: &str,
    ) -> Result<Vec<VersionSummary>> {
        self.get(&format!(
            "/api/v1/org/{org}/{}/{}/versions",
            collection(kind),
            encode(name)
        ))
        .await
    }

    /// `GET /api/v1/org/{org}/capabilities/{name}/{version}`.
    pub async fn capability_version(
        &self,
        org: &str,
        name: &str,
        version: &str,
    ) -> Result<CapabilityVersion> {
        self.get(&format!(
            "/api/v1/org/{org}/capabilities/{}/{}",
            encode(name),
            encode(version)
        ))
        .await
    }

    /// `GET /api/v1/org/{org}/datasets/{name}/{version}`.
    pub async fn dataset_version(
        &self,
        org: &str,
        name: &str,
        version: &str,
    ) -> Result<DatasetVersion> {
        self.get(&format!(
            "/api/v1/org/{org}/datasets/{}/{}",
            encode(name),
            encode(version)
        ))
        .await
    }

    /// `GET /api/v1/org/{org}/datasets/{name}/{version}/rows?offset=&limit=`.
    pub async fn dataset_rows(
        &self,
        org: &str,
        name: &str,
        version: &str,
        offset: i64,
        limit: i64,
    ) -> Result<RowsPage> {
        self.get(&format!(
            "/api/v1/org/{org}/datasets/{}/{}/rows?offset={offset}&limit={limit}",
            encode(name),
            encode(version)
        ))
        .await
    }
}

fn collection(kind: gepard_core::model::ArtifactKind) -> &'static str {
    match kind {
        gepard_core::model::ArtifactKind::Capability => "capabilities",
        gepard_core::model::ArtifactKind::Dataset => "datasets",
    }
}

/// Percent-encodes a path segment or query value (everything but unreserved characters).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
