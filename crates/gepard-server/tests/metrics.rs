//! Pins `GET /metrics`: Prometheus text that parses line by line, request counters labelled
//! by route template (never by a raw path with ids in it), the job gauge read from the
//! database, and the open-stream gauge; on SQLite and PostgreSQL.

#[macro_use]
mod common;

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use common::{app_with_registry_in, submit, TestApp, JOBS};
use tower::ServiceExt;

/// One sample line: metric name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text exposition format strictly enough to catch a malformed line: every
/// non-comment line is `name{label="value",…} number`, and every sample's family was
/// declared by a `# TYPE` line before it.
fn parse(text: &str) -> Vec<Sample> {
    let mut typed = Vec::<String>::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            typed.push(name.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(
            !line.is_empty() && !line.starts_with('#'),
            "stray line {line:?}"
        );
        let name_end = line.find(['{', ' ']).expect("a value follows the name");
        let name = &line[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad metric name in {line:?}"
        );
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(mut body) = rest.strip_prefix('{') {
            loop {
                if let Some(after) = body.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let (key, after) = body.split_once("=\"").expect("label=\"value\"");
                assert!(
                    !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "bad label name {key:?} in {line:?}"
                );
                let mut value = String::new();
                let mut chars = after.chars();
                loop {
                    match chars.next().expect("label value is closed") {
                        '\\' => match chars.next().expect("escape") {
                            'n' => value.push('\n'),
                            c @ ('\\' | '"') => value.push(c),
                            c => panic!("bad escape \\{c} in {line:?}"),
                        },
                        '"' => break,
                        c => value.push(c),
                    }
                }
                labels.insert(key.to_owned(), value);
                body = chars.as_str();
                match body.strip_prefix(',') {
                    Some(after) => body = after,
                    None => assert!(
                        body.starts_with('}'),
                        "`,` or `}}` after a label in {line:?}"
                    ),
                }
            }
        }
        let value = rest.strip_prefix(' ').expect("one space before the value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| typed.iter().any(|t| t == f))
            .unwrap_or(name);
        assert!(
            typed.iter().any(|t| t == family),
            "{name} has no # TYPE line"
        );
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    samples
}

fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    samples.iter().find(|s| {
        s.name == name
            && labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
    })
}

async fn scrape(app: &TestApp) -> Vec<Sample> {
    let response = app
        .router
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "no key needed");
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 22)
        .await
        .unwrap();
    parse(std::str::from_utf8(&bytes).unwrap())
}

const JOB_ROUTE: &str = "/api/v1/org/{org}/ws/{ws}/optimization/jobs/{id}";

on_both_databases! { app_with_registry_in;
    async fn metrics_count_requests_by_route_template_and_jobs_by_status(app) {
        let job = submit(&app, common::body()).await;
        let id = job["id"].as_str().unwrap().to_owned();
        for _ in 0..3 {
            assert_eq!(app.get(&format!("{JOBS}/{id}")).await.status, StatusCode::OK);
        }
        let missing = uuid::Uuid::new_v4();
        assert_eq!(app.get(&format!("{JOBS}/{missing}")).await.status, StatusCode::NOT_FOUND);
        assert_eq!(app.get("/no/such/thing").await.status, StatusCode::NOT_FOUND);

        let samples = scrape(&app).await;
        let requests = |route: &str, status: &str| {
            find(&samples, "gepard_http_requests_total", &[("method", "GET"), ("route", route), ("status", status)])
                .map(|s| s.value)
        };
        assert_eq!(requests(JOB_ROUTE, "200"), Some(3.0));
        assert_eq!(requests(JOB_ROUTE, "404"), Some(1.0));
        assert_eq!(requests("unmatched", "404"), Some(1.0));
        let posted = find(&samples, "gepard_http_requests_total",
            &[("method", "POST"), ("route", "/api/v1/org/{org}/ws/{ws}/optimization/jobs"), ("status", "201")]);
        assert_eq!(posted.map(|s| s.value), Some(1.0));
        for s in &samples {
            for v in s.labels.values() {
                assert!(!v.contains(&id) && !v.contains(&missing.to_string()), "an id became a label: {s:?}");
                assert!(!v.contains("/no/such"), "a raw path became a label: {s:?}");
            }
        }

        let count = find(&samples, "gepard_http_request_duration_seconds_count", &[("method", "GET"), ("route", JOB_ROUTE)]).unwrap();
        assert_eq!(count.value, 4.0);
        let inf = find(&samples, "gepard_http_request_duration_seconds_bucket", &[("method", "GET"), ("route", JOB_ROUTE), ("le", "+Inf")]).unwrap();
        assert_eq!(inf.value, 4.0);

        let jobs = |status: &str| find(&samples, "gepard_jobs", &[("status", status)]).map(|s| s.value);
        assert_eq!(jobs("queued"), Some(1.0));
        assert_eq!(jobs("running"), Some(0.0), "statuses without jobs are reported as 0");
        assert_eq!(find(&samples, "gepard_store_up", &[]).map(|s| s.value), Some(1.0));
        let build = find(&samples, "gepard_build_info", &[]).unwrap();
        assert_eq!(build.value, 1.0);
        assert_eq!(build.labels["version"], env!("CARGO_PKG_VERSION"));

        // The job gauge follows the database: cancel it and scrape again.
        let cancelled = app.post(&format!("{JOBS}/{id}/cancel"), serde_json::json!({})).await;
        assert_eq!(cancelled.status, StatusCode::OK);
        let samples = scrape(&app).await;
        let jobs = |status: &str| find(&samples, "gepard_jobs", &[("status", status)]).map(|s| s.value);
        assert_eq!(jobs("queued"), Some(0.0));
        assert_eq!(jobs("cancelled"), Some(1.0));
    }

    async fn the_watcher_gauge_counts_open_event_streams_until_they_close(app) {
        let job = submit(&app, common::body()).await;
        let id = job["id"].as_str().unwrap();
        let watchers = |samples: &[Sample]| find(samples, "gepard_sse_watchers", &[]).unwrap().value;
        assert_eq!(watchers(&scrape(&app).await), 0.0);
        let stream = app
            .router
            .clone()
            .oneshot(
                Request::builder()
                    .method(Method::GET)
                    .uri(format!("{JOBS}/{id}/events"))
                    .header("x-api-key", &app.admin_key)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(stream.status(), StatusCode::OK);
        assert_eq!(watchers(&scrape(&app).await), 1.0);
        drop(stream);
        // The stream's task notices the closed connection on its own; give it a moment.
        let mut open = 1.0;
        for _ in 0..100 {
            open = watchers(&scrape(&app).await);
            if open == 0.0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(open, 0.0, "a closed stream is no longer counted");
    }
}
