//! Processing received Direct messages, from the stored copy committed before the
//! SMTP 250: decrypt and judge trust for the receiving domain, check the routing
//! rules of the Applicability Statement, then deliver to each recipient's mailbox
//! or quarantine with the reason. Each message reaches exactly one outcome: the
//! outcome and the deliveries commit together, and a crash mid-way leaves the
//! message claimed until the claim lapses, when it is processed again.

use std::sync::Arc;
use std::time::Duration;

use mail_parser::MessageParser;

use crate::clock::Clock;
use crate::db::Db;
use crate::leases::Claim;
use crate::outbound;
use crate::pki::{self, Revocation, fetch::Fetcher};
use crate::secrets::SecretKey;
use crate::stages::{self, Stage};
use crate::store::inbound::{self, Inbound, NewMessage};
use crate::store::{mailboxes, orgs};

/// After this many failed attempts (errors, not verdicts) a message is quarantined.
const MAX_ATTEMPTS: i64 = 5;

/// Processing workers per instance: a message waiting on a slow CRL or AIA server
/// holds up only its own worker.
pub const WORKERS: usize = 4;

/// What processing needs; cheap to clone.
#[derive(Clone)]
pub struct Processor {
    pub db: Db,
    pub secret: Arc<SecretKey>,
    pub fetcher: Fetcher,
    pub clock: Clock,
    /// Woken when a message is stored, so processing starts at once.
    pub wake: Arc<tokio::sync::Notify>,
    /// Woken when delivery notifications were queued.
    pub wake_sender: Arc<tokio::sync::Notify>,
    /// Woken when new-mail alerts were queued.
    pub wake_alerts: Arc<tokio::sync::Notify>,
    /// Woken when webhook events were queued.
    pub wake_webhooks: Arc<tokio::sync::Notify>,
    /// Counts outcomes and times notifications.
    pub metrics: crate::metrics::Metrics,
    /// Set when the server stops: finish the message in hand, claim no more.
    pub stop: crate::app::Stopping,
    /// The claims this instance holds, renewed while it works on them.
    pub leases: crate::leases::Leases,
}

/// How a message ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered {
        mailboxes: usize,
    },
    /// A delivery notification about one of our messages, recorded.
    Notification,
    Quarantined {
        verdict: String,
    },
}

/// A routing refusal (Applicability Statement 1.3 §2.4): its code and sentence.
/// The verdict for the reader, in one line. For a trusted message: who signed it (the
/// person or practice the certificate names, and the address), then the anchor it is
/// trusted through, each name once: "Signed by Dr. Ana Ruiz, Lakeside Clinic
/// (dr.ana@direct.lakeside.test), trusted through DirectTrust Community Anchor."
fn trust_sentence(verdict: &directmail_smime::Verdict) -> String {
    match &verdict.signer {
        Some(s) if verdict.is_trusted() => {
            // the anchor by its own name; the signer by the names the anchor's do not
            // already say (a CA's organization is often in its certificates' too)
            let anchor = s.anchor.as_deref().map(|a| {
                let names = crate::pki::dn_names(a);
                (
                    names.first().cloned().unwrap_or_else(|| a.to_owned()),
                    names,
                )
            });
            let said: &[String] = anchor.as_ref().map(|(_, n)| &n[..]).unwrap_or_default();
            let mut who: Vec<String> = crate::pki::dn_names(&s.subject)
                .into_iter()
                .filter(|n| !said.contains(n))
                .collect();
            if who.is_empty() {
                who.push(dn_summary(&s.subject));
            }
            let who = who.join(", ");
            let mut text = format!("Signed by {who}");
            if let Some(from) = verdict.from.as_deref().filter(|f| !who.contains(*f)) {
                text.push_str(&format!(" ({from})"));
            }
            match anchor {
                Some((name, _)) if name != who => {
                    text.push_str(&format!(", trusted through {name}."))
                }
                _ => text.push('.'),
            }
            text
        }
        _ => verdict.sentence().to_owned(),
    }
}

