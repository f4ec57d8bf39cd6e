//! Hardening item 2: the HTTP server cannot be held open. Each test talks to the real server
//! over a raw `TcpStream`, with the `server` block's timeouts set short, and waits for what
//! the server does with a generous bound: the point is "closed (or answered) rather than
//! held forever", never how fast.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::TestApp;

/// How long a test waits for the server to act; the timeouts configured are 1 s.
const BOUND: Duration = Duration::from_secs(20);

async fn spawn(server_hcl: &str) -> TestApp {
    TestApp::spawn_with(server_hcl, &[], "").await
}

fn addr(app: &TestApp) -> String {
    app.api
        .base
        .strip_prefix("http://")
        .expect("an http base")
        .to_owned()
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(addr(app)).await.expect("connect")
}

/// Reads until the server closes the connection (end of file or reset); returns what it sent
/// before, or `None` if it was still open after `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, read).await.ok().map(|()| got)
}

/// One HTTP/1.1 response read off the connection: its status and body. `None` if none came
/// within `within`.
async fn response(s: &mut TcpStream, within: Duration) -> Option<(u16, String)> {
    let read = async {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let (head_len, status, length) = loop {
            let n = s.read(&mut buf).await.expect("read a response");
            assert!(
                n > 0,
                "closed without a (whole) response: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
            if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..i]).to_ascii_lowercase();
                let status: u16 = head[9..12].parse().expect("a status");
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().expect("a length"));
                break (i + 4, status, length);
            }
        };
        while got.len() < head_len + length {
            let n = s.read(&mut buf).await.expect("read a body");
            assert!(n > 0, "closed in the middle of a body");
            got.extend_from_slice(&buf[..n]);
        }
        let body = String::from_utf8_lossy(&got[head_len..head_len + length]).into_owned();
        (status, body)
    };
    tokio::time::timeout(within, read).await.ok()
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: countersign\r\n\r\n";

async fn healthz(s: &mut TcpStream) -> Option<(u16, String)> {
    s.write_all(HEALTHZ).await.expect("write");
    response(s, BOUND).await
}

fn error_code(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["error"]["code"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn hardening_2_a_connection_that_never_finishes_its_headers_is_closed() {
    // Arrange
    let app = spawn("header_read_timeout = \"1s\"").await;
    let mut silent = connect(&app).await;
    let mut partial = connect(&app).await;

    // Act: one sends nothing, the other half a request head.
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: countersign\r\nX-Slow: ")
        .await
        .expect("write");

    // Assert: both are closed by the server, without an answer, and it still serves.
    for (what, s) in [("silent", &mut silent), ("partial", &mut partial)] {
        let sent = closed_within(s, BOUND)
            .await
            .unwrap_or_else(|| panic!("the {what} connection is still open after {BOUND:?}"));
        assert!(
            sent.is_empty(),
            "{what}: {}",
            String::from_utf8_lossy(&sent)
        );
    }
    let mut fresh = connect(&app).await;
    assert_eq!(healthz(&mut fresh).await.expect("an answer").0, 200);
}

#[tokio::test]
async fn hardening_2_a_body_that_stalls_is_answered_408_and_closed() {
    // Arrange
    let app = spawn("body_timeout = \"1s\"").await;
    let mut s = connect(&app).await;
    let head = format!(
        "POST /v1/requests HTTP/1.1\r\nHost: countersign\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"resour",
        app.api.token("alice")
    );

    // Act: the head and ten bytes of a 100-byte body, then nothing.
    s.write_all(head.as_bytes()).await.expect("write");

    // Assert
    let (status, body) = response(&mut s, BOUND).await.expect("an answer");
    assert_eq!(status, 408, "{body}");
    assert_eq!(error_code(&body), "timeout", "{body}");
    assert!(closed_within(&mut s, BOUND).await.is_some(), "still open");
    let (_, list) = app.get("alice", "/v1/requests").await;
    assert_eq!(list["requests"], serde_json::json!([]));
}

/// The body timeout bounds the whole body, not the wait between two reads: a body sent a
/// byte at a time, each well within the timeout, is cut all the same.
#[tokio::test]
async fn hardening_2_a_trickling_body_is_cut_at_the_body_timeout() {
    // Arrange
    let app = spawn("body_timeout = \"1s\"").await;
    let s = connect(&app).await;
    let (mut rx, mut tx) = s.into_split();
    let head = format!(
        "POST /v1/requests HTTP/1.1\r\nHost: countersign\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n",
        app.api.token("alice")
    );
    tx.write_all(head.as_bytes()).await.expect("write");

    // Act: a byte every 100 ms, which would take 100 s.
    let trickle = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        for _ in 0..1000 {
            tick.tick().await;
            if tx.write_all(b" ").await.is_err() {
                return;
            }
        }
    });

    // Assert
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(BOUND, read)
        .await
        .expect("an answer before the body could end");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    trickle.abort();
}

