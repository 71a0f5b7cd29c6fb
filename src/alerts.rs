//! Alerts to users' ordinary e-mail, without PHI: "You have N new secure messages in
//! <portal>" with a sign-in link, the check of an alert address, and invitation and
//! password links. What an alert may say is decided here and nowhere else: never a
//! subject, a sender, a patient or any content; at most the sending organization's
//! name, when the recipient's organization allows it.
//!
//! Alerts are queued in `alert_jobs` (a new-mail job in the transaction that delivers
//! the message) and sent by [`Alerter`] through `DIRECTMAIL_ALERT_SMTP_RELAY`, so a
//! relay that is down delays alerts but never mail delivery. Failures are retried with
//! backoff, given up after [`GIVE_UP_SECONDS`], and shown to the operator on the queue
//! page. Logs name jobs by id, never by address.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rand::Rng as _;

use crate::app::Stopping;
use crate::clock::Clock;
use crate::config::Config;
use crate::db::Db;
use crate::secrets::SecretKey;
use crate::store::alerts::{self as store, Job};

/// What an alert job sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// New secure mail in a mailbox (counted when sent).
    NewMail,
    /// The link confirming an alert address.
    Verify,
    /// An invitation link.
    Invite,
    /// A link to choose a new password.
    Reset,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::NewMail => "new-mail",
            Kind::Verify => "verify",
            Kind::Invite => "invite",
            Kind::Reset => "reset",
        }
    }

    fn parse(text: &str) -> Option<Kind> {
        [Kind::NewMail, Kind::Verify, Kind::Invite, Kind::Reset]
            .into_iter()
            .find(|k| k.as_str() == text)
    }

    /// For the operator's list.
    pub fn label(text: &str) -> &'static str {
        match Kind::parse(text) {
            Some(Kind::NewMail) => "new-mail alert",
            Some(Kind::Verify) => "alert address check",
            Some(Kind::Invite) => "invitation link",
            Some(Kind::Reset) => "password link",
            None => "alert",
        }
    }
}

/// An alert e-mail: plain text, nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Letter {
    pub subject: String,
    pub body: String,
}

// short lines, so the letter goes as plain 7-bit text that any mail client shows as is
const FOOTER: &str = "For your privacy, this e-mail never says who wrote, about whom,\n\
or what. Sign in to the portal to read your messages.";

/// "You have N new secure messages in <portal>", the sign-in link, and (only when the
/// recipient's organization allows it) the sending organizations' names.
pub fn new_mail_letter(portal: &str, count: i64, orgs: &[String], sign_in: &str) -> Letter {
    let what = if count == 1 {
        "1 new secure message".to_owned()
    } else {
        format!("{count} new secure messages")
    };
    let from = if orgs.is_empty() {
        String::new()
    } else {
        format!("\nFrom: {}\n", orgs.join("; "))
    };
    Letter {
        subject: format!("New secure messages in {portal}"),
        body: format!(
            "You have {what} in {portal}.\n{from}\nSign in to read them:\n{sign_in}\n\n{FOOTER}\n"
        ),
    }
}

/// The link confirming an alert address.
pub fn verify_letter(portal: &str, link: &str) -> Letter {
    Letter {
        subject: format!("Confirm this address for alerts from {portal}"),
        body: format!(
            "Someone asked {portal} to send new-mail alerts to this address.\n\n\
             If it was you, open this link to confirm (it works once, for 24 hours):\n{link}\n\n\
             If it was not you, ignore this e-mail: nothing will be sent here.\n\n{FOOTER}\n"
        ),
    }
}

/// An invitation link (valid 72 hours, once).
pub fn invite_letter(portal: &str, link: &str) -> Letter {
    Letter {
        subject: format!("Your invitation to {portal}"),
        body: format!(
            "You have been invited to {portal}, a secure messaging portal.\n\n\
             Open this link to choose your password (it works once, for 72 hours):\n{link}\n\n{FOOTER}\n"
        ),
    }
}

/// A link to choose a new password (valid 72 hours, once).
pub fn reset_letter(portal: &str, link: &str) -> Letter {
    Letter {
        subject: format!("Choose a new password for {portal}"),
        body: format!(
            "Your administrator reset your password for {portal}; the old one no longer works.\n\n\
             Open this link to choose a new one (it works once, for 72 hours):\n{link}\n\n\
             If you did not expect this, tell your administrator.\n\n{FOOTER}\n"
        ),
    }
}

/// The sealed form of a link queued for `user_id`: only the worker opens it, and it is
/// emptied once sent. The associated data binds it to its job's kind and recipient.
fn link_aad(kind: &str, user_id: i64, to: &str) -> Vec<u8> {
    format!("alert link:{kind}:{user_id}:{to}").into_bytes()
}

