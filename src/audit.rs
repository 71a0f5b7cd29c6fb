//! The audit log: append-only and hash-chained, so an edited or deleted row is found.
//!
//! Each entry's hash covers the previous entry's hash and every field of its own, in a
//! length-prefixed encoding. Writers first bump the single `audit_head` row, which
//! serializes them on SQLite and Postgres alike (several instances may share the log).

use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row as _};

use crate::db::Db;

/// Who did something, from where. Built by the web layer or the CLI.
#[derive(Debug, Clone)]
pub struct Actor {
    pub user_id: Option<i64>,
    /// E-mail address of the user, or `system`, or `cli`.
    pub label: String,
    /// The organization the action belongs to (for filtering who may read it).
    pub org_id: Option<i64>,
    /// Source address, or `-` when there is none (CLI).
    pub ip: String,
}

impl Actor {
    pub fn system() -> Actor {
        Actor {
            user_id: None,
            label: "system".into(),
            org_id: None,
            ip: "-".into(),
        }
    }

    pub fn cli() -> Actor {
        Actor {
            user_id: None,
            label: "cli".into(),
            org_id: None,
            ip: "-".into(),
        }
    }
}

/// One thing that happened. `object` and `detail` carry identifiers, never PHI.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    pub action: &'a str,
    pub object: String,
    pub detail: String,
    /// The organization affected, when it differs from the actor's (operators).
    pub org_id: Option<i64>,
}

