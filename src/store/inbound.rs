//! Received Direct messages (the durable copy behind each SMTP 250) and the messages
//! delivered from them into mailboxes.

use sqlx::{AnyConnection, Row as _, any::AnyRow};

use crate::db::{Backend, Db};
use crate::filing::Filing;
use crate::patient::{MessagePatient, Source};

/// What arrived over SMTP.
#[derive(Debug, Clone)]
pub struct NewInbound<'a> {
    pub mail_from: &'a str,
    pub rcpt_to: &'a [String],
    pub remote_ip: &'a str,
    pub helo: &'a str,
    pub tls: bool,
    pub raw: &'a [u8],
}

/// Commits a received message; after this returns, the SMTP session may say 250.
///
/// On SQLite the sessions that are waiting for the write turn are stored together:
/// whichever of them gets the turn stores every message waiting by then in one
/// transaction (group commit: one commit and one sync of the log for all of them,
/// where each message alone paid both), and each session learns its own id.
pub async fn insert(db: &Db, m: NewInbound<'_>, now: i64) -> sqlx::Result<i64> {
    let m = Owned {
        mail_from: m.mail_from.to_owned(),
        rcpt_to: m.rcpt_to.join("\n"),
        remote_ip: m.remote_ip.to_owned(),
        helo: m.helo.to_owned(),
        tls: m.tls,
        raw: m.raw.to_vec(),
        now,
    };
    if db.backend == Backend::Postgres {
        let mut tx = db.begin().await?;
        let stored = insert_on(&mut tx, m).await?;
        tx.commit().await?;
        return Ok(db.stored_raw.keep(vec![stored])[0]);
    }
    let stored = db
        .inbound_waiting
        .write(db.write_turn(), m, move |batch| async move {
            let n = batch.len();
            match insert_all(db, batch).await {
                Ok(ids) => ids.into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e.to_string()); n],
            }
        })
        .await;
    stored.map_err(sqlx::Error::Protocol)
}

/// Received messages waiting for SQLite's write turn.
pub type Waiting = crate::db::group::Waiting<Owned, i64>;

/// A received message as it is stored.
pub struct Owned {
    mail_from: String,
    rcpt_to: String,
    remote_ip: String,
    helo: String,
    tls: bool,
    raw: Vec<u8>,
    now: i64,
}

impl std::fmt::Debug for Owned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owned").finish_non_exhaustive()
    }
}

/// Stores `messages` in one transaction; their ids, in order.
async fn insert_all(db: &Db, messages: Vec<Owned>) -> sqlx::Result<Vec<i64>> {
    let mut tx = db.begin().await?;
    let mut stored = Vec::with_capacity(messages.len());
    for m in messages {
        stored.push(insert_on(&mut tx, m).await?);
    }
    tx.commit().await?;
    Ok(db.stored_raw.keep(stored))
}

/// Inserts `m`; its id, with its bytes for [`Stored::keep`] once committed.
async fn insert_on(conn: &mut AnyConnection, m: Owned) -> sqlx::Result<(i64, Vec<u8>)> {
    let id: i64 = sqlx::query_scalar(
        "insert into inbound_messages (received_at, mail_from, rcpt_to, remote_ip, helo, tls, state)
         values ($1, $2, $3, $4, $5, $6, 'received') returning id",
    )
    .bind(m.now)
    .bind(m.mail_from)
    .bind(m.rcpt_to)
    .bind(m.remote_ip)
    .bind(m.helo)
    .bind(i64::from(m.tls))
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query("insert into inbound_raw (inbound_id, raw) values ($1, $2)")
        .bind(id)
        .bind(&m.raw[..])
        .execute(&mut *conn)
        .await?;
    Ok((id, m.raw))
}

/// The bytes of the messages this process stored, until a worker of this process
/// claims them: the worker takes them from here rather than reading them back from
/// the database (on PostgreSQL, sending 115 KB back to the portal cost the server
/// about a tenth of its time per message). A received message's bytes are written
/// once and never changed (`inbound_raw` is only inserted and, for a discarded
/// message, deleted), so a copy kept here is the stored row: nothing can make it
/// stale. Kept only after the commit; a message claimed by another instance, or
/// retried after its first claim, is read from the database as before. Bounded: past
/// [`Stored::BUDGET`] bytes the oldest are dropped.
#[derive(Default)]
pub struct Stored(std::sync::Mutex<StoredBytes>);

