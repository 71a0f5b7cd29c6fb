//! Outbound messages, their delivery queue (one entry per recipient domain) and the
//! per-recipient delivery status the sender sees.

use sqlx::{AnyConnection, Row as _};

use crate::db::{Backend, Db};

pub struct NewOutbound<'a> {
    pub mailbox_id: Option<i64>,
    pub kind: &'a str,
    pub from_addr: &'a str,
    pub message_id: &'a str,
    pub subject: &'a str,
    pub raw: &'a [u8],
    /// The certificate to encrypt to, for a notice to a sender this HISP does not
    /// trust (otherwise recipients' certificates are looked up).
    pub recipient_cert: Option<&'a str>,
}

/// Stores a message and queues it for each recipient domain, with a `queued`
/// status per recipient, in the caller's transaction.
pub async fn insert(
    conn: &mut AnyConnection,
    m: NewOutbound<'_>,
    recipients: &[String],
    now: i64,
) -> sqlx::Result<i64> {
    let ids = insert_all(conn, &[(m, recipients)], now).await?;
    Ok(ids[0])
}

/// [`insert`] for several messages, each with its recipients, in three statements
/// whatever their number (each a round trip on PostgreSQL); their ids, in order.
pub async fn insert_all(
    conn: &mut AnyConnection,
    messages: &[(NewOutbound<'_>, &[String])],
    now: i64,
) -> sqlx::Result<Vec<i64>> {
    if messages.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "insert into outbound_messages (mailbox_id, kind, from_addr, message_id, subject, raw, created_at, recipient_cert)
         values {} returning id",
        values(1, messages.len(), 8, "")
    );
    let mut q = sqlx::query_scalar(&sql);
    for (m, _) in messages {
        q = q
            .bind(m.mailbox_id)
            .bind(m.kind)
            .bind(m.from_addr)
            .bind(m.message_id)
            .bind(m.subject)
            .bind(m.raw.to_vec())
            .bind(now)
            .bind(m.recipient_cert);
    }
    let mut ids: Vec<i64> = q.fetch_all(&mut *conn).await?;
    // the rows of one insert get increasing ids in the order they are written
    // (SQLite's next rowid, PostgreSQL's sequence), whatever order they come back in
    ids.sort_unstable();
    // one queue entry per message and recipient domain, one status per recipient
    let mut queued: Vec<(i64, String, String)> = Vec::new();
    let mut statuses: Vec<(i64, String)> = Vec::new();
    for (id, (_, recipients)) in ids.iter().zip(messages) {
        for (domain, list) in by_domain(recipients) {
            statuses.extend(list.iter().map(|r| (*id, r.clone())));
            queued.push((*id, domain, list.join("\n")));
        }
    }
    for rows in queued.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "insert into outbound_queue (outbound_id, domain, recipients, state, next_attempt_at, created_at, updated_at)
             values {}",
            values(2, rows.len(), 3, ", 'queued', $1, $1, $1")
        );
        let mut q = sqlx::query(&sql).bind(now);
        for (id, domain, recipients) in rows {
            q = q.bind(id).bind(domain).bind(recipients);
        }
        q.execute(&mut *conn).await?;
    }
    for rows in statuses.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "insert into delivery_status (outbound_id, recipient, state, updated_at)
             values {}",
            values(2, rows.len(), 2, ", 'queued', $1")
        );
        let mut q = sqlx::query(&sql).bind(now);
        for (id, recipient) in rows {
            q = q.bind(id).bind(recipient);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(ids)
}

/// Rows per multi-row insert: few enough parameters for either database.
const ROWS_PER_INSERT: usize = 1000;

