//! The client against a server that is momentarily busy (503 with Retry-After) or restarting:
//! repeatable requests are sent again, others are not, and an event stream that ends before
//! its job finished is resumed. The "server" is a raw HTTP responder on loopback
//! that answers from a script and counts what it received.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use gepard_client::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn answer(status: &str, extra_headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nconnection: close\r\n\
         {extra_headers}content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn busy() -> String {
    answer(
        "503 Service Unavailable",
        "retry-after: 0\r\n",
        r#"{"code":503,"kind":"unavailable","detail":"the database is busy; try again"}"#,
    )
}

fn ok(body: &str) -> String {
    answer("200 OK", "", body)
}

/// Serves `script` in order (the last answer repeats), one connection per request; returns
/// the base URL and the number of requests seen.
async fn scripted(script: Vec<String>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let answer = script[n.min(script.len() - 1)].clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut got = Vec::new();
                // Read the head and whatever body the content-length announces.
                loop {
                    let k = sock.read(&mut buf).await.unwrap();
                    if k == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..k]);
                    let text = String::from_utf8_lossy(&got);
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let len = text[..head_end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())
                                    .flatten()
                            })
                            .unwrap_or(0);
                        if got.len() >= head_end + 4 + len {
                            break;
                        }
                    }
                }
                sock.write_all(answer.as_bytes()).await.unwrap();
                sock.shutdown().await.ok();
            });
        }
    });
    (url, seen)
}

#[tokio::test]
async fn a_read_is_sent_again_while_the_server_is_busy_and_then_succeeds() {
    let (url, seen) = scripted(vec![busy(), busy(), ok(r#"{"status":"ok"}"#)]).await;
    let health = Client::new(&url, None).healthz().await.unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(seen.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_read_gives_up_with_the_busy_error_after_three_retries() {
    let (url, seen) = scripted(vec![busy()]).await;
    let err = Client::new(&url, None).healthz().await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(503));
    assert!(err.to_string().contains("busy"), "{err}");
    assert_eq!(seen.load(Ordering::SeqCst), 4, "one try and three retries");
}

#[tokio::test]
async fn a_write_without_an_idempotency_key_is_not_sent_twice() {
    let (url, seen) = scripted(vec![busy(), ok("{}")]).await;
    let err = Client::new(&url, None)
        .cancel_job("local", "default", "00000000-0000-0000-0000-000000000001")
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(503));
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

fn events(body: &str) -> String {
    answer("200 OK", "", body).replace("application/json", "text/event-stream")
}

#[tokio::test]
async fn a_stream_that_ends_before_the_job_finished_is_resumed_after_its_last_event() {
    // The first stream ends cleanly with the job still running (the server restarting); the
    // second, resumed, brings the end.
    let (url, seen) = scripted(vec![
        events("event: snapshot\nid: 3\ndata: {\"status\":\"running\"}\n\n"),
        events("event: job\nid: 5\ndata: {\"status\":\"completed\"}\n\n"),
        events("event: heartbeat\nid: 5\ndata: {}\n\n"),
    ])
    .await;
    let mut got = Vec::new();
    Client::new(&url, None)
        .follow_job(
            "local",
            "default",
            "00000000-0000-0000-0000-000000000001",
            |ev| {
                got.push((ev.event, ev.id));
                gepard_client::Follow::Continue
            },
        )
        .await
        .unwrap();
    assert_eq!(
        got,
        [
            ("snapshot".to_owned(), Some("3".to_owned())),
            ("job".to_owned(), Some("5".to_owned()))
        ]
    );
    assert_eq!(
        seen.load(Ordering::SeqCst),
        2,
        "no reconnect after the terminal job"
    );
}