#[derive(Default)]
pub struct StoredBytes {
    by_id: std::collections::BTreeMap<i64, Vec<u8>>,
    bytes: usize,
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stored").finish_non_exhaustive()
    }
}

impl Stored {
    /// Most bytes kept: a backlog of about 500 messages of 115 KB.
    const BUDGET: usize = 64 << 20;

    fn lock(&self) -> std::sync::MutexGuard<'_, StoredBytes> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps the committed messages' bytes; their ids, in order.
    fn keep(&self, stored: Vec<(i64, Vec<u8>)>) -> Vec<i64> {
        let mut kept = self.lock();
        let mut ids = Vec::with_capacity(stored.len());
        for (id, raw) in stored {
            ids.push(id);
            if raw.len() > Self::BUDGET / 8 {
                continue;
            }
            kept.bytes += raw.len();
            if let Some(old) = kept.by_id.insert(id, raw) {
                kept.bytes -= old.len();
            }
            while kept.bytes > Self::BUDGET {
                let Some((_, oldest)) = kept.by_id.pop_first() else {
                    break;
                };
                kept.bytes -= oldest.len();
            }
        }
        ids
    }

    /// The bytes of message `id`, if this process stored them and they were not
    /// taken yet.
    fn take(&self, id: i64) -> Option<Vec<u8>> {
        let mut kept = self.lock();
        let raw = kept.by_id.remove(&id)?;
        kept.bytes -= raw.len();
        Some(raw)
    }
}