/// The signer's certificate as judged, kept with the message for its details panel.
fn signer_facts(verdict: &directmail_smime::Verdict) -> Option<inbound::SignerFacts> {
    let s = verdict.signer.as_ref()?;
    Some(inbound::SignerFacts {
        address: verdict.from.clone().unwrap_or_default(),
        serial: s.serial.clone(),
        not_before: i64::try_from(s.not_before).unwrap_or(i64::MAX),
        not_after: i64::try_from(s.not_after).unwrap_or(i64::MAX),
        fingerprint: s.fingerprint_sha256.clone(),
        anchor: s.anchor.clone(),
    })
}

/// "Dr. Ana Ruiz, Lakeside Clinic" from an RFC 4514 name (its CN and O), or the
/// whole name when it has neither.
fn dn_summary(dn: &str) -> String {
    let found = crate::pki::dn_names(dn);
    if found.is_empty() {
        dn.to_owned()
    } else {
        found.join(", ")
    }
}

fn routing_failure(code: &str) -> &'static str {
    match code {
        "envelope_sender_mismatch" => {
            "The SMTP sender does not match the message's From or Sender, so the message was not accepted."
        }
        "recipient_not_addressed" => {
            "A recipient the message was delivered to is not named in its To or Cc, so it was not accepted."
        }
        "no_hosted_recipient" => "No recipient of the message is on a domain hosted here.",
        "processing_failed" => "The message could not be processed; an administrator can retry it.",
        _ => "The message could not be read.",
    }
}

impl Processor {
    /// Processes messages until none is waiting; then waits to be woken (or polls
    /// every few seconds, for claims that lapsed and other instances' messages).
    pub async fn run(self) {
        while !self.stop.is_set() {
            match self.process_next().await {
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => tracing::error!(
                    error = format!("{e:#}"),
                    "processing a received message failed"
                ),
            }
            let mut stop = self.stop.clone();
            tokio::select! {
                () = self.wake.notified() => {},
                () = tokio::time::sleep(Duration::from_secs(5)) => {},
                () = stop.wait() => {},
            }
        }
    }

    /// Processes waiting messages one after another; `None` when none was waiting.
    /// Each delivery claims the next waiting message in its own transaction, so a
    /// busy queue costs one write per message rather than two.
    pub async fn process_next(&self) -> anyhow::Result<Option<(i64, Outcome)>> {
        let lease = self.leases.seconds();
        let Some(mut message) = inbound::claim_next(&self.db, self.clock.now(), lease).await?
        else {
            return Ok(None);
        };
        loop {
            let held = self
                .leases
                .hold(Claim::Inbound(message.id), message.attempts);
            let (outcome, next) = self.process_claimed(&message).await?;
            drop(held);
            // each message of a chain is counted, not only the last
            self.metrics.received(&outcome);
            match next {
                Some(id) => message = inbound::claimed(&self.db, id).await?,
                None => return Ok(Some((message.id, outcome))),
            }
        }
    }

    /// Processes one claimed message; its outcome and the next message claimed.
    async fn process_claimed(&self, message: &Inbound) -> anyhow::Result<(Outcome, Option<i64>)> {
        let now = self.clock.now();
        let id = message.id;
        match self.process(message).await {
            Ok(done) => Ok(done),
            Err(e) if message.attempts >= MAX_ATTEMPTS => {
                let detail = format!("processing failed {} times: {e:#}", message.attempts);
                let _turn = self.db.write_turn().await;
                let mut tx = self.db.begin_redoable().await?;
                inbound::finish(
                    &mut tx,
                    message,
                    "quarantined",
                    "processing_failed",
                    &detail,
                    "",
                    now,
                )
                .await?;
                tx.commit().await?;
                let verdict = "processing_failed".into();
                Ok((Outcome::Quarantined { verdict }, None))
            }
            // a passing failure (the database busy, say): try again shortly, unless
            // the claim is no longer this worker's
            Err(e) => {
                let _ = sqlx::query(
                    "update inbound_messages set claimed_until = $1
                     where id = $2 and state = 'processing' and attempts = $3",
                )
                .bind(now + 5)
                .bind(id)
                .bind(message.attempts)
                .execute(self.db.redoable())
                .await;
                Err(e)
            }
        }
    }

