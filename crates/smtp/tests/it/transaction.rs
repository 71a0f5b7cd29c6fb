//! Whole transactions: a real client, raw scripts, sequence errors and the backend's say.

use std::time::{Duration, Instant};

use directmail_smtp::{Config, DeliverError};
use lettre::message::header::ContentType;
use lettre::transport::smtp::client::Tls;
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::helpers::{MemBackend, TestServer, test_config};

#[tokio::test]
async fn lettre_delivers_a_message_and_a_line_starting_with_a_dot_arrives_intact() {
    let server = TestServer::start(test_config()).await;
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(server.addr.port())
        .tls(Tls::None)
        .hello_name(ClientId::Domain("client.example".into()))
        .build();
    let message = Message::builder()
        .from("sender@other.example".parse().unwrap())
        .to("doctor@direct.test".parse().unwrap())
        .subject("referral")
        .header(ContentType::TEXT_PLAIN)
        .body("first line\r\n.starts with a dot\r\n..two dots\r\n.\r\nlast\r\n".to_string())
        .unwrap();
    let response = mailer.send(message).await.unwrap();
    assert!(response.is_positive());
    let first = response.message().next().unwrap_or_default().to_string();
    assert!(first.starts_with("2.0.0 OK Q1"), "{first}");

    let delivered = server.backend.delivered();
    assert_eq!(delivered.len(), 1);
    let (envelope, data) = &delivered[0];
    assert_eq!(envelope.mail_from, "sender@other.example");
    assert_eq!(envelope.rcpt_to, vec!["doctor@direct.test".to_string()]);
    assert_eq!(envelope.helo, "client.example");
    assert!(!envelope.tls);
    let text = String::from_utf8(data.clone()).unwrap();
    assert!(
        text.contains("\r\n\r\nfirst line\r\n.starts with a dot\r\n..two dots\r\n.\r\nlast\r\n"),
        "{text:?}"
    );
}

#[tokio::test]
async fn a_raw_transaction_removes_exactly_one_stuffed_dot_per_line() {
    let server = TestServer::start(test_config()).await;
    let mut c = server.connect().await;
    assert_eq!(c.cmd("EHLO client.example").await.code, 250);
    let reply = c
        .send_message(
            "a@other.example",
            "b@direct.test",
            "Subject: x\r\n\r\n..\r\n...three\r\nmid.dot\r\n",
        )
        .await;
    assert_eq!(reply.code, 250);
    assert_eq!(reply.text(), "2.0.0 OK Q1");
    let delivered = server.backend.delivered();
    assert_eq!(
        delivered[0].1,
        b"Subject: x\r\n\r\n.\r\n..three\r\nmid.dot\r\n".to_vec()
    );
    assert_eq!(c.cmd("QUIT").await.code, 221);
    assert!(c.is_closed_by_server().await);
}

#[tokio::test]
async fn a_bare_lf_before_a_dot_does_not_end_the_data() {
    // SMTP smuggling: only <CRLF>.<CRLF> ends the data (RFC 5321 §4.1.1.4).
    let server = TestServer::start(test_config()).await;
    let mut c = server.connect().await;
    c.cmd("EHLO client.example").await;
    let reply = c
        .send_message(
            "a@other.example",
            "b@direct.test",
            "Subject: x\r\n\r\nhi\n.\nMAIL FROM:<evil@x>\r\nhi\r\n.\nmore\r\n",
        )
        .await;
    assert_eq!(reply.code, 250);
    let delivered = server.backend.delivered();
    assert_eq!(delivered.len(), 1);
    assert_eq!(
        delivered[0].1,
        // The ".\n" after CRLF starts a line, so its dot is transparency (RFC 5321
        // §4.5.2) and is removed; the bare LF stays.
        b"Subject: x\r\n\r\nhi\n.\nMAIL FROM:<evil@x>\r\nhi\r\n\nmore\r\n".to_vec()
    );
}

#[tokio::test]
async fn ehlo_advertises_the_extensions_and_no_starttls_without_a_certificate() {
    let server = TestServer::start(test_config()).await;
    let mut c = server.connect().await;
    let ehlo = c.cmd("EHLO client.example").await;
    assert_eq!(ehlo.code, 250);
    assert_eq!(ehlo.lines[0], "mx.direct.test greets client.example");
    assert!(ehlo.lines.contains(&format!("SIZE {}", 50 * 1024 * 1024)));
    for ext in ["8BITMIME", "PIPELINING", "ENHANCEDSTATUSCODES"] {
        assert!(
            ehlo.lines.iter().any(|l| l == ext),
            "{ext} missing: {ehlo:?}"
        );
    }
    assert!(!ehlo.text().contains("STARTTLS"));
    assert_eq!(c.cmd("STARTTLS").await.code, 502);
    assert_eq!(c.cmd("HELO client.example").await.code, 250);
}

