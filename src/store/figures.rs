//! What the operator's figures read from the database when they are asked for (the
//! metrics scrape and the console's figures page): queue depths and when hosted
//! certificates and trust anchors end. Counts only, never a message's content.

use sqlx::{AnyConnection, Row as _};

use crate::db::Db;

/// Outbound queue entries by state, without `sent` (delivered entries are history,
/// and counting them all at every scrape would grow with the table).
pub async fn outbound_queue(db: &Db) -> sqlx::Result<Vec<(String, i64)>> {
    counts(
        db,
        "select state, count(*) from outbound_queue where state in ('queued', 'sending', 'failed') group by state",
    )
    .await
}

/// Received messages not processed yet, by state (`received`, `processing`).
pub async fn inbound_queue(db: &Db) -> sqlx::Result<Vec<(String, i64)>> {
    counts(
        db,
        "select state, count(*) from inbound_messages where state in ('received', 'processing') group by state",
    )
    .await
}

async fn counts(db: &Db, sql: &str) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query(sql)
        .fetch_all(&db.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// What a certificate whose end is watched is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateKind {
    /// A hosted domain's (or address's) certificate with its private key.
    Hosted,
    /// A trust anchor added to one hosted domain.
    Anchor,
    /// An anchor of a trust bundle.
    BundleAnchor,
}

impl CertificateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CertificateKind::Hosted => "hosted",
            CertificateKind::Anchor => "anchor",
            CertificateKind::BundleAnchor => "bundle_anchor",
        }
    }
}

/// A hosted certificate or an anchor, and when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateEnd {
    pub kind: CertificateKind,
    pub subject: String,
    /// SHA-256, as stored.
    pub fingerprint: String,
    pub not_after: i64,
    /// The hosted domain (hosted certificates and domain anchors).
    pub domain: Option<(i64, Option<i64>, String)>,
    /// The trust bundle (bundle anchors): its id and name.
    pub bundle: Option<(i64, String)>,
}

/// Every hosted certificate, domain anchor and trust-bundle anchor, soonest end first.
pub async fn certificate_ends(db: &Db) -> sqlx::Result<Vec<CertificateEnd>> {
    let hosted = sqlx::query(
        "select 'hosted' as kind, c.subject, c.fingerprint, c.not_after, d.id, d.org_id, d.name
           from domain_certificates c join domains d on d.id = c.domain_id
         union all
         select 'anchor', a.subject, a.fingerprint, a.not_after, d.id, d.org_id, d.name
           from trust_anchors a join domains d on d.id = a.domain_id",
    )
    .fetch_all(&db.pool)
    .await?;
    let mut ends = hosted
        .iter()
        .map(|r| {
            let kind: String = r.try_get(0)?;
            Ok(CertificateEnd {
                kind: if kind == "anchor" {
                    CertificateKind::Anchor
                } else {
                    CertificateKind::Hosted
                },
                subject: r.try_get(1)?,
                fingerprint: r.try_get(2)?,
                not_after: r.try_get(3)?,
                domain: Some((r.try_get(4)?, r.try_get(5)?, r.try_get(6)?)),
                bundle: None,
            })
        })
        .collect::<sqlx::Result<Vec<_>>>()?;
    let bundled = sqlx::query(
        "select a.subject, a.fingerprint, a.not_after, b.id, b.name
           from trust_bundle_anchors a join trust_bundles b on b.id = a.bundle_id",
    )
    .fetch_all(&db.pool)
    .await?;
    for r in &bundled {
        ends.push(CertificateEnd {
            kind: CertificateKind::BundleAnchor,
            subject: r.try_get(0)?,
            fingerprint: r.try_get(1)?,
            not_after: r.try_get(2)?,
            domain: None,
            bundle: Some((r.try_get(3)?, r.try_get(4)?)),
        });
    }
    ends.sort_by(|a, b| (a.not_after, &a.subject).cmp(&(b.not_after, &b.subject)));
    Ok(ends)
}

/// When an outbound message was sent (queued by its sender).
pub async fn sent_at(conn: &mut AnyConnection, outbound_id: i64) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("select created_at from outbound_messages where id = $1")
        .bind(outbound_id)
        .fetch_optional(conn)
        .await
}