    async fn process(&self, message: &Inbound) -> anyhow::Result<(Outcome, Option<i64>)> {
        let now = self.clock.now();
        let raw = Arc::new(message.raw.clone());
        // Recipients by receiving domain: each domain decrypts with its own keys and
        // trusts its own anchors.
        let mut domains: Vec<(orgs::Domain, Vec<String>)> = Vec::new();
        for rcpt in &message.rcpt_to {
            let rcpt = rcpt.to_ascii_lowercase();
            let Some((_, name)) = rcpt.rsplit_once('@') else {
                continue;
            };
            let Some(domain) = orgs::domain_by_name(&self.db, name).await? else {
                continue;
            };
            match domains.iter_mut().find(|(d, _)| d.id == domain.id) {
                Some((_, list)) => list.push(rcpt),
                None => domains.push((domain, vec![rcpt])),
            }
        }
        let mut deliveries: Vec<(i64, NewOwned)> = Vec::new();
        let mut notifications: Vec<outbound::Notification> = Vec::new();
        // (mailbox, its address, Message-ID, the notification, where it goes)
        let mut mdns: Vec<(i64, String, String, Vec<u8>, String)> = Vec::new();
        let mut learned: Option<(String, String)> = None;
        // a failure notice for the sender, when their certificate allows one
        let mut notice: Option<FailureNotice> = None;
        let mut steps = Vec::new();
        let mut failure: Option<(String, String)> = None;
        for (domain, rcpts) in &domains {
            let judgement = pki::judge_inbound(
                &self.db,
                &self.secret,
                &self.fetcher,
                domain,
                raw.clone(),
                now,
            )
            .await?;
            steps.extend(
                judgement
                    .steps
                    .iter()
                    .map(|s| format!("{}: {s}", domain.name)),
            );
            let verdict = judgement.verdict;
            if !verdict.is_trusted() {
                failure = Some((verdict.code.as_str().to_owned(), verdict.detail.clone()));
                notice = FailureNotice::for_verdict(&verdict, rcpts);
                break;
            }
            let Some(inner) = verdict.message.clone() else {
                failure = Some(("malformed".into(), "no message inside".into()));
                break;
            };
            let facts = match MessageFacts::read(&inner, verdict.originator.as_ref()) {
                Some(f) => f,
                None => {
                    failure = Some((
                        "malformed".into(),
                        "the inner message has no headers".into(),
                    ));
                    break;
                }
            };
            // AS 1.3 §2.4: the envelope sender is the From (or Sender) address, and
            // every recipient is named in To or Cc.
            let sender = message.mail_from.to_ascii_lowercase();
            if !facts.senders.contains(&sender) {
                notice = FailureNotice::for_verdict(&verdict, rcpts);
                failure = Some((
                    "envelope_sender_mismatch".into(),
                    format!("MAIL FROM {sender} is not the From or Sender of the message"),
                ));
                break;
            }
            if let Some(missing) = rcpts.iter().find(|r| !facts.recipients.contains(r)) {
                notice = FailureNotice::for_verdict(&verdict, rcpts);
                failure = Some((
                    "recipient_not_addressed".into(),
                    format!("RCPT TO {missing} is not named in To or Cc"),
                ));
                break;
            }
            // A notification about one of our messages updates its delivery status and
            // is never answered with another notification.
            // A notification moves only the status of recipients its signer is bound to:
            // a certificate of one HISP cannot report on another's recipients.
            let signer = signer_certificate(&verdict);
            let bound = |n: &outbound::Notification| {
                signer.is_some_and(|c| directmail_smime::binds_address(c, &n.final_recipient))
            };
            if let Some(n) = outbound::read_mdn(&inner) {
                if bound(&n) {
                    notifications.push(n);
                } else {
                    steps.push(format!(
                        "notification about {} ignored: its signer is not bound to that address",
                        n.final_recipient
                    ));
                    notifications.push(outbound::Notification {
                        original_message_id: String::new(),
                        final_recipient: String::new(),
                        disposition: "ignored".into(),
                    });
                }
                continue;
            }
            if let Some(failed) = outbound::read_dsn(&inner) {
                for n in failed {
                    if bound(&n) {
                        notifications.push(n);
                    } else {
                        steps.push(format!(
                            "notification about {} ignored: its signer is not bound to that address",
                            n.final_recipient
                        ));
                    }
                }
                // an empty list (only delays reported) is still a report, not mail
                if notifications.is_empty() {
                    notifications.push(outbound::Notification {
                        original_message_id: String::new(),
                        final_recipient: String::new(),
                        disposition: "delayed".into(),
                    });
                }
                continue;
            }
            // the signer's certificate, to encrypt notifications back to the sender;
            // written only when it is new (rewriting the same row for every message
            // of one sender made their deliveries wait on each other's row lock)
            if let Some(cert) = signer_certificate(&verdict)
                && let Ok(pem) = der::EncodePem::to_pem(cert, der::pem::LineEnding::LF)
                && crate::store::outbound::known_certificate(&self.db, &facts.from)
                    .await?
                    .as_deref()
                    != Some(pem.as_str())
            {
                learned = Some((facts.from.clone(), pem));
            }
            // a received PDF or image is shown only if it passes the checks an upload
            // gets; what fails them is offered as a download, with the reason. The
            // patient the message is about and its clinical documents are read here
            // too, once.
            let (index, attachment_checks, filing) = stages::timed(
                Stage::Read,
                tokio::task::spawn_blocking({
                    let inner = inner.clone();
                    move || {
                        (
                            crate::store::messages::Indexed::of(&inner),
                            crate::store::messages::attachment_checks(&inner),
                            crate::filing::read(&inner),
                        )
                    }
                }),
            )
            .await?;
            let revocation = match &judgement.revocation {
                Revocation::Checked => "checked".to_owned(),
                Revocation::NoDistributionPoint => "no-distribution-point".to_owned(),
                Revocation::Unavailable(why) => format!("not checked: {why}"),
                Revocation::NotReached => "not-reached".to_owned(),
            };
            for rcpt in rcpts {
                let Some(mailbox) = mailboxes::by_address(&self.db, rcpt).await? else {
                    // accepted at RCPT time but removed since: nothing to deliver to
                    steps.push(format!("{rcpt}: the mailbox no longer exists"));
                    continue;
                };
                // Implementation Guide for Delivery Notification: the receiving HISP
                // always acknowledges with processed — to Disposition-Notification-To
                // when the message names one, else to the sender its signature is bound
                // to — and sends dispatched when the sender asked for final-destination
                // delivery
                if let Some(original) = &facts.message_id {
                    let to = facts.notify_to.as_ref().unwrap_or(&facts.from);
                    let mut kinds = vec![outbound::Disposition::Processed];
                    if facts.final_destination {
                        kinds.push(outbound::Disposition::Dispatched);
                    }
                    for kind in kinds {
                        let (id, raw) =
                            outbound::build_mdn(rcpt, to, original, &facts.subject, kind, now);
                        mdns.push((mailbox.id, mailbox.address.clone(), id, raw, to.clone()));
                    }
                }
                deliveries.push((
                    mailbox.id,
                    NewOwned {
                        message_id: facts.message_id.clone(),
                        from_addr: facts.from.clone(),
                        subject: facts.subject.clone(),
                        trust_code: verdict.code.as_str().to_owned(),
                        trust_sentence: trust_sentence(&verdict),
                        signer_subject: verdict.signer.as_ref().map(|s| s.subject.clone()),
                        signer_issuer: verdict.signer.as_ref().map(|s| s.issuer.clone()),
                        revocation: revocation.clone(),
                        signer_facts: signer_facts(&verdict),
                        raw: inner.clone(),
                        index: index.clone(),
                        attachment_checks: attachment_checks.clone(),
                        filing: filing.clone(),
                    },
                ));
            }
        }
        if domains.is_empty() {
            failure = Some((
                "no_hosted_recipient".into(),
                "no recipient is on a domain hosted here".into(),
            ));
        }
        let work = Work {
            // the envelope is enough to record the outcome
            message: Inbound {
                raw: Vec::new(),
                id: message.id,
                received_at: message.received_at,
                mail_from: message.mail_from.clone(),
                rcpt_to: message.rcpt_to.clone(),
                remote_ip: message.remote_ip.clone(),
                attempts: message.attempts,
            },
            failure,
            notice,
            notifications,
            learned,
            mdns,
            deliveries,
            steps: steps.join("\n"),
            now,
        };
        let delivering = std::time::Instant::now();
        let db = &self.db;
        let written = db
            .outcomes_waiting
            .write(db.write_turn(), work, move |batch| self.record_all(batch))
            .await
            .map_err(anyhow::Error::msg)?;
        stages::record(Stage::Deliver, delivering.elapsed());
        if written.notify_sender {
            self.wake_sender.notify_one();
        }
        if written.alerts > 0 {
            self.wake_alerts.notify_one();
        }
        // a notification may have moved a delivery status, which queues events too
        if written.webhooks > 0 || matches!(written.outcome, Outcome::Notification) {
            self.wake_webhooks.notify_one();
        }
        Ok((written.outcome, written.next))
    }