/// `rows` rows of `columns` parameters numbered from `first`, each followed by
/// `tail`: `($2, $3, 'queued'), ($4, $5, 'queued')`.
fn values(first: usize, rows: usize, columns: usize, tail: &str) -> String {
    (0..rows)
        .map(|r| {
            let params = super::messages::placeholders(first + r * columns, columns);
            format!("({params}{tail})")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Recipients, lowercased and without repeats, by domain, in the order first named.
fn by_domain(recipients: &[String]) -> Vec<(String, Vec<String>)> {
    let mut domains: Vec<(String, Vec<String>)> = Vec::new();
    for r in recipients {
        let r = r.to_ascii_lowercase();
        let domain = r
            .rsplit_once('@')
            .map(|(_, d)| d.to_owned())
            .unwrap_or_default();
        match domains.iter_mut().find(|(d, _)| *d == domain) {
            Some((_, list)) if !list.contains(&r) => list.push(r),
            Some(_) => {}
            None => domains.push((domain, vec![r])),
        }
    }
    domains
}

/// Records the API client's `Idempotency-Key` of a message just inserted (in the
/// caller's transaction); fails when the mailbox already sent a message with it.
pub async fn set_idempotency_key(conn: &mut AnyConnection, id: i64, key: &str) -> sqlx::Result<()> {
    sqlx::query("update outbound_messages set idempotency_key = $1 where id = $2")
        .bind(key)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The message `mailbox_id` sent through the API with `Idempotency-Key` `key`.
pub async fn by_idempotency_key(db: &Db, mailbox_id: i64, key: &str) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "select id from outbound_messages where mailbox_id = $1 and idempotency_key = $2",
    )
    .bind(mailbox_id)
    .bind(key)
    .fetch_optional(&db.pool)
    .await
}

/// A queue entry being delivered, with its message.
#[derive(Debug, Clone)]
pub struct Job {
    pub queue_id: i64,
    pub outbound_id: i64,
    pub kind: String,
    pub domain: String,
    pub recipients: Vec<String>,
    pub from_addr: String,
    pub raw: Vec<u8>,
    pub attempts: i64,
    pub created_at: i64,
    pub recipient_cert: Option<String>,
}

/// Claims up to `limit` entries due for delivery (several instances share the
/// queue; on PostgreSQL with `SKIP LOCKED`), for `lease` seconds
/// ([`crate::leases`]: the worker's instance renews it).
pub async fn claim_next(db: &Db, now: i64, lease: i64, limit: i64) -> sqlx::Result<Vec<Job>> {
    let turn = db.write_turn().await;
    let conn = &mut *db.redoable().acquire().await?;
    let claimed = claim_on(conn, db.backend, now, lease, limit).await?;
    drop(turn);
    jobs(db, &claimed).await
}

/// The jobs of claimed queue entries, by queue id, in one query.
pub async fn jobs(db: &Db, queue_ids: &[i64]) -> sqlx::Result<Vec<Job>> {
    if queue_ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "select q.id, q.outbound_id, q.domain, q.recipients, q.attempts, q.created_at, m.kind, m.from_addr, m.raw,
                m.recipient_cert
         from outbound_queue q join outbound_messages m on m.id = q.outbound_id
         where q.id in ({}) order by q.id",
        super::messages::placeholders(1, queue_ids.len())
    );
    let mut query = sqlx::query(&sql);
    for id in queue_ids {
        query = query.bind(*id);
    }
    let rows = query.fetch_all(&db.pool).await?;
    rows.iter()
        .map(|row| {
            let recipients: String = row.try_get("recipients")?;
            Ok(Job {
                queue_id: row.try_get("id")?,
                outbound_id: row.try_get("outbound_id")?,
                kind: row.try_get("kind")?,
                domain: row.try_get("domain")?,
                recipients: recipients.lines().map(str::to_owned).collect(),
                from_addr: row.try_get("from_addr")?,
                raw: row.try_get("raw")?,
                attempts: row.try_get("attempts")?,
                created_at: row.try_get("created_at")?,
                recipient_cert: row.try_get("recipient_cert")?,
            })
        })
        .collect()
}

/// Claims up to `limit` entries due on `conn` (in the caller's transaction, when it
/// has one, so that a worker can record its outcomes and claim its next entries in
/// a single write); their queue ids, the longest due first.
pub async fn claim_on(
    conn: &mut AnyConnection,
    backend: Backend,
    now: i64,
    lease: i64,
    limit: i64,
) -> sqlx::Result<Vec<i64>> {
    // the longest due entry, and more due entries for the same domain: a batch is
    // recorded when all of it is done, so a slow peer holds up only its own mail
    const DUE: &str = "((state = 'queued' and next_attempt_at <= $1) or (state = 'sending' and claimed_until < $1))";
    let lock = match backend {
        Backend::Postgres => "for update skip locked",
        Backend::Sqlite => "",
    };
    let pick = format!(
        "select id from outbound_queue
         where {DUE} and domain = (select domain from outbound_queue where {DUE}
                                   order by next_attempt_at, id limit 1 {lock})
         order by next_attempt_at, id limit $3 {lock}"
    );
    let mut ids: Vec<i64> = sqlx::query_scalar(&format!(
        "update outbound_queue set state = 'sending', claimed_until = $2, attempts = attempts + 1, updated_at = $1
         where id in ({pick}) returning id"
    ))
    .bind(now)
    .bind(now + lease)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    ids.sort_unstable();
    Ok(ids)
}

/// The claim a job was delivered under is still its entry's (being sent, with the
/// attempt number it was claimed with): outcomes are recorded only then, so that an
/// entry whose lease lapsed and was claimed again gets one outcome, the new claim's.
const STILL_CLAIMED: &str = "state = 'sending' and attempts =";

/// Marks a queue entry sent (and its recipients `sent`); false, with nothing
/// written, when the job's claim is no longer the entry's.
pub async fn mark_sent(conn: &mut AnyConnection, job: &Job, now: i64) -> sqlx::Result<bool> {
    let done = sqlx::query(&format!(
        "update outbound_queue set state = 'sent', last_error = null, updated_at = $1
         where id = $2 and {STILL_CLAIMED} $3"
    ))
    .bind(now)
    .bind(job.queue_id)
    .bind(job.attempts)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    // the usual move, queued to sent, for all of them in one statement; [`advance`]
    // for any other (a notification that came back before this was recorded)
    let sql = format!(
        "update delivery_status set state = 'sent', detail = '', updated_at = $1
         where outbound_id = $2 and state = 'queued' and recipient in ({}) returning recipient",
        super::messages::placeholders(3, job.recipients.len())
    );
    let mut q = sqlx::query_scalar(&sql).bind(now).bind(job.outbound_id);
    for r in &job.recipients {
        q = q.bind(r);
    }
    let moved: Vec<String> = q.fetch_all(&mut *conn).await?;
    for r in &job.recipients {
        if moved.contains(r) {
            super::webhooks::status_changed(conn, job.outbound_id, "sent", now).await?;
        } else {
            advance(conn, job.outbound_id, r, "sent", "", now).await?;
        }
    }
    Ok(true)
}

/// Schedules another attempt after a temporary failure; false, with nothing
/// written, when the job's claim is no longer the entry's.
pub async fn retry_later(
    conn: &mut AnyConnection,
    job: &Job,
    error: &str,
    at: i64,
    now: i64,
) -> sqlx::Result<bool> {
    let done = sqlx::query(&format!(
        "update outbound_queue set state = 'queued', next_attempt_at = $1, last_error = $2, updated_at = $3
         where id = $4 and {STILL_CLAIMED} $5"
    ))
    .bind(at)
    .bind(error)
    .bind(now)
    .bind(job.queue_id)
    .bind(job.attempts)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives up on a queue entry: its recipients fail with `reason`; false, with
/// nothing written, when the job's claim is no longer the entry's.
pub async fn mark_failed(
    conn: &mut AnyConnection,
    job: &Job,
    reason: &str,
    now: i64,
) -> sqlx::Result<bool> {
    let done = sqlx::query(&format!(
        "update outbound_queue set state = 'failed', last_error = $1, updated_at = $2
         where id = $3 and {STILL_CLAIMED} $4"
    ))
    .bind(reason)
    .bind(now)
    .bind(job.queue_id)
    .bind(job.attempts)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    for r in &job.recipients {
        advance(conn, job.outbound_id, r, "failed", reason, now).await?;
    }
    Ok(true)
}

/// Moves one recipient's status forward: queued → sent → processed → dispatched,
/// or to failed. A final state (dispatched, failed) never changes again; a later
/// notification is only noted. Returns the state it moved from, `None` when it did
/// not move.
pub async fn advance(
    conn: &mut AnyConnection,
    outbound_id: i64,
    recipient: &str,
    state: &str,
    detail: &str,
    now: i64,
) -> sqlx::Result<Option<String>> {
    let rank = |s: &str| match s {
        "queued" => 0,
        "sent" => 1,
        "processed" => 2,
        "dispatched" | "failed" => 3,
        _ => -1,
    };
    // A write first (touching the row), so that on SQLite the transaction holds the
    // write lock before it reads: a read-then-write transaction fails at once
    // (SQLITE_BUSY_SNAPSHOT) when another connection wrote in between.
    let current: Option<String> = sqlx::query_scalar(
        "update delivery_status set updated_at = updated_at where outbound_id = $1 and recipient = $2 returning state",
    )
    .bind(outbound_id)
    .bind(recipient)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(current) = current else {
        return Ok(None);
    };
    if rank(state) <= rank(&current) || rank(&current) == 3 {
        sqlx::query(
            "update delivery_status set detail = $1, updated_at = $2 where outbound_id = $3 and recipient = $4",
        )
        .bind(format!("later {state} notification ignored"))
        .bind(now)
        .bind(outbound_id)
        .bind(recipient)
        .execute(conn)
        .await?;
        return Ok(None);
    }
    sqlx::query(
        "update delivery_status set state = $1, detail = $2, updated_at = $3 where outbound_id = $4 and recipient = $5",
    )
    .bind(state)
    .bind(detail)
    .bind(now)
    .bind(outbound_id)
    .bind(recipient)
    .execute(&mut *conn)
    .await?;
    if state == "failed" {
        failure_notice(&mut *conn, outbound_id, recipient, detail, now).await?;
    }
    // the EHRs' webhooks hear of it in the same transaction (ids and the status only)
    super::webhooks::status_changed(conn, outbound_id, state, now).await?;
    Ok(Some(current))
}

/// Puts a plain-language notice in the sender's inbox: which message did not reach
/// whom, why, and that it is kept in Sent to edit and send again.
async fn failure_notice(
    conn: &mut AnyConnection,
    outbound_id: i64,
    recipient: &str,
    reason: &str,
    now: i64,
) -> sqlx::Result<()> {
    let row = sqlx::query(
        "select mailbox_id, kind, subject, from_addr from outbound_messages where id = $1",
    )
    .bind(outbound_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(());
    };
    let kind: String = row.try_get("kind")?;
    let mailbox_id: Option<i64> = row.try_get("mailbox_id")?;
    let (Some(mailbox_id), "message") = (mailbox_id, kind.as_str()) else {
        // notifications that fail are not reported to anyone
        return Ok(());
    };
    let subject: String = row.try_get("subject")?;
    let from_addr: String = row.try_get("from_addr")?;
    let domain = from_addr
        .rsplit_once('@')
        .map(|(_, d)| d)
        .unwrap_or("localhost");
    let notice_subject = format!("Not delivered: {subject}");
    let body = format!(
        "Your message \"{subject}\" could not be delivered to {recipient}.\r\n\r\nWhy: {reason}\r\n\r\nThe message is kept in your Sent folder; you can correct it and send it again.\r\n"
    );
    let raw = format!(
        "From: directmail <postmaster@{domain}>\r\nTo: <{from_addr}>\r\nSubject: {}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}",
        notice_subject
            .chars()
            .filter(|c| !c.is_control())
            .collect::<String>()
    );
    let id: i64 = sqlx::query_scalar(
        "insert into messages (mailbox_id, folder, from_addr, subject, received_at, trust_code, trust_sentence, revocation)
         values ($1, 'inbox', $2, $3, $4, 'notice', 'A notice from your HISP about a message you sent.', 'not-applicable')
         returning id",
    )
    .bind(mailbox_id)
    .bind(format!("postmaster@{domain}"))
    .bind(&notice_subject)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    super::messages::store_raw(conn, id, raw.as_bytes()).await
}

/// Fails every recipient still waiting, after `timeout` seconds, for the processed
/// notification of a message (Implementation Guide: the sender learns of a lost
/// message). Returns how many recipients failed.
pub async fn expire_waiting(db: &Db, timeout: i64, now: i64) -> sqlx::Result<usize> {
    let rows = sqlx::query(
        "select s.outbound_id, s.recipient from delivery_status s join outbound_messages m on m.id = s.outbound_id
         where s.state = 'sent' and m.kind = 'message' and s.updated_at < $1 limit 500",
    )
    .bind(now - timeout)
    .fetch_all(&db.pool)
    .await?;
    let mut failed = 0;
    for row in rows {
        let outbound_id: i64 = row.try_get("outbound_id")?;
        let recipient: String = row.try_get("recipient")?;
        let mut tx = db.begin().await?;
        let reason = format!(
            "no delivery notification arrived within {} minutes, so the recipient's system may not have accepted it. Ask the recipient, or send it again.",
            timeout / 60
        );
        let moved = advance(&mut tx, outbound_id, &recipient, "failed", &reason, now).await?;
        if moved.is_some() {
            failed += 1;
        }
        tx.commit().await?;
    }
    Ok(failed)
}

/// The outbound message with this Message-ID (for matching notifications).
pub async fn by_message_id(db: &Db, message_id: &str) -> sqlx::Result<Option<(i64, Option<i64>)>> {
    let row = sqlx::query(
        "select id, mailbox_id from outbound_messages where message_id = $1 and kind = 'message'",
    )
    .bind(
        message_id
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>'),
    )
    .fetch_optional(&db.pool)
    .await?;
    row.map(|r| Ok((r.try_get("id")?, r.try_get("mailbox_id")?)))
        .transpose()
}

/// Per-recipient status of a message: `(recipient, state, detail)`.
pub async fn statuses(db: &Db, outbound_id: i64) -> sqlx::Result<Vec<(String, String, String)>> {
    Ok(status_lines(db, outbound_id)
        .await?
        .into_iter()
        .map(|s| (s.recipient, s.state, s.detail))
        .collect())
}

/// One recipient's delivery, with when it last changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusLine {
    pub recipient: String,
    /// `queued`, `sent`, `processed`, `dispatched` or `failed`.
    pub state: String,
    pub detail: String,
    pub updated_at: i64,
}

/// Each recipient's delivery of an outbound message, by recipient.
pub async fn status_lines(db: &Db, outbound_id: i64) -> sqlx::Result<Vec<StatusLine>> {
    let rows = sqlx::query(
        "select recipient, state, detail, updated_at from delivery_status
          where outbound_id = $1 order by recipient",
    )
    .bind(outbound_id)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(StatusLine {
                recipient: r.try_get("recipient")?,
                state: r.try_get("state")?,
                detail: r.try_get("detail")?,
                updated_at: r.try_get("updated_at")?,
            })
        })
        .collect()
}

