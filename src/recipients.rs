//! Where the certificate to encrypt for a recipient comes from, and the sentence that
//! tells the sender (on the compose page) and the operator (in the queue) what was
//! found. Recipients on domains hosted here use the domain's own identities; others
//! a certificate learned from their signed mail, else certificate discovery (DNS CERT,
//! then LDAP), each candidate checked against this HISP's sending anchors with AIA
//! and CRLs like a signer's.

use std::sync::Arc;
use std::time::SystemTime;

use der::Decode as _;
use directmail_discovery::{BoxFuture, Discovery, Method, Rejection, Validator};
use directmail_smime::{self as smime, Certificate, ReasonCode};

use crate::db::Db;
use crate::pki::{self, fetch};
use crate::store::{mailboxes, orgs, outbound};

/// Discovery for this HISP: `DIRECTMAIL_DNS_RESOLVER` for every query, and this HISP's
/// anchors, AIA and CRLs as the trust check.
pub fn discovery(
    db: &Db,
    fetcher: &fetch::Fetcher,
    config: &crate::config::Config,
) -> anyhow::Result<Arc<Discovery>> {
    let settings = directmail_discovery::Config {
        dns_resolver: config.dns_resolver,
        network: config.network_policy(),
        ..Default::default()
    };
    let validator = Arc::new(HispValidator {
        db: db.clone(),
        fetcher: fetcher.clone(),
    });
    Ok(Arc::new(Discovery::new(settings, validator)?))
}

/// Checks a discovered certificate as a signer's would be: a path to one of the
/// sending anchors (every hosted domain's own anchors and the trust bundles assigned
/// for sending; missing intermediates fetched through AIA), not revoked by the CRLs
/// its chain names (an unreachable CRL does not refuse it; one that was reached but
/// cannot be used does).
struct HispValidator {
    db: Db,
    fetcher: fetch::Fetcher,
}

impl Validator for HispValidator {
    fn check<'a>(
        &'a self,
        cert_der: &'a [u8],
        _address: &'a str,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<(), Rejection>> {
        Box::pin(async move {
            let cert = Certificate::from_der(cert_der)
                .map_err(|e| Rejection::other(format!("not a readable certificate: {e}")))?;
            let unix = now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let anchors = pki::sending_anchors(&self.db)
                .await
                .map_err(|e| Rejection::other(format!("trust anchors unavailable: {e}")))?;
            let mut trust = smime::TrustStore {
                anchors,
                ..Default::default()
            };
            let mut result = smime::validate_certificate(&cert, &trust, now);
            // a chain that stops short of an anchor may lack an intermediate
            let mut frontier = vec![cert.clone()];
            for _ in 0..3 {
                if !matches!(&result, Err((ReasonCode::UntrustedAnchor, _))) {
                    break;
                }
                let mut found = Vec::new();
                for c in &frontier {
                    for url in fetch::issuer_urls(c) {
                        if let Ok(certs) = self.fetcher.issuers(&url, unix).await {
                            found.extend(certs);
                        }
                    }
                }
                if found.is_empty() {
                    break;
                }
                trust.intermediates.extend(found.iter().cloned());
                frontier = found;
                result = smime::validate_certificate(&cert, &trust, now);
            }
            if result.is_ok() {
                let mut certs = vec![cert.clone()];
                certs.extend(trust.intermediates.iter().cloned());
                let mut budget = pki::FetchBudget::new(self.fetcher.timeout());
                let lists = pki::revocation_lists(
                    &self.fetcher,
                    &certs,
                    unix,
                    &mut budget,
                    &mut Vec::new(),
                )
                .await;
                if let Some(why) = lists.unusable {
                    result = Err((ReasonCode::RevocationListUnusable, why));
                } else if !lists.crls.is_empty() {
                    trust.crls = lists.crls;
                    result = smime::validate_certificate(&cert, &trust, now);
                }
            }
            match result {
                Ok(_) => Ok(()),
                Err((ReasonCode::SignerRevoked, _)) => {
                    Err(Rejection::revoked("revoked by its issuer (CRL)"))
                }
                Err((ReasonCode::SignerExpired, _)) => Err(Rejection::expired("expired")),
                Err((ReasonCode::RevocationListUnusable, why)) => Err(Rejection::other(format!(
                    "its revocation status cannot be checked: {why}"
                ))),
                Err((ReasonCode::UntrustedAnchor, _)) => Err(Rejection::other(
                    "it does not chain to a trust anchor of this HISP",
                )),
                Err((code, _)) => Err(Rejection::other(code.sentence())),
            }
        })
    }
}