    /// Records the outcomes of `batch` (several workers' messages on SQLite, group
    /// commit) in one transaction, each with the claim of its worker's next message;
    /// an answer for each. When there are several, each is written under a savepoint,
    /// so that one that fails (its claim was taken over) leaves the others written.
    /// The transaction is [`Db::begin_redoable`]: lost on a power failure, each outcome
    /// is worked out again under a new claim.
    async fn record_all(&self, batch: Vec<Work>) -> Vec<Result<Written, String>> {
        use sqlx::Acquire as _;
        let n = batch.len();
        let all = async {
            let mut tx = self.db.begin_redoable().await?;
            let mut answers = Vec::with_capacity(n);
            for work in batch {
                if n == 1 {
                    // alone: a failure rolls the whole transaction back
                    answers.push(Ok(self.record(&mut tx, work).await?));
                    continue;
                }
                let mut one = tx.begin().await?;
                match self.record(&mut one, work).await {
                    Ok(written) => {
                        one.commit().await?;
                        answers.push(Ok(written));
                    }
                    Err(e) => {
                        one.rollback().await?;
                        answers.push(Err(format!("{e:#}")));
                    }
                }
            }
            tx.commit().await?;
            anyhow::Ok(answers)
        };
        match all.await {
            Ok(answers) => answers,
            Err(e) => (0..n).map(|_| Err(format!("{e:#}"))).collect(),
        }
    }

