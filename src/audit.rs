//! The audit log: append-only and hash-chained, so an edited or deleted row is found.
//!
//! Each entry's hash covers the previous entry's hash and every field of its own, in a
//! length-prefixed encoding. Writers first bump the single `audit_head` row, which
//! serializes them on SQLite and Postgres alike (several instances may share the log).
//!
//! The chain is keyed: from the first start-up of a version that keys it, each hash
//! is an HMAC-SHA-256 under [`AuditKey`], derived from the key-encryption key, so
//! someone who can write the database but does not hold the key cannot rewrite an
//! entry and recompute the chain after it. Entries written before that start-up keep
//! their plain SHA-256 hashes (`keyed = 0`) and still verify; the first keyed entry
//! covers the last plain one's hash, so the plain part cannot be rewritten either.
//! The head (`audit head`) can be exported and later checked (`audit verify --head`),
//! which finds a log truncated, or rewritten as a whole, after the export.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};

use hmac::digest::generic_array::GenericArray;
use hmac::{Hmac, Mac as _};
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row as _};
use zeroize::Zeroizing;

use crate::db::Db;
use crate::secrets::SecretKey;

/// The label the audit key is derived from the key-encryption key with.
const KEY_LABEL: &str = "directmail audit chain v1";

/// The key the chain is keyed with: HMAC-SHA-256 of a fixed label under the
/// key-encryption key ([`SecretKey::derive`]). Never printed.
#[derive(Clone)]
pub struct AuditKey {
    key: Zeroizing<[u8; 32]>,
    id: String,
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditKey({})", self.id)
    }
}

impl AuditKey {
    pub fn derive(kek: &SecretKey) -> AuditKey {
        let key = kek.derive(KEY_LABEL);
        let mut mac = hmac_sha256(&key);
        mac.update(b"key id");
        let id = hex::encode(&mac.finalize().into_bytes()[..8]);
        AuditKey { key, id }
    }

    /// A public name for the key (an HMAC under it, not the key), stored in the head
    /// row so a process finds the key the chain is keyed with, and a wrong key shows.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// HMAC-SHA-256 under a 32-byte key. RFC 2104 pads a key shorter than the block
/// (64 bytes) with zeros; padding here gives the same MAC without a fallible call.
fn hmac_sha256(key: &[u8; 32]) -> Hmac<Sha256> {
    let mut block = Zeroizing::new([0u8; 64]);
    block[..32].copy_from_slice(key);
    <Hmac<Sha256> as hmac::digest::KeyInit>::new(GenericArray::from_slice(&block[..]))
}

/// The audit keys this process holds, by id.
///
/// Why a registry rather than a parameter: [`append`] is called from every area of
/// the product inside the caller's own transaction, with only a connection. Handing
/// the key to each of those calls would thread it through every store and web
/// function that audits; instead the key is installed once per process
/// ([`install_key`], at start-up, beside the key-encryption key) and found by the id
/// the head row names. Tests run several portals in one process, each with its own
/// key, hence a map.
static KEYS: Mutex<Option<HashMap<String, AuditKey>>> = Mutex::new(None);

/// Makes `key` available to [`append`] in this process.
pub fn install_key(key: &AuditKey) {
    let mut keys = KEYS.lock().unwrap_or_else(PoisonError::into_inner);
    keys.get_or_insert_with(HashMap::new)
        .insert(key.id.clone(), key.clone());
}

fn installed(id: &str) -> Option<AuditKey> {
    let keys = KEYS.lock().unwrap_or_else(PoisonError::into_inner);
    keys.as_ref().and_then(|k| k.get(id).cloned())
}

/// Whether the chain is keyed (the head names a key), so that writing needs the key.
pub async fn is_keyed(db: &Db) -> sqlx::Result<bool> {
    let id: Option<String> = sqlx::query_scalar("select key_id from audit_head where id = 1")
        .fetch_one(&db.pool)
        .await?;
    Ok(id.is_some())
}

/// Installs `key` and keys the chain if it is not yet: the head names the key, and
/// when plain entries exist an `audit.keyed` entry says where keying began. Refuses a
/// chain keyed with another key. Run at every server start-up.
pub async fn key_chain(db: &Db, key: &AuditKey, now: i64) -> anyhow::Result<()> {
    install_key(key);
    let mut tx = db.begin().await?;
    // the update takes the head row's lock, so two instances starting together key
    // the chain once
    let keyed_now: Option<i64> = sqlx::query_scalar(
        "update audit_head set key_id = $1 where id = 1 and key_id is null returning last_id",
    )
    .bind(&key.id)
    .fetch_optional(&mut *tx)
    .await?;
    match keyed_now {
        Some(plain) if plain > 0 => {
            append(
                &mut tx,
                now,
                &Actor::system(),
                Event::new("audit.keyed", format!("audit:{}", plain + 1)).detail(format!(
                    "entries 1 to {plain} were written before the log was keyed and keep plain SHA-256 hashes; from this entry on every hash is an HMAC-SHA-256"
                )),
            )
            .await?;
        }
        Some(_) => {}
        None => {
            let id: Option<String> =
                sqlx::query_scalar("select key_id from audit_head where id = 1")
                    .fetch_one(&mut *tx)
                    .await?;
            anyhow::ensure!(
                id.as_deref() == Some(key.id.as_str()),
                "the audit log is keyed with another key than this key-encryption key (DIRECTMAIL_SECRET_KEY, DIRECTMAIL_SECRET_KEY_FILE or <data dir>/secret.key); start with the original key"
            );
        }
    }
    tx.commit().await?;
    Ok(())
}

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
    /// `user`, acting from `ip`.
    pub fn user(user: &crate::store::users::User, ip: String) -> Actor {
        Actor {
            user_id: Some(user.id),
            label: user.email.clone(),
            org_id: user.org_id,
            ip,
        }
    }

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
    /// `hash` is an HMAC under the audit key (false: plain SHA-256, before keying).
    pub keyed: bool,
}

