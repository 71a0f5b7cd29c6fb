//! Limits: message size, line length, command counts, recipients, sessions, timeouts.

use std::time::{Duration, Instant};

use directmail_smtp::Config;

use crate::helpers::{Client, TestServer, test_config};

fn small() -> Config {
    Config {
        max_message_size: 1000,
        ..test_config()
    }
}

#[tokio::test]
async fn a_declared_size_over_the_limit_is_refused_in_mail_from() {
    let server = TestServer::start(small()).await;
    let mut c = server.connect().await;
    let ehlo = c.cmd("EHLO client.example").await;
    assert!(ehlo.lines.contains(&"SIZE 1000".to_string()));
    let reply = c.cmd("MAIL FROM:<a@other.example> SIZE=1001").await;
    assert_eq!(reply.code, 552);
    assert!(reply.text().starts_with("5.3.4"));
    assert_eq!(
        c.cmd("MAIL FROM:<a@other.example> SIZE=1000").await.code,
        250
    );
}

#[tokio::test]
async fn data_over_the_limit_is_read_to_its_end_and_refused_with_552() {
    let server = TestServer::start(small()).await;
    let mut c = server.connect().await;
    c.cmd("EHLO client.example").await;
    c.cmd("MAIL FROM:<a@other.example>").await;
    c.cmd("RCPT TO:<b@direct.test>").await;
    assert_eq!(c.cmd("DATA").await.code, 354);
    let line = "x".repeat(78) + "\r\n";
    for _ in 0..100 {
        c.send(line.as_bytes()).await;
    }
    c.send(b".\r\n").await;
    let reply = c.reply().await;
    assert_eq!(reply.code, 552);
    assert!(server.backend.delivered().is_empty());
    // The session is back in command mode, not reading leftover data as commands.
    let ok = c
        .send_message(
            "a@other.example",
            "b@direct.test",
            "Subject: small\r\n\r\nok\r\n",
        )
        .await;
    assert_eq!(ok.code, 250);
    assert_eq!(server.backend.delivered().len(), 1);
}

#[tokio::test]
async fn a_too_long_command_line_gets_500_and_the_session_goes_on() {
    let server = TestServer::start(test_config()).await;
    let mut c = server.connect().await;
    let long = format!("EHLO {}", "a".repeat(20_000));
    let reply = c.cmd(&long).await;
    assert_eq!(reply.code, 500);
    assert!(reply.text().contains("line too long"));
    assert_eq!(c.cmd("EHLO client.example").await.code, 250);
}

#[tokio::test]
async fn too_many_invalid_commands_close_the_session_with_421() {
    let server = TestServer::start(Config {
        max_invalid_commands: 3,
        ..test_config()
    })
    .await;
    let mut c = server.connect().await;
    for _ in 0..3 {
        assert_eq!(c.cmd("BOGUS").await.code, 500);
    }
    assert_eq!(c.cmd("BOGUS").await.code, 500);
    assert_eq!(c.reply().await.code, 421);
    assert!(c.is_closed_by_server().await);
}

#[tokio::test]
async fn too_many_commands_close_the_session_with_421() {
    let server = TestServer::start(Config {
        max_commands: 5,
        ..test_config()
    })
    .await;
    let mut c = server.connect().await;
    for _ in 0..5 {
        assert_eq!(c.cmd("NOOP").await.code, 250);
    }
    assert_eq!(c.cmd("NOOP").await.code, 421);
    assert!(c.is_closed_by_server().await);
}

#[tokio::test]
async fn recipients_beyond_the_limit_get_452() {
    let server = TestServer::start(Config {
        max_recipients: 2,
        ..test_config()
    })
    .await;
    let mut c = server.connect().await;
    c.cmd("EHLO client.example").await;
    c.cmd("MAIL FROM:<a@other.example>").await;
    assert_eq!(c.cmd("RCPT TO:<b@direct.test>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<c@direct.test>").await.code, 250);
    let third = c.cmd("RCPT TO:<d@direct.test>").await;
    assert_eq!(
        (third.code, third.text().as_str()),
        (452, "4.5.3 too many recipients")
    );
}