/// Remembers a verified signer's certificate, to encrypt notifications to it.
pub async fn learn_certificate(
    conn: &mut AnyConnection,
    address: &str,
    cert_pem: &str,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into known_certificates (address, cert_pem, learned_at) values ($1, $2, $3)
         on conflict (address) do update set cert_pem = $2, learned_at = $3",
    )
    .bind(address.to_ascii_lowercase())
    .bind(cert_pem)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn known_certificate(db: &Db, address: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("select cert_pem from known_certificates where address = $1")
        .bind(address.to_ascii_lowercase())
        .fetch_optional(&db.pool)
        .await
}

/// A queue entry as the operator sees it (no content, no subject).
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueueRow {
    pub id: i64,
    pub from_addr: String,
    pub domain: String,
    pub recipients: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: String,
    pub updated_at: i64,
    /// When it was queued.
    pub created_at: i64,
    /// A delivery notification (MDN) this HISP sends back, not mail between people.
    pub notification: bool,
}

/// Entries that are `pending` (queued or sending), `failed` or `sent`, newest first.
pub async fn queue(
    db: &Db,
    filter: &str,
    before_id: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<QueueRow>> {
    let states: &[&str] = match filter {
        "failed" => &["failed"],
        "sent" => &["sent"],
        _ => &["queued", "sending"],
    };
    let rows = sqlx::query(
        "select q.id, m.from_addr, q.domain, q.recipients, q.state, q.attempts, q.next_attempt_at, q.last_error, q.updated_at,
                q.created_at, m.kind
         from outbound_queue q join outbound_messages m on m.id = q.outbound_id
         where (q.state = $1 or q.state = $2) and ($3 is null or q.id < $3)
         order by q.id desc limit $4",
    )
    .bind(states[0])
    .bind(states.get(1).copied().unwrap_or(states[0]))
    .bind(before_id)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            let recipients: String = r.try_get("recipients")?;
            Ok(QueueRow {
                id: r.try_get("id")?,
                from_addr: r.try_get("from_addr")?,
                domain: r.try_get("domain")?,
                recipients: recipients.replace('\n', ", "),
                state: r.try_get("state")?,
                attempts: r.try_get("attempts")?,
                next_attempt_at: r.try_get("next_attempt_at")?,
                last_error: r
                    .try_get::<Option<String>, _>("last_error")?
                    .unwrap_or_default(),
                updated_at: r.try_get("updated_at")?,
                created_at: r.try_get("created_at")?,
                notification: r.try_get::<String, _>("kind")? == "mdn",
            })
        })
        .collect()
}

