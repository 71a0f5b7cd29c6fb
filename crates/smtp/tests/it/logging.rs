//! The session log line: useful to the operator, free of addresses and contents.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::helpers::{TestServer, test_config};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_session_log_names_the_peer_and_recipient_domains_but_no_address_or_content() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // The test runtime is single-threaded, so the server's tasks log through this too.
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = TestServer::start(test_config()).await;
    let mut c = server.connect().await;
    c.cmd("EHLO client.example").await;
    let reply = c
        .send_message(
            "sender@other.example",
            "doctor@direct.test",
            "Subject: private\r\n\r\nsecret clinical note\r\n",
        )
        .await;
    assert_eq!(reply.code, 250);
    assert_eq!(c.cmd("QUIT").await.code, 221);
    server.stop_within(Duration::from_secs(5)).await;

    let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let session_line = log
        .lines()
        .find(|l| l.contains("smtp session ended"))
        .unwrap_or_else(|| panic!("no session line in {log}"));
    assert!(
        session_line.contains("remote_ip=127.0.0.1"),
        "{session_line}"
    );
    assert!(session_line.contains("direct.test"), "{session_line}");
    assert!(session_line.contains("outcome=\"quit\""), "{session_line}");
    for secret in [
        "doctor@",
        "sender@",
        "other.example",
        "secret clinical",
        "private",
    ] {
        assert!(!log.contains(secret), "log leaks {secret:?}: {log}");
    }
}