    /// Records one message's outcome, with its deliveries and notifications, and
    /// claims this worker's next message, on `tx`.
    async fn record(&self, tx: &mut sqlx::AnyConnection, work: Work) -> anyhow::Result<Written> {
        let Work {
            message,
            failure,
            notice,
            notifications,
            learned,
            mdns,
            deliveries,
            steps,
            now,
        } = work;
        let message = &message;
        let steps_text = steps;
        let mut alerts_queued = 0;
        let mut webhooks_queued = 0;
        let outcome = match failure {
            Some((code, detail)) => {
                let sentence = directmail_smime::ReasonCode::parse(&code)
                    .map(|c| c.sentence())
                    .unwrap_or_else(|| routing_failure(&code));
                let detail = format!("{sentence} ({detail})");
                if let Some(n) = &notice {
                    n.queue(&mut *tx, &self.db, now).await?;
                }
                inbound::finish(
                    &mut *tx,
                    message,
                    "quarantined",
                    &code,
                    &detail,
                    &steps_text,
                    now,
                )
                .await?;
                tracing::warn!(inbound = message.id, verdict = %code, "received message quarantined");
                Outcome::Quarantined { verdict: code }
            }
            None if !notifications.is_empty() => {
                for n in &notifications {
                    if let Some((outbound_id, _)) =
                        crate::store::outbound::by_message_id(&self.db, &n.original_message_id)
                            .await?
                    {
                        // RFC 8098 / Direct: processed and dispatched move forward;
                        // failed (and deleted/denied) are final; others are noted only
                        let state = match n.disposition.as_str() {
                            "processed" => Some("processed"),
                            "dispatched" => Some("dispatched"),
                            "failed" | "deleted" | "denied" => Some("failed"),
                            _ => None,
                        };
                        if let Some(state) = state {
                            let detail = if state == "failed" {
                                format!(
                                    "the recipient's system reported that the message {}",
                                    n.disposition
                                )
                            } else {
                                String::new()
                            };
                            let moved_from = crate::store::outbound::advance(
                                &mut *tx,
                                outbound_id,
                                &n.final_recipient,
                                state,
                                &detail,
                                now,
                            )
                            .await?;
                            if let Some(before) = moved_from {
                                let m = &self.metrics;
                                m.notified(&mut *tx, outbound_id, &before, state, now)
                                    .await?;
                            }
                        }
                    }
                }
                inbound::finish(&mut *tx, message, "delivered", "mdn", "", &steps_text, now)
                    .await?;
                Outcome::Notification
            }
            None => {
                if let Some((address, pem)) = &learned {
                    crate::store::outbound::learn_certificate(&mut *tx, address, pem, now).await?;
                }
                let mdns: Vec<_> = mdns
                    .iter()
                    .map(|(mailbox_id, from, message_id, raw, to)| {
                        let m = crate::store::outbound::NewOutbound {
                            mailbox_id: Some(*mailbox_id),
                            kind: "mdn",
                            from_addr: from,
                            message_id,
                            subject: "delivery notification",
                            raw,
                            recipient_cert: None,
                        };
                        (m, std::slice::from_ref(to))
                    })
                    .collect();
                crate::store::outbound::insert_all(&mut *tx, &mdns, now).await?;
                for (mailbox_id, m) in &deliveries {
                    let filed = inbound::deliver(
                        &mut *tx,
                        NewMessage {
                            mailbox_id: *mailbox_id,
                            inbound_id: Some(message.id),
                            message_id: m.message_id.as_deref(),
                            from_addr: &m.from_addr,
                            subject: &m.subject,
                            trust_code: &m.trust_code,
                            trust_sentence: &m.trust_sentence,
                            signer_subject: m.signer_subject.as_deref(),
                            signer_issuer: m.signer_issuer.as_deref(),
                            revocation: &m.revocation,
                            raw: &m.raw,
                            index: &m.index,
                            attachment_checks: &m.attachment_checks,
                            filing: &m.filing,
                            signer_facts: m.signer_facts.as_ref(),
                        },
                        now,
                    )
                    .await?;
                    // the alert names only the mailbox; the worker counts at send time
                    if filed {
                        alerts_queued +=
                            crate::store::alerts::new_mail(&mut *tx, *mailbox_id, now).await?;
                        // and the EHRs' webhooks: ids only, posted by their worker
                        webhooks_queued += crate::store::webhooks::message_received(
                            &mut *tx,
                            *mailbox_id,
                            message.id,
                            now,
                        )
                        .await?;
                    }
                }
                inbound::finish(
                    &mut *tx,
                    message,
                    "delivered",
                    "trusted",
                    "",
                    &steps_text,
                    now,
                )
                .await?;
                tracing::info!(
                    inbound = message.id,
                    mailboxes = deliveries.len(),
                    "received message delivered"
                );
                Outcome::Delivered {
                    mailboxes: deliveries.len(),
                }
            }
        };
        let next = match self.stop.is_set() {
            true => None,
            // the next claim's lease starts now, not when this message's processing did
            false => {
                let lease = self.leases.seconds();
                inbound::claim_on(tx, self.db.backend, self.clock.now(), lease).await?
            }
        };
        Ok(Written {
            outcome,
            next,
            alerts: alerts_queued,
            webhooks: webhooks_queued,
            notify_sender: !mdns.is_empty() || notice.is_some(),
        })
    }
}