/// Queues an e-mail carrying `link` to `to`, in the caller's transaction.
pub async fn queue_link(
    conn: &mut sqlx::AnyConnection,
    secret: &SecretKey,
    kind: Kind,
    user_id: i64,
    to: &str,
    link: &str,
    now: i64,
) -> anyhow::Result<()> {
    let sealed = secret.seal(link.as_bytes(), &link_aad(kind.as_str(), user_id, to))?;
    store::queue_link(conn, kind.as_str(), user_id, to, &sealed, now).await?;
    Ok(())
}

/// The alert relay, from `DIRECTMAIL_ALERT_SMTP_*`.
#[derive(Clone)]
pub struct Relay {
    host: String,
    port: u16,
    credentials: Option<(String, crate::secrets::SecretString)>,
    from: String,
    hello: String,
    /// Extra roots for the relay's certificate (`DIRECTMAIL_HTTPS_ROOTS`), PEM.
    roots: Option<Vec<u8>>,
}

impl Relay {
    /// The relay when one is configured; an error for a setting that cannot work.
    pub fn from_config(config: &Config) -> anyhow::Result<Option<Relay>> {
        let Some(relay) = &config.alert_smtp_relay else {
            return Ok(None);
        };
        let (host, port) = relay
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .filter(|(h, _)| !h.is_empty())
            .with_context(|| {
                format!("DIRECTMAIL_ALERT_SMTP_RELAY {relay} is not host:port (e.g. smtp.example.org:587)")
            })?;
        let from = config
            .alert_from
            .clone()
            .unwrap_or_else(|| format!("no-reply@{}", config.hisp_domain));
        from.parse::<lettre::Address>()
            .with_context(|| format!("DIRECTMAIL_ALERT_FROM {from} is not an e-mail address"))?;
        let roots = match &config.https_roots {
            Some(path) => Some(std::fs::read(path).with_context(|| {
                format!("DIRECTMAIL_HTTPS_ROOTS: {} cannot be read", path.display())
            })?),
            None => None,
        };
        Ok(Some(Relay {
            host: host.to_owned(),
            port,
            credentials: config
                .alert_smtp_username
                .clone()
                .zip(config.alert_smtp_password.clone()),
            from,
            hello: config
                .smtp_hostname
                .clone()
                .unwrap_or_else(|| config.hisp_domain.clone()),
            roots,
        }))
    }

    /// Sends one letter. STARTTLS is required: a relay that does not offer it, or whose
    /// certificate does not verify, gets nothing (the letter may carry a sign-in link).
    async fn send(&self, to: &str, letter: &Letter) -> Result<(), Failure> {
        use lettre::transport::smtp::authentication::Credentials;
        use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
        use lettre::transport::smtp::extension::ClientId;
        use lettre::{AsyncSmtpTransport, AsyncTransport as _, Tokio1Executor};

        let permanent = |e: &dyn std::fmt::Display| Failure::Permanent(e.to_string());
        let message = lettre::Message::builder()
            .from(self.from.parse().map_err(|e| permanent(&e))?)
            .to(to.parse().map_err(|e| permanent(&e))?)
            .subject(&letter.subject)
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(letter.body.clone())
            .map_err(|e| permanent(&e))?;
        let mut tls = TlsParameters::builder(self.host.clone());
        if let Some(pem) = &self.roots {
            tls = tls.add_root_certificate(Certificate::from_pem(pem).map_err(|e| permanent(&e))?);
        }
        let tls = tls.build_rustls().map_err(|e| permanent(&e))?;
        let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&self.host)
            .port(self.port)
            .tls(Tls::Required(tls))
            .hello_name(ClientId::Domain(self.hello.clone()))
            .timeout(Some(Duration::from_secs(30)));
        if let Some((user, password)) = &self.credentials {
            transport =
                transport.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        let sent =
            tokio::time::timeout(Duration::from_secs(60), transport.build().send(message)).await;
        match sent {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.is_permanent() => Err(Failure::Permanent(e.to_string())),
            Ok(Err(e)) => Err(Failure::Temporary(e.to_string())),
            Err(_) => Err(Failure::Temporary(
                "the relay did not answer within 60 s".into(),
            )),
        }
    }
}

/// Why a letter was not sent.
#[derive(Debug)]
enum Failure {
    /// The relay refused it (5xx) or it can never be sent: given up at once.
    Permanent(String),
    /// The relay could not be reached or answered 4xx: tried again later.
    Temporary(String),
}

/// Alert jobs are given up a day after they were queued.
pub const GIVE_UP_SECONDS: i64 = 86_400;

/// How long a claimed job is left to its worker.
const LEASE_SECONDS: i64 = 300;