impl Entry {
    /// An entry before it is numbered and chained.
    fn draft(now: i64, actor: &Actor, event: Event<'_>) -> Entry {
        Entry {
            id: 0,
            at: now,
            org_id: event.org_id.or(actor.org_id),
            actor_id: actor.user_id,
            actor: actor.label.clone(),
            action: event.action.to_owned(),
            object: event.object,
            ip: actor.ip.clone(),
            detail: event.detail,
            prev_hash: String::new(),
            hash: String::new(),
            keyed: false,
        }
    }

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
            keyed: crate::store::flag(row.try_get("keyed")?),
        })
    }

    /// The hash this entry must carry, given its fields and `prev_hash`: an HMAC under
    /// `key` when given, plain SHA-256 otherwise.
    fn expected_hash(&self, key: Option<&AuditKey>) -> String {
        match key {
            Some(key) => {
                let mut mac = hmac_sha256(&key.key);
                self.encode(|bytes| mac.update(bytes));
                hex::encode(mac.finalize().into_bytes())
            }
            None => {
                let mut h = Sha256::new();
                self.encode(|bytes| h.update(bytes));
                hex::encode(h.finalize())
            }
        }
    }

    /// Every field but the hash, each as its length then its bytes.
    fn encode(&self, mut out: impl FnMut(&[u8])) {
        let mut field = |bytes: &[u8]| {
            out(&(bytes.len() as u64).to_be_bytes());
            out(bytes);
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
    let mut entries = [Entry::draft(now, actor, event)];
    chain(conn, &mut entries).await?;
    Ok(entries[0].id)
}

/// Appends an entry in a transaction of its own, committed before this returns.
/// Entries recorded at the same moment (many users opening messages) are appended
/// together: one transaction, and one turn at the head row, for all of them.
pub async fn record(db: &Db, now: i64, actor: &Actor, event: Event<'_>) -> sqlx::Result<i64> {
    let turn = async {
        let sqlite = db.write_turn().await;
        (sqlite, db.audit_turn.clone().lock_owned().await)
    };
    let entry = Entry::draft(now, actor, event);
    db.audit_waiting
        .write(turn, entry, async |mut entries| {
            let n = entries.len();
            let written = async {
                let mut tx = db.begin().await?;
                chain(&mut tx, &mut entries).await?;
                tx.commit().await
            };
            match written.await {
                Ok(()) => entries.iter().map(|e| Ok(e.id)).collect(),
                Err(e) => vec![Err(e.to_string()); n],
            }
        })
        .await
        .map_err(sqlx::Error::Protocol)
}

/// Rows per insert statement when entries are appended together.
const INSERT_ROWS: usize = 64;

/// Numbers and hashes `entries` after the head, in their order, and appends them.
async fn chain(conn: &mut AnyConnection, entries: &mut [Entry]) -> sqlx::Result<()> {
    // Taking the head row's write lock first keeps the chain linear under concurrency.
    let head = sqlx::query(
        "update audit_head set last_id = last_id + $1 where id = 1 returning last_id, hash, key_id",
    )
    .bind(entries.len() as i64)
    .fetch_one(&mut *conn)
    .await?;
    let key = match head.try_get::<Option<String>, _>("key_id")? {
        Some(id) => Some(installed(&id).ok_or_else(|| {
            sqlx::Error::Configuration(
                "the audit log is keyed and this process has not loaded its key (the key-encryption key)"
                    .into(),
            )
        })?),
        // not keyed yet: a database no start-up of this version has seen
        None => None,
    };
    let last: i64 = head.try_get("last_id")?;
    let mut prev: String = head.try_get("hash")?;
    let first = last - entries.len() as i64 + 1;
    for (entry, id) in entries.iter_mut().zip(first..) {
        entry.id = id;
        entry.keyed = key.is_some();
        entry.prev_hash = std::mem::take(&mut prev);
        entry.hash = entry.expected_hash(key.as_ref());
        prev = entry.hash.clone();
    }
    for rows in entries.chunks(INSERT_ROWS) {
        let values = (0..rows.len())
            .map(|r| format!("({})", crate::store::messages::placeholders(r * 12 + 1, 12)))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "insert into audit_log (id, at, org_id, actor_id, actor, action, object, ip, detail, prev_hash, hash, keyed)
             values {values}"
        );
        let mut insert = sqlx::query(&sql);
        for e in rows {
            insert = insert
                .bind(e.id)
                .bind(e.at)
                .bind(e.org_id)
                .bind(e.actor_id)
                .bind(&e.actor)
                .bind(&e.action)
                .bind(&e.object)
                .bind(&e.ip)
                .bind(&e.detail)
                .bind(&e.prev_hash)
                .bind(&e.hash)
                .bind(i64::from(e.keyed));
        }
        insert.execute(&mut *conn).await?;
    }
    sqlx::query("update audit_head set hash = $1 where id = 1")
        .bind(&prev)
        .execute(&mut *conn)
        .await?;
    Ok(())
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
    /// Every entry links to the one before and matches its hash (and the exported
    /// head, when one was given, is still in the chain unchanged).
    Intact {
        entries: i64,
        /// The first keyed entry; those before it carry plain SHA-256 hashes. `None`
        /// when no entry is keyed yet.
        keyed_from: Option<i64>,
    },
    /// The first problem found, in a sentence naming the entry.
    Broken { entry_id: i64, problem: String },
}