/// A received message being processed.
#[derive(Clone)]
pub struct Inbound {
    pub id: i64,
    pub received_at: i64,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub remote_ip: String,
    pub raw: Vec<u8>,
    pub attempts: i64,
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("id", &self.id)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl Inbound {
    fn from_row(row: &AnyRow, raw: Vec<u8>) -> sqlx::Result<Inbound> {
        let rcpt: String = row.try_get("rcpt_to")?;
        Ok(Inbound {
            id: row.try_get("id")?,
            received_at: row.try_get("received_at")?,
            mail_from: row.try_get("mail_from")?,
            rcpt_to: rcpt.lines().map(str::to_owned).collect(),
            remote_ip: row.try_get("remote_ip")?,
            raw,
            attempts: row.try_get("attempts")?,
        })
    }
}

/// Claims the oldest message waiting to be processed (or one whose claim lapsed),
/// for `lease` seconds ([`crate::leases`]: the worker's instance renews it).
pub async fn claim_next(db: &Db, now: i64, lease: i64) -> sqlx::Result<Option<Inbound>> {
    let turn = db.write_turn().await;
    let id = claim_on(&mut *db.redoable().acquire().await?, db.backend, now, lease).await?;
    drop(turn);
    match id {
        Some(id) => claimed(db, id).await.map(Some),
        None => Ok(None),
    }
}

/// Claims the oldest message waiting on `conn` (in the caller's transaction, when it
/// has one: a worker records one message's outcome and claims the next in one
/// write); its id. On PostgreSQL several instances share the work with `SKIP LOCKED`.
pub async fn claim_on(
    conn: &mut AnyConnection,
    backend: Backend,
    now: i64,
    lease: i64,
) -> sqlx::Result<Option<i64>> {
    let pick = match backend {
        Backend::Postgres => {
            "select id from inbound_messages
             where state = 'received' or (state = 'processing' and claimed_until < $1)
             order by id limit 1 for update skip locked"
        }
        Backend::Sqlite => {
            "select id from inbound_messages
             where state = 'received' or (state = 'processing' and claimed_until < $1)
             order by id limit 1"
        }
    };
    sqlx::query_scalar(&format!(
        "update inbound_messages set state = 'processing', claimed_until = $2, attempts = attempts + 1
         where id = ({pick}) returning id"
    ))
    .bind(now)
    .bind(now + lease)
    .fetch_optional(conn)
    .await
}

/// A claimed message, read outside any write: nothing changes it while it is
/// being processed.
/// Its bytes come from [`Stored`] when this process stored it.
pub async fn claimed(db: &Db, id: i64) -> sqlx::Result<Inbound> {
    const COLUMNS: &str =
        "select m.id, m.received_at, m.mail_from, m.rcpt_to, m.remote_ip, m.attempts";
    let Some(raw) = db.stored_raw.take(id) else {
        let row = sqlx::query(&format!(
            "{COLUMNS}, r.raw from inbound_messages m join inbound_raw r on r.inbound_id = m.id where m.id = $1"
        ))
        .bind(id)
        .fetch_one(&db.pool)
        .await?;
        return Inbound::from_row(&row, row.try_get("raw")?);
    };
    let row = sqlx::query(&format!(
        "{COLUMNS} from inbound_messages m where m.id = $1"
    ))
    .bind(id)
    .fetch_one(&db.pool)
    .await?;
    Inbound::from_row(&row, raw)
}

/// Records the outcome of processing (inside the caller's transaction), if the
/// claim taken as attempt `attempts` is still the message's: an error otherwise
/// (its lease lapsed and another worker claimed it since), so that the caller's
/// transaction, with its deliveries and notifications, is rolled back and the message
/// reaches one outcome, the other worker's.
pub async fn finish(
    conn: &mut AnyConnection,
    message: &Inbound,
    state: &str,
    verdict: &str,
    detail: &str,
    steps: &str,
    now: i64,
) -> anyhow::Result<()> {
    let done = sqlx::query(
        "update inbound_messages set state = $1, verdict = $2, detail = $3, steps = $4, processed_at = $5
         where id = $6 and state = 'processing' and attempts = $7",
    )
    .bind(state)
    .bind(verdict)
    .bind(detail)
    .bind(steps)
    .bind(now)
    .bind(message.id)
    .bind(message.attempts)
    .execute(conn)
    .await?;
    anyhow::ensure!(
        done.rows_affected() == 1,
        "the claim on received message {} lapsed and was taken over; its outcome is left to the new claim",
        message.id
    );
    Ok(())
}

/// A quarantined (or otherwise processed) message as the operator sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InboundRow {
    pub id: i64,
    pub received_at: i64,
    pub mail_from: String,
    pub rcpt_to: String,
    pub remote_ip: String,
    pub state: String,
    pub verdict: Option<String>,
    pub detail: Option<String>,
    pub steps: Option<String>,
    pub size: i64,
}

impl InboundRow {
    fn from_row(row: &AnyRow) -> sqlx::Result<InboundRow> {
        Ok(InboundRow {
            id: row.try_get("id")?,
            received_at: row.try_get("received_at")?,
            mail_from: row.try_get("mail_from")?,
            rcpt_to: row.try_get("rcpt_to")?,
            remote_ip: row.try_get("remote_ip")?,
            state: row.try_get("state")?,
            verdict: row.try_get("verdict")?,
            detail: row.try_get("detail")?,
            steps: row.try_get("steps")?,
            size: row.try_get("size")?,
        })
    }
}

const ROW_COLUMNS: &str = "id, received_at, mail_from, rcpt_to, remote_ip, state, verdict, detail, steps,
     coalesce((select length(raw) from inbound_raw where inbound_id = inbound_messages.id), 0) as size";