/// The certificate of the signer the verdict names, among those the message carried.
fn signer_certificate(
    verdict: &directmail_smime::Verdict,
) -> Option<&directmail_smime::Certificate> {
    let signer = verdict.signer.as_ref()?;
    verdict
        .certificates
        .iter()
        .find(|c| directmail_smime::fingerprint_sha256(c) == signer.fingerprint_sha256)
}

/// Processed messages waiting to be recorded (group commit on SQLite).
pub type Waiting = crate::db::group::Waiting<Work, Written>;

/// What processing a message found, to be recorded in one write.
pub struct Work {
    message: Inbound,
    /// The verdict code and detail when the message is quarantined.
    failure: Option<(String, String)>,
    notice: Option<FailureNotice>,
    /// Notifications about our own messages that it carried.
    notifications: Vec<outbound::Notification>,
    /// A signer's certificate to remember: (address, PEM).
    learned: Option<(String, String)>,
    /// (mailbox, its address, Message-ID, the notification, where it goes)
    mdns: Vec<(i64, String, String, Vec<u8>, String)>,
    deliveries: Vec<(i64, NewOwned)>,
    steps: String,
    now: i64,
}

/// What recording a message's outcome did.
pub struct Written {
    outcome: Outcome,
    /// The next message this worker claimed in the same write.
    next: Option<i64>,
    /// New-mail alerts and webhook events queued.
    alerts: u64,
    webhooks: u64,
    /// Notifications were queued for the sender worker.
    notify_sender: bool,
}