/// The alert worker; cheap to clone.
#[derive(Clone)]
pub struct Alerter {
    pub db: Db,
    pub secret: Arc<SecretKey>,
    pub clock: Clock,
    /// `None` when no relay is configured: jobs are dropped.
    pub relay: Option<Relay>,
    pub portal_name: String,
    /// Where users sign in, for the links in alerts.
    pub public_base: String,
    /// Seconds between two new-mail alerts about one mailbox to one user.
    pub interval: i64,
    /// Woken when something was queued.
    pub wake: Arc<tokio::sync::Notify>,
}

impl Alerter {
    pub fn new(
        config: &Config,
        db: Db,
        secret: Arc<SecretKey>,
        clock: Clock,
        public_base: String,
        wake: Arc<tokio::sync::Notify>,
    ) -> anyhow::Result<Alerter> {
        Ok(Alerter {
            db,
            secret,
            clock,
            relay: Relay::from_config(config)?,
            portal_name: config.portal_name.clone(),
            public_base,
            interval: i64::from(config.alert_interval) * 60,
            wake,
        })
    }

    /// Sends due alerts until the server stops: the job in hand is finished, no new one
    /// is claimed (one left claimed is taken again when its lease ends).
    pub async fn run(self, mut stop: Stopping) {
        let mut swept = 0;
        while !stop.is_set() {
            if let Err(e) = self.send_due_while(|| !stop.is_set()).await {
                tracing::error!(error = format!("{e:#}"), "sending alert e-mails failed");
            }
            let now = self.clock.now();
            if now - swept > 3600 {
                swept = now;
                if let Err(e) = store::forget_finished(&self.db, now - 30 * 86_400).await {
                    tracing::warn!(error = %e, "could not forget finished alert jobs");
                }
            }
            tokio::select! {
                () = stop.wait() => {},
                () = self.wake.notified() => {},
                () = tokio::time::sleep(Duration::from_secs(5)) => {},
            }
        }
    }

    /// Handles every due job; returns how many were looked at.
    pub async fn send_due(&self) -> anyhow::Result<usize> {
        self.send_due_while(|| true).await
    }

    async fn send_due_while(&self, go_on: impl Fn() -> bool) -> anyhow::Result<usize> {
        let mut handled = 0;
        while go_on() {
            let now = self.clock.now();
            let Some(job) = store::claim_next(&self.db, now, now + LEASE_SECONDS).await? else {
                break;
            };
            handled += 1;
            self.handle(&job).await?;
        }
        Ok(handled)
    }