/// Messages in `state`, newest first, keyset-paged by id.
pub async fn list(
    db: &Db,
    state: &str,
    before_id: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<InboundRow>> {
    let rows = sqlx::query(&format!(
        "select {ROW_COLUMNS} from inbound_messages where state = $1 and ($2 is null or id < $2)
         order by id desc limit $3"
    ))
    .bind(state)
    .bind(before_id)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(InboundRow::from_row).collect()
}

/// What the audit log names a message by: its mailbox, the mailbox's address and
/// the subject as lists show it ("Restricted record" for a restricted one).
pub async fn message_label(db: &Db, id: i64) -> sqlx::Result<Option<(i64, String, String)>> {
    let row = sqlx::query(
        "select m.mailbox_id, b.address, m.subject, m.restriction from messages m
           join mailboxes b on b.id = m.mailbox_id where m.id = $1",
    )
    .bind(id)
    .fetch_optional(&db.pool)
    .await?;
    row.map(|r| {
        let restricted = !r.try_get::<String, _>("restriction")?.is_empty();
        let subject: String = r.try_get("subject")?;
        Ok((
            r.try_get("mailbox_id")?,
            r.try_get("address")?,
            if restricted {
                "Restricted record".to_owned()
            } else if subject.is_empty() {
                "(no subject)".to_owned()
            } else {
                subject
            },
        ))
    })
    .transpose()
}

/// How many inbound messages are in quarantine.
pub async fn quarantined(db: &Db) -> sqlx::Result<i64> {
    sqlx::query_scalar("select count(*) from inbound_messages where state = 'quarantined'")
        .fetch_one(&db.pool)
        .await
}

pub async fn get(db: &Db, id: i64) -> sqlx::Result<Option<InboundRow>> {
    let row = sqlx::query(&format!(
        "select {ROW_COLUMNS} from inbound_messages where id = $1"
    ))
    .bind(id)
    .fetch_optional(&db.pool)
    .await?;
    row.as_ref().map(InboundRow::from_row).transpose()
}

/// Sends a quarantined message back to be processed again (after an anchor was
/// added, say). Returns false when it was not quarantined.
pub async fn requeue(conn: &mut AnyConnection, id: i64) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "update inbound_messages set state = 'received', claimed_until = 0 where id = $1 and state = 'quarantined'",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Discards a quarantined message: its content is erased, its record kept.
pub async fn discard(conn: &mut AnyConnection, id: i64) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "update inbound_messages set state = 'discarded' where id = $1 and state = 'quarantined'",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    sqlx::query("delete from inbound_raw where inbound_id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(true)
}

/// A message delivered into a mailbox.
pub struct NewMessage<'a> {
    pub mailbox_id: i64,
    pub inbound_id: Option<i64>,
    pub message_id: Option<&'a str>,
    pub from_addr: &'a str,
    pub subject: &'a str,
    pub trust_code: &'a str,
    pub trust_sentence: &'a str,
    pub signer_subject: Option<&'a str>,
    pub signer_issuer: Option<&'a str>,
    pub revocation: &'a str,
    pub raw: &'a [u8],
    /// [`super::messages::Indexed::of`] `raw`, made before the transaction (parsing
    /// a large message inside it would hold every other writer up).
    pub index: &'a super::messages::Indexed,
    /// [`super::messages::attachment_checks`] of `raw`, made before the transaction.
    pub attachment_checks: &'a str,
    /// [`crate::filing::read`] of `raw` (its patient and clinical documents), made
    /// before the transaction.
    pub filing: &'a Filing,
    /// The signer's certificate as judged, when the message was signed.
    pub signer_facts: Option<&'a SignerFacts>,
}

/// A signer's certificate as it was judged when the message arrived: what the
/// message page's certificate details show.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SignerFacts {
    /// The signer's Direct address (the From the certificate was bound to).
    pub address: String,
    /// Serial number, hex.
    pub serial: String,
    /// Validity, Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// SHA-256 fingerprint, hex.
    pub fingerprint: String,
    /// Subject DN of the trust anchor the chain ended at.
    pub anchor: Option<String>,
}

impl SignerFacts {
    /// Whether the anchor is a development or test CA ([`crate::pki::is_test_anchor`]).
    pub fn test_anchor(&self) -> bool {
        self.anchor
            .as_deref()
            .is_some_and(crate::pki::is_test_anchor)
    }

    /// As stored (`messages.signer_facts`); "" reads back as `None`.
    pub fn parse(stored: &str) -> Option<SignerFacts> {
        serde_json::from_str(stored).ok()
    }
}