#[tokio::test]
async fn connections_beyond_the_session_limit_get_421_too_busy() {
    let server = TestServer::start(Config {
        max_sessions: 2,
        ..test_config()
    })
    .await;
    let mut first = server.connect().await;
    let _second = server.connect().await;
    let (mut third, greeting) = Client::connect(server.addr).await;
    assert_eq!(greeting.code, 421);
    assert!(greeting.text().contains("too busy"));
    assert!(third.is_closed_by_server().await);

    assert_eq!(first.cmd("QUIT").await.code, 221);
    assert!(first.is_closed_by_server().await);
    // The slot frees once the first session's task has finished.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_c, greeting) = Client::connect(server.addr).await;
        if greeting.code == 220 {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_idle_client_is_dropped_with_421_after_the_command_timeout() {
    let server = TestServer::start(Config {
        command_timeout: Duration::from_secs(1),
        ..test_config()
    })
    .await;
    let mut c = server.connect().await;
    let start = Instant::now();
    let reply = c.reply().await;
    assert_eq!(reply.code, 421);
    assert!(reply.text().contains("timeout"));
    assert!(start.elapsed() >= Duration::from_millis(900));
    assert!(c.is_closed_by_server().await);
}

#[tokio::test]
async fn a_slow_loris_command_is_cut_off_by_the_command_timeout() {
    let server = TestServer::start(Config {
        command_timeout: Duration::from_secs(1),
        ..test_config()
    })
    .await;
    let mut c = server.connect().await;
    let start = Instant::now();
    // A byte every 200 ms keeps the connection busy but never completes a line: the
    // timeout covers the whole line, so it fires 1 s after the prompt, not 1 s after the
    // last byte (which would be 1.8 s or later).
    for b in b"EHLO" {
        c.send(&[*b]).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reply = c.reply().await;
    assert_eq!(reply.code, 421);
    assert!(
        start.elapsed() < Duration::from_millis(1700),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_client_that_stalls_during_data_is_dropped_with_421() {
    let server = TestServer::start(Config {
        data_timeout: Duration::from_secs(1),
        ..test_config()
    })
    .await;
    let mut c = server.connect().await;
    c.cmd("EHLO client.example").await;
    c.cmd("MAIL FROM:<a@other.example>").await;
    c.cmd("RCPT TO:<b@direct.test>").await;
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(b"Subject: x\r\n\r\nand then nothing").await;
    let reply = c.reply().await;
    assert_eq!(reply.code, 421);
    assert!(reply.text().contains("data timeout"));
    assert!(c.is_closed_by_server().await);
    assert!(server.backend.delivered().is_empty());
}

#[tokio::test]
async fn ten_thousand_pipelined_rcpt_lines_hit_the_limits_and_the_server_carries_on() {
    let server = TestServer::start(test_config()).await;
    let mut c = server.connect().await;
    let mut script = String::from("EHLO flood.example\r\nMAIL FROM:<a@other.example>\r\n");
    for i in 0..10_000 {
        script.push_str(&format!("RCPT TO:<r{i}@direct.test>\r\n"));
    }
    // The server may close while we are still writing: that is the point.
    let _ = tokio::io::AsyncWriteExt::write_all(&mut c.stream, script.as_bytes()).await;
    let mut codes = Vec::new();
    while let Some(reply) = c.try_reply().await {
        codes.push(reply.code);
    }
    let accepted = codes.iter().filter(|&&code| code == 250).count();
    // EHLO and MAIL, then at most 100 recipients (RFC 5321 §4.5.3.1.8).
    assert!(accepted <= 2 + 100, "{accepted} accepted");
    assert!(codes.contains(&452), "no 452 among {} replies", codes.len());
    assert!(
        codes.len() <= 1001,
        "{} replies after the command limit",
        codes.len()
    );
    let mut fresh = server.connect().await;
    assert_eq!(fresh.cmd("EHLO client.example").await.code, 250);
}
