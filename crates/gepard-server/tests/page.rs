//! Pins the embedded Optimization page: it is served without a key under a strict
//! Content-Security-Policy, its assets carry the right content types, unknown assets are
//! enveloped 404s, and every API route its script calls exists in the router (so renaming a
//! route breaks this test, not the page in a user's browser). The page's behaviour in a real
//! browser is checked by `scripts/page-e2e.sh`.

#[macro_use]
mod common;

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use common::{app_with_registry, submit, TestApp};
use tower::ServiceExt;

/// Status, headers and body text of a keyless GET.
async fn fetch(app: &TestApp, path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let response = app
        .router
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 22)
        .await
        .unwrap();
    (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
}

/// The `"METHOD /api/v1/…"` entries of the script's route table.
fn script_routes() -> Vec<(String, String)> {
    let js = gepard_server::page::script();
    let table_start = js
        .find("const API = {")
        .expect("the script has its route table");
    let table = &js[table_start..table_start + js[table_start..].find("};").unwrap()];
    let routes: Vec<(String, String)> = table
        .split('\'')
        .skip(1)
        .step_by(2)
        .map(|entry| {
            let (method, path) = entry.split_once(' ').expect("entries are `METHOD path`");
            (method.to_owned(), path.to_owned())
        })
        .collect();
    // Guards the parsing above: an empty table would make the checks below vacuous.
    assert!(routes.len() >= 15, "parsed the route table: {routes:?}");
    for (_, path) in &routes {
        assert!(path.starts_with("/api/v1/"), "{path}");
    }
    // Nothing outside the table calls the API by a literal path.
    let outside = js[..table_start].matches("/api/v1/").count()
        + js[table_start + table.len()..].matches("/api/v1/").count();
    assert_eq!(
        outside, 0,
        "every API path of the script lives in its table"
    );
    routes
}

#[tokio::test]
async fn the_page_is_served_without_a_key_as_html_under_a_strict_content_security_policy() {
    let app = TestApp::spawn().await;
    let (status, headers, body) = fetch(&app, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "CSP has {directive}: {csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
    assert!(body.contains(r#"<script src="/assets/app.js" defer></script>"#));
    assert!(body.contains(r#"<link rel="stylesheet" href="/assets/app.css">"#));
    // The CSP would block inline script and handlers; make sure the page has none to block.
    assert_eq!(body.matches("<script").count(), 1, "one external script");
    assert!(!body.contains(" style="), "no inline styles");
    for handler in [
        " onclick=",
        " onload=",
        " onsubmit=",
        " onchange=",
        " oninput=",
    ] {
        assert!(!body.contains(handler), "no inline handler {handler}");
    }
}

#[tokio::test]
async fn the_page_assets_are_served_with_their_content_types() {
    let app = TestApp::spawn().await;
    for (path, content_type, needle) in [
        (
            "/assets/app.js",
            "text/javascript; charset=utf-8",
            "const API = {",
        ),
        ("/assets/app.css", "text/css; charset=utf-8", ".job-list"),
    ] {
        let (status, headers, body) = fetch(&app, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(headers[header::CONTENT_TYPE], content_type, "{path}");
        assert!(
            headers.contains_key(header::CONTENT_SECURITY_POLICY),
            "{path}"
        );
        assert!(body.contains(needle), "{path} is the real asset");
    }
}

#[tokio::test]
async fn unknown_asset_paths_are_404_with_the_error_envelope() {
    let app = TestApp::spawn().await;
    for path in [
        "/assets/nope.js",
        "/assets/../Cargo.toml",
        "/assets/app.js/x",
    ] {
        // `call` asserts the envelope on every non-success answer.
        let r = app.call(Method::GET, path, None, None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.body["type"], "not_found", "{path}");
    }
}

#[tokio::test]
async fn every_api_route_the_page_calls_is_in_the_openapi_document_with_its_method() {
    let app = TestApp::spawn().await;
    let doc = app
        .call(Method::GET, "/openapi.json", None, None)
        .await
        .body;
    for (method, path) in script_routes() {
        let operation = &doc["paths"][&path][method.to_lowercase()];
        assert!(
            operation.is_object(),
            "the page calls {method} {path}, which the router does not document"
        );
    }
}

#[tokio::test]
async fn every_api_route_the_page_calls_is_routed_by_the_real_router() {
    // The OpenAPI document is written by hand beside the router; this checks the router
    // itself, with real values in every path parameter.
    let app = app_with_registry().await;
    let job = submit(&app, common::body()).await;
    let id = job["id"].as_str().unwrap();
    let mut checked = BTreeSet::new();
    for (method, template) in script_routes() {
        let path = template
            .replace("{org}", "local")
            .replace("{ws}", "default")
            .replace("{id}", id)
            .replace("{name}", "sentiment")
            .replace("{version}", "1.0.0");
        assert!(!path.contains('{'), "every parameter substituted: {path}");
        if path.ends_with("/events") {
            // A stream never ends for a queued job; its route is checked by the document.
            continue;
        }
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let body = (method == Method::POST).then(|| serde_json::json!({}));
        let r = app
            .call(method.clone(), &path, Some(&app.admin_key.clone()), body)
            .await;
        assert_ne!(
            r.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {}",
            r.body
        );
        let unrouted = r.body["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("no route for"));
        assert!(!unrouted, "{method} {path} is not routed: {}", r.body);
        checked.insert(template);
    }
    assert!(checked.len() >= 14, "{checked:?}");
}

#[test]
fn every_element_id_the_script_looks_up_exists_in_the_page() {
    let js = gepard_server::page::script();
    let html = include_str!("../src/page/index.html");
    let ids: BTreeSet<&str> = js
        .split("$('")
        .skip(1)
        .map(|rest| &rest[..rest.find('\'').unwrap()])
        .collect();
    assert!(ids.len() > 30, "parsed the lookups: {ids:?}");
    for id in ids {
        assert!(
            html.contains(&format!("id=\"{id}\"")),
            "the script looks up #{id}, which the page lacks"
        );
    }
}

#[test]
fn the_page_script_builds_the_dom_without_html_strings_or_dialogs() {
    let js = gepard_server::page::script();
    for forbidden in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "alert(",
        "confirm(",
        "eval(",
        "new Function",
        "EventSource",
    ] {
        assert!(!js.contains(forbidden), "the script uses {forbidden}");
    }
    assert!(
        js.contains("'Last-Event-ID'"),
        "the stream resumes where it stopped"
    );
}