/// Binds the seven patient columns (empty when there is none).
fn bind_patient<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    patient: Option<&MessagePatient>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    let field = |f: fn(&MessagePatient) -> String| patient.map(f).unwrap_or_default();
    q.bind(field(|p| p.name.clone()))
        .bind(field(|p| p.id.clone()))
        .bind(field(|p| p.birth_date.clone()))
        .bind(field(|p| p.sex.clone()))
        .bind(field(|p| p.source.as_str().to_owned()))
        .bind(field(|p| p.given.clone()))
        .bind(field(|p| p.family.clone()))
}

/// What filing read beyond the patient: the record of its clinical documents, and its
/// restriction ([`crate::sensitivity`]).
async fn record_filing(conn: &mut AnyConnection, id: i64, filing: &Filing) -> sqlx::Result<()> {
    super::documents::record(conn, id, &filing.documents).await?;
    if !filing.context_type.is_empty() || !filing.context_id.is_empty() {
        sqlx::query("update messages set context_type = $1, context_id = $2 where id = $3")
            .bind(&filing.context_type)
            .bind(&filing.context_id)
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    if let Some(label) = &filing.label {
        sqlx::query("update messages set restriction = $1, restriction_reasons = $2 where id = $3")
            .bind(label.law.as_str())
            .bind(label.reasons.join("\n"))
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Puts a message in a mailbox's inbox, with its patient and the record of its
/// clinical documents. Delivering the same inbound message to the same mailbox twice
/// changes nothing (exactly once, even after a retried run): false then.
pub async fn deliver(conn: &mut AnyConnection, m: NewMessage<'_>, now: i64) -> sqlx::Result<bool> {
    let ix = m.index;
    let done = sqlx::query(
        "insert into messages (mailbox_id, folder, inbound_id, message_id, from_addr, subject, received_at,
                               trust_code, trust_sentence, signer_subject, signer_issuer, revocation,
                               from_name, to_addrs, snippet, body_text, attachment_names, has_attachments,
                               attachment_checks, signer_facts, test_anchor, patient_name, patient_id,
                               patient_birth_date, patient_sex, patient_source, patient_given, patient_family)
         values ($1, 'inbox', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                 $19, $20, $21, $22, $23, $24, $25, $26, $27)
         on conflict (mailbox_id, inbound_id) do nothing returning id",
    )
    .bind(m.mailbox_id)
    .bind(m.inbound_id)
    .bind(m.message_id)
    .bind(m.from_addr)
    .bind(m.subject)
    .bind(now)
    .bind(m.trust_code)
    .bind(m.trust_sentence)
    .bind(m.signer_subject)
    .bind(m.signer_issuer)
    .bind(m.revocation)
    .bind(ix.from_name.as_str())
    .bind(ix.to_addrs.as_str())
    .bind(ix.snippet.as_str())
    .bind(ix.search_body(m.from_addr, m.subject))
    .bind(ix.attachment_names.as_str())
    .bind(i64::from(ix.has_attachments))
    .bind(m.attachment_checks)
    .bind(
        m.signer_facts
            .and_then(|facts| serde_json::to_string(facts).ok())
            .unwrap_or_default(),
    )
    .bind(i64::from(m.signer_facts.is_some_and(SignerFacts::test_anchor)));
    let filed: Option<i64> = bind_patient(done, m.filing.patient.as_ref())
        .fetch_optional(&mut *conn)
        .await?
        .map(|row| row.try_get(0))
        .transpose()?;
    let Some(id) = filed else {
        return Ok(false);
    };
    super::messages::store_raw(conn, id, m.raw).await?;
    record_filing(conn, id, m.filing).await?;
    super::requests::answered_by(conn, m.mailbox_id, id, m.from_addr, m.filing, now).await?;
    Ok(true)
}

/// A delivered message as listed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MessageRow {
    pub id: i64,
    pub mailbox_id: i64,
    pub folder: String,
    pub from_addr: String,
    pub from_name: String,
    pub to_addrs: String,
    pub subject: String,
    pub snippet: String,
    pub received_at: i64,
    pub is_read: bool,
    pub trust_code: String,
    pub trust_sentence: String,
    pub signer_subject: Option<String>,
    pub revocation: String,
    pub has_attachments: bool,
    /// "Read by Ana Ruiz": the latest action of someone sharing the mailbox.
    pub last_activity: String,
    #[serde(skip)]
    pub outbound_id: Option<i64>,
    /// The patient the message is about, for the list: the name, or the identifier.
    #[serde(skip)]
    pub patient: String,
    /// Which rules restrict it (a restricted record: lists show "Restricted" and the
    /// patient, never its subject or snippet); `None` for an ordinary message.
    #[serde(skip)]
    pub restriction: Option<crate::sensitivity::Law>,
    /// Trusted through a development or test CA: not for real patient data.
    pub test_anchor: bool,
}

impl MessageRow {
    /// The subject as lists and search results show it: "Restricted record" for a
    /// restricted one (its subject may name what the record is about).
    pub fn listed_subject(&self) -> &str {
        if self.restriction.is_some() {
            "Restricted record"
        } else if self.subject.is_empty() {
            "(no subject)"
        } else {
            &self.subject
        }
    }

    /// The snippet as lists show it: none for a restricted record.
    pub fn listed_snippet(&self) -> &str {
        if self.restriction.is_some() {
            ""
        } else {
            &self.snippet
        }
    }

    /// From a row selected with [`messages::ROW_COLUMNS`](super::messages::ROW_COLUMNS).
    pub fn from_row(r: &sqlx::any::AnyRow) -> sqlx::Result<MessageRow> {
        Ok(MessageRow {
            id: r.try_get("id")?,
            mailbox_id: r.try_get("mailbox_id")?,
            folder: r.try_get("folder")?,
            from_addr: r.try_get("from_addr")?,
            from_name: r.try_get("from_name")?,
            to_addrs: r.try_get("to_addrs")?,
            subject: r.try_get("subject")?,
            snippet: r.try_get("snippet")?,
            received_at: r.try_get("received_at")?,
            is_read: super::flag(r.try_get("is_read")?),
            trust_code: r.try_get("trust_code")?,
            trust_sentence: r.try_get("trust_sentence")?,
            signer_subject: r.try_get("signer_subject")?,
            revocation: r.try_get("revocation")?,
            has_attachments: super::flag(r.try_get("has_attachments")?),
            last_activity: r.try_get("last_activity")?,
            outbound_id: r.try_get("outbound_id")?,
            patient: {
                let name: String = r.try_get("patient_name")?;
                if name.is_empty() {
                    r.try_get("patient_id")?
                } else {
                    name
                }
            },
            restriction: crate::sensitivity::Law::parse(r.try_get("restriction")?),
            test_anchor: super::flag(r.try_get("test_anchor")?),
        })
    }
}

/// The newest messages of a mailbox folder.
pub async fn messages_in(
    db: &Db,
    mailbox_id: i64,
    folder: &str,
    limit: i64,
) -> sqlx::Result<Vec<MessageRow>> {
    page(db, mailbox_id, folder, None, limit).await
}

/// Files the Sent copy of a message written in `mailbox`, with its patient and the
/// record of its clinical documents (`filing`, [`crate::filing::read`] of `raw`).
#[allow(clippy::too_many_arguments)]
pub async fn file_sent(
    conn: &mut AnyConnection,
    mailbox_id: i64,
    outbound_id: i64,
    message_id: &str,
    from_addr: &str,
    subject: &str,
    raw: &[u8],
    filing: &Filing,
    now: i64,
) -> sqlx::Result<i64> {
    let place = Local {
        folder: "sent",
        trust_code: "sent",
        trust_sentence: "Sent from this mailbox.",
        outbound_id: Some(outbound_id),
    };
    file_local(
        conn, mailbox_id, &place, message_id, from_addr, subject, raw, filing, now,
    )
    .await
}

/// Where a message made here (not received) is filed, and what its trust line says.
pub struct Local<'a> {
    /// `sent`, `inbox`, `archive` or a folder the users made (`f{id}`).
    pub folder: &'a str,
    pub trust_code: &'a str,
    pub trust_sentence: &'a str,
    /// The outbound message it is the Sent copy of.
    pub outbound_id: Option<i64>,
}

