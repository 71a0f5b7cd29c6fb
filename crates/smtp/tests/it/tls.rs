//! STARTTLS (RFC 3207) with an OpenSSL-made certificate, checked by rustls, lettre and
//! `openssl s_client`.

use std::process::Stdio;
use std::time::Duration;

use directmail_smtp::Config;
use lettre::message::header::ContentType;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;

use crate::helpers::{Client, TestPki, TestServer, test_config};

fn tls_config(pki: &TestPki) -> Config {
    Config {
        tls: Some(pki.server_config()),
        ..test_config()
    }
}

#[tokio::test]
async fn starttls_upgrades_the_session_and_a_rustls_client_verifies_the_certificate() {
    let pki = TestPki::generate();
    let server = TestServer::start(tls_config(&pki)).await;
    let mut c = server.connect().await;
    let ehlo = c.cmd("EHLO client.example").await;
    assert!(ehlo.lines.iter().any(|l| l == "STARTTLS"), "{ehlo:?}");
    c.cmd("MAIL FROM:<before@other.example>").await;
    assert_eq!(c.cmd("STARTTLS").await.code, 220);

    let name = ServerName::try_from("localhost").unwrap();
    let tls = pki.connector().connect(name, c.stream).await.unwrap();
    let mut c = Client::new(tls);
    // RFC 3207 §4.2: everything from before TLS is forgotten, EHLO is needed again.
    assert_eq!(c.cmd("MAIL FROM:<a@other.example>").await.code, 503);
    let ehlo = c.cmd("EHLO client.example").await;
    assert!(!ehlo.text().contains("STARTTLS"));
    assert_eq!(c.cmd("STARTTLS").await.code, 503);
    let reply = c
        .send_message(
            "a@other.example",
            "b@direct.test",
            "Subject: x\r\n\r\nsecret\r\n",
        )
        .await;
    assert_eq!(reply.code, 250);
    assert_eq!(c.cmd("QUIT").await.code, 221);
    let delivered = server.backend.delivered();
    assert!(delivered[0].0.tls);
    assert_eq!(delivered[0].0.mail_from, "a@other.example");
}

#[tokio::test]
async fn commands_sent_in_clear_text_after_starttls_are_discarded() {
    let pki = TestPki::generate();
    let server = TestServer::start(tls_config(&pki)).await;
    let mut c = server.connect().await;
    c.cmd("EHLO client.example").await;
    // The injection: commands pipelined behind STARTTLS in the same clear-text write.
    c.send(b"STARTTLS\r\nEHLO evil.example\r\nMAIL FROM:<evil@evil.example>\r\n")
        .await;
    assert_eq!(c.reply().await.code, 220);
    let name = ServerName::try_from("localhost").unwrap();
    let tls = pki.connector().connect(name, c.stream).await.unwrap();
    let mut c = Client::new(tls);
    // Were the injected commands run, this EHLO would get extra replies before its own,
    // and the RCPT below would find a MAIL from evil.example.
    let ehlo = c.cmd("EHLO client.example").await;
    assert_eq!(ehlo.code, 250);
    assert_eq!(ehlo.lines[0], "mx.direct.test greets client.example");
    assert_eq!(c.cmd("RCPT TO:<b@direct.test>").await.code, 503);
}

#[tokio::test]
async fn a_failed_tls_handshake_closes_the_session_and_the_server_keeps_serving() {
    let pki = TestPki::generate();
    let server = TestServer::start(tls_config(&pki)).await;
    let mut c = server.connect().await;
    c.cmd("EHLO client.example").await;
    assert_eq!(c.cmd("STARTTLS").await.code, 220);
    c.send(b"this is not a TLS ClientHello\r\n").await;
    let _ = c.stream.shutdown().await;
    drop(c);
    let mut fresh = server.connect().await;
    assert_eq!(fresh.cmd("EHLO client.example").await.code, 250);
}

#[tokio::test]
async fn lettre_sends_over_required_starttls_trusting_only_the_test_ca() {
    let pki = TestPki::generate();
    let server = TestServer::start(tls_config(&pki)).await;
    let params = TlsParameters::builder("localhost".into())
        .add_root_certificate(Certificate::from_pem(&pki.ca_pem).unwrap())
        .build_rustls()
        .unwrap();
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(server.addr.port())
        .tls(Tls::Required(params))
        .build();
    let message = Message::builder()
        .from("sender@other.example".parse().unwrap())
        .to("doctor@direct.test".parse().unwrap())
        .subject("over TLS")
        .header(ContentType::TEXT_PLAIN)
        .body("hello\r\n".to_string())
        .unwrap();
    assert!(mailer.send(message).await.unwrap().is_positive());
    assert!(server.backend.delivered()[0].0.tls);
}

#[tokio::test]
async fn openssl_s_client_negotiates_starttls_verifies_the_chain_and_sends_a_message() {
    let pki = TestPki::generate();
    let server = TestServer::start(tls_config(&pki)).await;
    let mut child = tokio::process::Command::new("openssl")
        .args(["s_client", "-starttls", "smtp", "-connect"])
        .arg(server.addr.to_string())
        .args(["-CAfile"])
        .arg(&pki.ca_path)
        .args([
            "-verify_return_error",
            "-verify_hostname",
            "localhost",
            "-quiet",
            "-nocommands",
            "-crlf",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(
            b"EHLO openssl.example\nMAIL FROM:<a@other.example>\nRCPT TO:<b@direct.test>\nDATA\n\
              Subject: from openssl\n\nhello\n.\nQUIT\n",
        )
        .await
        .unwrap();
    stdin.flush().await.unwrap();
    drop(stdin);
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("s_client finished")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.contains("250 2.0.0 OK Q1"), "stdout: {stdout}");
    assert!(stdout.contains("221 2.0.0"), "stdout: {stdout}");
    let delivered = server.backend.delivered();
    assert!(delivered[0].0.tls);
    assert_eq!(
        delivered[0].1,
        b"Subject: from openssl\r\n\r\nhello\r\n".to_vec()
    );
}