#[tokio::test]
async fn commands_out_of_sequence_or_malformed_get_the_rfc_5321_codes() {
    let server = TestServer::start(Config {
        max_invalid_commands: 20,
        ..test_config()
    })
    .await;
    let mut c = server.connect().await;
    assert_eq!(c.cmd("MAIL FROM:<a@other.example>").await.code, 503);
    assert_eq!(c.cmd("EHLO client.example").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<b@direct.test>").await.code, 503);
    assert_eq!(c.cmd("DATA").await.code, 503);
    assert_eq!(c.cmd("FROBNICATE").await.code, 500);
    assert_eq!(c.cmd("MAIL FROM:nobrackets").await.code, 501);
    assert_eq!(c.cmd("MAIL FROM:<a@b> FOO=BAR").await.code, 555);
    assert_eq!(c.cmd("VRFY someone").await.code, 252);
    assert_eq!(c.cmd("EXPN list").await.code, 502);
    assert_eq!(c.cmd("NOOP").await.code, 250);
    assert_eq!(c.cmd("HELP").await.code, 214);
    assert_eq!(c.cmd("MAIL FROM:<a@other.example>").await.code, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@other.example>").await.code, 503);
    assert_eq!(c.cmd("RCPT TO:<>").await.code, 501);
    assert_eq!(c.cmd("DATA").await.code, 554);
    assert_eq!(c.cmd("RSET").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<b@direct.test>").await.code, 503);
    assert_eq!(c.cmd("QUIT").await.code, 221);
    assert!(server.backend.delivered().is_empty());
}

#[tokio::test]
async fn the_null_reverse_path_is_accepted_for_notifications() {
    let server = TestServer::start(test_config()).await;
    let mut c = server.connect().await;
    c.cmd("EHLO client.example").await;
    let reply = c
        .send_message("", "b@direct.test", "Subject: MDN\r\n\r\nprocessed\r\n")
        .await;
    assert_eq!(reply.code, 250);
    assert_eq!(server.backend.delivered()[0].0.mail_from, "");
}

#[tokio::test]
async fn a_recipient_refused_by_the_backend_gets_the_backends_code_and_text() {
    let server = TestServer::start(test_config()).await;
    let mut c = server.connect().await;
    c.cmd("EHLO client.example").await;
    assert_eq!(c.cmd("MAIL FROM:<a@other.example>").await.code, 250);
    let unknown = c.cmd("RCPT TO:<stranger@elsewhere.example>").await;
    assert_eq!(
        (unknown.code, unknown.text().as_str()),
        (550, "5.1.1 no such mailbox here")
    );
    let busy = c.cmd("RCPT TO:<busy@direct.test>").await;
    assert_eq!(
        (busy.code, busy.text().as_str()),
        (451, "4.2.1 mailbox busy, try later")
    );
    assert_eq!(c.cmd("RCPT TO:<doctor@direct.test>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(b"Subject: x\r\n\r\nhi\r\n.\r\n").await;
    assert_eq!(c.reply().await.code, 250);
    let delivered = server.backend.delivered();
    assert_eq!(
        delivered[0].0.rcpt_to,
        vec!["doctor@direct.test".to_string()]
    );
}

#[tokio::test]
async fn two_hundred_fifty_comes_only_after_deliver_has_stored_the_message() {
    let delay = Duration::from_millis(800);
    let server = TestServer::start_with(test_config(), MemBackend::delaying(delay)).await;
    let mut c = server.connect().await;
    c.cmd("EHLO client.example").await;
    c.cmd("MAIL FROM:<a@other.example>").await;
    c.cmd("RCPT TO:<b@direct.test>").await;
    assert_eq!(c.cmd("DATA").await.code, 354);
    let sent = Instant::now();
    c.send(b"Subject: x\r\n\r\nhi\r\n.\r\n").await;
    let reply = c.reply().await;
    assert_eq!(reply.code, 250);
    assert!(sent.elapsed() >= delay, "250 came before deliver returned");
    assert_eq!(
        server.backend.delivered().len(),
        1,
        "250 without a stored message"
    );
}

#[tokio::test]
async fn a_temporary_delivery_failure_is_answered_451_and_a_permanent_one_554() {
    for (error, code, text) in [
        (
            DeliverError::Temporary("storage unavailable".into()),
            451,
            "4.3.0 storage unavailable",
        ),
        (
            DeliverError::Permanent("message refused".into()),
            554,
            "5.3.0 message refused",
        ),
    ] {
        let server = TestServer::start_with(test_config(), MemBackend::failing(error)).await;
        let mut c = server.connect().await;
        c.cmd("EHLO client.example").await;
        let reply = c
            .send_message(
                "a@other.example",
                "b@direct.test",
                "Subject: x\r\n\r\nhi\r\n",
            )
            .await;
        assert_eq!((reply.code, reply.text().as_str()), (code, text));
        // The transaction is over either way; the session carries on.
        assert_eq!(c.cmd("RCPT TO:<b@direct.test>").await.code, 503);
        assert_eq!(c.cmd("NOOP").await.code, 250);
    }
}

#[tokio::test]
async fn a_disconnect_in_the_middle_of_data_delivers_nothing() {
    let server = TestServer::start(test_config()).await;
    let mut c = server.connect().await;
    c.cmd("EHLO client.example").await;
    c.cmd("MAIL FROM:<a@other.example>").await;
    c.cmd("RCPT TO:<b@direct.test>").await;
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(b"Subject: x\r\n\r\nhalf a mess").await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(server.backend.delivered().is_empty());
    server.stop_within(Duration::from_secs(5)).await;
}