/// Files a message made here in `mailbox`, read (the Sent copy of a message written
/// here, a document retrieved from a FHIR server), with its patient and the record of
/// its clinical documents.
#[allow(clippy::too_many_arguments)]
pub async fn file_local(
    conn: &mut AnyConnection,
    mailbox_id: i64,
    place: &Local<'_>,
    message_id: &str,
    from_addr: &str,
    subject: &str,
    raw: &[u8],
    filing: &Filing,
    now: i64,
) -> sqlx::Result<i64> {
    let ix = super::messages::Indexed::of(raw);
    let body = ix.search_body(from_addr, subject).to_owned();
    let q = sqlx::query(
        "insert into messages (mailbox_id, folder, message_id, from_addr, subject, received_at, is_read,
                               trust_code, trust_sentence, revocation, outbound_id,
                               from_name, to_addrs, snippet, body_text, attachment_names, has_attachments,
                               patient_name, patient_id, patient_birth_date, patient_sex, patient_source,
                               patient_given, patient_family)
         values ($1, $2, $3, $4, $5, $6, 1, $7, $8, 'not-applicable', $9,
                 $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)
         returning id",
    )
    .bind(mailbox_id)
    .bind(place.folder)
    .bind(message_id)
    .bind(from_addr)
    .bind(subject)
    .bind(now)
    .bind(place.trust_code)
    .bind(place.trust_sentence)
    .bind(place.outbound_id)
    .bind(ix.from_name)
    .bind(ix.to_addrs)
    .bind(ix.snippet)
    .bind(body)
    .bind(ix.attachment_names)
    .bind(i64::from(ix.has_attachments));
    let row = bind_patient(q, filing.patient.as_ref())
        .fetch_one(&mut *conn)
        .await?;
    let id: i64 = row.try_get(0)?;
    super::messages::store_raw(conn, id, raw).await?;
    record_filing(conn, id, filing).await?;
    Ok(id)
}

