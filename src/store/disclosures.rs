//! Disclosures of restricted records (migration 0023): one row per sensitive record a
//! user sent, for the organization's report (docs/sensitive-records.md, "The
//! disclosures report"). Rows outlive the messages they describe.

use sqlx::{AnyConnection, Row as _, any::AnyRow};

use crate::db::Db;

/// A disclosure as recorded when the message was sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Disclosure {
    pub id: i64,
    pub org_id: Option<i64>,
    pub mailbox_id: Option<i64>,
    pub mailbox_address: String,
    pub user_id: Option<i64>,
    pub user_name: String,
    pub outbound_id: Option<i64>,
    pub sent_at: i64,
    /// `part2`, `mental_health` or `restricted` (`crate::sensitivity::Law`).
    pub law: String,
    pub patient: String,
    /// Comma separated.
    pub recipients: String,
    pub purpose: String,
    pub consent: String,
}

impl Disclosure {
    fn from_row(row: &AnyRow) -> sqlx::Result<Disclosure> {
        Ok(Disclosure {
            id: row.try_get("id")?,
            org_id: row.try_get("org_id")?,
            mailbox_id: row.try_get("mailbox_id")?,
            mailbox_address: row.try_get("mailbox_address")?,
            user_id: row.try_get("user_id")?,
            user_name: row.try_get("user_name")?,
            outbound_id: row.try_get("outbound_id")?,
            sent_at: row.try_get("sent_at")?,
            law: row.try_get("law")?,
            patient: row.try_get("patient")?,
            recipients: row.try_get("recipients")?,
            purpose: row.try_get("purpose")?,
            consent: row.try_get("consent")?,
        })
    }
}

/// Records a disclosure (`id` is ignored). Returns its id.
pub async fn insert(conn: &mut AnyConnection, d: &Disclosure) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "insert into disclosures (org_id, mailbox_id, mailbox_address, user_id, user_name,
                outbound_id, sent_at, law, patient, recipients, purpose, consent)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) returning id",
    )
    .bind(d.org_id)
    .bind(d.mailbox_id)
    .bind(&d.mailbox_address)
    .bind(d.user_id)
    .bind(&d.user_name)
    .bind(d.outbound_id)
    .bind(d.sent_at)
    .bind(&d.law)
    .bind(&d.patient)
    .bind(&d.recipients)
    .bind(&d.purpose)
    .bind(&d.consent)
    .fetch_one(conn)
    .await
}

/// Which disclosures a report asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Sent at or after this time (Unix seconds).
    pub from: i64,
    /// Sent before this time (Unix seconds).
    pub to: i64,
    /// Part of the patient as named, case ignored (ASCII letters only on SQLite,
    /// whose `lower` folds no other); empty for every patient.
    pub patient: String,
}

/// The organization's disclosures that `filter` asks for, newest first, at most
/// `limit`, older than the row `before` (its `sent_at` and `id`) when paging.
pub async fn list(
    db: &Db,
    org_id: i64,
    filter: &Filter,
    before: Option<(i64, i64)>,
    limit: i64,
) -> sqlx::Result<Vec<Disclosure>> {
    // one statement for every case: an empty patient is the pattern `%%`, which
    // matches every row, and the first page is "before" a row after all others
    let (at, id) = before.unwrap_or((i64::MAX, i64::MAX));
    let rows = sqlx::query(
        "select * from disclosures
          where org_id = $1 and sent_at >= $2 and sent_at < $3
            and lower(patient) like $4
            and (sent_at < $5 or (sent_at = $5 and id < $6))
          order by sent_at desc, id desc limit $7",
    )
    .bind(org_id)
    .bind(filter.from)
    .bind(filter.to)
    .bind(super::orgs::like_pattern(&filter.patient))
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(Disclosure::from_row).collect()
}

/// One disclosure of the organization.
pub async fn get(db: &Db, org_id: i64, id: i64) -> sqlx::Result<Option<Disclosure>> {
    let row = sqlx::query("select * from disclosures where org_id = $1 and id = $2")
        .bind(org_id)
        .bind(id)
        .fetch_optional(&db.pool)
        .await?;
    row.as_ref().map(Disclosure::from_row).transpose()
}
