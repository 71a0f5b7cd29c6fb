//! Received Direct messages: processed from the stored copy into mailboxes, or
//! quarantined with the reason; exactly once.

use directmail::inbound::{Outcome, Processor};
use directmail::store::inbound::{self, NewInbound};
use directmail::store::{mailboxes, orgs};

use crate::revocation::{Setup, message, setup};

async fn with_mailbox(s: &Setup) -> i64 {
    let org = orgs::get(&s.app.state.db, s.domain.org_id.unwrap())
        .await
        .unwrap()
        .unwrap();
    let mut tx = s.app.state.db.pool.begin().await.unwrap();
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

fn processor(s: &Setup) -> Processor {
    Processor {
        db: s.app.state.db.clone(),
        secret: s.app.state.secret.clone(),
        fetcher: s.app.state.fetcher.clone(),
        clock: s.app.state.clock.clone(),
        wake: Default::default(),
    }
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
    let p = processor(&s);
    let (done, outcome) = p.process_next().await.unwrap().expect("one waiting");
    assert_eq!(done, id);
    assert_eq!(outcome, Outcome::Delivered { mailboxes: 1 });
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
    assert!(
        p.process_next().await.unwrap().is_none(),
        "nothing else waiting"
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
    p.process_next().await.unwrap().expect("taken over");
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
    let p = processor(&s);
    // MAIL FROM is not the From of the message
    let a = receive(
        &s,
        "someone.else@direct.sender.test",
        &["front@direct.lakeside.test"],
        &raw,
    )
    .await;
    assert_eq!(
        p.process_next().await.unwrap().unwrap().1,
        Outcome::Quarantined {
            verdict: "envelope_sender_mismatch".into()
        }
    );
    // a recipient not named in To or Cc
    let mut tx = s.app.state.db.pool.begin().await.unwrap();
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
    receive(
        &s,
        "dr.smith@direct.sender.test",
        &["front@direct.lakeside.test", "billing@direct.lakeside.test"],
        &raw,
    )
    .await;
    assert_eq!(
        p.process_next().await.unwrap().unwrap().1,
        Outcome::Quarantined {
            verdict: "recipient_not_addressed".into()
        }
    );
    // a revoked signer
    let revoked = message(
        s.app.data_dir.path(),
        "revoked",
        "dr.gone@direct.sender.test",
        true,
    );
    receive(
        &s,
        "dr.gone@direct.sender.test",
        &["front@direct.lakeside.test"],
        &revoked,
    )
    .await;
    assert_eq!(
        p.process_next().await.unwrap().unwrap().1,
        Outcome::Quarantined {
            verdict: "signer_revoked".into()
        }
    );
    // garbage
    receive(
        &s,
        "dr.smith@direct.sender.test",
        &["front@direct.lakeside.test"],
        b"not a message at all",
    )
    .await;
    let (_, outcome) = p.process_next().await.unwrap().unwrap();
    assert!(matches!(outcome, Outcome::Quarantined { .. }));
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
    let p = processor(&s);
    assert_eq!(
        p.process_next().await.unwrap().unwrap().1,
        Outcome::Quarantined {
            verdict: "untrusted_anchor".into()
        }
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
    let mut tx = s.app.state.db.pool.begin().await.unwrap();
    assert!(inbound::requeue(&mut tx, id).await.unwrap());
    tx.commit().await.unwrap();
    assert_eq!(
        p.process_next().await.unwrap().unwrap().1,
        Outcome::Delivered { mailboxes: 1 }
    );
    assert_eq!(
        inbound::messages_in(&s.app.state.db, mailbox, "inbox", 10)
            .await
            .unwrap()
            .len(),
        1
    );
}