/// An owned delivery, gathered before the transaction.
struct NewOwned {
    message_id: Option<String>,
    from_addr: String,
    subject: String,
    trust_code: String,
    trust_sentence: String,
    signer_subject: Option<String>,
    signer_issuer: Option<String>,
    revocation: String,
    signer_facts: Option<inbound::SignerFacts>,
    raw: Vec<u8>,
    index: crate::store::messages::Indexed,
    attachment_checks: String,
    filing: crate::filing::Filing,
}

/// The header facts processing needs from the inner message.
struct MessageFacts {
    from: String,
    /// From and Sender addresses, lowercased.
    senders: Vec<String>,
    /// To and Cc addresses, lowercased.
    recipients: Vec<String>,
    subject: String,
    message_id: Option<String>,
    /// Where to send delivery notifications (Disposition-Notification-To).
    notify_to: Option<String>,
    /// Whether the sender asked for the dispatched notification too.
    final_destination: bool,
}

impl MessageFacts {
    /// The facts of the signed message `raw`; who sent it comes from the verdict's one
    /// reading of the signed header block ([`directmail_smime::read_originator`]).
    fn read(raw: &[u8], originator: Option<&directmail_smime::Originator>) -> Option<MessageFacts> {
        let originator = originator?;
        let parsed = MessageParser::default().parse(raw)?;
        let addresses = |a: Option<&mail_parser::Address<'_>>| -> Vec<String> {
            a.map(|a| {
                a.iter()
                    .filter_map(|x| x.address())
                    .map(str::to_ascii_lowercase)
                    .collect()
            })
            .unwrap_or_default()
        };
        let mut recipients = addresses(parsed.to());
        recipients.extend(addresses(parsed.cc()));
        Some(MessageFacts {
            from: originator.from.address.clone(),
            senders: originator.envelope_addresses(),
            recipients,
            subject: parsed.subject().unwrap_or("(no subject)").to_owned(),
            message_id: parsed.message_id().map(str::to_owned),
            notify_to: parsed
                .header_raw("Disposition-Notification-To")
                .and_then(|v| {
                    let v = v.trim();
                    let inner = match (v.find('<'), v.rfind('>')) {
                        (Some(a), Some(b)) if a < b => &v[a + 1..b],
                        _ => v,
                    };
                    crate::domain::Email::parse(inner).ok()
                })
                .map(|e| e.as_str().to_owned()),
            final_destination: parsed
                .header_raw("Disposition-Notification-Options")
                .is_some_and(|v| {
                    v.to_ascii_uppercase()
                        .contains("X-DIRECT-FINAL-DESTINATION-DELIVERY")
                }),
        })
    }
}

