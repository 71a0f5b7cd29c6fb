//! Hosted certificates (with sealed private keys) and trust anchors, per domain.

use sqlx::{AnyConnection, Row as _, any::AnyRow};

use crate::db::Db;

/// What is shown about a certificate: never the key.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CertRow {
    pub id: i64,
    pub domain_id: i64,
    /// The address of an address-bound certificate; `None` when domain-bound.
    pub address: Option<String>,
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub fingerprint: String,
    pub not_before: i64,
    pub not_after: i64,
    /// The certificate and the issuers stored with it (PEM); empty where not read.
    pub chain_pem: String,
}

impl CertRow {
    fn from_row(row: &AnyRow) -> sqlx::Result<CertRow> {
        Ok(CertRow {
            id: row.try_get("id")?,
            domain_id: row.try_get("domain_id")?,
            address: row.try_get("address").unwrap_or(None),
            subject: row.try_get("subject")?,
            issuer: row.try_get("issuer")?,
            serial: row.try_get("serial").unwrap_or_default(),
            fingerprint: row.try_get("fingerprint")?,
            not_before: row.try_get("not_before")?,
            not_after: row.try_get("not_after")?,
            chain_pem: row.try_get("chain_pem").unwrap_or_default(),
        })
    }
}

/// A new hosted certificate; `key_sealed` is already encrypted.
pub struct NewCert<'a> {
    pub domain_id: i64,
    pub address: Option<&'a str>,
    pub subject: &'a str,
    pub issuer: &'a str,
    pub serial: &'a str,
    pub fingerprint: &'a str,
    pub not_before: i64,
    pub not_after: i64,
    pub chain_pem: &'a str,
    pub key_sealed: &'a str,
}

pub async fn insert_cert(conn: &mut AnyConnection, c: NewCert<'_>, now: i64) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "insert into domain_certificates
           (domain_id, address, subject, issuer, serial, fingerprint, not_before, not_after, chain_pem, key_sealed, created_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) returning id",
    )
    .bind(c.domain_id)
    .bind(c.address)
    .bind(c.subject)
    .bind(c.issuer)
    .bind(c.serial)
    .bind(c.fingerprint)
    .bind(c.not_before)
    .bind(c.not_after)
    .bind(c.chain_pem)
    .bind(c.key_sealed)
    .bind(now)
    .fetch_one(conn)
    .await
}

/// Replaces a hosted certificate's stored chain (the same certificate, more issuers).
pub async fn set_chain(conn: &mut AnyConnection, id: i64, chain_pem: &str) -> sqlx::Result<()> {
    sqlx::query("update domain_certificates set chain_pem = $1 where id = $2")
        .bind(chain_pem)
        .bind(id)
        .execute(conn)
        .await
        .map(|_| ())
}

pub async fn certs_of_domain(db: &Db, domain_id: i64) -> sqlx::Result<Vec<CertRow>> {
    let rows = sqlx::query(
        "select id, domain_id, address, subject, issuer, serial, fingerprint, not_before, not_after,
                chain_pem
         from domain_certificates where domain_id = $1 order by address, not_after desc",
    )
    .bind(domain_id)
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(CertRow::from_row).collect()
}

/// The hosted certificates to publish in DNS, valid at `now`: `(address or None for
/// domain-bound, domain name, certificate chain PEM)`, of one domain or of all.
pub async fn publishable(
    db: &Db,
    domain_id: Option<i64>,
    now: i64,
) -> sqlx::Result<Vec<(Option<String>, String, String)>> {
    let rows = sqlx::query(
        "select c.address, d.name, c.chain_pem from domain_certificates c join domains d on d.id = c.domain_id
         where ($1 is null or c.domain_id = $1) and c.not_before <= $2 and c.not_after >= $2
         order by d.name, c.address",
    )
    .bind(domain_id)
    .bind(now)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("address")?,
                r.try_get("name")?,
                r.try_get("chain_pem")?,
            ))
        })
        .collect()
}

