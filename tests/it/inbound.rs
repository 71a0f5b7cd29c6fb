//! Received Direct messages: processed from the stored copy into mailboxes, or
//! quarantined with the reason; exactly once.

use directmail::store::inbound::{self, NewInbound};
use directmail::store::{mailboxes, orgs};

use crate::revocation::{Setup, message, setup};

pub(crate) async fn with_mailbox(s: &Setup) -> i64 {
    let org = orgs::get(&s.app.state.db, s.domain.org_id.unwrap())
        .await
        .unwrap()
        .unwrap();
    let mut tx = s.app.state.db.begin().await.unwrap();
    let mailbox = mailboxes::create(
        &mut tx,
        org.id,
        s.domain.id,
        &directmail::domain::Email::parse("front@direct.lakeside.test").unwrap(),
        mailboxes::MailboxKind::Shared,
        &directmail::domain::DisplayName::parse("Front desk").unwrap(),
        s.app.now(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    mailbox.id
}

async fn receive(s: &Setup, mail_from: &str, rcpt: &[&str], raw: &[u8]) -> i64 {
    let rcpt: Vec<String> = rcpt.iter().map(|r| r.to_string()).collect();
    inbound::insert(
        &s.app.state.db,
        NewInbound {
            mail_from,
            rcpt_to: &rcpt,
            remote_ip: "127.0.0.1",
            helo: "hisp-b.test",
            tls: true,
            raw,
        },
        s.app.now(),
    )
    .await
    .unwrap()
}

/// Stores a received message, wakes the portal's own processor, and waits for the
/// outcome: `delivered`, or the quarantine reason.
pub(crate) async fn outcome(s: &Setup, id: i64) -> String {
    s.app.state.wake_processor.notify_one();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let row = inbound::get(&s.app.state.db, id).await.unwrap().unwrap();
        match row.state.as_str() {
            "delivered" => return "delivered".into(),
            "quarantined" => return row.verdict.unwrap_or_default(),
            _ => {}
        }
        assert!(
            std::time::Instant::now() < deadline,
            "message {id} still {}",
            row.state
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_trusted_message_is_delivered_once_with_its_trust_facts() {
    let s = setup().await;
    let mailbox = with_mailbox(&s).await;
    let raw = message(
        s.app.data_dir.path(),
        "sender",
        "dr.smith@direct.sender.test",
        true,
    );
    let id = receive(
        &s,
        "dr.smith@direct.sender.test",
        &["front@direct.lakeside.test"],
        &raw,
    )
    .await;
    assert_eq!(outcome(&s, id).await, "delivered");
    let list = inbound::messages_in(&s.app.state.db, mailbox, "inbox", 10)
        .await
        .unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].subject, "Referral");
    assert_eq!(list[0].from_addr, "dr.smith@direct.sender.test");
    assert_eq!(list[0].trust_code, "trusted");
    assert_eq!(list[0].revocation, "checked");
    assert!(
        list[0]
            .signer_subject
            .as_deref()
            .unwrap_or("")
            .contains("sender")
    );

    // a worker that died after delivering but before its claim ended: the message is
    // processed again when the claim lapses, and still lands once
    sqlx::query(
        "update inbound_messages set state = 'processing', claimed_until = 0 where id = $1",
    )
    .bind(id)
    .execute(&s.app.state.db.pool)
    .await
    .unwrap();
    assert_eq!(outcome(&s, id).await, "delivered", "taken over");
    assert_eq!(
        inbound::messages_in(&s.app.state.db, mailbox, "inbox", 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn messages_breaking_the_routing_rules_are_quarantined_with_the_reason() {
    let s = setup().await;
    let mailbox = with_mailbox(&s).await;
    let raw = message(
        s.app.data_dir.path(),
        "sender",
        "dr.smith@direct.sender.test",
        true,
    );
    // MAIL FROM is not the From of the message
    let a = receive(
        &s,
        "someone.else@direct.sender.test",
        &["front@direct.lakeside.test"],
        &raw,
    )
    .await;
    assert_eq!(outcome(&s, a).await, "envelope_sender_mismatch");
    // a recipient not named in To or Cc
    let mut tx = s.app.state.db.begin().await.unwrap();
    mailboxes::create(
        &mut tx,
        s.domain.org_id.unwrap(),
        s.domain.id,
        &directmail::domain::Email::parse("billing@direct.lakeside.test").unwrap(),
        mailboxes::MailboxKind::Shared,
        &directmail::domain::DisplayName::parse("Billing").unwrap(),
        s.app.now(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let b = receive(
        &s,
        "dr.smith@direct.sender.test",
        &["front@direct.lakeside.test", "billing@direct.lakeside.test"],
        &raw,
    )
    .await;
    assert_eq!(outcome(&s, b).await, "recipient_not_addressed");
    // a revoked signer
    let revoked = message(
        s.app.data_dir.path(),
        "revoked",
        "dr.gone@direct.sender.test",
        true,
    );
    let c = receive(
        &s,
        "dr.gone@direct.sender.test",
        &["front@direct.lakeside.test"],
        &revoked,
    )
    .await;
    assert_eq!(outcome(&s, c).await, "signer_revoked");
    // garbage
    let d = receive(
        &s,
        "dr.smith@direct.sender.test",
        &["front@direct.lakeside.test"],
        b"not a message at all",
    )
    .await;
    assert_eq!(outcome(&s, d).await, "not_encrypted");
    assert!(
        inbound::messages_in(&s.app.state.db, mailbox, "inbox", 10)
            .await
            .unwrap()
            .is_empty(),
        "nothing delivered"
    );
    let q = inbound::list(&s.app.state.db, "quarantined", None, 10)
        .await
        .unwrap();
    assert_eq!(q.len(), 4);
    // the senders whose signatures could be checked are told, encrypted to their
    // certificate; the garbage gets no answer
    let notices: Vec<Vec<u8>> = sqlx::query_scalar(
        "select raw from outbound_messages where kind = 'mdn' and recipient_cert is not null order by id",
    )
    .fetch_all(&s.app.state.db.pool)
    .await
    .unwrap();
    assert_eq!(
        notices.len(),
        2,
        "the two routing mismatches; a revoked certificate allows no notice"
    );
    let text = String::from_utf8_lossy(&notices[0]);
    assert!(
        text.contains("Disposition: automatic-action/MDN-sent-automatically;failed"),
        "{text}"
    );
    assert!(text.contains("To: <dr.smith@direct.sender.test>"));
    assert!(
        !text.contains("Please see the patient"),
        "the notice carries no content"
    );
    let first = inbound::get(&s.app.state.db, a).await.unwrap().unwrap();
    assert!(
        first
            .detail
            .unwrap()
            .contains("does not match the message's From")
    );
}

#[tokio::test]
async fn a_quarantined_message_can_be_retried_after_the_operator_fixes_trust() {
    let s = setup().await;
    let mailbox = with_mailbox(&s).await;
    s.app
        .user(None, "op@hisp.test", directmail::domain::Role::Operator)
        .await;
    // the domain trusts nothing yet
    sqlx::query("delete from trust_anchors")
        .execute(&s.app.state.db.pool)
        .await
        .unwrap();
    let raw = message(
        s.app.data_dir.path(),
        "sender",
        "dr.smith@direct.sender.test",
        true,
    );
    let id = receive(
        &s,
        "dr.smith@direct.sender.test",
        &["front@direct.lakeside.test"],
        &raw,
    )
    .await;
    assert_eq!(outcome(&s, id).await, "untrusted_anchor");

    // the operator sees why, adds the sender's anchor, and retries from the console
    let mut op = s.app.signed_in("op@hisp.test").await;
    let list = op.get("/quarantine").await;
    assert!(
        list.body.contains("untrusted_anchor") && list.body.contains("dr.smith@direct.sender.test")
    );
    let page = op.get(&format!("/quarantine/{id}")).await;
    assert!(page.body.contains("does not chain to a trust anchor"));
    assert!(
        !page.body.contains("Please see the patient"),
        "no content in the operator's view"
    );
    let root = std::fs::read(s.app.data_dir.path().join("root.pem")).unwrap();
    directmail::pki::add_anchors(
        &s.app.state.db,
        &s.domain,
        &root,
        s.app.now(),
        &directmail::audit::Actor::system(),
    )
    .await
    .unwrap();
    let r = op.post(&format!("/quarantine/{id}/retry"), &[]).await;
    assert_eq!(r.location(), "/quarantine");
    assert_eq!(outcome(&s, id).await, "delivered");
    assert_eq!(
        inbound::messages_in(&s.app.state.db, mailbox, "inbox", 10)
            .await
            .unwrap()
            .len(),
        1
    );

    // discarding erases the content; members cannot reach the quarantine
    let e = receive(
        &s,
        "x@direct.sender.test",
        &["front@direct.lakeside.test"],
        b"junk",
    )
    .await;
    assert_eq!(outcome(&s, e).await, "not_encrypted");
    op.get("/quarantine").await;
    op.post(&format!("/quarantine/{e}/discard"), &[]).await;
    let size: i64 = sqlx::query_scalar(
        "select coalesce((select length(raw) from inbound_raw where inbound_id = $1), 0)",
    )
    .bind(e)
    .fetch_one(&s.app.state.db.pool)
    .await
    .unwrap();
    assert_eq!(size, 0);
    assert_eq!(
        op.post(&format!("/quarantine/{e}/retry"), &[]).await.status,
        reqwest::StatusCode::NOT_FOUND
    );
    let entries = directmail::audit::list(&s.app.state.db, &Default::default(), 50)
        .await
        .unwrap();
    assert!(
        entries.iter().any(|x| x.action == "quarantine.retry")
            && entries.iter().any(|x| x.action == "quarantine.discard")
    );
}

/// A minimal SMTP client: sends `lines` one at a time and returns every reply.
async fn smtp_session(addr: std::net::SocketAddr, lines: &[String]) -> Vec<String> {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut replies = Vec::new();
    let reply = async |read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>| {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if read.read_line(&mut line).await.unwrap() == 0 {
                break;
            }
            let last = line.as_bytes().get(3) == Some(&b' ');
            all.push_str(&line);
            if last {
                break;
            }
        }
        all
    };
    replies.push(reply(&mut read).await);
    for l in lines {
        write.write_all(l.as_bytes()).await.unwrap();
        replies.push(reply(&mut read).await);
    }
    replies
}

/// One SMTP transaction to `addr` as another HISP would make it: EHLO, MAIL FROM,
/// each RCPT TO, DATA with `raw` dot-stuffed (RFC 5321 §4.5.2) and CRLF line ends,
/// QUIT. Returns every reply, the greeting first.
pub(crate) async fn send_over_smtp(
    addr: std::net::SocketAddr,
    mail_from: &str,
    rcpt_to: &[&str],
    raw: &[u8],
) -> Vec<String> {
    let text = String::from_utf8_lossy(raw)
        .replace("\r\n", "\n")
        .replace('\n', "\r\n");
    let stuffed: String = text
        .split("\r\n")
        .map(|l| {
            if l.starts_with('.') {
                format!(".{l}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n");
    let mut lines = vec![
        "EHLO hisp-b.test\r\n".to_owned(),
        format!("MAIL FROM:<{mail_from}>\r\n"),
    ];
    lines.extend(rcpt_to.iter().map(|r| format!("RCPT TO:<{r}>\r\n")));
    lines.push("DATA\r\n".into());
    lines.push(format!("{stuffed}\r\n.\r\n"));
    lines.push("QUIT\r\n".into());
    smtp_session(addr, &lines).await
}

#[tokio::test]
async fn a_message_arriving_over_smtp_is_stored_before_250_and_then_delivered() {
    let s = setup().await;
    let mailbox = with_mailbox(&s).await;
    let raw = message(
        s.app.data_dir.path(),
        "sender",
        "dr.smith@direct.sender.test",
        true,
    );
    let replies = send_over_smtp(
        s.app.smtp_addr,
        "dr.smith@direct.sender.test",
        &["nobody@direct.lakeside.test", "front@direct.lakeside.test"],
        &raw,
    )
    .await;
    assert!(replies[0].starts_with("220"), "{replies:?}");
    assert!(
        replies[3].starts_with("550"),
        "an address not hosted here is refused: {replies:?}"
    );
    assert!(replies[4].starts_with("250"), "{replies:?}");
    assert!(replies[6].starts_with("250"), "{replies:?}");
    let id: i64 = sqlx::query_scalar("select max(id) from inbound_messages")
        .fetch_one(&s.app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(outcome(&s, id).await, "delivered");
    let got = inbound::messages_in(&s.app.state.db, mailbox, "inbox", 10)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].trust_code, "trusted");
    let stored: Vec<u8> = sqlx::query_scalar("select raw from inbound_raw where inbound_id = $1")
        .bind(id)
        .fetch_one(&s.app.state.db.pool)
        .await
        .unwrap();
    assert!(
        stored.starts_with(b"Received: from hisp-b.test"),
        "a Received line is added"
    );
}

#[tokio::test]
async fn a_message_accepted_before_the_process_is_killed_is_delivered_once_after_restart() {
    use std::process::{Command, Stdio};
    let s = setup().await;
    let mailbox = with_mailbox(&s).await;
    let raw = message(
        s.app.data_dir.path(),
        "sender",
        "dr.smith@direct.sender.test",
        true,
    );
    let text = String::from_utf8(raw).unwrap();
    let stuffed: String = text
        .split("\r\n")
        .map(|l| {
            if l.starts_with('.') {
                format!(".{l}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n");
    // the same database served by the real binary, which is killed right after 250
    let smtp = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    /// Kills the server even when an assertion fails first.
    struct Server(std::process::Child);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    // each start listens on a port of its own: the killed server's port may be taken by
    // another test by the time the second one starts. Its log is kept for a failure.
    // On PostgreSQL the first server's connections carry a name, so that the test can
    // wait, after killing it, until the database has finished what it had sent: a claim
    // sent just before the kill still commits, and would hold the message five minutes.
    const KILLED: &str = "directmail-killed";
    let url = s.app.config.database_url().as_str().to_owned();
    let on_postgres = url.starts_with("postgres");
    let named = if on_postgres {
        let join = if url.contains('?') { '&' } else { '?' };
        format!("{url}{join}application_name={KILLED}")
    } else {
        url.clone()
    };
    let start = |url: &str, smtp: std::net::SocketAddr, log: &str| {
        let log = std::fs::File::create(s.app.data_dir.path().join(log)).unwrap();
        Command::new(env!("CARGO_BIN_EXE_directmail"))
            .env("DIRECTMAIL_DATABASE_URL", url)
            .env("DIRECTMAIL_DATA_DIR", s.app.data_dir.path())
            .env("DIRECTMAIL_HTTP_ADDR", "127.0.0.1:0")
            .env("DIRECTMAIL_SMTP_ADDR", smtp.to_string())
            .env("DIRECTMAIL_DEV_PKI", "false")
            .env("DIRECTMAIL_DNS_RESOLVER", crate::helpers::NO_DNS)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map(Server)
            .unwrap()
    };
    let mut first = start(&named, smtp, "first.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::net::TcpStream::connect(smtp).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the binary did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let replies = smtp_session(
        smtp,
        &[
            "EHLO hisp-b.test\r\n".into(),
            "MAIL FROM:<dr.smith@direct.sender.test>\r\n".into(),
            "RCPT TO:<front@direct.lakeside.test>\r\n".into(),
            "DATA\r\n".into(),
            format!("{stuffed}\r\n.\r\n"),
        ],
    )
    .await;
    assert!(replies[5].starts_with("250"), "{replies:?}");
    first.0.kill().unwrap(); // SIGKILL
    first.0.wait().unwrap();
    if on_postgres {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while sqlx::query_scalar::<_, i64>(
            "select count(*) from pg_stat_activity where application_name = $1",
        )
        .bind(KILLED)
        .fetch_one(&s.app.state.db.pool)
        .await
        .unwrap()
            > 0
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the killed server's database sessions did not end"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    // a claim the killed process held lapses after five minutes; let that time pass
    sqlx::query("update inbound_messages set claimed_until = 0 where state = 'processing'")
        .execute(&s.app.state.db.pool)
        .await
        .unwrap();
    // whatever the killed process had done, after a restart the message lands once
    let again = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let second = start(&url, again, "second.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let n = inbound::messages_in(&s.app.state.db, mailbox, "inbox", 10)
            .await
            .unwrap()
            .len();
        let waiting: i64 =
            sqlx::query_scalar("select count(*) from inbound_messages where state <> 'delivered'")
                .fetch_one(&s.app.state.db.pool)
                .await
                .unwrap();
        if n == 1 && waiting == 0 {
            break;
        }
        assert!(n <= 1, "delivered twice");
        assert!(
            std::time::Instant::now() < deadline,
            "not delivered after restart ({n} in the inbox, {waiting} waiting); the second server said:\n{}",
            std::fs::read_to_string(s.app.data_dir.path().join("second.log")).unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    drop(second);
    assert_eq!(
        inbound::messages_in(&s.app.state.db, mailbox, "inbox", 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_trusted_message_without_disposition_notification_to_is_acknowledged_to_its_signer() {
    let (sink, relay) = crate::outbound::sink().await;
    let s = crate::revocation::setup_with(|c| c.smtp_relay = Some(relay), None).await;
    let mailbox = with_mailbox(&s).await;
    let dir = s.app.data_dir.path().to_path_buf();
    // built by openssl cms; its signed header block has no Disposition-Notification-To
    let raw = message(&dir, "sender", "dr.smith@direct.sender.test", true);
    let id = receive(
        &s,
        "dr.smith@direct.sender.test",
        &["front@direct.lakeside.test"],
        &raw,
    )
    .await;
    assert_eq!(outcome(&s, id).await, "delivered");
    s.app.state.wake_sender.notify_one();
    crate::outbound::wait_for(
        "the processed notification at the sender's HISP",
        async || !sink.received.lock().unwrap().is_empty(),
    )
    .await;
    let (envelope, data) = sink.received.lock().unwrap()[0].clone();
    assert_eq!(
        envelope.rcpt_to,
        vec!["dr.smith@direct.sender.test".to_owned()]
    );
    std::fs::write(dir.join("mdn.eml"), &data).unwrap();
    // the sender's HISP opens it with its own key, and verifies it up to the root it trusts
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(
            "set -e
openssl cms -decrypt -in mdn.eml -recip sender.pem -inkey sender.key -out mdn.signed
openssl cms -verify -in mdn.signed -CAfile root.pem -purpose smimesign -out mdn.inner 2>verify.txt
cat verify.txt mdn.inner",
        )
        .current_dir(&dir)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && shown.contains("Verification successful"),
        "{shown}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        shown.contains("report-type=disposition-notification")
            && shown.contains("Final-Recipient: rfc822;front@direct.lakeside.test")
            && shown.contains("processed"),
        "{shown}"
    );
    assert!(
        !shown.contains("dispatched"),
        "only asked-for dispatched notifications are sent"
    );
    let mdns: i64 = sqlx::query_scalar(
        "select count(*) from outbound_messages where kind = 'mdn' and mailbox_id = $1",
    )
    .bind(mailbox)
    .fetch_one(&s.app.state.db.pool)
    .await
    .unwrap();
    assert_eq!(mdns, 1, "one processed notification, no dispatched");
}

#[tokio::test]
async fn messages_arriving_on_eight_connections_at_once_are_each_stored_under_their_own_id_and_delivered_once()
 {
    let s = setup().await;
    let mailbox = with_mailbox(&s).await;
    let from = "dr.smith@direct.sender.test";
    let raws: Vec<Vec<u8>> = (0..16)
        .map(|_| message(s.app.data_dir.path(), "sender", from, true))
        .collect();
    // eight connections at once, two messages each: the sessions wait for the write
    // turn together, and whoever gets it stores every waiting message
    let addr = s.app.smtp_addr;
    let sessions: Vec<_> = raws
        .chunks(2)
        .map(|chunk| {
            let chunk = chunk.to_vec();
            tokio::spawn(async move {
                let mut sent = Vec::new();
                for raw in chunk {
                    let replies =
                        send_over_smtp(addr, from, &["front@direct.lakeside.test"], &raw).await;
                    sent.push((raw, replies));
                }
                sent
            })
        })
        .collect();
    let mut queued = Vec::new();
    for session in sessions {
        for (raw, replies) in session.await.unwrap() {
            let accepted = replies[5].trim_end();
            let id: i64 = accepted
                .strip_prefix("250 2.0.0 OK ")
                .and_then(|id| id.parse().ok())
                .unwrap_or_else(|| panic!("each message is accepted with its id: {replies:?}"));
            queued.push((id, raw));
        }
    }
    let mut ids: Vec<i64> = queued.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 16, "sixteen messages, sixteen ids");
    for (id, raw) in &queued {
        let stored: Vec<u8> =
            sqlx::query_scalar("select raw from inbound_raw where inbound_id = $1")
                .bind(id)
                .fetch_one(&s.app.state.db.pool)
                .await
                .unwrap();
        let unix = |b: &[u8]| -> Vec<u8> { b.iter().copied().filter(|c| *c != b'\r').collect() };
        assert!(
            unix(&stored)
                .trim_ascii_end()
                .ends_with(unix(raw).trim_ascii_end()),
            "the id a session was given holds the message it sent"
        );
        assert_eq!(outcome(&s, *id).await, "delivered");
    }
    let got = inbound::messages_in(&s.app.state.db, mailbox, "inbox", 50)
        .await
        .unwrap();
    assert_eq!(got.len(), 16, "each message is delivered once");
    let mdns: i64 = sqlx::query_scalar("select count(*) from outbound_messages where kind = 'mdn'")
        .fetch_one(&s.app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(mdns, 16, "one processed notification for each message");
}
