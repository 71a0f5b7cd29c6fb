//! Hostile input: random bytes, binary, huge lines, truncated commands, abrupt closes.

use std::time::Duration;

use directmail_smtp::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{TestServer, test_config};

/// xorshift64*: reproducible randomness without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const PREFIXES: &[&[u8]] = &[
    b"EHLO x\r\nMAIL FROM:<",
    b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<b@direct.test>\r\nDATA\r\n",
    b"HELO\r\n",
    b"RCPT TO:<\"\\",
    b"MAIL FROM:<a@b> SIZE=99999999999999999999999\r\n",
    b"STARTTLS\r\n",
    b"EHLO x\r\nMAIL FROM:<a@b> BODY=8BITMIME SMTPUTF8 RET=FULL ENVID=\xff\xfe\r\n",
    b"\r\n\r\n\r\n",
    b"",
];

fn garbage(rng: &mut Rng) -> Vec<u8> {
    let mut out = PREFIXES[rng.below(PREFIXES.len())].to_vec();
    let len = match rng.below(10) {
        0 => 100_000, // a huge line
        1 => 0,
        _ => rng.below(2048),
    };
    for _ in 0..len {
        let b = match rng.below(8) {
            0 => b'\n',
            1 => b'\r',
            2 => b'.',
            3 => b'<',
            _ => rng.next() as u8,
        };
        out.push(b);
    }
    out
}

#[tokio::test]
async fn random_garbage_never_breaks_the_server_and_leaves_no_session_behind() {
    let server = TestServer::start(Config {
        max_message_size: 10_000,
        max_invalid_commands: 5,
        command_timeout: Duration::from_secs(2),
        data_timeout: Duration::from_secs(2),
        ..test_config()
    })
    .await;
    let mut rng = Rng(0x5eed_1234_abcd_0042);
    for i in 0..300 {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        let bytes = garbage(&mut rng);
        let _ = tcp.write_all(&bytes).await;
        match i % 3 {
            // Sudden disconnect, maybe with unread replies.
            0 => drop(tcp),
            // Half-close and read whatever the server says until it closes.
            _ => {
                let _ = tcp.shutdown().await;
                let mut sink = Vec::new();
                let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut sink));
                assert!(
                    read.await.is_ok(),
                    "iteration {i}: the server kept the session open"
                );
                if let Some(first) = sink.get(..3) {
                    assert_eq!(first, b"220", "iteration {i}: no greeting");
                }
            }
        }
    }
    // A fresh session still works end to end.
    let mut c = server.connect().await;
    assert_eq!(c.cmd("EHLO client.example").await.code, 250);
    let reply = c
        .send_message(
            "a@other.example",
            "b@direct.test",
            "Subject: x\r\n\r\nstill fine\r\n",
        )
        .await;
    assert_eq!(reply.code, 250);
    assert_eq!(c.cmd("QUIT").await.code, 221);
    // Every session task has ended: shutdown completes within the timeouts.
    server.stop_within(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn binary_and_non_utf8_commands_get_5xx_replies() {
    let server = TestServer::start(test_config()).await;
    let mut c = server.connect().await;
    c.send(b"\x00\x01\x02\xff\xfe\r\n").await;
    assert_eq!(c.reply().await.code, 500);
    c.send(b"EHLO \xc3\x28\r\n").await;
    let reply = c.reply().await;
    assert!(reply.code == 250 || reply.code >= 500, "{reply:?}");
    c.send(b"MAIL FROM:<\xff@\xfe>\r\n").await;
    let reply = c.reply().await;
    assert!(reply.code == 250 || reply.code >= 500, "{reply:?}");
    assert_eq!(c.cmd("NOOP").await.code, 250);
}

/// RFC 5321 §4.5.2 on the sending side: a line starting with "." gets one more.
fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 50);
    let mut at_line_start = true;
    let mut prev = 0u8;
    for &b in body {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = prev == b'\r' && b == b'\n';
        prev = b;
    }
    out
}

#[tokio::test]
async fn megabytes_of_random_lines_sent_in_odd_chunks_arrive_byte_for_byte() {
    let server = TestServer::start(test_config()).await;
    let mut rng = Rng(0xdead_beef_0bad_cafe);
    let mut body = Vec::new();
    while body.len() < 3_000_000 {
        let mut line = match rng.below(6) {
            0 => b".".to_vec(),
            1 => b"..".to_vec(),
            2 => b".\r".to_vec(),
            _ => Vec::new(),
        };
        for _ in 0..rng.below(300) {
            let b = match rng.below(20) {
                0 => b'\r',
                1 => b'\n',
                2 => b'.',
                _ => rng.next() as u8,
            };
            // A CRLF inside the "line" would start a new one: keep line ends explicit.
            if b == b'\n' && line.last() == Some(&b'\r') {
                line.push(b'x');
            } else {
                line.push(b);
            }
        }
        body.extend_from_slice(&line);
        body.extend_from_slice(b"\r\n");
    }
    let wire = dot_stuff(&body);

    let mut c = server.connect().await;
    c.stream.set_nodelay(true).unwrap();
    c.cmd("EHLO client.example").await;
    c.cmd("MAIL FROM:<a@other.example>").await;
    c.cmd("RCPT TO:<b@direct.test>").await;
    assert_eq!(c.cmd("DATA").await.code, 354);
    let mut rest = &wire[..];
    while !rest.is_empty() {
        let n = (1 + rng.below(20_000)).min(rest.len());
        c.send(&rest[..n]).await;
        rest = &rest[n..];
    }
    c.send(b".\r\n").await;
    assert_eq!(c.reply().await.code, 250);
    let delivered = server.backend.delivered();
    assert_eq!(delivered[0].1.len(), body.len());
    assert!(delivered[0].1 == body, "the message changed in transit");
}
