//! Where the certificate to encrypt for a recipient comes from, and the sentence that
//! tells the sender (on the compose page) and the operator (in the queue) what was
//! found. Recipients on domains hosted here use the domain's own identities.

use directmail_smime::{self as smime, Certificate};

use crate::db::Db;
use crate::pki;
use crate::store::{mailboxes, orgs, outbound};

/// What a recipient lookup found.
#[derive(Debug, Clone)]
pub struct Lookup {
    pub certificate: Option<Certificate>,
    /// One sentence: "certificate known from an earlier signed message", or why not.
    pub sentence: String,
}

/// A usable certificate for an address on another HISP: the address's own first,
/// then its domain's (Applicability Statement 1.3 §1.4).
pub async fn foreign(db: &Db, address: &str, now: i64) -> anyhow::Result<Lookup> {
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
    Ok(Lookup {
        certificate: None,
        sentence: format!(
            "no certificate was found for {address}, so a message cannot be encrypted for it; check the address, or ask your administrator to add the recipient's certificate"
        ),
    })
}

/// Whether a message can be sent to `address`: `Ok(how)` or `Err(why not)`, in a
/// sentence for the compose page.
pub async fn check(db: &Db, address: &str, now: i64) -> anyhow::Result<Result<String, String>> {
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
    let found = foreign(db, address, now).await?;
    Ok(match found.certificate {
        Some(_) => Ok(found.sentence),
        None => Err(found.sentence),
    })
}
