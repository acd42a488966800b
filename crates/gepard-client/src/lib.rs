//! Typed HTTP client for the gepard API (the CLI's only way to talk to a server).
//!
//! Every method maps one route of API.md; errors keep the server's envelope so callers can
//! show its `detail` and field locations. Depends on the domain types only, never on the
//! server crate.

use gepard_core::job::JobStatus;
use gepard_core::model::{
    ApiKeyInfo, ArtifactSummary, AuditEntry, CapabilityVersion, CreatedApiKey, DatasetVersion,
    ErrorBody, Job, JobAttempt, Organization, Page, Project, PromotionPreview, RowsPage,
    SequencedLog, User, VersionSummary, Workspace,
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

/// How many times a repeatable request is sent again after a busy answer.
const BUSY_RETRIES: u32 = 3;

/// The longest a client waits on one Retry-After, whatever the server asks.
const MAX_BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// For a 503 that carries `Retry-After: <seconds>`, how long to wait before trying again.
fn busy_wait(resp: &reqwest::Response) -> Option<std::time::Duration> {
    if resp.status() != StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    let secs: u64 = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(std::time::Duration::from_secs(secs).min(MAX_BUSY_WAIT))
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
        let transport = |source| ClientError::Transport {
            url: url.clone(),
            source,
        };
        let mut request = req.build().map_err(transport)?;
        // A 503 with Retry-After is the server saying "busy, nothing was done": safe to send
        // again only when sending twice cannot do the work twice, i.e. a GET or a request the
        // server deduplicates by its Idempotency-Key.
        let repeatable =
            request.method() == Method::GET || request.headers().contains_key("Idempotency-Key");
        let mut retries = 0;
        let resp = loop {
            let again = (repeatable && retries < BUSY_RETRIES)
                .then(|| request.try_clone())
                .flatten();
            let resp = self.http.execute(request).await.map_err(transport)?;
            match (again, busy_wait(&resp)) {
                (Some(next), Some(wait)) => {
                    tokio::time::sleep(wait).await;
                    request = next;
                    retries += 1;
                }
                _ => break resp,
            }
        };
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(transport)?;
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

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` name (`snapshot`, `job`, `log`, `heartbeat`).
    pub event: String,
    /// The `id:` (a log sequence number).
    pub id: Option<String>,
    /// The `data:` payload (JSON).
    pub data: String,
}

/// Splits a text/event-stream into events, keeping partial input between chunks.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: String,
    current: SseEvent,
}

impl SseParser {
    /// Feeds a chunk; returns the events it completed.
    pub fn feed(&mut self, chunk: &str) -> Vec<SseEvent> {
        self.buf.push_str(chunk);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.find('\n') {
            let line: String = self.buf.drain(..=pos).collect();
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                let ev = std::mem::take(&mut self.current);
                if !ev.event.is_empty() || !ev.data.is_empty() {
                    out.push(ev);
                }
                continue;
            }
            if line.starts_with(':') {
                continue; // comment / keep-alive
            }
            let (field, value) = line
                .split_once(':')
                .map_or((line, ""), |(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)));
            match field {
                "event" => self.current.event = value.to_owned(),
                "id" => self.current.id = Some(value.to_owned()),
                "data" => {
                    if !self.current.data.is_empty() {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                }
                _ => {}
            }
        }
        out
    }
}

/// What a job-event callback wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// Keep streaming.
    Continue,
    /// Stop now.
    Stop,
}

impl Client {
    fn jobs_path(org: &str, ws: &str) -> String {
        format!("/api/v1/org/{org}/ws/{ws}/optimization/jobs")
    }

    /// One job's route: `…/jobs/{id}` followed by `tail` (empty, or `/logs`, `/cancel`, …).
    fn job_path(org: &str, ws: &str, id: &str, tail: &str) -> String {
        format!("{}/{}{tail}", Self::jobs_path(org, ws), encode(id))
    }

    /// `POST …/optimization/jobs` with an optional `Idempotency-Key`; `true` when created (201).
    pub async fn create_job(
        &self,
        org: &str,
        ws: &str,
        body: &serde_json::Value,
        idempotency_key: Option<&str>,
    ) -> Result<(bool, Job)> {
        let path = Self::jobs_path(org, ws);
        let mut req = self.request(Method::POST, &path).json(body);
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        let (status, job) = self.send(req, &path).await?;
        Ok((status == StatusCode::CREATED, job))
    }

    /// `GET …/optimization/jobs` with filters (`status`, `project`, …) as query pairs.
    pub async fn list_jobs(
        &self,
        org: &str,
        ws: &str,
        page: u32,
        page_size: u32,
        filters: &[(&str, &str)],
    ) -> Result<Page<Job>> {
        let mut path = format!(
            "{}?page={page}&page_size={page_size}",
            Self::jobs_path(org, ws)
        );
        for (k, v) in filters {
            path.push_str(&format!("&{k}={}", encode(v)));
        }
        self.get(&path).await
    }

    /// `GET …/optimization/jobs/{id}`.
    pub async fn job(&self, org: &str, ws: &str, id: &str) -> Result<Job> {
        self.get(&Self::job_path(org, ws, id, "")).await
    }

    /// `POST …/{id}/cancel`.
    pub async fn cancel_job(&self, org: &str, ws: &str, id: &str) -> Result<Job> {
        self.post_json(
            &Self::job_path(org, ws, id, "/cancel"),
            &serde_json::json!({}),
        )
        .await
    }

    /// `POST …/{id}/retry`.
    pub async fn retry_job(&self, org: &str, ws: &str, id: &str) -> Result<Job> {
        self.post_json(
            &Self::job_path(org, ws, id, "/retry"),
            &serde_json::json!({}),
        )
        .await
    }

    /// `GET …/{id}/logs?after=&limit=`.
    pub async fn job_logs(
        &self,
        org: &str,
        ws: &str,
        id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<SequencedLog>> {
        let page: serde_json::Value = self
            .get(&Self::job_path(
                org,
                ws,
                id,
                &format!("/logs?after={after}&limit={limit}"),
            ))
            .await?;
        serde_json::from_value(page["items"].clone()).map_err(|e| ClientError::Decode {
            url: self.url("logs"),
            status: StatusCode::OK,
            message: e.to_string(),
        })
    }

    /// `GET …/{id}/artifacts`.
    pub async fn job_artifacts(&self, org: &str, ws: &str, id: &str) -> Result<serde_json::Value> {
        self.get(&Self::job_path(org, ws, id, "/artifacts")).await
    }

    /// `GET …/{id}/attempts`: the job's earlier (retried) attempts, oldest first.
    pub async fn job_attempts(&self, org: &str, ws: &str, id: &str) -> Result<Vec<JobAttempt>> {
        self.get(&Self::job_path(org, ws, id, "/attempts")).await
    }

    /// `GET …/{id}/candidates`: the `items` list.
    pub async fn job_candidates(
        &self,
        org: &str,
        ws: &str,
        id: &str,
    ) -> Result<Vec<serde_json::Value>> {
        let page: serde_json::Value = self
            .get(&Self::job_path(org, ws, id, "/candidates"))
            .await?;
        Ok(page["items"].as_array().cloned().unwrap_or_default())
    }

    /// `GET …/{id}/promotion-preview`, for the default target or a given name / version.
    pub async fn promotion_preview(
        &self,
        org: &str,
        ws: &str,
        id: &str,
        name: Option<&str>,
        version: Option<&str>,
    ) -> Result<PromotionPreview> {
        let mut path = Self::job_path(org, ws, id, "/promotion-preview");
        let query: Vec<String> = [("name", name), ("version", version)]
            .iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k}={}", encode(v))))
            .collect();
        if !query.is_empty() {
            path.push('?');
            path.push_str(&query.join("&"));
        }
        self.get(&path).await
    }

    /// `POST …/{id}/promote` (promote scope): the new capability version.
    pub async fn promote_job(
        &self,
        org: &str,
        ws: &str,
        id: &str,
        name: Option<&str>,
        version: Option<&str>,
    ) -> Result<CapabilityVersion> {
        self.post_json(
            &Self::job_path(org, ws, id, "/promote"),
            &serde_json::json!({"name": name, "version": version}),
        )
        .await
    }

    /// `GET /api/v1/org/{org}/audit` (admin scope), newest first.
    pub async fn audit_log(
        &self,
        org: &str,
        page: u32,
        page_size: u32,
    ) -> Result<Page<AuditEntry>> {
        self.get(&format!(
            "/api/v1/org/{org}/audit?page={page}&page_size={page_size}"
        ))
        .await
    }

    /// `POST …/{id}/progress` (runner keys).
    pub async fn job_progress(
        &self,
        org: &str,
        ws: &str,
        id: &str,
        event: &serde_json::Value,
    ) -> Result<Job> {
        self.post_json(&Self::job_path(org, ws, id, "/progress"), event)
            .await
    }

    /// Follows `GET …/{id}/events`, calling `on_event` for each event until it says stop or
    /// the server ends the stream (after the job finished). A dropped connection is resumed
    /// with `Last-Event-ID`, so no log entry is missed or repeated.
    pub async fn follow_job<F>(&self, org: &str, ws: &str, id: &str, mut on_event: F) -> Result<()>
    where
        F: FnMut(SseEvent) -> Follow,
    {
        use futures::StreamExt;
        let path = Self::job_path(org, ws, id, "/events");
        let mut last_id: Option<String> = None;
        let mut failures = 0u32;
        // The server ends a stream after the job's terminal events, but also when it shuts
        // down (a restart, a deploy): an end before a terminal job is a reason to reconnect.
        let mut terminal_seen = false;
        loop {
            let mut req = self
                .request(Method::GET, &path)
                .header("Accept", "text/event-stream");
            if let Some(id) = &last_id {
                req = req.header("Last-Event-ID", id);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(source) if failures < STREAM_RECONNECTS => {
                    failures += 1;
                    let _ = source;
                    tokio_sleep(failures).await;
                    continue;
                }
                Err(source) => {
                    return Err(ClientError::Transport {
                        url: self.url(&path),
                        source,
                    })
                }
            };
            if !resp.status().is_success() {
                let status = resp.status();
                let bytes = resp.bytes().await.unwrap_or_default();
                let body =
                    serde_json::from_slice::<ErrorBody>(&bytes).unwrap_or_else(|_| ErrorBody {
                        code: status.as_u16(),
                        kind: "http_error".into(),
                        detail: String::from_utf8_lossy(&bytes).into_owned(),
                        errors: None,
                    });
                return Err(ClientError::Api { status, body });
            }
            let mut parser = SseParser::default();
            let mut stream = resp.bytes_stream();
            let mut broken = false;
            while let Some(chunk) = stream.next().await {
                let Ok(chunk) = chunk else {
                    broken = true;
                    break;
                };
                failures = 0;
                for ev in parser.feed(&String::from_utf8_lossy(&chunk)) {
                    if ev.id.is_some() {
                        last_id.clone_from(&ev.id);
                    }
                    if matches!(ev.event.as_str(), "snapshot" | "job") {
                        terminal_seen = serde_json::from_str::<serde_json::Value>(&ev.data)
                            .ok()
                            .and_then(|j| j["status"].as_str()?.parse::<JobStatus>().ok())
                            .is_some_and(JobStatus::is_terminal);
                    }
                    if on_event(ev) == Follow::Stop {
                        return Ok(());
                    }
                }
            }
            if !broken && terminal_seen {
                // The server ends the stream after the job finished.
                return Ok(());
            }
            failures += 1;
            if failures > STREAM_RECONNECTS {
                return Err(ClientError::Decode {
                    url: self.url(&path),
                    status: StatusCode::OK,
                    message: "the event stream kept breaking".into(),
                });
            }
            tokio_sleep(failures).await;
        }
    }
}

/// Reconnects of an event stream in a row before giving up. With [`tokio_sleep`]'s backoff
/// they span about a minute: long enough for a server restart.
const STREAM_RECONNECTS: u32 = 30;

/// Backoff between reconnects of an event stream: 200 ms more each time, at most 2 s.
async fn tokio_sleep(attempt: u32) {
    let ms = (200 * u64::from(attempt)).min(2_000);
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_are_split_across_chunk_boundaries() {
        let mut p = SseParser::default();
        assert!(p.feed("event: log\nid: 3\nda").is_empty());
        let evs = p.feed("ta: {\"a\":1}\n\n: keep-alive\n\nevent: job\ndata: x\ndata: y\n\n");
        assert_eq!(evs.len(), 2);
        assert_eq!(
            evs[0],
            SseEvent {
                event: "log".into(),
                id: Some("3".into()),
                data: "{\"a\":1}".into()
            }
        );
        assert_eq!(evs[1].data, "x\ny");
    }
}
