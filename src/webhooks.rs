//! Webhooks for EHRs: what may be registered, what an event says, how it is signed,
//! and the worker that posts queued events.
//!
//! An event says what happened to which message, by ids and a status, and nothing
//! else: never a subject, a correspondent's or patient's address, a body or a file
//! name ([`event_json`] is the one place that decides). The EHR reads the message
//! through the API with its token.
//!
//! Events are queued in the transaction that makes the change (a message filed in an
//! Inbox, a recipient's delivery status moved): they commit or roll back with it, and
//! queuing is one insert with no network, so a slow or dead receiver never holds up
//! mail. The worker ([`Deliverer`]) posts them with a bounded number in flight, each
//! with a timeout, retries with exponential backoff up to
//! `DIRECTMAIL_WEBHOOK_MAX_ATTEMPTS`, then gives up. Every request goes through the
//! outbound-connection policy ([`directmail_net::Policy::http_client`]), with
//! redirects never followed.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac as _};
use rand::{Rng as _, RngCore as _};
use sha2::Sha256;

use crate::app::Stopping;
use crate::clock::{Clock, format_rfc3339};
use crate::config::Config;
use crate::db::Db;
use crate::secrets::SecretKey;
use crate::store::webhooks::{self as store, Delivery};

/// The longest URL that can be registered.
pub const MAX_URL: usize = 2000;

/// The header carrying `t=<unix time>,v1=<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "directmail-signature";

/// How far a receiver should let the signed time be from its clock (documented in
/// `docs/integration.md`).
pub const REPLAY_WINDOW_SECONDS: i64 = 300;

/// The event types, as the receiver sees them.
pub const EVENTS: [&str; 2] = ["message.received", "message.status"];

/// `url` checked as a webhook address: HTTPS, no user name or password, no fragment,
/// and a host the outbound-connection policy allows (an address in the URL is judged
/// here; a name when it is resolved, see [`resolves_to_allowed`]). The sentence says
/// what is wrong.
pub fn check_url(policy: &directmail_net::Policy, text: &str) -> Result<url::Url, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(
            "Give the webhook's address as `url`, such as https://ehr.example.org/directmail/events."
                .into(),
        );
    }
    if text.len() > MAX_URL {
        return Err(format!(
            "The URL is longer than {MAX_URL} characters; give a shorter one."
        ));
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("The URL has spaces or control characters in it; give it without.".into());
    }
    let url = url::Url::parse(text).map_err(|_| {
        "That is not a URL; give a full address such as https://ehr.example.org/directmail/events."
            .to_owned()
    })?;
    match url.scheme() {
        "https" => {}
        "http" => {
            return Err("Webhooks are sent only over HTTPS: give an https:// URL (an http:// address would carry events unencrypted).".into());
        }
        _ => {
            return Err(
                "Webhooks are sent only to https:// URLs; other kinds of address are refused."
                    .into(),
            );
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("The URL carries a user name or password; events are authenticated by their signature, so give the URL without `name:password@`.".into());
    }
    if url.fragment().is_some() {
        return Err(
            "The URL has a #fragment, which is never sent to a server; give it without.".into(),
        );
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("The URL has no host name.".into());
    }
    policy.check_url(&url).map_err(|refused| {
        format!("That address is not allowed: {refused}. Webhooks go only to public addresses unless the portal's operator allows the network.")
    })?;
    Ok(url)
}

/// For a URL naming a host: the name resolves, and to an address the policy allows
/// (checked once more at every connection).
pub async fn resolves_to_allowed(
    policy: &directmail_net::Policy,
    url: &url::Url,
) -> Result<(), String> {
    let Some(url::Host::Domain(name)) = url.host() else {
        return Ok(());
    };
    let port = url.port_or_known_default().unwrap_or(443);
    let lookup = tokio::net::lookup_host((name, port));
    let found = match tokio::time::timeout(Duration::from_secs(10), lookup).await {
        Ok(Ok(found)) => found.map(|a| a.ip()).collect::<Vec<_>>(),
        _ => {
            return Err(format!(
                "The name {name} could not be resolved; check the URL (its name must resolve when the webhook is registered)."
            ));
        }
    };
    policy.filter(&found).map(|_| ()).map_err(|refused| {
        format!("{name} resolves to an address that is not allowed ({refused}). Webhooks go only to public addresses unless the portal's operator allows the network.")
    })
}