/// Makes a waiting entry due now. (A failed recipient stays failed: the sender was
/// told and can send the message again from Sent.)
pub async fn retry_now(conn: &mut AnyConnection, id: i64, now: i64) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "update outbound_queue set next_attempt_at = $1, updated_at = $1 where id = $2 and state = 'queued'",
    )
    .bind(now)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives up on a waiting entry: its recipients fail, and their senders are told.
pub async fn discard(conn: &mut AnyConnection, id: i64, now: i64) -> sqlx::Result<bool> {
    let row = sqlx::query(
        "select outbound_id, recipients from outbound_queue where id = $1 and state = 'queued'",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(false);
    };
    let outbound_id: i64 = row.try_get("outbound_id")?;
    let recipients: String = row.try_get("recipients")?;
    sqlx::query("update outbound_queue set state = 'failed', last_error = 'discarded by an operator', updated_at = $1 where id = $2")
        .bind(now)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    for r in recipients.lines() {
        advance(
            conn,
            outbound_id,
            r,
            "failed",
            "an operator stopped the delivery attempts",
            now,
        )
        .await?;
    }
    Ok(true)
}

/// How many queue entries wait to be sent (or retried), and how many failed in the
/// last `recent` seconds: the operator's home at a glance.
pub async fn queue_counts(db: &Db, now: i64, recent: i64) -> sqlx::Result<(i64, i64)> {
    let waiting: i64 = sqlx::query_scalar(
        "select count(*) from outbound_queue where state in ('queued', 'sending')",
    )
    .fetch_one(&db.pool)
    .await?;
    let failed: i64 = sqlx::query_scalar(
        "select count(*) from outbound_queue where state = 'failed' and updated_at >= $1",
    )
    .bind(now - recent)
    .fetch_one(&db.pool)
    .await?;
    Ok((waiting, failed))
}
