//! PIPELINING (RFC 2920): many commands in one write, replies in order.

use crate::helpers::{TestServer, test_config};

#[tokio::test]
async fn pipelined_commands_in_one_write_are_answered_in_order() {
    let server = TestServer::start(test_config()).await;
    let mut c = server.connect().await;
    c.send(
        b"EHLO client.example\r\nMAIL FROM:<a@other.example>\r\nRCPT TO:<b@direct.test>\r\n\
          RCPT TO:<c@nowhere.example>\r\nRCPT TO:<d@direct.test>\r\nDATA\r\n",
    )
    .await;
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(c.reply().await.code);
    }
    assert_eq!(got, vec![250, 250, 250, 550, 250, 354]);
    // The message, its end, and the next transaction and QUIT, all in one write.
    c.send(
        b"Subject: one\r\n\r\nfirst\r\n.\r\nMAIL FROM:<a@other.example>\r\nRCPT TO:<e@direct.test>\r\n\
          DATA\r\n",
    )
    .await;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(c.reply().await.code);
    }
    assert_eq!(got, vec![250, 250, 250, 354]);
    c.send(b"Subject: two\r\n\r\nsecond\r\n.\r\nQUIT\r\n").await;
    assert_eq!(c.reply().await.code, 250);
    assert_eq!(c.reply().await.code, 221);
    assert!(c.is_closed_by_server().await);

    let delivered = server.backend.delivered();
    assert_eq!(delivered.len(), 2);
    assert_eq!(
        delivered[0].0.rcpt_to,
        vec!["b@direct.test".to_string(), "d@direct.test".to_string()]
    );
    assert_eq!(delivered[1].1, b"Subject: two\r\n\r\nsecond\r\n".to_vec());
}