    async fn handle(&self, job: &Job) -> anyhow::Result<()> {
        let now = self.clock.now();
        let Some(relay) = &self.relay else {
            return Ok(store::mark_dropped(
                &self.db,
                job.id,
                "no alert relay is configured (DIRECTMAIL_ALERT_SMTP_RELAY)",
                now,
            )
            .await?);
        };
        let Some(kind) = Kind::parse(&job.kind) else {
            return Ok(store::mark_failed(&self.db, job.id, "unknown kind of alert", now).await?);
        };
        let (to, letter) = match kind {
            Kind::NewMail => match self.new_mail(job, now).await? {
                Prepared::Send(to, letter) => (to, letter),
                Prepared::Later(at) => return Ok(store::postpone(&self.db, job.id, at, now).await?),
                Prepared::Drop(why) => {
                    return Ok(store::mark_dropped(&self.db, job.id, why, now).await?);
                }
            },
            Kind::Verify | Kind::Invite | Kind::Reset => {
                let opened = self.secret.open(
                    &job.sealed_link,
                    &link_aad(&job.kind, job.user_id, &job.to_addr),
                );
                let Ok(link) = opened.map(|l| String::from_utf8_lossy(&l).into_owned()) else {
                    return Ok(store::mark_failed(
                        &self.db,
                        job.id,
                        "the link does not open with this key-encryption key",
                        now,
                    )
                    .await?);
                };
                let letter = match kind {
                    Kind::Verify => verify_letter(&self.portal_name, &link),
                    Kind::Invite => invite_letter(&self.portal_name, &link),
                    _ => reset_letter(&self.portal_name, &link),
                };
                (job.to_addr.clone(), letter)
            }
        };
        let result = relay.send(&to, &letter).await;
        let now = self.clock.now();
        // the relay's answer may quote the address; the operator's list does not need it
        let said = |reason: &str| reason.replace(&to, "<the recipient>");
        match result {
            Ok(()) => store::mark_sent(&self.db, job.id, now).await?,
            Err(Failure::Permanent(reason)) => {
                tracing::warn!(
                    alert_job = job.id,
                    kind = job.kind,
                    "the alert relay refused an alert e-mail; given up"
                );
                store::mark_failed(&self.db, job.id, &said(&reason), now).await?;
            }
            Err(Failure::Temporary(reason)) => {
                if now - job.created_at >= GIVE_UP_SECONDS {
                    tracing::warn!(
                        alert_job = job.id,
                        kind = job.kind,
                        "an alert e-mail could not be sent for a day; given up"
                    );
                    let reason = format!("{}; gave up after a day of retries", said(&reason));
                    store::mark_failed(&self.db, job.id, &reason, now).await?;
                } else {
                    // exponential backoff from half a minute, capped at half an hour
                    let base = 30i64
                        .saturating_mul(1 << job.attempts.clamp(0, 6))
                        .min(1800);
                    let jitter = rand::rng().random_range(0..=base / 4);
                    tracing::warn!(
                        alert_job = job.id,
                        kind = job.kind,
                        attempts = job.attempts + 1,
                        "an alert e-mail could not be sent; will retry"
                    );
                    store::retry_later(&self.db, job.id, &said(&reason), now + base + jitter, now)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// What a new-mail job sends now, if anything.
    async fn new_mail(&self, job: &Job, now: i64) -> anyhow::Result<Prepared> {
        let Some(mailbox_id) = job.mailbox_id else {
            return Ok(Prepared::Drop("no mailbox"));
        };
        let address = store::address(&self.db, job.user_id).await?;
        let Some(address) = address.filter(store::AlertAddress::active) else {
            return Ok(Prepared::Drop(
                "alerts are off or the address is not verified",
            ));
        };
        let user = crate::store::users::get(&self.db, job.user_id).await?;
        if user.as_ref().is_none_or(|u| u.disabled) {
            return Ok(Prepared::Drop("the account is disabled"));
        }
        let members = crate::store::mailboxes::members(&self.db, mailbox_id).await?;
        if !members.iter().any(|m| m.user_id == job.user_id) {
            return Ok(Prepared::Drop("the user no longer has this mailbox"));
        }
        if let Some(last) = store::last_alerted(&self.db, job.user_id, mailbox_id).await?
            && last + self.interval > now
        {
            return Ok(Prepared::Later(last + self.interval));
        }
        let count = store::unread(&self.db, mailbox_id).await?;
        if count == 0 {
            return Ok(Prepared::Drop("the new messages were read already"));
        }
        let mailbox = crate::store::mailboxes::get(&self.db, mailbox_id).await?;
        let orgs = match mailbox {
            Some(m) if store::names_sender(&self.db, m.org_id).await? => {
                self.sender_orgs(mailbox_id).await?
            }
            _ => Vec::new(),
        };
        let sign_in = format!("{}/login", self.public_base);
        Ok(Prepared::Send(
            address.email,
            new_mail_letter(&self.portal_name, count, &orgs, &sign_in),
        ))
    }

    /// The organizations of the unread messages' senders: the organization hosting the
    /// sender's domain here, else the O= of the signer's certificate. Never a person.
    async fn sender_orgs(&self, mailbox_id: i64) -> anyhow::Result<Vec<String>> {
        let mut names: Vec<String> = Vec::new();
        for (from, signer) in store::unread_senders(&self.db, mailbox_id).await? {
            let domain = from.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
            let hosted = match crate::store::orgs::domain_by_name(&self.db, domain).await? {
                Some(d) => match d.org_id {
                    Some(org) => crate::store::orgs::get(&self.db, org)
                        .await?
                        .map(|o| o.name),
                    None => None,
                },
                None => None,
            };
            let name = hosted.or_else(|| signer.as_deref().and_then(organization_of));
            if let Some(name) = name
                && !names.contains(&name)
            {
                names.push(name);
            }
        }
        names.truncate(3);
        Ok(names)
    }
}

enum Prepared {
    Send(String, Letter),
    Later(i64),
    Drop(&'static str),
}

/// The organization (O=) of a distinguished name as stored (`CN=…, O=…, C=US`).
fn organization_of(dn: &str) -> Option<String> {
    dn.split(',')
        .map(str::trim)
        .find_map(|part| part.strip_prefix("O="))
        .map(|o| o.trim().to_owned())
        .filter(|o| !o.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_mail_letter_counts_and_links_and_says_nothing_else() {
        let letter = new_mail_letter("State HIE", 3, &[], "https://hie.example/login");
        assert!(
            letter
                .body
                .contains("You have 3 new secure messages in State HIE.")
        );
        assert!(letter.body.contains("https://hie.example/login"));
        assert!(!letter.body.contains("From:"));
        let one = new_mail_letter("State HIE", 1, &["Lakeside Clinic".into()], "x");
        assert!(one.body.contains("1 new secure message in"));
        assert!(one.body.contains("From: Lakeside Clinic"));
    }

    #[test]
    fn the_organization_is_read_from_a_distinguished_name() {
        assert_eq!(
            organization_of("CN=dr.smith@direct.x.test, O=Sender Clinic, C=US").as_deref(),
            Some("Sender Clinic")
        );
        assert_eq!(organization_of("CN=kim"), None);
    }
}
