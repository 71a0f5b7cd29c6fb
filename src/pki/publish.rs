//! Publishing this HISP's certificates so that other HISPs discover them: the exact
//! DNS CERT records to put in each hosted zone, a check of what the live DNS answers,
//! and an optional small authoritative responder for those records
//! (`DIRECTMAIL_DNS_CERT_ADDR`, off by default).

use std::net::SocketAddr;
use std::time::Duration;

use der::Encode as _;
use directmail_discovery::responder::{Records, Responder};
use directmail_smime as smime;

use crate::db::Db;
use crate::store::pki as store;

/// TTL of the published records, in seconds.
pub const TTL: u32 = 3600;

/// One certificate to publish: where, the zone-file line, and the certificate.
#[derive(Debug, Clone)]
pub struct Published {
    /// The address (address-bound) or the domain (domain-bound).
    pub owner: String,
    /// `owner. 3600 IN CERT PKIX 0 0 <base64>`
    pub zone_line: String,
    pub der: Vec<u8>,
}

/// The records for one hosted domain (or every one), for certificates valid at `now`.
pub async fn records(db: &Db, domain_id: Option<i64>, now: i64) -> anyhow::Result<Vec<Published>> {
    let mut out = Vec::new();
    for (address, domain, chain) in store::publishable(db, domain_id, now).await? {
        let Some(leaf) = smime::parse_certificates(chain.as_bytes())?
            .into_iter()
            .next()
        else {
            continue;
        };
        let der = leaf.to_der()?;
        let owner = address.unwrap_or(domain);
        let zone_line = directmail_discovery::cert_records(&owner, &der, TTL)?
            .trim_end()
            .to_owned();
        out.push(Published {
            owner,
            zone_line,
            der,
        });
    }
    Ok(out)
}

/// Answers DNS CERT queries for every hosted certificate on `addr`: binds now (an
/// error names the variable to change), then reloads the records every 10 seconds in the
/// background (new, renewed and removed certificates). Returns the bound address.
pub async fn start(
    db: Db,
    clock: crate::clock::Clock,
    addr: SocketAddr,
) -> anyhow::Result<SocketAddr> {
    async fn load(db: &Db, now: i64) -> anyhow::Result<Records> {
        let mut r = Records::new();
        for p in records(db, None, now).await? {
            r.add_cert(&p.owner, &p.der, TTL)?;
        }
        Ok(r)
    }
    let responder = Responder::start(addr, load(&db, clock.now()).await?)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot answer DNS on {addr}: {e}; choose another DIRECTMAIL_DNS_CERT_ADDR"
            )
        })?;
    let bound = responder.local_addr();
    tracing::info!(addr = %bound, "answering DNS CERT queries for hosted certificates");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        tick.tick().await;
        loop {
            tick.tick().await;
            match load(&db, clock.now()).await {
                Ok(r) => responder.set_records(r),
                Err(e) => tracing::warn!(
                    error = %format!("{e:#}"),
                    "could not reload the DNS CERT records"
                ),
            }
        }
    });
    Ok(bound)
}