/// A head as `audit head` prints it and `audit verify --head` reads it: `ID:HASH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub id: i64,
    pub hash: String,
}

impl fmt::Display for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.id, self.hash)
    }
}

impl std::str::FromStr for Head {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            "an exported head looks like 1234:<64 hex digits>, as `directmail admin audit head` prints it"
                .to_owned()
        };
        let (id, hash) = s.trim().split_once(':').ok_or_else(bad)?;
        let id: i64 = id.parse().map_err(|_| bad())?;
        let hash = hash.to_ascii_lowercase();
        if id < 0 || hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(Head { id, hash })
    }
}

/// The chain's current head: the newest entry's id and hash (`0:000…` when empty).
pub async fn head(db: &Db) -> sqlx::Result<Head> {
    let row = sqlx::query("select last_id, hash from audit_head where id = 1")
        .fetch_one(&db.pool)
        .await?;
    Ok(Head {
        id: row.try_get("last_id")?,
        hash: row.try_get("hash")?,
    })
}

/// Walks the chain from the first entry, in pages, and reports the first broken link.
/// Keyed entries are checked with `key`; without it (a log not keyed yet) a keyed
/// entry counts as broken. With `exported`, the chain must still hold that head
/// unchanged. The head is read first, so entries appended meanwhile (by a running
/// server) are simply not part of this check.
pub async fn verify(
    db: &Db,
    key: Option<&AuditKey>,
    exported: Option<&Head>,
) -> sqlx::Result<Verification> {
    let head = sqlx::query("select last_id, hash, key_id from audit_head where id = 1")
        .fetch_one(&db.pool)
        .await?;
    let head_id: i64 = head.try_get("last_id")?;
    let head_hash: String = head.try_get("hash")?;
    let head_key: Option<String> = head.try_get("key_id")?;
    if let (Some(named), Some(key)) = (&head_key, key)
        && named != key.id()
    {
        return Ok(Verification::Broken {
            entry_id: head_id,
            problem: "the log is keyed with another key than this key-encryption key (a wrong DIRECTMAIL_SECRET_KEY, or the log's head was changed)".into(),
        });
    }
    let mut prev_hash = "0".repeat(64);
    let mut prev_id = 0i64;
    let mut keyed_from: Option<i64> = None;
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
            if let Some(problem) = check(&entry, prev_id, &prev_hash, key, keyed_from) {
                return Ok(Verification::Broken {
                    entry_id: if entry.id == prev_id + 1 {
                        entry.id
                    } else {
                        prev_id + 1
                    },
                    problem,
                });
            }
            if entry.keyed && keyed_from.is_none() {
                keyed_from = Some(entry.id);
            }
            if let Some(e) = exported
                && e.id == entry.id
                && e.hash != entry.hash
            {
                return Ok(Verification::Broken {
                    entry_id: entry.id,
                    problem: format!(
                        "entry {} is not the head that was exported (its hash is {}…, the exported one {}…): the log was rewritten from there on",
                        entry.id,
                        &entry.hash[..entry.hash.len().min(12)],
                        &e.hash[..12]
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
    if keyed_from.is_some() && head_key.is_none() {
        return Ok(Verification::Broken {
            entry_id: head_id,
            problem: "the log's entries are keyed but its head names no key (the head was changed)"
                .into(),
        });
    }
    if let Some(e) = exported {
        if e.id > prev_id {
            return Ok(Verification::Broken {
                entry_id: prev_id + 1,
                problem: format!(
                    "the log ends at entry {prev_id}, before the exported head (entry {}): entries were deleted since the export",
                    e.id
                ),
            });
        }
        if e.id == 0 && e.hash != "0".repeat(64) {
            return Ok(Verification::Broken {
                entry_id: 0,
                problem: "the exported head 0 is not the empty log's".into(),
            });
        }
    }
    Ok(Verification::Intact {
        entries: prev_id,
        keyed_from,
    })
}

/// What is wrong with `entry`, following `prev_id` with `prev_hash`, if anything.
fn check(
    entry: &Entry,
    prev_id: i64,
    prev_hash: &str,
    key: Option<&AuditKey>,
    keyed_from: Option<i64>,
) -> Option<String> {
    if entry.id != prev_id + 1 {
        return Some(format!(
            "entry {} is missing (the log jumps from {} to {})",
            prev_id + 1,
            prev_id,
            entry.id
        ));
    }
    if entry.prev_hash != prev_hash {
        return Some(format!(
            "entry {} does not link to entry {} (the earlier entry was changed or replaced)",
            entry.id, prev_id
        ));
    }
    if !entry.keyed && keyed_from.is_some() {
        return Some(format!(
            "entry {} carries a plain hash after keyed entries (it was rewritten by someone without the key)",
            entry.id
        ));
    }
    let expected = match (entry.keyed, key) {
        (true, None) => {
            return Some(format!(
                "entry {} is keyed but the log's head names no key to check it with (the head was changed)",
                entry.id
            ));
        }
        (true, Some(key)) => entry.expected_hash(Some(key)),
        (false, _) => entry.expected_hash(None),
    };
    if expected != entry.hash {
        return Some(format!(
            "entry {} was changed after it was written (its content no longer matches its hash)",
            entry.id
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_key_is_derived_from_the_kek_and_never_printed() {
        let kek = SecretKey::from_bytes([7; 32]);
        let key = AuditKey::derive(&kek);
        assert_eq!(
            key.id(),
            AuditKey::derive(&kek).id(),
            "the same KEK, the same key"
        );
        assert_ne!(
            key.id(),
            AuditKey::derive(&SecretKey::from_bytes([8; 32])).id()
        );
        assert_ne!(key.key.as_slice(), &[7; 32], "not the KEK itself");
        let shown = format!("{key:?}");
        assert!(!shown.contains(&hex::encode(key.key.as_slice())), "{shown}");
        assert_eq!(shown, format!("AuditKey({})", key.id()));
    }

    #[test]
    fn a_keyed_hash_differs_from_the_plain_one_and_covers_every_field() {
        let key = AuditKey::derive(&SecretKey::from_bytes([1; 32]));
        let entry = Entry {
            id: 1,
            at: 2,
            org_id: Some(3),
            actor_id: None,
            actor: "cli".into(),
            action: "org.create".into(),
            object: "Lakeside".into(),
            ip: "-".into(),
            detail: String::new(),
            prev_hash: "0".repeat(64),
            hash: String::new(),
            keyed: true,
        };
        let keyed = entry.expected_hash(Some(&key));
        assert_ne!(keyed, entry.expected_hash(None));
        let mut changed = entry.clone();
        changed.detail = "x".into();
        assert_ne!(keyed, changed.expected_hash(Some(&key)));
        let heads: Head = format!("12:{keyed}").parse().unwrap();
        assert_eq!(heads.to_string(), format!("12:{keyed}"));
        assert!("12".parse::<Head>().is_err() && "x:00".parse::<Head>().is_err());
    }
}
