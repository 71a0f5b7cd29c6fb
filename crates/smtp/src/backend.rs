//! The seam between the SMTP engine and the portal: recipient checks and durable delivery.

use std::future::Future;
use std::net::IpAddr;

/// What the portal provides to the SMTP engine.
///
/// Implementations are cheap to clone (an `Arc` inside); one clone serves every session.
pub trait Backend: Clone + Send + Sync + 'static {
    /// Decides whether `rcpt_to` is accepted for a transaction from `mail_from`
    /// (empty for the null reverse-path `<>`, RFC 5321 §4.5.5).
    ///
    /// Called once per `RCPT TO` command, in order.
    fn rcpt(&self, mail_from: &str, rcpt_to: &str) -> impl Future<Output = RcptDecision> + Send;

    /// Takes responsibility for one message: `data` is the raw message exactly as
    /// received, after dot-unstuffing (RFC 5321 §4.5.2), without the final `.` line.
    ///
    /// Return `Ok(queue_id)` **only once the message is durably stored** (committed):
    /// the session answers `250 2.0.0 OK <queue_id>` after it, and the sender then
    /// forgets the message (RFC 5321 §6.1). Return an error to make the sender keep it
    /// ([`DeliverError::Temporary`], `451`) or bounce it ([`DeliverError::Permanent`], `554`).
    fn deliver(
        &self,
        envelope: Envelope,
        data: Vec<u8>,
    ) -> impl Future<Output = Result<String, DeliverError>> + Send;

    /// Told when a session starts or ends, or a connection is refused as too busy
    /// (for the operator's figures). Does nothing unless implemented; must not block.
    fn session_event(&self, _event: SessionEvent) {}
}

/// What [`Backend::session_event`] is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEvent {
    /// A connection was accepted and its session starts.
    Started,
    /// A session ended (every [`SessionEvent::Started`] is followed by one).
    Ended,
    /// A connection got `421 too busy`: [`crate::Config::max_sessions`] were running.
    RefusedBusy,
}

/// The backend's answer to one `RCPT TO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptDecision {
    /// The recipient is hosted here: `250 2.1.5`.
    Accept,
    /// Refuse the recipient with this reply.
    Reject {
        /// Basic reply code, 400–599 (anything else is sent as 550).
        code: u16,
        /// Enhanced status code (RFC 3463), e.g. `5.1.1`; must agree with `code`'s class.
        enhanced: String,
        /// Human-readable text; line breaks are replaced by spaces.
        text: String,
    },
}

impl RcptDecision {
    /// `550 5.1.1 no such mailbox here`: the address is not hosted on this HISP
    /// (RFC 5321 §4.2.2, RFC 3463 §3.2 X.1.1).
    pub fn no_such_mailbox() -> Self {
        Self::Reject {
            code: 550,
            enhanced: "5.1.1".into(),
            text: "no such mailbox here".into(),
        }
    }
}

/// The SMTP envelope of one accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Reverse-path from `MAIL FROM`; empty for `<>` (notifications, RFC 5321 §4.5.5).
    pub mail_from: String,
    /// Forward-paths the backend accepted, in `RCPT TO` order.
    pub rcpt_to: Vec<String>,
    /// IP address of the connecting client.
    pub remote_ip: IpAddr,
    /// Name the client gave in `EHLO`/`HELO`.
    pub helo: String,
    /// Whether the transaction ran inside TLS (after STARTTLS).
    pub tls: bool,
    /// How long the DATA transfer took, from the 354 reply to the final dot.
    pub data_time: std::time::Duration,
}

impl Envelope {
    /// The trace header a receiving server adds (RFC 5321 §4.4), folded, ending in CRLF,
    /// ready to prepend to the stored message: `by` is our hostname, `id` the queue id,
    /// `date` an RFC 5322 date-time (the caller owns the clock).
    ///
    /// `with ESMTPS` marks a TLS session (RFC 3848). The client's HELO name is reduced to
    /// printable ASCII so it cannot inject header lines.
    pub fn received_header(&self, by: &str, id: &str, date: &str) -> String {
        let clean = |text: &str| -> String {
            text.chars()
                .take(255)
                .filter(|c| c.is_ascii_graphic())
                .collect()
        };
        // RFC 5321 §4.1.3: IPv6 address literals carry the "IPv6:" tag.
        let literal = match self.remote_ip {
            IpAddr::V4(ip) => format!("[{ip}]"),
            IpAddr::V6(ip) => format!("[IPv6:{ip}]"),
        };
        let with = if self.tls { "ESMTPS" } else { "ESMTP" };
        format!(
            "Received: from {} ({literal})\r\n\tby {} with {with} id {};\r\n\t{}\r\n",
            clean(&self.helo),
            clean(by),
            clean(id),
            date.replace(['\r', '\n'], " "),
        )
    }
}

/// Why [`Backend::deliver`] did not take the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliverError {
    /// Try again later (storage unavailable, …): answered `451 4.3.0 <text>`.
    #[error("temporary failure: {0}")]
    Temporary(String),
    /// Never accept this message: answered `554 5.3.0 <text>`.
    #[error("permanent failure: {0}")]
    Permanent(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_received_header_follows_rfc_5321_and_cannot_be_injected_into() {
        let envelope = Envelope {
            mail_from: "a@b.example".into(),
            rcpt_to: vec!["c@d.example".into()],
            remote_ip: "2001:db8::1".parse().unwrap(),
            helo: "evil\r\nX-Injected: yes".into(),
            tls: true,
            data_time: std::time::Duration::ZERO,
        };
        assert_eq!(
            envelope.received_header("mx.direct.test", "Q1", "Thu, 26 Nov 2026 01:40:16 +0000"),
            "Received: from evilX-Injected:yes ([IPv6:2001:db8::1])\r\n\tby mx.direct.test \
             with ESMTPS id Q1;\r\n\tThu, 26 Nov 2026 01:40:16 +0000\r\n"
        );
    }
}
