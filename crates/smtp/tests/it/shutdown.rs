//! Graceful shutdown: stop accepting, let a message in DATA finish, close idle sessions.

use std::time::Duration;

use tokio::net::TcpStream;

use crate::helpers::{TestServer, test_config};

#[tokio::test]
async fn shutdown_stops_accepting_closes_idle_sessions_and_lets_a_message_in_data_finish() {
    let mut server = TestServer::start(test_config()).await;
    let addr = server.addr;

    let mut sending = server.connect().await;
    sending.cmd("EHLO sender.example").await;
    sending.cmd("MAIL FROM:<a@other.example>").await;
    sending.cmd("RCPT TO:<b@direct.test>").await;
    assert_eq!(sending.cmd("DATA").await.code, 354);
    sending
        .send(b"Subject: in flight\r\n\r\nfirst half\r\n")
        .await;

    let mut idle = server.connect().await;
    assert_eq!(idle.cmd("EHLO idle.example").await.code, 250);

    server.trigger_stop();
    let bye = idle.reply().await;
    assert_eq!(bye.code, 421);
    assert!(bye.text().contains("shutting down"));
    assert!(idle.is_closed_by_server().await);
    // The listener is gone: new connections are refused.
    assert!(TcpStream::connect(addr).await.is_err());

    // The message being received is completed and acknowledged.
    sending.send(b"second half\r\n.\r\n").await;
    assert_eq!(sending.reply().await.code, 250);
    assert_eq!(sending.reply().await.code, 421);
    assert!(sending.is_closed_by_server().await);
    let delivered = server.backend.delivered();
    assert_eq!(delivered.len(), 1);
    assert_eq!(
        delivered[0].1,
        b"Subject: in flight\r\n\r\nfirst half\r\nsecond half\r\n".to_vec()
    );
    server.stop_within(Duration::from_secs(5)).await;
}