#[tokio::test]
async fn hardening_2_an_idle_keep_alive_connection_is_closed() {
    // Arrange
    let app = spawn("idle_timeout = \"1s\"").await;
    let mut s = connect(&app).await;

    // Act: one request on a kept-alive connection, then nothing.
    let (status, _) = healthz(&mut s).await.expect("an answer");

    // Assert
    assert_eq!(status, 200);
    let sent = closed_within(&mut s, BOUND)
        .await
        .unwrap_or_else(|| panic!("the idle connection is still open after {BOUND:?}"));
    assert!(sent.is_empty(), "{}", String::from_utf8_lossy(&sent));
}

/// The idle timeout is not the header timeout: a kept-alive connection outlives a
/// connection that never sent its headers, and then serves its next request.
#[tokio::test]
async fn hardening_2_the_idle_timeout_is_not_the_header_timeout() {
    // Arrange
    let app = spawn("header_read_timeout = \"1s\"\n  idle_timeout = \"5m\"").await;
    let mut kept = connect(&app).await;
    assert_eq!(healthz(&mut kept).await.expect("an answer").0, 200);

    // Act: a connection opened after the first request ended is closed for its headers…
    let mut silent = connect(&app).await;
    closed_within(&mut silent, BOUND)
        .await
        .expect("the silent connection is closed");

    // Assert: …and the one idle for longer still serves.
    assert_eq!(healthz(&mut kept).await.expect("an answer").0, 200);
}

/// Opens a connection that is busy with a request: its headers and part of its body, then
/// nothing.
async fn busy(app: &TestApp) -> TcpStream {
    let mut s = connect(app).await;
    let head = format!(
        "POST /v1/requests HTTP/1.1\r\nHost: countersign\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
        app.api.token("alice")
    );
    s.write_all(head.as_bytes()).await.expect("write");
    s
}

/// At `max_connections` busy connections, another connection is not served; it is as soon
/// as one ends.
#[tokio::test]
async fn hardening_2_at_the_connection_limit_the_next_waits_until_one_ends() {
    // Arrange: four connections in the middle of a request fill the limit.
    let app = spawn("max_connections = 4\n  body_timeout = \"5m\"").await;
    let mut holders = Vec::new();
    for _ in 0..4 {
        holders.push(busy(&app).await);
    }

    // Act
    let mut next = connect(&app).await;
    next.write_all(HEALTHZ).await.expect("write");
    let waiting = response(&mut next, Duration::from_secs(1)).await;
    drop(holders.pop());

    // Assert: not answered while the four were busy; answered once one closed.
    assert_eq!(waiting, None, "a fifth connection was served");
    let (status, _) = response(&mut next, BOUND).await.expect("an answer");
    assert_eq!(status, 200);
}

/// Busy connections that hold the limit time out, and the server serves again.
#[tokio::test]
async fn hardening_2_the_server_recovers_when_held_connections_time_out() {
    // Arrange
    let app = spawn("max_connections = 2\n  body_timeout = \"1s\"").await;
    let mut holders = Vec::new();
    for _ in 0..2 {
        holders.push(busy(&app).await);
    }

    // Act
    let mut next = connect(&app).await;

    // Assert
    assert_eq!(healthz(&mut next).await.expect("an answer").0, 200);
    for s in &mut holders {
        let (status, _) = response(s, BOUND).await.expect("an answer");
        assert_eq!(status, 408);
    }
    let (status, _) = app.get("alice", "/v1/requests").await;
    assert_eq!(status, reqwest::StatusCode::OK);
}