/// A new signing secret, as shown once to the EHR: `whsec_` and 32 random bytes in
/// base64url. The HMAC key is this text as it is shown.
pub fn new_secret() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// What binds a sealed secret to its webhook (the token and URL it was made for).
pub fn secret_aad(token_id: i64, url: &str) -> Vec<u8> {
    format!("webhook secret:{token_id}:{url}").into_bytes()
}

/// `t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>.<body>">` keyed with the
/// secret as shown at registration.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length, so this never fails
    let mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map(|mut mac| {
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    });
    format!("t={timestamp},v1={}", mac.unwrap_or_default())
}

/// The JSON a receiver gets for a delivery: ids, the event type, the status and the
/// time. The event id stays the same when a delivery is retried or sent again.
pub fn event_json(d: &Delivery) -> String {
    let mut event = serde_json::json!({
        "id": format!("evt_{}", d.id),
        "type": d.event_type,
        "occurred_at": format_rfc3339(d.occurred_at),
        "mailbox": d.mailbox,
        "message_id": d.message_id,
    });
    if d.event_type == "message.status" {
        event["outbound_id"] = d.outbound_id.into();
        event["status"] = d.status.clone().into();
    }
    event.to_string()
}

/// The wait before attempt `attempts + 1`: from half a minute, doubling, at most an
/// hour, with a little jitter so that many failures do not come back at once.
fn backoff(attempts: i64) -> i64 {
    let base = 30i64.saturating_mul(1 << attempts.clamp(0, 7)).min(3600);
    base + rand::rng().random_range(0..=base / 10)
}

/// How an attempt ended.
enum Outcome {
    Delivered,
    /// Worth trying again; the sentence says why.
    Retry(String),
    /// Never worth trying again (the webhook can no longer be used).
    GiveUp(String),
}

/// The webhook worker; cheap to clone.
#[derive(Clone)]
pub struct Deliverer {
    pub db: Db,
    pub secret: Arc<SecretKey>,
    pub clock: Clock,
    pub policy: directmail_net::Policy,
    /// Held to the policy, with the request timeout and no redirects.
    pub client: reqwest::Client,
    pub timeout: Duration,
    pub max_attempts: i64,
    /// Requests in flight at most.
    pub concurrency: usize,
    /// `DIRECTMAIL_OPERATOR_MFA`, for the owner's two-step requirement.
    pub operator_mfa: bool,
    /// Woken when something was queued.
    pub wake: Arc<tokio::sync::Notify>,
    pub stop: Stopping,
}

impl Deliverer {
    pub fn new(
        config: &Config,
        db: Db,
        secret: Arc<SecretKey>,
        clock: Clock,
        wake: Arc<tokio::sync::Notify>,
        stop: Stopping,
    ) -> anyhow::Result<Deliverer> {
        let policy = config.network_policy();
        let timeout = Duration::from_secs(config.webhook_timeout_seconds);
        let mut builder = policy
            .http_client()
            // a receiver that redirects is told so and not followed: the registered
            // URL is the only place events go
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent("directmail-webhooks/1");
        for root in config.extra_https_roots()? {
            builder = builder.add_root_certificate(root);
        }
        Ok(Deliverer {
            db,
            secret,
            clock,
            policy,
            client: builder.build()?,
            timeout,
            max_attempts: i64::from(config.webhook_max_attempts),
            concurrency: usize::from(config.webhook_concurrency),
            operator_mfa: config.operator_mfa,
            wake,
            stop,
        })
    }

