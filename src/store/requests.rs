//! Records requested from other practices by Direct (migration 0034,
//! `record_requests`): written when the request is sent, answered when a reply with
//! documents arrives in the same mailbox from the practice asked, reminded and
//! cancelled by the mailbox's members. The rules are in [`crate::requests`].

use sqlx::{AnyConnection, Row as _, any::AnyRow};

use crate::db::Db;
use crate::filing::Filing;

/// A request as listed and shown.
#[derive(Debug, Clone)]
pub struct RequestRow {
    pub id: i64,
    pub mailbox_id: i64,
    pub user_id: i64,
    pub sent_message_id: Option<i64>,
    /// The request's Message-ID (without angle brackets), also its Context id.
    pub message_key: String,
    pub recipient: String,
    pub patient: String,
    pub needed: String,
    pub date_from: String,
    pub date_to: String,
    pub purpose: String,
    pub urgency: String,
    /// `open`, `answered` or `cancelled`.
    pub status: String,
    pub created_at: i64,
    pub answered_at: Option<i64>,
    pub answer_message_id: Option<i64>,
    pub cancelled_at: Option<i64>,
    pub reminders: i64,
    pub reminded_at: Option<i64>,
}

const COLUMNS: &str =
    "id, mailbox_id, user_id, sent_message_id, message_key, recipient, patient, needed,
    date_from, date_to, purpose, urgency, status, created_at, answered_at, answer_message_id,
    cancelled_at, reminders, reminded_at";

impl RequestRow {
    fn from_row(row: &AnyRow) -> sqlx::Result<RequestRow> {
        Ok(RequestRow {
            id: row.try_get("id")?,
            mailbox_id: row.try_get("mailbox_id")?,
            user_id: row.try_get("user_id")?,
            sent_message_id: row.try_get("sent_message_id")?,
            message_key: row.try_get("message_key")?,
            recipient: row.try_get("recipient")?,
            patient: row.try_get("patient")?,
            needed: row.try_get("needed")?,
            date_from: row.try_get("date_from")?,
            date_to: row.try_get("date_to")?,
            purpose: row.try_get("purpose")?,
            urgency: row.try_get("urgency")?,
            status: row.try_get("status")?,
            created_at: row.try_get("created_at")?,
            answered_at: row.try_get("answered_at")?,
            answer_message_id: row.try_get("answer_message_id")?,
            cancelled_at: row.try_get("cancelled_at")?,
            reminders: row.try_get("reminders")?,
            reminded_at: row.try_get("reminded_at")?,
        })
    }
}

/// A request being recorded as it is sent.
pub struct NewRequest<'a> {
    pub mailbox_id: i64,
    pub user_id: i64,
    pub outbound_id: i64,
    pub sent_message_id: Option<i64>,
    pub message_key: &'a str,
    pub recipient: &'a str,
    pub patient: &'a str,
    pub needed: &'a str,
    pub date_from: &'a str,
    pub date_to: &'a str,
    pub purpose: &'a str,
    pub urgency: &'a str,
}

pub async fn insert(conn: &mut AnyConnection, r: NewRequest<'_>, now: i64) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "insert into record_requests (mailbox_id, user_id, outbound_id, sent_message_id, message_key,
                                      recipient, patient, needed, date_from, date_to, purpose, urgency,
                                      status, created_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'open', $13) returning id",
    )
    .bind(r.mailbox_id)
    .bind(r.user_id)
    .bind(r.outbound_id)
    .bind(r.sent_message_id)
    .bind(r.message_key)
    .bind(r.recipient)
    .bind(r.patient)
    .bind(r.needed)
    .bind(r.date_from)
    .bind(r.date_to)
    .bind(r.purpose)
    .bind(r.urgency)
    .bind(now)
    .fetch_one(conn)
    .await
}

pub async fn get(db: &Db, id: i64) -> sqlx::Result<Option<RequestRow>> {
    let row = sqlx::query(&format!(
        "select {COLUMNS} from record_requests where id = $1"
    ))
    .bind(id)
    .fetch_optional(&db.pool)
    .await?;
    row.as_ref().map(RequestRow::from_row).transpose()
}

