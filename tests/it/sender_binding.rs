//! The sender shown is the sender the signature proves. Messages are made by the real
//! `openssl cms` (signed by a certificate this portal trusts, bound to
//! dr.smith@direct.sender.test) and arrive over real SMTP; whoever holds that
//! certificate must not be able to appear as anyone else.

use directmail::store::{inbound, outbound};

use crate::inbound::{outcome, send_over_smtp, with_mailbox};
use crate::revocation::{Setup, sealed_by_openssl, setup};

const SIGNER: &str = "dr.smith@direct.sender.test";
const VICTIM: &str = "dr.lee@direct.lakeside.test";

/// A message whose signed header block starts with `originator` (its From and
/// Sender lines), wrapped as message/rfc822 as AS 1.3 requires.
fn wrapped(originator: &str, subject: &str) -> String {
    format!(
        "Content-Type: message/rfc822\r\n\r\n{originator}\r\nTo: front@direct.lakeside.test\r\nSubject: {subject}\r\nMessage-ID: <{}@direct.sender.test>\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nContent-Type: text/plain\r\n\r\nPlease see the patient.\r\n",
        subject.len()
    )
}

/// Sends `entity`, signed by the trusted sender, over SMTP with `mail_from`, and
/// waits for its outcome (`delivered` or the quarantine reason).
async fn arrives(s: &Setup, entity: &str, mail_from: &str, outer_from: &str) -> (i64, String) {
    let raw = sealed_by_openssl(
        s.app.data_dir.path(),
        "sender",
        entity,
        &["-certfile", "int.pem"],
        outer_from,
        "Direct secure message",
    );
    let replies = send_over_smtp(
        s.app.smtp_addr,
        mail_from,
        &["front@direct.lakeside.test"],
        &raw,
    )
    .await;
    assert!(replies[5].starts_with("250"), "{replies:?}");
    let id: i64 = sqlx::query_scalar("select max(id) from inbound_messages")
        .fetch_one(&s.app.state.db.pool)
        .await
        .unwrap();
    (id, outcome(s, id).await)
}

async fn inbox(s: &Setup, mailbox: i64) -> Vec<inbound::MessageRow> {
    inbound::messages_in(&s.app.state.db, mailbox, "inbox", 10)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_second_from_naming_someone_else_is_quarantined_and_learns_no_certificate() {
    let s = setup().await;
    let mailbox = with_mailbox(&s).await;
    // the certificate the portal knows for dr.lee (their real one, say)
    let mut tx = s.app.state.db.begin().await.unwrap();
    outbound::learn_certificate(&mut tx, VICTIM, "their real certificate", s.app.now())
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let entity = wrapped(
        &format!("From: {SIGNER}\r\nFrom: {VICTIM}"),
        "Two From lines",
    );
    let (id, verdict) = arrives(&s, &entity, VICTIM, SIGNER).await;
    assert_eq!(verdict, "ambiguous_sender");
    assert!(inbox(&s, mailbox).await.is_empty(), "nothing is delivered");
    let row = inbound::get(&s.app.state.db, id).await.unwrap().unwrap();
    let detail = row.detail.unwrap_or_default();
    assert!(
        detail.contains("can be read more than one way") && detail.contains("2 From fields"),
        "the quarantine says why in words: {detail}"
    );
    assert_eq!(
        outbound::known_certificate(&s.app.state.db, VICTIM)
            .await
            .unwrap()
            .as_deref(),
        Some("their real certificate"),
        "the certificate learned for dr.lee is not replaced"
    );

    // in the other order too, and whatever the envelope says
    let entity = wrapped(&format!("From: {VICTIM}\r\nFrom: {SIGNER}"), "Reversed");
    assert_eq!(
        arrives(&s, &entity, SIGNER, SIGNER).await.1,
        "ambiguous_sender"
    );
}

#[tokio::test]
async fn every_ambiguous_originator_is_quarantined_with_its_own_reason() {
    let s = setup().await;
    let mailbox = with_mailbox(&s).await;
    let cases = [
        (
            format!("From: {SIGNER}\r\nSender: {SIGNER}\r\nSender: {VICTIM}"),
            "2 Sender fields",
        ),
        (
            format!("From: {SIGNER}, {VICTIM}"),
            "names more than one mailbox",
        ),
        (format!("From: {SIGNER} ({VICTIM})"), "comment"),
        (
            format!("From: Team: {SIGNER}, {VICTIM};"),
            "group or a route",
        ),
        (
            format!("From: =?utf-8?q?dr.lee=40direct.lakeside.test?= <{SIGNER}>"),
            "encoded address",
        ),
        (format!("From: \"{VICTIM}\" <{SIGNER}>"), "holds an address"),
    ];
    for (originator, why) in cases {
        let entity = wrapped(&originator, "Ambiguous");
        let (id, verdict) = arrives(&s, &entity, SIGNER, SIGNER).await;
        assert_eq!(verdict, "ambiguous_sender", "{originator}");
        let detail = inbound::get(&s.app.state.db, id)
            .await
            .unwrap()
            .unwrap()
            .detail
            .unwrap_or_default();
        assert!(detail.contains(why), "{originator}: {detail}");
    }
    assert!(inbox(&s, mailbox).await.is_empty());
}

#[tokio::test]
async fn what_the_reader_sees_comes_from_the_signed_message_not_the_outer_headers() {
    let s = setup().await;
    let mailbox = with_mailbox(&s).await;
    let entity = wrapped(&format!("From: \"Dr. Smith\" <{SIGNER}>"), "Signed subject");
    let raw = sealed_by_openssl(
        s.app.data_dir.path(),
        "sender",
        &entity,
        &["-certfile", "int.pem"],
        SIGNER,
        "Outer subject, not signed",
    );
    let replies = send_over_smtp(
        s.app.smtp_addr,
        SIGNER,
        &["front@direct.lakeside.test"],
        &raw,
    )
    .await;
    assert!(replies[5].starts_with("250"), "{replies:?}");
    let id: i64 = sqlx::query_scalar("select max(id) from inbound_messages")
        .fetch_one(&s.app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(outcome(&s, id).await, "delivered");
    let got = inbox(&s, mailbox).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].subject, "Signed subject");
    assert_eq!(got[0].from_addr, SIGNER);
    assert_eq!(got[0].from_name, "Dr. Smith");
    let stored = inbound::message(&s.app.state.db, got[0].id)
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&stored.raw);
    assert!(
        !text.contains("Outer subject"),
        "the unprotected outer headers are not kept: {text}"
    );

    // a signed part that carries no header of its own has no signed sender: refused
    let bare = "Content-Type: text/plain\r\n\r\nPlease see the patient.\r\n";
    let (_, verdict) = arrives(&s, bare, SIGNER, SIGNER).await;
    assert_eq!(verdict, "sender_not_bound");
    assert_eq!(inbox(&s, mailbox).await.len(), 1);
}