/// A notice to the sender of a message that was not accepted (Implementation Guide for
/// Delivery Notification: a failed MDN where the sender's certificate allows one).
/// It is encrypted to the certificate of the sender's signature and says only that
/// the message was not delivered; notifications themselves are never answered.
struct FailureNotice {
    from: String,
    to: String,
    original_id: String,
    subject: String,
    cert_pem: String,
}

impl FailureNotice {
    fn for_verdict(verdict: &directmail_smime::Verdict, rcpts: &[String]) -> Option<FailureNotice> {
        use directmail_smime::ReasonCode;
        // a revoked, expired or weak certificate allows no notice
        if matches!(
            verdict.code,
            ReasonCode::SignerRevoked
                | ReasonCode::SignerExpired
                | ReasonCode::SignerNotYetValid
                | ReasonCode::WeakAlgorithm
        ) {
            return None;
        }
        let inner = verdict.message.as_ref()?;
        if outbound::read_mdn(inner).is_some() || outbound::read_dsn(inner).is_some() {
            return None;
        }
        let facts = MessageFacts::read(inner, verdict.originator.as_ref())?;
        // only a signer that chains to one of our anchors gets a notice signed by us:
        // otherwise anyone could have our signature carry their text to anyone
        verdict.signer.as_ref()?.anchor.as_ref()?;
        let cert = signer_certificate(verdict)?;
        let to = facts
            .notify_to
            .clone()
            .unwrap_or_else(|| facts.from.clone());
        if to.is_empty() || !directmail_smime::binds_address(cert, &to) {
            return None;
        }
        Some(FailureNotice {
            from: rcpts.first()?.clone(),
            to,
            original_id: facts.message_id?,
            subject: facts.subject,
            cert_pem: der::EncodePem::to_pem(cert, der::pem::LineEnding::LF).ok()?,
        })
    }

    async fn queue(&self, tx: &mut sqlx::AnyConnection, db: &Db, now: i64) -> sqlx::Result<()> {
        let mailbox = mailboxes::by_address(db, &self.from).await?;
        let (id, raw) = outbound::build_mdn(
            &self.from,
            &self.to,
            &self.original_id,
            &self.subject,
            outbound::Disposition::Failed,
            now,
        );
        crate::store::outbound::insert(
            tx,
            crate::store::outbound::NewOutbound {
                mailbox_id: mailbox.map(|m| m.id),
                kind: "mdn",
                from_addr: &self.from,
                message_id: &id,
                subject: "delivery notification",
                raw: &raw,
                recipient_cert: Some(&self.cert_pem),
            },
            std::slice::from_ref(&self.to),
            now,
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_signer_is_named_by_common_name_and_organization() {
        assert_eq!(
            super::dn_summary("CN=Dr. Ana Ruiz,O=Lakeside Clinic\\, LLC,C=US"),
            "Dr. Ana Ruiz, Lakeside Clinic, LLC"
        );
        assert_eq!(super::dn_summary("C=US"), "C=US");
    }
}
