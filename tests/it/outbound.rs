//! Sending between two organizations on this HISP: the full S/MIME path with only
//! the network skipped, delivery notifications back, and per-recipient status.

use std::time::{Duration, Instant};

use directmail::audit::Actor;
use directmail::domain::{DisplayName, Email};
use directmail::store::mailboxes::{self, Mailbox, MailboxKind};
use directmail::store::{inbound, orgs, outbound};

use crate::helpers::TestApp;

async fn hosted_mailbox(app: &TestApp, org: &str, domain: &str, address: &str) -> Mailbox {
    let org = app.org(org, domain).await;
    let domain = orgs::domain_by_name(&app.state.db, domain)
        .await
        .unwrap()
        .unwrap();
    directmail::pki::issue_dev_certificate(
        &app.state.db,
        &app.state.secret,
        &domain,
        None,
        app.now(),
        &Actor::system(),
    )
    .await
    .unwrap();
    let mut tx = app.state.db.pool.begin().await.unwrap();
    let mailbox = mailboxes::create(
        &mut tx,
        org.id,
        domain.id,
        &Email::parse(address).unwrap(),
        MailboxKind::Shared,
        &DisplayName::parse("Desk").unwrap(),
        app.now(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    mailbox
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_message_between_two_organizations_is_delivered_and_notified_back() {
    let app = TestApp::spawn().await;
    let ana = hosted_mailbox(
        &app,
        "Lakeside Clinic",
        "direct.lakeside.test",
        "dr.ana@direct.lakeside.test",
    )
    .await;
    let front = hosted_mailbox(
        &app,
        "Hillside Care",
        "direct.hillside.test",
        "front@direct.hillside.test",
    )
    .await;

    let id = directmail::outbound::submit(
        &app.state.db,
        &ana,
        "Dr. Ana Ruiz",
        &["front@direct.hillside.test".to_owned()],
        &[],
        "Referral for Ms. Diaz",
        "Please see the patient this week.",
        app.now(),
    )
    .await
    .unwrap();
    app.state.wake_sender.notify_one();
    // the Sent copy is filed at once
    assert_eq!(
        inbound::messages_in(&app.state.db, ana.id, "sent", 10)
            .await
            .unwrap()
            .len(),
        1
    );

    // delivered, trusted, into the other organization's mailbox
    wait_for("delivery", async || {
        !inbound::messages_in(&app.state.db, front.id, "inbox", 10)
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    let got = inbound::messages_in(&app.state.db, front.id, "inbox", 10)
        .await
        .unwrap();
    assert_eq!(got[0].subject, "Referral for Ms. Diaz");
    assert_eq!(got[0].trust_code, "trusted");
    assert_eq!(got[0].from_addr, "dr.ana@direct.lakeside.test");

    // processed and dispatched notifications come back: one final outcome
    wait_for("dispatched", async || {
        outbound::statuses(&app.state.db, id).await.unwrap()[0].1 == "dispatched"
    })
    .await;
    let statuses = outbound::statuses(&app.state.db, id).await.unwrap();
    assert_eq!(
        statuses,
        vec![(
            "front@direct.hillside.test".to_owned(),
            "dispatched".to_owned(),
            statuses[0].2.clone()
        )]
    );
    // notifications never land in an inbox, and are not answered
    assert!(
        inbound::messages_in(&app.state.db, ana.id, "inbox", 10)
            .await
            .unwrap()
            .is_empty()
    );
    let mdn_answers: i64 = sqlx::query_scalar(
        "select count(*) from outbound_messages where kind = 'mdn' and mailbox_id = $1",
    )
    .bind(ana.id)
    .fetch_one(&app.state.db.pool)
    .await
    .unwrap();
    assert_eq!(mdn_answers, 0);
}

#[tokio::test]
async fn a_recipient_without_a_certificate_fails_with_a_reason_and_the_message_is_kept() {
    let app = TestApp::spawn().await;
    let ana = hosted_mailbox(
        &app,
        "Lakeside Clinic",
        "direct.lakeside.test",
        "dr.ana@direct.lakeside.test",
    )
    .await;
    let id = directmail::outbound::submit(
        &app.state.db,
        &ana,
        "Dr. Ana Ruiz",
        &["someone@direct.elsewhere.test".to_owned()],
        &[],
        "Hello",
        "Text",
        app.now(),
    )
    .await
    .unwrap();
    app.state.wake_sender.notify_one();
    wait_for("failure", async || {
        outbound::statuses(&app.state.db, id).await.unwrap()[0].1 == "failed"
    })
    .await;
    let statuses = outbound::statuses(&app.state.db, id).await.unwrap();
    assert!(
        statuses[0]
            .2
            .contains("No certificate was found for someone@direct.elsewhere.test"),
        "{}",
        statuses[0].2
    );
    assert_eq!(
        inbound::messages_in(&app.state.db, ana.id, "sent", 10)
            .await
            .unwrap()
            .len(),
        1,
        "the message is kept"
    );
}