#[tokio::test]
async fn the_envelope_must_match_the_one_signed_from() {
    let s = setup().await;
    let mailbox = with_mailbox(&s).await;
    let entity = wrapped(&format!("From: {SIGNER}"), "Envelope");
    let (_, verdict) = arrives(&s, &entity, VICTIM, SIGNER).await;
    assert_eq!(verdict, "envelope_sender_mismatch");
    let (_, verdict) = arrives(&s, &entity, SIGNER, SIGNER).await;
    assert_eq!(verdict, "delivered");
    assert_eq!(inbox(&s, mailbox).await[0].from_addr, SIGNER);
}

#[tokio::test]
async fn a_signer_that_does_not_chain_to_our_anchors_gets_no_failure_notice() {
    let s = setup().await;
    with_mailbox(&s).await;
    let dir = s.app.data_dir.path();
    // a certificate for the same address from a CA this portal does not trust
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("set -e
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=Stranger-CA -keyout sca.key -out sca.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=stranger -keyout stranger.key -out stranger.csr 2>/dev/null
printf 'basicConstraints=CA:FALSE\\nkeyUsage=critical,digitalSignature,keyEncipherment\\nextendedKeyUsage=emailProtection\\nsubjectAltName=email:{SIGNER}\\n' > stranger.ext
openssl x509 -req -in stranger.csr -CA sca.pem -CAkey sca.key -CAcreateserial -days 20 -sha256 -extfile stranger.ext -out stranger.pem 2>/dev/null"))
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // the text the sender chose, which a notice signed by us would carry back
    let entity = wrapped(
        &format!("From: {SIGNER}\r\nDisposition-Notification-To: {SIGNER}"),
        "Click http://evil.example now",
    );
    let raw = sealed_by_openssl(
        dir,
        "stranger",
        &entity,
        &[],
        SIGNER,
        "Direct secure message",
    );
    let replies = send_over_smtp(
        s.app.smtp_addr,
        SIGNER,
        &["front@direct.lakeside.test"],
        &raw,
    )
    .await;
    assert!(replies[5].starts_with("250"), "{replies:?}");
    let id: i64 = sqlx::query_scalar("select max(id) from inbound_messages")
        .fetch_one(&s.app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(outcome(&s, id).await, "untrusted_anchor");
    let notices: i64 = sqlx::query_scalar("select count(*) from outbound_messages")
        .fetch_one(&s.app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(notices, 0, "nothing is sent back under our signature");
}
