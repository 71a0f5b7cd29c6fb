//! The portal's side of the inbound SMTP listener (`crates/smtp` speaks the
//! protocol): recipients are accepted only for mailboxes hosted here, and a message
//! is committed to `inbound_messages` before the engine answers 250; processing
//! happens afterwards, from that copy (`crate::inbound`).

use std::sync::Arc;

use directmail_smtp::{Backend, DeliverError, Envelope, RcptDecision, SessionEvent};

use crate::clock::Clock;
use crate::db::Db;
use crate::metrics::{Metrics, Smtp};
use crate::stages::{self, Stage};
use crate::store::inbound::{self, NewInbound};
use crate::store::mailboxes;

#[derive(Clone)]
pub struct PortalBackend {
    pub db: Db,
    pub clock: Clock,
    /// The name this HISP gives in `Received:` lines.
    pub hostname: String,
    /// Wakes the processor after a message was stored.
    pub wake: Arc<tokio::sync::Notify>,
    /// Counts sessions, recipients and stored messages.
    pub metrics: Metrics,
}

impl Backend for PortalBackend {
    fn rcpt(&self, _mail_from: &str, rcpt_to: &str) -> impl Future<Output = RcptDecision> + Send {
        let db = self.db.clone();
        let metrics = self.metrics.clone();
        let rcpt = rcpt_to.trim().to_ascii_lowercase();
        async move {
            match mailboxes::by_address(&db, &rcpt).await {
                Ok(Some(_)) => {
                    metrics.smtp(Smtp::RecipientAccepted);
                    RcptDecision::Accept
                }
                Ok(None) => {
                    metrics.smtp(Smtp::RecipientUnknown);
                    RcptDecision::no_such_mailbox()
                }
                Err(e) => {
                    metrics.smtp(Smtp::RecipientTemporaryFailure);
                    tracing::error!(error = %e, "recipient lookup failed");
                    RcptDecision::Reject {
                        code: 451,
                        enhanced: "4.3.0".into(),
                        text: "temporary failure, try again later".into(),
                    }
                }
            }
        }
    }

    fn deliver(
        &self,
        envelope: Envelope,
        data: Vec<u8>,
    ) -> impl Future<Output = Result<String, DeliverError>> + Send {
        let this = self.clone();
        async move {
            let now = this.clock.now();
            let date = mail_builder::headers::date::Date::new(now).to_rfc822();
            let id = crate::auth::new_token().0[..12].to_owned();
            let mut raw = envelope
                .received_header(&this.hostname, &id, &date)
                .into_bytes();
            raw.extend_from_slice(&data);
            stages::record(Stage::SmtpReceive, envelope.data_time);
            let stored = stages::timed(
                Stage::Store,
                inbound::insert(
                    &this.db,
                    NewInbound {
                        mail_from: &envelope.mail_from,
                        rcpt_to: &envelope.rcpt_to,
                        remote_ip: &envelope.remote_ip.to_string(),
                        helo: &envelope.helo,
                        tls: envelope.tls,
                        raw: &raw,
                    },
                    now,
                ),
            )
            .await;
            match stored {
                Ok(id) => {
                    this.metrics.smtp(Smtp::MessageStored);
                    this.wake.notify_one();
                    Ok(id.to_string())
                }
                Err(e) => {
                    this.metrics.smtp(Smtp::MessageTemporaryFailure);
                    tracing::error!(error = %e, "could not store a received message");
                    Err(DeliverError::Temporary(
                        "could not store the message, try again later".into(),
                    ))
                }
            }
        }
    }

    fn session_event(&self, event: SessionEvent) {
        self.metrics.smtp(match event {
            SessionEvent::Started => Smtp::SessionStarted,
            SessionEvent::Ended => Smtp::SessionEnded,
            SessionEvent::RefusedBusy => Smtp::SessionRefusedBusy,
        });
    }
}