/// One stored message with its content.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub row: MessageRow,
    pub folder: String,
    pub signer_issuer: Option<String>,
    pub outbound_id: Option<i64>,
    pub message_id: Option<String>,
    pub raw: Vec<u8>,
    /// `None` for a message filed before attachments were checked on arrival.
    pub attachment_checks: Option<String>,
    /// What the message page says about its clinical attachments, as JSON, once made
    /// (`web::message`); `None` before its first view.
    pub clinical_cards: Option<String>,
    /// What the message page reads from the MIME, as JSON, once made (`web::message`);
    /// `None` before its first view.
    pub page_facts: Option<String>,
    /// The patient it is about, read when it was filed.
    pub patient: Option<MessagePatient>,
    /// Why it is restricted, one sentence each, when it is ([`MessageRow::restriction`]).
    pub restriction_reasons: Vec<String>,
    /// The signer's certificate as judged on arrival, for messages filed since
    /// migration 0024.
    pub signer_facts: Option<SignerFacts>,
    /// The Direct Context's type, when it came with one (`requests::CONTEXT_TYPE`
    /// for a records request); empty otherwise.
    pub context_type: String,
}

/// The message's raw MIME, for `select` on `messages`.
const RAW: &str = "(select raw from message_raw where message_id = messages.id)";

pub async fn message<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    id: i64,
) -> sqlx::Result<Option<StoredMessage>> {
    message_with(db, id, RAW).await
}

/// [`message`] for the message page: its `raw` is loaded (else left empty) only while
/// something the page keeps with the message (attachment checks, clinical cards, page
/// facts) is still to be made from it, so a large message is not read on every view.
pub async fn message_for_page<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    id: i64,
) -> sqlx::Result<Option<StoredMessage>> {
    let raw = format!(
        "case when page_facts is null or clinical_cards is null or attachment_checks is null
              then {RAW} end"
    );
    message_with(db, id, &raw).await
}