pub async fn cert_by_fingerprint(db: &Db, fingerprint: &str) -> sqlx::Result<Option<CertRow>> {
    let row = sqlx::query(
        "select id, domain_id, address, subject, issuer, serial, fingerprint, not_before, not_after,
                chain_pem
         from domain_certificates where fingerprint = $1",
    )
    .bind(fingerprint)
    .fetch_optional(&db.pool)
    .await?;
    row.as_ref().map(CertRow::from_row).transpose()
}

/// The stored chain and sealed key of every certificate of a domain, for signing and
/// decrypting: `(fingerprint, chain_pem, key_sealed)`.
pub async fn key_material(db: &Db, domain_id: i64) -> sqlx::Result<Vec<(String, String, String)>> {
    let rows = sqlx::query(
        "select fingerprint, chain_pem, key_sealed from domain_certificates where domain_id = $1",
    )
    .bind(domain_id)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("fingerprint")?,
                r.try_get("chain_pem")?,
                r.try_get("key_sealed")?,
            ))
        })
        .collect()
}

pub async fn delete_cert(conn: &mut AnyConnection, domain_id: i64, id: i64) -> sqlx::Result<bool> {
    let done = sqlx::query("delete from domain_certificates where id = $1 and domain_id = $2")
        .bind(id)
        .bind(domain_id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// A trust anchor as listed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AnchorRow {
    pub id: i64,
    pub domain_id: i64,
    pub subject: String,
    pub issuer: String,
    pub fingerprint: String,
    pub not_before: i64,
    pub not_after: i64,
}

impl AnchorRow {
    fn from_row(row: &AnyRow) -> sqlx::Result<AnchorRow> {
        Ok(AnchorRow {
            id: row.try_get("id")?,
            domain_id: row.try_get("domain_id")?,
            subject: row.try_get("subject")?,
            issuer: row.try_get("issuer")?,
            fingerprint: row.try_get("fingerprint")?,
            not_before: row.try_get("not_before")?,
            not_after: row.try_get("not_after")?,
        })
    }
}

/// Adds an anchor; false when the domain already has it.
#[allow(clippy::too_many_arguments)]
pub async fn insert_anchor(
    conn: &mut AnyConnection,
    domain_id: i64,
    subject: &str,
    issuer: &str,
    fingerprint: &str,
    not_before: i64,
    not_after: i64,
    cert_pem: &str,
    now: i64,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "insert into trust_anchors (domain_id, subject, issuer, fingerprint, not_before, not_after, cert_pem, created_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8) on conflict (domain_id, fingerprint) do nothing",
    )
    .bind(domain_id)
    .bind(subject)
    .bind(issuer)
    .bind(fingerprint)
    .bind(not_before)
    .bind(not_after)
    .bind(cert_pem)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn anchors_of_domain(db: &Db, domain_id: i64) -> sqlx::Result<Vec<AnchorRow>> {
    let rows = sqlx::query(
        "select id, domain_id, subject, issuer, fingerprint, not_before, not_after
         from trust_anchors where domain_id = $1 order by subject, id",
    )
    .bind(domain_id)
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(AnchorRow::from_row).collect()
}

/// The PEM of every anchor of a domain, for building a trust store.
pub async fn anchor_pems(db: &Db, domain_id: i64) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("select cert_pem from trust_anchors where domain_id = $1")
        .bind(domain_id)
        .fetch_all(&db.pool)
        .await
}

pub async fn delete_anchor(
    conn: &mut AnyConnection,
    domain_id: i64,
    id: i64,
) -> sqlx::Result<Option<String>> {
    let fingerprint: Option<String> = sqlx::query_scalar(
        "delete from trust_anchors where id = $1 and domain_id = $2 returning fingerprint",
    )
    .bind(id)
    .bind(domain_id)
    .fetch_optional(conn)
    .await?;
    Ok(fingerprint)
}