/// What the sender reads when an address's domain publishes no Direct certificate.
pub const NOT_DIRECT: &str = "This looks like ordinary e-mail, not a Direct address. Direct messages can only go to Direct addresses.";

/// What a recipient lookup found.
#[derive(Debug, Clone)]
pub struct Lookup {
    pub certificate: Option<Certificate>,
    /// One sentence: "certificate known from an earlier signed message", or why not.
    pub sentence: String,
}

/// A usable certificate for an address on another HISP: one learned from their signed
/// mail (the address's own, then its domain's: Applicability Statement 1.3 §1.4), else
/// certificate discovery.
pub async fn foreign(
    db: &Db,
    discovery: &Discovery,
    address: &str,
    now: i64,
) -> anyhow::Result<Lookup> {
    // a certificate an operator attached to the directory entry comes first
    // and is checked like a discovered one: bound to the address, a path to an anchor
    // for sending, dates, revocation
    if let Some(der) = crate::store::directory::certificate_for(db, address).await? {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(now.max(0) as u64);
        let checked = match Certificate::from_der(&der) {
            Err(e) => Err(format!("it is not a readable certificate ({e})")),
            Ok(c) if !smime::binds_address(&c, address) => {
                Err(format!("it is not issued to {address} or its domain"))
            }
            Ok(c) => match discovery.validate(&der, address, at).await {
                Ok(()) => Ok(c),
                Err(r) => Err(r.reason),
            },
        };
        return Ok(match checked {
            Ok(c) => Lookup {
                certificate: Some(c),
                sentence: "certificate attached to the directory entry".into(),
            },
            Err(why) => Lookup {
                certificate: None,
                sentence: format!(
                    "the certificate attached to the directory entry of {address} cannot be used: {why}; ask your administrator to replace it"
                ),
            },
        });
    }
    let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
    for key in [address, domain] {
        if let Some(pem) = outbound::known_certificate(db, key).await? {
            let usable = smime::parse_certificates(pem.as_bytes())?
                .into_iter()
                .find(|c| {
                    let facts = pki::info(c);
                    facts.not_before <= now
                        && now <= facts.not_after
                        && smime::binds_address(c, address)
                });
            if let Some(c) = usable {
                return Ok(Lookup {
                    certificate: Some(c),
                    sentence: "certificate known from an earlier signed message".into(),
                });
            }
        }
    }
    let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(now.max(0) as u64);
    let outcome = match discovery.lookup_at(address, at).await {
        Ok(o) => o,
        Err(e) => {
            return Ok(Lookup {
                certificate: None,
                sentence: format!("{address} cannot be looked up: {e}"),
            });
        }
    };
    tracing::info!(
        address = %outcome.address,
        steps = %outcome.steps.join("; "),
        "certificate discovery"
    );
    let certificate = outcome
        .certificate
        .as_ref()
        .and_then(|d| Certificate::from_der(&d.der).ok());
    let sentence = match (&certificate, &outcome.certificate) {
        (Some(_), Some(d)) => format!(
            "certificate found via {}",
            match d.source.method {
                Method::Dns => "DNS",
                Method::Ldap => "LDAP",
            }
        ),
        _ if outcome.status == directmail_discovery::Status::NotFound => NOT_DIRECT.to_owned(),
        _ => format!(
            "{}; a message cannot be encrypted for {address}",
            outcome.summary.trim_end_matches('.')
        ),
    };
    Ok(Lookup {
        certificate,
        sentence,
    })
}

/// Whether a message can be sent to `address`: `Ok(how)` or `Err(why not)`, in a
/// sentence for the compose page.
pub async fn check(
    db: &Db,
    discovery: &Discovery,
    address: &str,
    now: i64,
) -> anyhow::Result<Result<String, String>> {
    let email = match crate::domain::Email::parse(address) {
        Ok(e) => e,
        Err(e) => return Ok(Err(e.0)),
    };
    let address = email.as_str();
    let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
    if orgs::domain_by_name(db, domain).await?.is_some() {
        return Ok(match mailboxes::by_address(db, address).await? {
            Some(_) => Ok("on this HISP".into()),
            None => Err(format!("there is no mailbox {address} on this HISP")),
        });
    }
    let found = foreign(db, discovery, address, now).await?;
    Ok(match found.certificate {
        Some(_) => Ok(found.sentence),
        None => Err(found.sentence),
    })
}