async fn message_with<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    id: i64,
    raw: &str,
) -> sqlx::Result<Option<StoredMessage>> {
    let sql = format!(
        "select {}, signer_issuer, message_id, {raw} as raw, attachment_checks, clinical_cards,
                page_facts, restriction_reasons, signer_facts, context_type,
                patient_birth_date, patient_sex,
                patient_source, patient_given, patient_family from messages where id = $1",
        super::messages::ROW_COLUMNS
    );
    let row = sqlx::query(&sql).bind(id).fetch_optional(db).await?;
    row.map(|r| {
        let row = MessageRow::from_row(&r)?;
        Ok(StoredMessage {
            folder: row.folder.clone(),
            outbound_id: row.outbound_id,
            row,
            signer_issuer: r.try_get("signer_issuer")?,
            signer_facts: SignerFacts::parse(&r.try_get::<String, _>("signer_facts")?),
            message_id: r.try_get("message_id")?,
            raw: r.try_get::<Option<Vec<u8>>, _>("raw")?.unwrap_or_default(),
            attachment_checks: r.try_get("attachment_checks")?,
            clinical_cards: r.try_get("clinical_cards")?,
            page_facts: r.try_get("page_facts")?,
            context_type: r.try_get("context_type")?,
            restriction_reasons: {
                let reasons: String = r.try_get("restriction_reasons")?;
                reasons.lines().map(str::to_owned).collect()
            },
            patient: {
                let source: String = r.try_get("patient_source")?;
                match Source::parse(&source) {
                    Some(source) => Some(MessagePatient {
                        name: r.try_get("patient_name")?,
                        id: r.try_get("patient_id")?,
                        birth_date: r.try_get("patient_birth_date")?,
                        sex: r.try_get("patient_sex")?,
                        given: r.try_get("patient_given")?,
                        family: r.try_get("patient_family")?,
                        source,
                    }),
                    None => None,
                }
            },
        })
    })
    .transpose()
}

/// Keyset page of a folder: messages with an id below `before_id`, newest first.
pub async fn page<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    mailbox_id: i64,
    folder: &str,
    before_id: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<MessageRow>> {
    // Two texts, not `($3 is null or id < $3)`, and the limit written in: with either
    // as a parameter PostgreSQL's generic plan looked costlier than a custom one, so
    // it planned the list afresh on every page (0.1 ms, as long as running it).
    let columns = super::messages::ROW_COLUMNS;
    let before = if before_id.is_some() {
        "and id < $3"
    } else {
        ""
    };
    let sql = format!(
        "select {columns} from messages where mailbox_id = $1 and folder = $2 {before}
         order by id desc limit {limit}"
    );
    let q = sqlx::query(&sql).bind(mailbox_id).bind(folder);
    let rows = match before_id {
        Some(id) => q.bind(id),
        None => q,
    }
    .fetch_all(db)
    .await?;
    rows.iter().map(MessageRow::from_row).collect()
}

/// Marks a message read (or unread).
pub async fn set_read(conn: &mut AnyConnection, id: i64, read: bool) -> sqlx::Result<()> {
    sqlx::query("update messages set is_read = $1 where id = $2")
        .bind(i64::from(read))
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Stored;

    #[test]
    fn stored_bytes_are_taken_once_and_the_oldest_dropped_past_the_budget() {
        let stored = Stored::default();
        let ids = stored.keep(vec![(7, b"seven".to_vec()), (9, b"nine".to_vec())]);
        assert_eq!(ids, [7, 9]);
        assert_eq!(stored.take(9).as_deref(), Some(&b"nine"[..]));
        // taken: a second claim (a retry) reads the database
        assert_eq!(stored.take(9), None);
        assert_eq!(stored.take(8), None);
        // a message over an eighth of the budget is not kept, but its id is answered
        assert_eq!(
            stored.keep(vec![(10, vec![0; Stored::BUDGET / 8 + 1])]),
            [10]
        );
        assert_eq!(stored.take(10), None);
        // past the budget the oldest go first
        let big = Stored::BUDGET / 8;
        let many: Vec<_> = (11..20).map(|id| (id, vec![1; big])).collect();
        stored.keep(many);
        assert_eq!(stored.take(7), None, "the oldest was dropped");
        assert_eq!(stored.take(11), None);
        assert_eq!(stored.take(12).map(|r| r.len()), Some(big));
        assert_eq!(stored.take(19).map(|r| r.len()), Some(big));
        assert_eq!(stored.lock().bytes, 6 * big);
    }
}