    /// Posts due events until the server stops, at most `concurrency` at once.
    pub async fn run(self) {
        let mut in_flight = tokio::task::JoinSet::new();
        let mut swept = 0;
        loop {
            while in_flight.len() < self.concurrency && !self.stop.is_set() {
                match self.claim().await {
                    Ok(Some(delivery)) => {
                        let worker = self.clone();
                        in_flight.spawn(async move { worker.handle(delivery).await });
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "claiming a webhook delivery failed");
                        break;
                    }
                }
            }
            if self.stop.is_set() && in_flight.is_empty() {
                return;
            }
            let now = self.clock.now();
            if now - swept > 3600 {
                swept = now;
                if let Err(e) = store::forget_finished(&self.db, now - 30 * 86_400).await {
                    tracing::warn!(error = %e, "could not forget finished webhook deliveries");
                }
            }
            let mut stop = self.stop.clone();
            tokio::select! {
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    if let Ok(Err(e)) = done {
                        tracing::error!(error = format!("{e:#}"), "recording a webhook delivery failed");
                    }
                },
                () = self.wake.notified() => {},
                () = tokio::time::sleep(Duration::from_secs(5)) => {},
                () = stop.wait(), if !self.stop.is_set() => {},
            }
        }
    }

    async fn claim(&self) -> sqlx::Result<Option<Delivery>> {
        let now = self.clock.now();
        // the lease outlasts the request's timeout, so a claim never lapses while its
        // request may still reach the receiver (which would send it twice)
        let lease = i64::try_from(self.timeout.as_secs()).unwrap_or(60) * 2 + 60;
        store::claim_next(&self.db, now, now + lease).await
    }

    /// Posts one claimed delivery and records the outcome.
    pub async fn handle(self, delivery: Delivery) -> anyhow::Result<()> {
        let outcome = self.attempt(&delivery).await?;
        let now = self.clock.now();
        let attempts = delivery.attempts + 1;
        match outcome {
            Outcome::Delivered => store::mark_delivered(&self.db, delivery.id, now).await?,
            Outcome::GiveUp(why) => {
                tracing::warn!(
                    webhook_delivery = delivery.id,
                    "a webhook can no longer be used; given up"
                );
                store::mark_failed(&self.db, delivery.id, &why, false, now).await?;
            }
            Outcome::Retry(why) if attempts >= self.max_attempts => {
                tracing::warn!(
                    webhook_delivery = delivery.id,
                    attempts,
                    "a webhook event could not be delivered; given up"
                );
                let times = if attempts == 1 { "attempt" } else { "attempts" };
                let why = format!("{why} Given up after {attempts} {times}.");
                store::mark_failed(&self.db, delivery.id, &why, true, now).await?;
            }
            Outcome::Retry(why) => {
                tracing::info!(
                    webhook_delivery = delivery.id,
                    attempts,
                    "a webhook event could not be delivered; will retry"
                );
                let at = now + backoff(delivery.attempts);
                store::retry_later(&self.db, delivery.id, &why, at, now).await?;
            }
        }
        Ok(())
    }

    async fn attempt(&self, delivery: &Delivery) -> anyhow::Result<Outcome> {
        let Some(hook) = store::get(&self.db, delivery.webhook_id).await? else {
            return Ok(Outcome::GiveUp("The webhook was deleted.".into()));
        };
        if !self.registrant_still_works(&hook).await? {
            return Ok(Outcome::GiveUp(
                "The API token that registered this webhook no longer works (revoked, expired, ended with its owner's sessions, or its owner must set up two-step sign-in first); nothing was sent.".into(),
            ));
        }
        // the operator may have narrowed the policy since it was registered
        let url = match check_url(&self.policy, &hook.url) {
            Ok(url) => url,
            Err(why) => return Ok(Outcome::GiveUp(why)),
        };
        let Ok(secret) = self
            .secret
            .open(&hook.sealed_secret, &secret_aad(hook.token_id, &hook.url))
        else {
            return Ok(Outcome::GiveUp(
                "The webhook's secret does not open with this portal's key-encryption key; register the webhook again.".into(),
            ));
        };
        let secret = String::from_utf8_lossy(&secret).into_owned();
        let body = event_json(delivery);
        let now = self.clock.now();
        let sent = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature(&secret, now, body.as_bytes()))
            .header("directmail-event", &delivery.event_type)
            .header("directmail-event-id", format!("evt_{}", delivery.id))
            .body(body)
            .send()
            .await;
        Ok(match sent {
            Ok(r) if r.status().is_success() => Outcome::Delivered,
            Ok(r) if r.status().is_redirection() => Outcome::Retry(format!(
                "The receiver answered with a redirect ({}); webhooks never follow redirects, so register the final address.",
                r.status().as_u16()
            )),
            Ok(r) => Outcome::Retry(format!(
                "The receiver answered {} instead of a 2xx status.",
                r.status().as_u16()
            )),
            Err(e) => Outcome::Retry(self.failure_sentence(&e)),
        })
    }

    async fn registrant_still_works(&self, hook: &store::Webhook) -> sqlx::Result<bool> {
        use crate::store::tokens::TokenState;
        let Some((user, org)) = crate::store::users::get_with_org(&self.db, hook.user_id).await?
        else {
            return Ok(false);
        };
        // as the API refuses the token of an owner who must use two-step sign-in and
        // has not set it up, their webhooks hear nothing meanwhile
        if crate::accounts::lacks_required_two_step(&user, org.as_ref(), self.operator_mfa) {
            return Ok(false);
        }
        let tokens = crate::store::tokens::of_user(&self.db, hook.user_id).await?;
        let now = self.clock.now();
        Ok(!user.disabled
            && tokens.iter().any(|t| {
                t.id == hook.token_id && t.state(user.session_epoch, now) == TokenState::Active
            }))
    }

    /// A failed request in a sentence (never the receiver's body).
    fn failure_sentence(&self, e: &reqwest::Error) -> String {
        if let Some(refused) = directmail_net::refusal(e) {
            return format!("Not sent: {refused}.");
        }
        if e.is_timeout() {
            return format!(
                "The receiver did not answer within {} s (DIRECTMAIL_WEBHOOK_TIMEOUT_SECONDS).",
                self.timeout.as_secs()
            );
        }
        if e.is_connect() {
            // rustls' reason is useful to the EHR (an unknown issuer, an expired certificate)
            let mut source: Option<&dyn std::error::Error> = Some(e);
            let mut deepest = String::new();
            while let Some(s) = source {
                deepest = s.to_string();
                source = s.source();
            }
            return format!("The receiver could not be reached ({deepest}).");
        }
        "The connection to the receiver failed before it answered.".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_time_dot_body() {
        // computed with `printf '1700000000.{}' | openssl dgst -sha256 -hmac whsec_test`
        assert_eq!(
            signature("whsec_test", 1_700_000_000, b"{}"),
            "t=1700000000,v1=35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91"
        );
    }

    #[test]
    fn only_plain_https_urls_to_allowed_hosts_are_accepted() {
        let public = directmail_net::Policy::public_only();
        assert!(check_url(&public, "https://ehr.example.org:8443/hooks?x=1").is_ok());
        for (url, says) in [
            ("", "Give the webhook's address"),
            ("http://ehr.example.org/hook", "only over HTTPS"),
            ("ftp://ehr.example.org/hook", "only to https://"),
            ("not a url", "spaces"),
            ("https//ehr", "not a URL"),
            ("https://user:pw@ehr.example.org/", "user name or password"),
            ("https://ehr.example.org/#x", "#fragment"),
            ("https://127.0.0.1/hook", "not allowed"),
            ("https://[::1]/hook", "not allowed"),
            ("https://169.254.169.254/latest", "not allowed"),
            ("https://10.1.2.3/", "not allowed"),
        ] {
            let e = check_url(&public, url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
        let long = format!("https://ehr.example.org/{}", "a".repeat(MAX_URL));
        assert!(check_url(&public, &long).unwrap_err().contains("longer"));
        assert!(
            check_url(
                &directmail_net::Policy::everything(),
                "https://127.0.0.1:9/"
            )
            .is_ok()
        );
    }
}