/// At the limit, a new connection makes room by closing the one that has waited longest
/// without a request, so connections that send nothing cannot keep others out.
#[tokio::test]
async fn hardening_2_at_the_limit_the_connection_waiting_longest_makes_room() {
    // Arrange: two connections that never send their headers fill the limit.
    let app = spawn("max_connections = 2\n  header_read_timeout = \"5m\"").await;
    let mut oldest = connect(&app).await;
    oldest
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .expect("write");
    let mut younger = connect(&app).await;

    // Act
    let mut next = connect(&app).await;

    // Assert: the newcomer is served, the oldest is closed and the younger is not.
    assert_eq!(healthz(&mut next).await.expect("an answer").0, 200);
    assert!(
        closed_within(&mut oldest, BOUND).await.is_some(),
        "still open"
    );
    assert_eq!(
        closed_within(&mut younger, Duration::from_secs(1)).await,
        None,
        "the younger connection was closed"
    );
}

/// A declared body over the limit is refused before it is read: `Content-Length:
/// 99999999999` followed by two bytes is answered 413 at once, by the API (JSON) and by the
/// portal (its own page).
#[tokio::test]
async fn hardening_2_a_declared_body_over_64_kib_is_refused_at_once() {
    // Arrange
    let app = spawn("").await;
    let cases = [
        ("/v1/requests", "application/json"),
        ("/graphql", "application/json"),
        ("/requests/x/approve", "application/x-www-form-urlencoded"),
        ("/v1/requests", "text/plain"),
    ];
    for (path, content_type) in cases {
        let mut s = connect(&app).await;

        // Act
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n\
             Content-Length: 99999999999\r\n\r\nab"
        );
        s.write_all(req.as_bytes()).await.expect("write");

        // Assert
        let (status, body) = response(&mut s, BOUND)
            .await
            .unwrap_or_else(|| panic!("{path}: no answer"));
        assert_eq!(status, 413, "{path}: {body}");
        if path.starts_with("/v1") || path == "/graphql" {
            assert_eq!(error_code(&body), "too_large", "{path}: {body}");
        } else {
            assert!(body.contains("larger than"), "{path}: {body}");
        }
        assert!(
            closed_within(&mut s, BOUND).await.is_some(),
            "{path}: the connection is still open, waiting for the body"
        );
    }
    // One byte over the limit is refused too; the limit itself is not.
    let over = format!(
        "POST /v1/requests HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        api::MAX_BODY + 1
    );
    let mut s = connect(&app).await;
    s.write_all(over.as_bytes()).await.expect("write");
    assert_eq!(response(&mut s, BOUND).await.expect("an answer").0, 413);
}

/// On shutdown, `run` stops accepting, closes the connections that are not in the middle of
/// a request (idle, or still sending their headers) at once, and returns.
#[tokio::test]
async fn hardening_2_shutdown_does_not_wait_for_connections_without_a_request() {
    // Arrange: a server whose shutdown the test holds, with long timeouts.
    let dir = tempfile::tempdir().expect("temp dir");
    let db = crate::helpers::database(dir.path()).await;
    let src = format!(
        "server {{\n  database = \"{}\"\n  header_read_timeout = \"5m\"\n  idle_timeout = \"1h\"\n}}\n",
        db.url()
    );
    let config = config::load_str("c.hcl", &src).expect("config");
    let clock = std::sync::Arc::new(engine::ManualClock::new(domain::Timestamp::from_millis(
        crate::helpers::START_MS,
    )));
    let engine = countersign::open(config, clock).await.expect("open");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = countersign::RunOptions {
        worker: false,
        portal: web::PortalOptions::default(),
    };
    let server = tokio::spawn(countersign::run(listener, engine, options, async {
        let _ = stopped.await;
    }));
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(healthz(&mut idle).await.expect("an answer").0, 200);
    let mut partial = TcpStream::connect(addr).await.expect("connect");
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .expect("write");
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    // The server has accepted the last connection once it answers on another one after it.
    let mut probe = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(healthz(&mut probe).await.expect("an answer").0, 200);

    // Act
    let _ = stop.send(());

    // Assert
    tokio::time::timeout(BOUND, server)
        .await
        .expect("run returned")
        .expect("no panic")
        .expect("no error");
    for s in [&mut idle, &mut partial, &mut silent, &mut probe] {
        assert!(closed_within(s, BOUND).await.is_some(), "still open");
    }
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
}
