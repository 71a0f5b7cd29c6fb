//! The web listener's limits, plain and TLS: a client that is slow to send its
//! request, or goes quiet, is disconnected; connections beyond the bound wait for a
//! free one; an over-long autocomplete query is cut rather than refused.
//!
//! Each test waits for what the server does (an end of stream, an answer) with a
//! generous upper bound, and sets the timeouts short; none measures how long it took.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::TestApp;

/// Far longer than any timeout a test sets: reaching it means the server did not act.
const PATIENCE: Duration = Duration::from_secs(60);

/// Reads (and drops) whatever comes until the server closes the connection; false if
/// it is still open after [`PATIENCE`].
async fn closed_by_server(stream: &mut (impl AsyncRead + Unpin)) -> bool {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(PATIENCE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// One request on a kept-alive connection, read up to the end of its response.
async fn get_kept_alive(stream: &mut (impl AsyncRead + AsyncWrite + Unpin), path: &str) -> String {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed before the response ended");
        response.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&response).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .expect("a content length");
            if body.len() >= length {
                return text;
            }
        }
    }
}

async fn healthy(app: &TestApp) {
    let r = reqwest::get(app.url("/healthz")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_client_that_sends_half_a_request_line_is_disconnected_after_the_header_timeout() {
    let app = TestApp::spawn_with(|c| {
        c.http_header_timeout_seconds = 1;
        c.http_idle_timeout_seconds = 3600;
    })
    .await;
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"GET /heal").await.unwrap();
    assert!(
        closed_by_server(&mut slow).await,
        "a request line that never ends is cut off"
    );
    // meanwhile everyone else is served as usual
    healthy(&app).await;
}

#[tokio::test]
async fn a_kept_alive_connection_that_goes_quiet_is_closed_after_the_idle_timeout() {
    let app = TestApp::spawn_with(|c| {
        c.http_header_timeout_seconds = 600;
        c.http_idle_timeout_seconds = 1;
    })
    .await;
    let mut quiet = TcpStream::connect(app.addr).await.unwrap();
    let response = get_kept_alive(&mut quiet, "/healthz").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        closed_by_server(&mut quiet).await,
        "an idle kept-alive connection is closed"
    );
    healthy(&app).await;
}

#[tokio::test]
async fn an_upload_that_stops_arriving_is_ended_after_the_idle_timeout() {
    let app = TestApp::spawn_with(|c| {
        c.http_header_timeout_seconds = 600;
        c.http_idle_timeout_seconds = 1;
    })
    .await;
    let mut stalled = TcpStream::connect(app.addr).await.unwrap();
    stalled
        .write_all(
            b"POST /login HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\nemail=a",
        )
        .await
        .unwrap();
    assert!(
        closed_by_server(&mut stalled).await,
        "a body that stops arriving does not hold the connection"
    );
    healthy(&app).await;
}

#[tokio::test]
async fn connections_beyond_the_bound_wait_until_one_closes_and_are_then_answered() {
    let app = TestApp::spawn_with(|c| {
        c.http_max_connections = 2;
        c.http_header_timeout_seconds = 600;
        c.http_idle_timeout_seconds = 3600;
    })
    .await;
    // two kept-alive connections, each answered once, hold both places
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(app.addr).await.unwrap();
        let response = get_kept_alive(&mut s, "/healthz").await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        held.push(s);
    }
    // a third client is not refused: it waits to be accepted
    let url = app.url("/healthz");
    let mut third = tokio::spawn(async move {
        reqwest::Client::new()
            .get(url)
            .send()
            .await
            .map(|r| r.status())
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut third)
            .await
            .is_err(),
        "the third connection is not served while two are open"
    );
    // one of the two closes: the third is answered
    drop(held.remove(0));
    let status = tokio::time::timeout(PATIENCE, third)
        .await
        .expect("answered once a place is free")
        .unwrap()
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    // the one still held is still served
    let response = get_kept_alive(&mut held[0], "/healthz").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[tokio::test]
async fn the_tls_listener_cuts_off_a_stalled_handshake_and_a_half_sent_request() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    // a throwaway CA and a server certificate for 127.0.0.1, made by the openssl CLI
    let script = "set -e
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca -keyout ca.key -out ca.pem 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout key.pem -out req.csr 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' > ext.cnf
        openssl x509 -req -in req.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out cert.pem 2>/dev/null";
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let app = TestApp::spawn_with(|c| {
        c.tls_cert = Some(cert.clone());
        c.tls_key = Some(key.clone());
        c.http_header_timeout_seconds = 1;
        c.http_idle_timeout_seconds = 3600;
    })
    .await;

    // a client that connects and never starts the handshake
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    assert!(closed_by_server(&mut silent).await, "a stalled handshake");

    // a client that completes the handshake and sends half a request line
    let mut roots = rustls::RootCertStore::empty();
    for c in
        rustls_pemfile::certs(&mut std::fs::read(dir.path().join("ca.pem")).unwrap().as_slice())
    {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tcp = TcpStream::connect(app.addr).await.unwrap();
    let mut slow = connector.connect(name.clone(), tcp).await.expect("TLS");
    slow.write_all(b"GET /heal").await.unwrap();
    slow.flush().await.unwrap();
    assert!(
        closed_by_server(&mut slow).await,
        "a half-sent request over TLS"
    );

    // and a whole request is still answered
    let tcp = TcpStream::connect(app.addr).await.unwrap();
    let mut ok = connector.connect(name, tcp).await.expect("TLS");
    let response = get_kept_alive(&mut ok, "/healthz").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[tokio::test]
async fn an_over_long_compose_suggestion_query_is_cut_and_answered() {
    let (app, _dns, _mailbox) = TestApp::spawn_with_dns().await;
    let mut ana = app.signed_in("ana@direct.lakeside.test").await;
    // the search page's limit, then thousands of words more
    let words: Vec<String> = (0..3000).map(|n| format!("w{n}")).collect();
    let long = format!("desk {}", words.join(" "));
    let r = ana
        .client
        .get(app.url("/mail/suggest"))
        .query(&[("q", long.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let found: serde_json::Value = r.json().await.unwrap();
    assert!(found.is_array(), "{found}");
    // one very long word, as a script might send
    let word = "a".repeat(20_000);
    let r = ana
        .client
        .get(app.url("/mail/suggest"))
        .query(&[("q", word.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let page = ana.get("/directory?q=desk").await;
    assert_eq!(page.status, StatusCode::OK);
}
