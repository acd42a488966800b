//! `GET /metrics`: Prometheus text exposition (format 0.0.4), written by hand.
//!
//! The format is a few lines of text, so a metrics crate would add more than it saves.
//! Requests are counted by the route *template* axum matched (`/api/v1/org/{org}/…`), never
//! the raw path, so ids never become label values and the series stay bounded: methods
//! outside the standard set are folded into `OTHER`, unrouted requests into `unmatched`.
//! The job gauge is read from the store at scrape time (one `GROUP BY`), so it is right
//! across every server and worker sharing the database.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use gepard_core::job::JobStatus;

use crate::AppState;

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds (seconds) of the request-duration histogram. Few on purpose: API calls are
/// milliseconds, bundle uploads and promotions can take a second or more.
const BUCKETS: [f64; 6] = [0.005, 0.025, 0.1, 0.5, 2.5, 10.0];

/// The label of requests that matched no route (404s from the fallback).
const UNMATCHED: &str = "unmatched";

#[derive(Debug, Default)]
struct Histogram {
    /// Observations at or below each of [`BUCKETS`] (cumulative, as Prometheus wants them).
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Http {
    /// `(method, route, status)` → requests.
    requests: BTreeMap<(&'static str, String, u16), u64>,
    /// `(method, route)` → durations. The method matters: a route's GET and POST (a job
    /// list and a submission) cost very different amounts.
    durations: BTreeMap<(&'static str, String), Histogram>,
}

/// What this process counts between scrapes. Shared by every request through [`AppState`].
#[derive(Debug, Default)]
pub struct Metrics {
    /// A std mutex, not a Tokio one: it is held for a map update and never across an await.
    http: Mutex<Http>,
    /// Open `GET …/events` streams.
    sse_watchers: AtomicI64,
}

impl Metrics {
    fn observe(&self, method: &Method, route: String, status: u16, seconds: f64) {
        let mut http = self.http.lock().unwrap_or_else(PoisonError::into_inner);
        let method = method_label(method);
        *http
            .requests
            .entry((method, route.clone(), status))
            .or_default() += 1;
        let h = http.durations.entry((method, route)).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.buckets[i] += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// Counts one open SSE stream until the returned guard is dropped.
    pub fn sse_watcher(self: &std::sync::Arc<Self>) -> SseWatcherGuard {
        self.sse_watchers.fetch_add(1, Ordering::Relaxed);
        SseWatcherGuard(std::sync::Arc::clone(self))
    }

    /// Open SSE streams right now.
    pub fn sse_watchers(&self) -> i64 {
        self.sse_watchers.load(Ordering::Relaxed)
    }

    /// The exposition text: process metrics, plus `jobs` when the store answered.
    fn render(&self, jobs: Option<&[(JobStatus, i64)]>) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP gepard_build_info The running gepard version.\n");
        out.push_str("# TYPE gepard_build_info gauge\n");
        let _ = writeln!(
            out,
            "gepard_build_info{{version=\"{}\"}} 1",
            escape(env!("CARGO_PKG_VERSION"))
        );

        {
            let http = self.http.lock().unwrap_or_else(PoisonError::into_inner);
            out.push_str("# HELP gepard_http_requests_total HTTP requests answered, by matched route template.\n");
            out.push_str("# TYPE gepard_http_requests_total counter\n");
            for ((method, route, status), n) in &http.requests {
                let _ = writeln!(
                    out,
                    "gepard_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                    escape(route)
                );
            }
            out.push_str("# HELP gepard_http_request_duration_seconds Time to answer a request (to the response head; streams are not timed to their end).\n");
            out.push_str("# TYPE gepard_http_request_duration_seconds histogram\n");
            for ((method, route), h) in &http.durations {
                let labels = format!("method=\"{method}\",route=\"{}\"", escape(route));
                for (bound, n) in BUCKETS.iter().zip(h.buckets) {
                    let _ = writeln!(
                        out,
                        "gepard_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {n}"
                    );
                }
                let _ = writeln!(
                    out,
                    "gepard_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(
                    out,
                    "gepard_http_request_duration_seconds_sum{{{labels}}} {}",
                    h.sum
                );
                let _ = writeln!(
                    out,
                    "gepard_http_request_duration_seconds_count{{{labels}}} {}",
                    h.count
                );
            }
        }

        out.push_str("# HELP gepard_sse_watchers Open job event streams on this server.\n");
        out.push_str("# TYPE gepard_sse_watchers gauge\n");
        let _ = writeln!(out, "gepard_sse_watchers {}", self.sse_watchers());

        out.push_str(
            "# HELP gepard_store_up Whether the database answered this scrape's job count.\n",
        );
        out.push_str("# TYPE gepard_store_up gauge\n");
        let _ = writeln!(out, "gepard_store_up {}", u8::from(jobs.is_some()));
        if let Some(jobs) = jobs {
            out.push_str(
                "# HELP gepard_jobs Optimization jobs in the database by status, all organizations.\n",
            );
            out.push_str("# TYPE gepard_jobs gauge\n");
            // Every status gets a line, zero included, so a dashboard's series never vanish.
            for status in JobStatus::ALL {
                let n: i64 = jobs
                    .iter()
                    .filter(|(s, _)| *s == status)
                    .map(|(_, n)| n)
                    .sum();
                let _ = writeln!(out, "gepard_jobs{{status=\"{}\"}} {n}", status.as_str());
            }
        }
        out
    }
}

/// Keeps one SSE stream counted in [`Metrics`]; dropping it uncounts the stream.
#[derive(Debug)]
pub struct SseWatcherGuard(std::sync::Arc<Metrics>);

impl Drop for SseWatcherGuard {
    fn drop(&mut self) {
        self.0.sse_watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Methods become label values, so anything outside the standard set shares one label
/// instead of letting a client mint series.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Escapes a label value (`\`, `"` and newlines, as the text format requires).
fn escape(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// Route layer: hands the matched route template to [`track`] through the response, because
/// a layer around the whole router runs before routing and never sees [`MatchedPath`].
pub async fn expose_matched_path(request: Request, next: Next) -> Response {
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    if let Some(m) = matched {
        response.extensions_mut().insert(m);
    }
    response
}

/// Outer layer: counts and times every request, routed or not.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    let route = response
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED.to_owned(), |m| m.as_str().to_owned());
    state.metrics.observe(
        &method,
        route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// `GET /metrics`: Prometheus text. Needs no key, like `/healthz`: it carries counts, never
/// names or contents. When the database does not answer, the process metrics are still
/// served, with `gepard_store_up 0` and no `gepard_jobs` lines.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", content_type = "text/plain; version=0.0.4")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let jobs = match state.store.job_counts_by_status().await {
        Ok(jobs) => Some(jobs),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: counting jobs failed");
            None
        }
    };
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.metrics.render(jobs.as_deref()),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_escape_quotes_backslashes_and_newlines() {
        assert_eq!(escape("a\"b\\c\nd"), r#"a\"b\\c\nd"#);
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_count_every_observation() {
        let m = Metrics::default();
        m.observe(&Method::GET, "/x".into(), 200, 0.001);
        m.observe(&Method::GET, "/x".into(), 200, 0.2);
        m.observe(&Method::GET, "/x".into(), 200, 60.0);
        m.observe(
            &Method::from_bytes(b"BREW").unwrap(),
            "/x".into(),
            405,
            60.0,
        );
        let text = m.render(None);
        assert!(
            text.contains(
                r#"gepard_http_request_duration_seconds_bucket{method="GET",route="/x",le="0.005"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"gepard_http_request_duration_seconds_bucket{method="GET",route="/x",le="0.5"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"gepard_http_request_duration_seconds_bucket{method="GET",route="/x",le="+Inf"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"gepard_http_request_duration_seconds_count{method="OTHER",route="/x"} 1"#
            ),
            "each method has its own histogram: {text}"
        );
        assert!(
            text.contains(
                r#"gepard_http_requests_total{method="OTHER",route="/x",status="405"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("gepard_store_up 0"), "{text}");
        assert!(
            !text.contains("gepard_jobs{"),
            "no job lines without the store: {text}"
        );
    }
}