impl<'a> Event<'a> {
    pub fn new(action: &'a str, object: impl Into<String>) -> Self {
        Event {
            action,
            object: object.into(),
            detail: String::new(),
            org_id: None,
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    pub fn org(mut self, org_id: Option<i64>) -> Self {
        self.org_id = org_id;
        self
    }
}

/// A stored entry.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    pub id: i64,
    pub at: i64,
    pub org_id: Option<i64>,
    pub actor_id: Option<i64>,
    pub actor: String,
    pub action: String,
    pub object: String,
    pub ip: String,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

impl Entry {
    fn from_row(row: &sqlx::any::AnyRow) -> sqlx::Result<Entry> {
        Ok(Entry {
            id: row.try_get("id")?,
            at: row.try_get("at")?,
            org_id: row.try_get("org_id")?,
            actor_id: row.try_get("actor_id")?,
            actor: row.try_get("actor")?,
            action: row.try_get("action")?,
            object: row.try_get("object")?,
            ip: row.try_get("ip")?,
            detail: row.try_get("detail")?,
            prev_hash: row.try_get("prev_hash")?,
            hash: row.try_get("hash")?,
        })
    }

    /// The hash this entry must carry, given its fields and `prev_hash`.
    fn expected_hash(&self) -> String {
        let mut h = Sha256::new();
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        field(self.prev_hash.as_bytes());
        field(&self.id.to_be_bytes());
        field(&self.at.to_be_bytes());
        field(
            self.org_id
                .map(|v| v.to_string())
                .unwrap_or_default()
                .as_bytes(),
        );
        field(
            self.actor_id
                .map(|v| v.to_string())
                .unwrap_or_default()
                .as_bytes(),
        );
        field(self.actor.as_bytes());
        field(self.action.as_bytes());
        field(self.object.as_bytes());
        field(self.ip.as_bytes());
        field(self.detail.as_bytes());
        hex::encode(h.finalize())
    }
}

/// Appends an entry inside the caller's transaction, so the audited change and its
/// entry commit together.
pub async fn append(
    conn: &mut AnyConnection,
    now: i64,
    actor: &Actor,
    event: Event<'_>,
) -> sqlx::Result<i64> {
    // Taking the head row's write lock first keeps the chain linear under concurrency.
    let head = sqlx::query(
        "update audit_head set last_id = last_id + 1 where id = 1 returning last_id, hash",
    )
    .fetch_one(&mut *conn)
    .await?;
    let mut entry = Entry {
        id: head.try_get("last_id")?,
        at: now,
        org_id: event.org_id.or(actor.org_id),
        actor_id: actor.user_id,
        actor: actor.label.clone(),
        action: event.action.to_owned(),
        object: event.object,
        ip: actor.ip.clone(),
        detail: event.detail,
        prev_hash: head.try_get("hash")?,
        hash: String::new(),
    };
    entry.hash = entry.expected_hash();
    sqlx::query(
        "insert into audit_log (id, at, org_id, actor_id, actor, action, object, ip, detail, prev_hash, hash)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(entry.id)
    .bind(entry.at)
    .bind(entry.org_id)
    .bind(entry.actor_id)
    .bind(&entry.actor)
    .bind(&entry.action)
    .bind(&entry.object)
    .bind(&entry.ip)
    .bind(&entry.detail)
    .bind(&entry.prev_hash)
    .bind(&entry.hash)
    .execute(&mut *conn)
    .await?;
    sqlx::query("update audit_head set hash = $1 where id = 1")
        .bind(&entry.hash)
        .execute(&mut *conn)
        .await?;
    Ok(entry.id)
}

/// Appends an entry in a transaction of its own.
pub async fn record(db: &Db, now: i64, actor: &Actor, event: Event<'_>) -> sqlx::Result<i64> {
    let mut tx = db.pool.begin().await?;
    let id = append(&mut tx, now, actor, event).await?;
    tx.commit().await?;
    Ok(id)
}

/// Filters for reading the log; `None` means any.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub org_id: Option<i64>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub from: Option<i64>,
    pub until: Option<i64>,
    /// Keyset paging: entries with an id below this one.
    pub before_id: Option<i64>,
}

/// Newest first, at most `limit` entries.
pub async fn list(db: &Db, filter: &Filter, limit: i64) -> sqlx::Result<Vec<Entry>> {
    let rows = sqlx::query(
        "select * from audit_log
         where ($1 is null or org_id = $1)
           and ($2 is null or actor = $2)
           and ($3 is null or action = $3)
           and ($4 is null or at >= $4)
           and ($5 is null or at < $5)
           and ($6 is null or id < $6)
         order by id desc limit $7",
    )
    .bind(filter.org_id)
    .bind(filter.actor.as_deref())
    .bind(filter.action.as_deref())
    .bind(filter.from)
    .bind(filter.until)
    .bind(filter.before_id)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(Entry::from_row).collect()
}

/// The outcome of walking the whole chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Verification {
    /// Every entry links to the one before and matches its hash.
    Intact { entries: i64 },
    /// The first problem found, in a sentence naming the entry.
    Broken { entry_id: i64, problem: String },
}

/// Walks the chain from the first entry, in pages, and reports the first broken link.
/// The head is read first, so entries appended meanwhile (by a running server) are
/// simply not part of this check.
pub async fn verify(db: &Db) -> sqlx::Result<Verification> {
    let head = sqlx::query("select last_id, hash from audit_head where id = 1")
        .fetch_one(&db.pool)
        .await?;
    let head_id: i64 = head.try_get("last_id")?;
    let head_hash: String = head.try_get("hash")?;
    let mut prev_hash = "0".repeat(64);
    let mut prev_id = 0i64;
    while prev_id < head_id {
        let rows = sqlx::query(
            "select * from audit_log where id > $1 and id <= $2 order by id limit 1000",
        )
        .bind(prev_id)
        .bind(head_id)
        .fetch_all(&db.pool)
        .await?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let entry = Entry::from_row(row)?;
            if entry.id != prev_id + 1 {
                return Ok(Verification::Broken {
                    entry_id: prev_id + 1,
                    problem: format!(
                        "entry {} is missing (the log jumps from {} to {})",
                        prev_id + 1,
                        prev_id,
                        entry.id
                    ),
                });
            }
            if entry.prev_hash != prev_hash {
                return Ok(Verification::Broken {
                    entry_id: entry.id,
                    problem: format!(
                        "entry {} does not link to entry {} (the earlier entry was changed or replaced)",
                        entry.id, prev_id
                    ),
                });
            }
            if entry.expected_hash() != entry.hash {
                return Ok(Verification::Broken {
                    entry_id: entry.id,
                    problem: format!(
                        "entry {} was changed after it was written (its content no longer matches its hash)",
                        entry.id
                    ),
                });
            }
            prev_id = entry.id;
            prev_hash = entry.hash;
        }
    }
    if head_id != prev_id || head_hash != prev_hash {
        return Ok(Verification::Broken {
            entry_id: prev_id + 1,
            problem: format!(
                "the log ends at entry {prev_id} but {head_id} entries were written (the newest entries were deleted)"
            ),
        });
    }
    Ok(Verification::Intact { entries: prev_id })
}