/// The request whose Sent copy is the message `id`.
pub async fn by_sent_copy<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    id: i64,
) -> sqlx::Result<Option<RequestRow>> {
    let row = sqlx::query(&format!(
        "select {COLUMNS} from record_requests where sent_message_id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await?;
    row.as_ref().map(RequestRow::from_row).transpose()
}

/// Which requests a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Open and not yet overdue.
    Open,
    /// Open, and sent before the overdue cut-off.
    Overdue,
    Answered,
    Cancelled,
}

/// A mailbox's requests matching `filter`, newest first, `limit` of them, with ids
/// below `before` when paging. `overdue_before`: requests sent before this time
/// (Unix seconds) and still open are overdue.
pub async fn list(
    db: &Db,
    mailbox_id: i64,
    filter: Filter,
    overdue_before: i64,
    before: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<RequestRow>> {
    let condition = match filter {
        Filter::Open => "status = 'open' and created_at >= $3",
        Filter::Overdue => "status = 'open' and created_at < $3",
        Filter::Answered => "status = 'answered' and $3 = $3",
        Filter::Cancelled => "status = 'cancelled' and $3 = $3",
    };
    let rows = sqlx::query(&format!(
        "select {COLUMNS} from record_requests
         where mailbox_id = $1 and id < $2 and {condition}
         order by id desc limit $4"
    ))
    .bind(mailbox_id)
    .bind(before.unwrap_or(i64::MAX))
    .bind(overdue_before)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(RequestRow::from_row).collect()
}

/// How many of a mailbox's requests each filter shows: open, overdue, answered,
/// cancelled.
pub async fn counts(db: &Db, mailbox_id: i64, overdue_before: i64) -> sqlx::Result<[i64; 4]> {
    let row = sqlx::query(
        "select
            coalesce(sum(case when status = 'open' and created_at >= $2 then 1 else 0 end), 0) as open,
            coalesce(sum(case when status = 'open' and created_at < $2 then 1 else 0 end), 0) as overdue,
            coalesce(sum(case when status = 'answered' then 1 else 0 end), 0) as answered,
            coalesce(sum(case when status = 'cancelled' then 1 else 0 end), 0) as cancelled
         from record_requests where mailbox_id = $1",
    )
    .bind(mailbox_id)
    .bind(overdue_before)
    .fetch_one(&db.pool)
    .await?;
    Ok([
        row.try_get("open")?,
        row.try_get("overdue")?,
        row.try_get("answered")?,
        row.try_get("cancelled")?,
    ])
}

/// Marks an open request cancelled; false when it was not open.
pub async fn cancel(conn: &mut AnyConnection, id: i64, now: i64) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "update record_requests set status = 'cancelled', cancelled_at = $1
         where id = $2 and status = 'open'",
    )
    .bind(now)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Counts a reminder sent for an open request; false when it was not open.
pub async fn reminded(conn: &mut AnyConnection, id: i64, now: i64) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "update record_requests set reminders = reminders + 1, reminded_at = $1
         where id = $2 and status = 'open'",
    )
    .bind(now)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Called as a message is delivered into `mailbox_id`: when it carries documents,
/// comes from the practice a request of this mailbox was sent to, and answers that
/// request (its In-Reply-To or References names the request's Message-ID, or its
/// Direct Context id is the request's), the open request is answered by it. Returns
/// how many requests it answered.
pub async fn answered_by(
    conn: &mut AnyConnection,
    mailbox_id: i64,
    message_id: i64,
    from_addr: &str,
    filing: &Filing,
    now: i64,
) -> sqlx::Result<u64> {
    if filing.files == 0 {
        return Ok(0);
    }
    let mut keys: Vec<&str> = filing.replies_to.iter().map(String::as_str).collect();
    if !filing.context_id.is_empty() {
        keys.push(&filing.context_id);
    }
    if keys.is_empty() {
        return Ok(0);
    }
    let sql = format!(
        "update record_requests set status = 'answered', answered_at = $1, answer_message_id = $2
         where mailbox_id = $3 and status = 'open' and lower(recipient) = lower($4)
           and message_key in ({})",
        super::messages::placeholders(5, keys.len())
    );
    let mut q = sqlx::query(&sql)
        .bind(now)
        .bind(message_id)
        .bind(mailbox_id)
        .bind(from_addr.trim());
    for key in keys {
        q = q.bind(key);
    }
    Ok(q.execute(conn).await?.rows_affected())
}
