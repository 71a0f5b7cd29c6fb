//! The webmail's view of a mailbox: folders (the fixed ones and those a user
//! creates), moving and flagging messages with undo, full-text search, Trash
//! retention, and who handled a message in a shared mailbox.

use std::collections::HashMap;

use mail_parser::{MessageParser, MimeHeaders as _};
use sqlx::{AnyConnection, Row as _};
use unicode_normalization::UnicodeNormalization as _;
use unicode_normalization::char::is_combining_mark;

use super::inbound::MessageRow;
use super::mailboxes::MAILBOXES_OF_USER;
use crate::db::{Backend, Db};

/// The folders every mailbox has, by key and label. Drafts are listed from the
/// drafts table; the others hold messages.
pub const SYSTEM_FOLDERS: [(&str, &str); 5] = [
    ("inbox", "Inbox"),
    ("drafts", "Drafts"),
    ("sent", "Sent"),
    ("archive", "Archive"),
    ("trash", "Trash"),
];

/// What the list shows and search reads, taken from the message once when it is
/// filed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Indexed {
    pub from_name: String,
    pub to_addrs: String,
    pub snippet: String,
    /// The text search reads: the first [`BODY_INDEX_LIMIT`] bytes of the body.
    pub body_text: String,
    /// `body_text` with each word once ([`once_each`]): what is stored when it
    /// finds the same messages ([`Indexed::search_body`]).
    pub body_words: String,
    pub attachment_names: String,
    pub has_attachments: bool,
}

/// Longest body text kept for search (the message itself keeps everything): the
/// first 16 KB, some four pages of text, which holds the whole of nearly every
/// message body (documents travel as attachments). Indexing 64 KB cost PostgreSQL
/// 30 ms of CPU per message (`to_tsvector` and the GIN index), which capped
/// delivery at about 65 messages a second on two cores.
const BODY_INDEX_LIMIT: usize = 16 * 1024;

impl Indexed {
    pub fn of(raw: &[u8]) -> Indexed {
        let Some(m) = MessageParser::default().parse(raw) else {
            return Indexed::default();
        };
        let addresses = |a: Option<&mail_parser::Address<'_>>| -> Vec<String> {
            a.map(|a| {
                a.iter()
                    .filter_map(|x| x.address().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
        };
        let mut to = addresses(m.to());
        to.extend(addresses(m.cc()));
        let from_name = m
            .from()
            .and_then(|f| f.first())
            .and_then(|a| a.name())
            .unwrap_or_default()
            .trim()
            .to_owned();
        let mut body_text = crate::filing::text_of(&m);
        if body_text.len() > BODY_INDEX_LIMIT {
            let mut cut = BODY_INDEX_LIMIT;
            while !body_text.is_char_boundary(cut) {
                cut -= 1;
            }
            body_text.truncate(cut);
        }
        let names: Vec<String> = m
            .attachments()
            .map(|a| a.attachment_name().unwrap_or("attachment").to_owned())
            .collect();
        Indexed {
            from_name,
            to_addrs: to.join(", "),
            snippet: directmail_content::snippet(&body_text, 160),
            body_words: once_each(&body_text),
            body_text,
            has_attachments: !names.is_empty(),
            attachment_names: names.join(", "),
        }
    }

    /// What `messages.body_text` stores for a message from `from_addr` about
    /// `subject`: the column is read only by search (the search column on
    /// PostgreSQL, the full-text index on SQLite), which matches words and prefixes
    /// of words, never phrases or distances, so each word once finds the same
    /// messages as the whole text, for a fraction of the indexing work (PostgreSQL's
    /// `to_tsvector` took 2.1 ms for 16 KB). Unless a field before the body in the
    /// search column (sender, recipients, subject) holds a `<`, which could open a
    /// tag for PostgreSQL's parser that runs on into the body: then the text as it
    /// is.
    pub fn search_body(&self, from_addr: &str, subject: &str) -> &str {
        let fields = [self.from_name.as_str(), from_addr, &self.to_addrs, subject];
        if fields.iter().any(|f| f.contains('<')) {
            &self.body_text
        } else {
            &self.body_words
        }
    }
}

/// Where the search column splits words whatever comes before or after: ASCII
/// white space, and the characters its `translate` turns into spaces (migration
/// 0017; SQLite's tokenizer splits at all of them too).
fn splits_words(c: char) -> bool {
    c.is_ascii_whitespace() || matches!(c, '@' | '.' | '_' | '-' | '/' | ':')
}

/// `text` cut into pieces where [`splits_words`], each distinct piece once in the
/// order first seen, joined by spaces; from the first piece holding a `<` on, the
/// rest of the text as it is. Search finds the same words in it as in `text`:
/// equal pieces are equal words, and PostgreSQL's parser reads each piece on its
/// own (as SQLite's tokenizer always does) except across an HTML tag, whose `<`
/// starts the part kept as it is. Positions change, which search never reads.
fn once_each(text: &str) -> String {
    let mut seen = std::collections::HashSet::new();
    let mut out = String::with_capacity(text.len() / 2);
    for piece in text.split(splits_words).filter(|p| !p.is_empty()) {
        let tag = piece.contains('<');
        if tag || seen.insert(piece) {
            if !out.is_empty() {
                out.push(' ');
            }
            if tag {
                // `piece` is a slice of `text`
                out.push_str(&text[piece.as_ptr() as usize - text.as_ptr() as usize..]);
                break;
            }
            out.push_str(piece);
        }
    }
    out
}

/// Which attachments of `raw` must only be downloaded, and why: the stored form of
/// the `attachment_checks` column ("<index>\t<reason>" lines, attachments numbered
/// as mail-parser lists them). CPU work (a PDF is parsed): call it off the async threads.
pub fn attachment_checks(raw: &[u8]) -> String {
    let Some(m) = MessageParser::default().parse(raw) else {
        return String::new();
    };
    m.attachments()
        .enumerate()
        .filter_map(|(n, a)| {
            let name = a.attachment_name().unwrap_or("attachment");
            directmail_content::inline_refusal(name, a.contents())
                .map(|why| format!("{n}\t{}", why.replace(['\t', '\n', '\r'], " ")))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The reason attachment `n` is download-only, from a stored `attachment_checks`.
pub fn attachment_refusal(checks: &str, n: usize) -> Option<String> {
    checks.lines().find_map(|l| {
        let (i, why) = l.split_once('\t')?;
        (i.parse::<usize>().ok()? == n).then(|| why.to_owned())
    })
}

/// Stores the checks of a message filed before they were made.
pub async fn set_attachment_checks(db: &Db, id: i64, checks: &str) -> sqlx::Result<()> {
    sqlx::query("update messages set attachment_checks = $1 where id = $2")
        .bind(checks)
        .bind(id)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// Which rules restrict message `id` (`None`: an ordinary message, or none such).
pub async fn restriction(db: &Db, id: i64) -> sqlx::Result<Option<crate::sensitivity::Law>> {
    let law: Option<String> = sqlx::query_scalar("select restriction from messages where id = $1")
        .bind(id)
        .fetch_optional(&db.pool)
        .await?;
    Ok(law.as_deref().and_then(crate::sensitivity::Law::parse))
}

/// Keeps what the message page reads from a message's MIME (JSON).
pub async fn set_page_facts(db: &Db, id: i64, facts: &str) -> sqlx::Result<()> {
    sqlx::query("update messages set page_facts = $1 where id = $2")
        .bind(facts)
        .bind(id)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// Keeps what the message page says about a message's clinical attachments (JSON).
pub async fn set_clinical_cards(db: &Db, id: i64, cards: &str) -> sqlx::Result<()> {
    sqlx::query("update messages set clinical_cards = $1 where id = $2")
        .bind(cards)
        .bind(id)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// Writes the list and search fields of a filed message from `from_addr` about
/// `subject`.
pub async fn set_indexed(
    conn: &mut AnyConnection,
    id: i64,
    from_addr: &str,
    subject: &str,
    ix: &Indexed,
) -> sqlx::Result<()> {
    sqlx::query(
        "update messages set from_name = $1, to_addrs = $2, snippet = $3, body_text = $4,
                attachment_names = $5, has_attachments = $6, indexed = 1 where id = $7",
    )
    .bind(&ix.from_name)
    .bind(&ix.to_addrs)
    .bind(&ix.snippet)
    .bind(ix.search_body(from_addr, subject))
    .bind(&ix.attachment_names)
    .bind(i64::from(ix.has_attachments))
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Keeps a filed message's raw MIME (in its own table: `message_raw`).
pub async fn store_raw(conn: &mut AnyConnection, id: i64, raw: &[u8]) -> sqlx::Result<()> {
    sqlx::query("insert into message_raw (message_id, raw) values ($1, $2)")
        .bind(id)
        .bind(raw.to_vec())
        .execute(conn)
        .await?;
    Ok(())
}

/// Fills the list and search fields of messages filed before they existed.
pub async fn backfill(db: &Db) -> sqlx::Result<usize> {
    let mut done = 0;
    loop {
        let rows = sqlx::query(
            "select m.id, m.from_addr, m.subject, r.raw from messages m join message_raw r on r.message_id = m.id
             where m.indexed = 0 limit 200",
        )
        .fetch_all(&db.pool)
        .await?;
        if rows.is_empty() {
            return Ok(done);
        }
        let mut tx = db.begin().await?;
        for r in &rows {
            let raw: Vec<u8> = r.try_get("raw")?;
            let (from_addr, subject): (String, String) =
                (r.try_get("from_addr")?, r.try_get("subject")?);
            set_indexed(
                &mut tx,
                r.try_get("id")?,
                &from_addr,
                &subject,
                &Indexed::of(&raw),
            )
            .await?;
            done += 1;
        }
        tx.commit().await?;
    }
}

/// The columns of [`MessageRow`], for `select`.
pub const ROW_COLUMNS: &str = "id, mailbox_id, folder, from_addr, from_name, to_addrs, subject, snippet, received_at, is_read,
    trust_code, trust_sentence, signer_subject, revocation, has_attachments, last_activity, outbound_id,
    patient_name, patient_id, restriction, test_anchor";

/// `$first, $first+1, …` for `n` values.
pub fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A folder's key is valid in this mailbox: a system folder, or one the users made.
pub async fn folder_label(db: &Db, mailbox_id: i64, key: &str) -> sqlx::Result<Option<String>> {
    if let Some((_, label)) = SYSTEM_FOLDERS.iter().find(|(k, _)| *k == key) {
        return Ok(Some((*label).to_owned()));
    }
    let Some(id) = key.strip_prefix('f').and_then(|n| n.parse::<i64>().ok()) else {
        return Ok(None);
    };
    sqlx::query_scalar("select name from folders where id = $1 and mailbox_id = $2")
        .bind(id)
        .bind(mailbox_id)
        .fetch_optional(&db.pool)
        .await
}

/// The numbers around a mailbox page, read in one round trip.
#[derive(Debug, Default)]
pub struct Sidebar {
    /// Unread messages by (mailbox, folder key), over all of the user's mailboxes.
    pub unread: HashMap<(i64, String), i64>,
    /// The user's own drafts in the open mailbox.
    pub drafts: i64,
    /// The folders users created in the open mailbox: `(key, name)`, by name.
    pub folders: Vec<(String, String)>,
}

/// Unread counts over every mailbox assigned to `user_id` (kept by triggers on
/// `messages`, migration 0039), with the drafts and custom folders of `mailbox_id`.
pub async fn sidebar<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    user_id: i64,
    mailbox_id: i64,
) -> sqlx::Result<Sidebar> {
    use super::drafts::WRITTEN;
    let rows = sqlx::query(&format!(
        "select 'u' as kind, mailbox_id, folder as k, n, '' as name from unread_counts
           where mailbox_id in ({MAILBOXES_OF_USER}) and n > 0
         union all
         select 'd', $2, 'drafts', count(*), '' from drafts where mailbox_id = $2 and user_id = $1
           and {WRITTEN}
         union all
         select 'f', mailbox_id, 'f' || id, 0, name from folders where mailbox_id = $2",
    ))
    .bind(user_id)
    .bind(mailbox_id)
    .fetch_all(db)
    .await?;
    let mut out = Sidebar::default();
    for r in &rows {
        let kind: String = r.try_get("kind")?;
        let mailbox: i64 = r.try_get("mailbox_id")?;
        let key: String = r.try_get("k")?;
        match kind.as_str() {
            "u" => {
                out.unread.insert((mailbox, key), r.try_get("n")?);
            }
            "d" => out.drafts = r.try_get("n")?,
            _ => out.folders.push((key, r.try_get("name")?)),
        }
    }
    out.folders.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

/// Creates a folder; `None` when the mailbox already has one by that name.
pub async fn create_folder(
    conn: &mut AnyConnection,
    mailbox_id: i64,
    name: &str,
    now: i64,
) -> sqlx::Result<Option<String>> {
    let made: sqlx::Result<i64> = sqlx::query_scalar(
        "insert into folders (mailbox_id, name, created_at) values ($1, $2, $3) returning id",
    )
    .bind(mailbox_id)
    .bind(name)
    .bind(now)
    .fetch_one(conn)
    .await;
    match made {
        Ok(id) => Ok(Some(format!("f{id}"))),
        Err(e) if super::is_unique_violation(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Deletes a folder the users made; its messages go back to the Inbox. Returns how
/// many were moved, or `None` when there is no such folder.
pub async fn delete_folder(
    conn: &mut AnyConnection,
    mailbox_id: i64,
    key: &str,
) -> sqlx::Result<Option<u64>> {
    let Some(id) = key.strip_prefix('f').and_then(|n| n.parse::<i64>().ok()) else {
        return Ok(None);
    };
    let moved =
        sqlx::query("update messages set folder = 'inbox' where mailbox_id = $1 and folder = $2")
            .bind(mailbox_id)
            .bind(key)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    let gone = sqlx::query("delete from folders where id = $1 and mailbox_id = $2")
        .bind(id)
        .bind(mailbox_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok((gone == 1).then_some(moved))
}

/// A message's place before an action, to undo it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Before {
    pub id: i64,
    pub folder: String,
    pub is_read: bool,
    pub trashed_at: Option<i64>,
}

/// Where the given messages of a mailbox are now (ids of other mailboxes are left out).
pub async fn places(
    conn: &mut AnyConnection,
    mailbox_id: i64,
    ids: &[i64],
) -> sqlx::Result<Vec<Before>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "select id, folder, is_read, trashed_at from messages where mailbox_id = $1 and id in ({})",
        placeholders(2, ids.len())
    );
    let mut q = sqlx::query(&sql).bind(mailbox_id);
    for id in ids {
        q = q.bind(*id);
    }
    let rows = q.fetch_all(conn).await?;
    rows.iter()
        .map(|r| {
            Ok(Before {
                id: r.try_get("id")?,
                folder: r.try_get("folder")?,
                is_read: super::flag(r.try_get("is_read")?),
                trashed_at: r.try_get("trashed_at")?,
            })
        })
        .collect()
}

/// Moves messages of a mailbox to a folder (Trash starts the retention clock).
pub async fn move_to(
    conn: &mut AnyConnection,
    mailbox_id: i64,
    ids: &[i64],
    folder: &str,
    now: i64,
) -> sqlx::Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let sql = format!(
        "update messages set folder = $1, trashed_at = $2 where mailbox_id = $3 and id in ({})",
        placeholders(4, ids.len())
    );
    let mut q = sqlx::query(&sql)
        .bind(folder)
        .bind((folder == "trash").then_some(now))
        .bind(mailbox_id);
    for id in ids {
        q = q.bind(*id);
    }
    Ok(q.execute(conn).await?.rows_affected())
}

/// Marks messages of a mailbox read or unread.
pub async fn set_read(
    conn: &mut AnyConnection,
    mailbox_id: i64,
    ids: &[i64],
    read: bool,
) -> sqlx::Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let sql = format!(
        "update messages set is_read = $1 where mailbox_id = $2 and id in ({})",
        placeholders(3, ids.len())
    );
    let mut q = sqlx::query(&sql).bind(i64::from(read)).bind(mailbox_id);
    for id in ids {
        q = q.bind(*id);
    }
    Ok(q.execute(conn).await?.rows_affected())
}

/// Puts messages back where they were before an action.
pub async fn restore(
    conn: &mut AnyConnection,
    mailbox_id: i64,
    before: &[Before],
) -> sqlx::Result<u64> {
    let mut n = 0;
    for b in before {
        n += sqlx::query(
            "update messages set folder = $1, is_read = $2, trashed_at = $3 where id = $4 and mailbox_id = $5",
        )
        .bind(&b.folder)
        .bind(i64::from(b.is_read))
        .bind(b.trashed_at)
        .bind(b.id)
        .bind(mailbox_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    }
    Ok(n)
}

/// Deletes messages that have been in Trash since before `cutoff`; returns how many.
pub async fn purge_trash(db: &Db, cutoff: i64) -> sqlx::Result<u64> {
    let _turn = db.write_turn().await;
    let done = sqlx::query(
        "delete from messages where folder = 'trash' and trashed_at is not null and trashed_at < $1",
    )
    .bind(cutoff)
    .execute(&db.pool)
    .await?;
    Ok(done.rows_affected())
}

/// How many messages a mailbox holds in `folder`.
pub async fn count_in(db: &Db, mailbox_id: i64, folder: &str) -> sqlx::Result<u64> {
    let n: i64 =
        sqlx::query_scalar("select count(*) from messages where mailbox_id = $1 and folder = $2")
            .bind(mailbox_id)
            .bind(folder)
            .fetch_one(&db.pool)
            .await?;
    Ok(n.max(0) as u64)
}

/// Empties a mailbox's Trash now; returns how many messages were deleted.
pub async fn empty_trash(conn: &mut AnyConnection, mailbox_id: i64) -> sqlx::Result<u64> {
    let done = sqlx::query("delete from messages where mailbox_id = $1 and folder = 'trash'")
        .bind(mailbox_id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}

/// Records that a user read, replied to, forwarded or moved a message, for the others
/// sharing the mailbox.
pub async fn record_activity(
    conn: &mut AnyConnection,
    message_id: i64,
    user_id: i64,
    user_name: &str,
    action: &str,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into message_activity (message_id, user_id, action, at) values ($1, $2, $3, $4)",
    )
    .bind(message_id)
    .bind(user_id)
    .bind(action)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query("update messages set last_activity = $1 where id = $2")
        .bind(format!("{} by {user_name}", activity_label(action)))
        .bind(message_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// "Read", "Replied", … for an activity code.
pub fn activity_label(action: &str) -> &str {
    match action {
        "read" => "Read",
        "reply" => "Replied",
        "forward" => "Forwarded",
        "move" => "Moved",
        "unread" => "Marked unread",
        other => other,
    }
}

/// Who did what to a message, oldest first: `(user name, action, at)`.
pub async fn activity<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    message_id: i64,
) -> sqlx::Result<Vec<(String, String, i64)>> {
    let rows = sqlx::query(
        "select u.display_name, a.action, a.at from message_activity a join users u on u.id = a.user_id
         where a.message_id = $1 order by a.id",
    )
    .bind(message_id)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("display_name")?,
                r.try_get("action")?,
                r.try_get("at")?,
            ))
        })
        .collect()
}

/// A search within one mailbox.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(default)]
pub struct Search {
    /// Words anywhere: sender, recipients, subject, body, attachment names.
    pub q: String,
    /// Words in the sender's name or address.
    pub from: String,
    /// Words in the recipients.
    pub to: String,
    /// `YYYY-MM-DD`, inclusive (UTC).
    pub after: String,
    pub before: String,
    /// Only this folder; every folder but Trash when empty.
    pub folder: String,
}

/// Words of a query as the index splits them (letters and digits), at most 8,
/// lower case and without accents.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(8)
        .map(|w| {
            w.chars()
                .map(fold_letter)
                .collect::<String>()
                .to_lowercase()
        })
        .collect()
}

/// An accented Latin letter's base letter, as PostgreSQL's `directmail_fold`
/// (migration 0013) folds the search column: what NFD splits into an ASCII letter
/// and combining marks in U+00C0–U+024F, and ø ł đ ı. Other characters are kept.
/// (SQLite's tokenizer folds accents itself.) One character for one, as SQL's
/// `translate` maps them, so unlike the directory's `directory::search::tokens`
/// (which spells ß as "ss") mail search finds "Straße" only with the ß.
fn fold_letter(c: char) -> char {
    match c {
        'ø' => 'o',
        'Ø' => 'O',
        'ł' => 'l',
        'Ł' => 'L',
        'đ' => 'd',
        'Đ' => 'D',
        'ı' => 'i',
        '\u{C0}'..='\u{24F}' => {
            let mut parts = std::iter::once(c).nfd();
            match parts.next() {
                Some(base) if base.is_ascii_alphabetic() && parts.all(is_combining_mark) => base,
                _ => c,
            }
        }
        _ => c,
    }
}

/// A tsquery: every word as a prefix, all required.
fn tsquery(ws: &[String]) -> String {
    ws.iter()
        .map(|w| format!("'{w}':*"))
        .collect::<Vec<_>>()
        .join(" & ")
}

/// How many of the index's terms a word may begin for SQLite's search to name them
/// instead of asking for the prefix.
const FTS_MAX_TERMS: i64 = 16;

/// The full-text index's terms that begin with `$1`, in order, at most `$2`: each
/// found by seeking past the one before (the `instance` vocabulary table lists the
/// terms in order and reads no further than its first row).
const FTS_TERMS: &str = "with recursive t(term, n) as (
        select (select term from messages_fts_terms where term >= $1 limit 1), 1
        union all
        select (select term from messages_fts_terms where term >= t.term || char(1) limit 1), n + 1
        from t where n < $2 and substr(t.term, 1, length($1)) = $1
    )
    select term from t where substr(term, 1, length($1)) = $1";

/// An FTS5 expression for SQLite's search: every word as a prefix, all required, in
/// `column` when given; `None` when a word begins no term of the index, so nothing
/// can match. FTS5 answers a prefix (`"potass"*`) by first copying the entries of
/// every message holding a term it begins, which for a common word is most of a
/// large mailbox, before the newest page can be taken; a term's entries are read
/// lazily, newest first. So a word of plain letters and digits (which the index's
/// tokenizer keeps as it is) is replaced by the few terms it begins
/// (`("potassium" OR "potassiums")`), the same matches; another word, or one that
/// begins more than [`FTS_MAX_TERMS`] terms, stays a prefix.
async fn fts_match(db: &Db, column: Option<&str>, ws: &[String]) -> sqlx::Result<Option<String>> {
    let mut parts = Vec::new();
    for w in ws {
        let mut part = format!("\"{w}\"*");
        if w.bytes().all(|b| b.is_ascii_alphanumeric()) {
            let terms: Vec<String> = sqlx::query_scalar(FTS_TERMS)
                .bind(w)
                .bind(FTS_MAX_TERMS + 1)
                .fetch_all(&db.pool)
                .await?;
            if terms.is_empty() {
                return Ok(None);
            }
            if terms.len() as i64 <= FTS_MAX_TERMS {
                let quoted: Vec<String> = terms
                    .iter()
                    .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
                    .collect();
                part = format!("({})", quoted.join(" OR "));
            }
        }
        parts.push(part);
    }
    Ok(Some(match column {
        Some(c) => format!("{c} : ({})", parts.join(" AND ")),
        None => parts.join(" AND "),
    }))
}

/// Whether the search asks for anything.
impl Search {
    pub fn is_empty(&self) -> bool {
        words(&self.q).is_empty()
            && words(&self.from).is_empty()
            && words(&self.to).is_empty()
            && crate::clock::parse_date(&self.after).is_none()
            && crate::clock::parse_date(&self.before).is_none()
    }
}

/// Messages of a mailbox matching a search, newest first, keyset paged by id.
pub async fn search(
    db: &Db,
    mailbox_id: i64,
    s: &Search,
    before_id: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<MessageRow>> {
    let mut clauses = vec!["m.mailbox_id = $1".to_owned()];
    let mut texts: Vec<String> = Vec::new();
    let mut ints: Vec<i64> = Vec::new();
    // On SQLite the full-text index drives the query, newest first, so a common word
    // stops after one page instead of sorting every match.
    let mut from_clause = "messages m";
    let mut order = "m.id";
    // text parameters come first ($2…), then integers
    let (q, from, to) = (words(&s.q), words(&s.from), words(&s.to));
    let mut full_text = false;
    match db.backend {
        Backend::Sqlite => {
            let mut parts = Vec::new();
            for (column, ws) in [
                (None, &q),
                (Some("sender"), &from),
                (Some("recipients"), &to),
            ] {
                if ws.is_empty() {
                    continue;
                }
                match fts_match(db, column, ws).await? {
                    Some(part) => parts.push(part),
                    None => return Ok(Vec::new()),
                }
            }
            if !parts.is_empty() {
                texts.push(parts.join(" AND "));
                from_clause = "messages_fts f join messages m on m.id = f.rowid";
                order = "f.rowid";
                clauses.push(format!("messages_fts match ${}", 1 + texts.len()));
            }
        }
        Backend::Postgres => {
            let all: Vec<String> = q.iter().chain(&from).chain(&to).cloned().collect();
            if !all.is_empty() {
                full_text = true;
                texts.push(tsquery(&all));
                clauses.push(format!(
                    "m.search @@ to_tsquery('simple', ${})",
                    1 + texts.len()
                ));
            }
            for (column, ws) in [
                ("m.from_name || ' ' || m.from_addr", &from),
                ("m.to_addrs", &to),
            ] {
                for w in ws {
                    texts.push(format!("%{w}%"));
                    clauses.push(format!(
                        "lower(directmail_fold({column})) like ${}",
                        1 + texts.len()
                    ));
                }
            }
        }
    }
    if s.folder.is_empty() {
        clauses.push("m.folder <> 'trash'".into());
    } else {
        texts.push(s.folder.clone());
        clauses.push(format!("m.folder = ${}", 1 + texts.len()));
    }
    let mut next = 2 + texts.len();
    for (bound, op, shift) in [(&s.after, ">=", 0), (&s.before, "<", 86_400)] {
        if let Some(t) = crate::clock::parse_date(bound) {
            ints.push(t + shift);
            clauses.push(format!("m.received_at {op} ${next}"));
            next += 1;
        }
    }
    if let Some(b) = before_id {
        ints.push(b);
        clauses.push(format!("{order} < ${next}"));
        next += 1;
    }
    let columns: Vec<String> = ROW_COLUMNS
        .split(',')
        .map(|c| format!("m.{}", c.trim()))
        .collect();
    let run = |from_clause: String| {
        let sql = format!(
            "select {} from {from_clause} where {} order by {order} desc limit ${next}",
            columns.join(", "),
            clauses.join(" and ")
        );
        let (texts, ints) = (&texts, &ints);
        async move {
            let mut query = sqlx::query(&sql).bind(mailbox_id);
            for t in texts {
                query = query.bind(t.clone());
            }
            for i in ints {
                query = query.bind(*i);
            }
            let rows = query.bind(limit).fetch_all(&db.pool).await?;
            rows.iter()
                .map(MessageRow::from_row)
                .collect::<sqlx::Result<Vec<_>>>()
        }
    };
    // On PostgreSQL the GIN index finds every match before any can be sorted, which
    // for a word in most messages means reading most of the mailbox. The newest
    // messages are tried first, in id order; a page found there is the answer.
    if full_text {
        let before = match before_id {
            Some(_) => format!(" and id < ${}", next - 1),
            None => String::new(),
        };
        let found = run(format!(
            "(select * from messages where mailbox_id = $1{before}
              order by id desc limit {PG_NEWEST_FIRST}) m"
        ))
        .await?;
        if found.len() as i64 >= limit {
            return Ok(found);
        }
    }
    run(from_clause.to_owned()).await
}

/// Messages about one patient (by stored identifier, or by name when `id` is empty)
/// in the mailboxes assigned to `user_id`, Trash left out, newest first, keyset
/// paged by id; each with its mailbox's address.
pub async fn about_patient(
    db: &Db,
    user_id: i64,
    id: &str,
    name: &str,
    before_id: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<(MessageRow, String)>> {
    let columns: Vec<String> = ROW_COLUMNS
        .split(',')
        .map(|c| format!("m.{}", c.trim()))
        .collect();
    let (column, key) = if id.is_empty() {
        ("m.patient_name", name)
    } else {
        ("m.patient_id", id)
    };
    let sql = format!(
        "select {}, b.address as mailbox_address from messages m join mailboxes b on b.id = m.mailbox_id
         where m.mailbox_id in ({MAILBOXES_OF_USER})
           and {column} = $2 and m.folder <> 'trash' and m.id < $3
         order by m.id desc limit $4",
        columns.join(", ")
    );
    let rows = sqlx::query(&sql)
        .bind(user_id)
        .bind(key)
        .bind(before_id.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&db.pool)
        .await?;
    rows.iter()
        .map(|r| Ok((MessageRow::from_row(r)?, r.try_get("mailbox_address")?)))
        .collect()
}

/// How many of a mailbox's newest messages a PostgreSQL search looks through before
/// it asks the full-text index for every match.
const PG_NEWEST_FIRST: i64 = 2000;

/// For Sent items: each message's delivery in a few words ("3 delivered, 1 failed").
pub async fn delivery_summaries(
    db: &Db,
    outbound_ids: &[i64],
) -> sqlx::Result<HashMap<i64, String>> {
    if outbound_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "select outbound_id, state, count(*) as n from delivery_status where outbound_id in ({})
         group by outbound_id, state",
        placeholders(1, outbound_ids.len())
    );
    let mut q = sqlx::query(&sql);
    for id in outbound_ids {
        q = q.bind(*id);
    }
    let mut counts: HashMap<i64, Vec<(String, i64)>> = HashMap::new();
    for r in q.fetch_all(&db.pool).await? {
        counts
            .entry(r.try_get("outbound_id")?)
            .or_default()
            .push((r.try_get("state")?, r.try_get("n")?));
    }
    Ok(counts
        .into_iter()
        .map(|(id, states)| (id, outcome(&states)))
        .collect())
}

/// A Sent message's delivery over all its recipients, as the Sent list says it:
/// "Delivered", "All 3 delivered", "Delivered to 1 of 3", "Sending", "Failed",
/// "Failed for 1 of 3". A recipient counts as delivered once their HISP confirmed
/// receipt (a processed or dispatched notification).
pub fn outcome(states: &[(String, i64)]) -> String {
    let count = |wanted: &[&str]| -> i64 {
        states
            .iter()
            .filter(|(s, _)| wanted.contains(&s.as_str()))
            .map(|(_, n)| n)
            .sum()
    };
    let all: i64 = states.iter().map(|(_, n)| n).sum();
    let (failed, delivered) = (count(&["failed"]), count(&["processed", "dispatched"]));
    match (failed, delivered) {
        (0, 0) => "Sending".to_owned(),
        (0, d) if d == all && all == 1 => "Delivered".to_owned(),
        (0, d) if d == all => format!("All {all} delivered"),
        (0, d) => format!("Delivered to {d} of {all}"),
        (f, _) if f == all && all == 1 => "Failed".to_owned(),
        (f, _) => format!("Failed for {f} of {all}"),
    }
}

/// Whether a recipient's delivery will change no more by itself.
pub fn is_final(state: &str) -> bool {
    matches!(state, "processed" | "dispatched" | "failed")
}

/// A delivery state in the words the sender sees.
pub fn status_word(state: &str) -> &str {
    match state {
        "queued" => "queued",
        "sent" => "sent",
        "processed" => "processed",
        "dispatched" => "delivered",
        "failed" => "failed",
        other => other,
    }
}

#[cfg(test)]
mod outcome_tests {
    use super::outcome;

    #[test]
    fn the_sent_list_says_how_many_were_delivered_or_failed() {
        let s = |list: &[(&str, i64)]| -> Vec<(String, i64)> {
            list.iter().map(|(s, n)| ((*s).to_owned(), *n)).collect()
        };
        assert_eq!(outcome(&s(&[("queued", 1)])), "Sending");
        assert_eq!(outcome(&s(&[("sent", 2)])), "Sending");
        assert_eq!(outcome(&s(&[("dispatched", 1)])), "Delivered");
        assert_eq!(
            outcome(&s(&[("processed", 1), ("dispatched", 2)])),
            "All 3 delivered"
        );
        assert_eq!(
            outcome(&s(&[("processed", 1), ("sent", 2)])),
            "Delivered to 1 of 3"
        );
        assert_eq!(outcome(&s(&[("failed", 1)])), "Failed");
        assert_eq!(
            outcome(&s(&[("failed", 1), ("dispatched", 2)])),
            "Failed for 1 of 3"
        );
    }
}

/// Messages of a folder newer than `after_id`, newest first (for polling).
pub async fn newer(
    db: &Db,
    mailbox_id: i64,
    folder: &str,
    after_id: i64,
    limit: i64,
) -> sqlx::Result<Vec<MessageRow>> {
    let sql = format!(
        "select {ROW_COLUMNS} from messages where mailbox_id = $1 and folder = $2 and id > $3
         order by id desc limit {limit}"
    );
    // the limit written in, as in `inbound::page`
    let rows = sqlx::query(&sql)
        .bind(mailbox_id)
        .bind(folder)
        .bind(after_id)
        .fetch_all(&db.pool)
        .await?;
    rows.iter().map(MessageRow::from_row).collect()
}

/// Deletes messages of a mailbox for good.
pub async fn delete(conn: &mut AnyConnection, mailbox_id: i64, ids: &[i64]) -> sqlx::Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let sql = format!(
        "delete from messages where mailbox_id = $1 and id in ({})",
        placeholders(2, ids.len())
    );
    let mut q = sqlx::query(&sql).bind(mailbox_id);
    for id in ids {
        q = q.bind(*id);
    }
    Ok(q.execute(conn).await?.rows_affected())
}

/// A message's mailbox and, for one sent from here, its outbound id: enough to check
/// who may see its delivery without reading the message.
pub async fn mailbox_and_outbound(db: &Db, id: i64) -> sqlx::Result<Option<(i64, Option<i64>)>> {
    let row = sqlx::query("select mailbox_id, outbound_id from messages where id = $1")
        .bind(id)
        .fetch_optional(&db.pool)
        .await?;
    row.map(|r| Ok((r.try_get("mailbox_id")?, r.try_get("outbound_id")?)))
        .transpose()
}

/// The Sent copy of an outbound message.
pub async fn sent_copy(db: &Db, outbound_id: i64) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "select id from messages where outbound_id = $1 and folder <> 'trash' order by id limit 1",
    )
    .bind(outbound_id)
    .fetch_optional(&db.pool)
    .await
}

/// A message of a mailbox by its Message-ID (without angle brackets).
pub async fn by_message_id(
    conn: &mut AnyConnection,
    mailbox_id: i64,
    message_id: &str,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "select id from messages where mailbox_id = $1 and message_id = $2 order by id limit 1",
    )
    .bind(mailbox_id)
    .bind(message_id)
    .fetch_optional(conn)
    .await
}

/// An address offered while typing a recipient.
/// The user's recent recipients containing `q` (the To/Cc of their latest Sent
/// items), newest first, at most `limit`.
pub async fn recent_recipients(
    db: &Db,
    user_id: i64,
    q: &str,
    limit: usize,
) -> sqlx::Result<Vec<String>> {
    let needle = crate::directory::search::cut_query(q).to_lowercase();
    let mut out: Vec<String> = Vec::new();
    // recent recipients: the To/Cc of the user's latest Sent items
    let recent = sqlx::query(
        "select m.to_addrs from messages m join mailbox_members mm on mm.mailbox_id = m.mailbox_id
         where mm.user_id = $1 and m.folder = 'sent' order by m.id desc limit 200",
    )
    .bind(user_id)
    .fetch_all(&db.pool)
    .await?;
    for r in &recent {
        let list: String = r.try_get("to_addrs")?;
        for address in list.split(',').map(str::trim) {
            if out.len() >= limit {
                return Ok(out);
            }
            if address.to_lowercase().contains(&needle)
                && !out.iter().any(|s| s.eq_ignore_ascii_case(address))
            {
                out.push(address.to_owned());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two strings of `translate(t, 'from', 'to')` in the PostgreSQL migration.
    fn migration_map() -> Vec<(char, char)> {
        let sql = include_str!("../../migrations/postgres/0013_search_accents.sql");
        let body = sql.split("translate(t,").nth(1).unwrap();
        let quoted: Vec<&str> = body.split('\'').skip(1).step_by(2).take(2).collect();
        let (from, to): (Vec<char>, Vec<char>) =
            (quoted[0].chars().collect(), quoted[1].chars().collect());
        assert_eq!(from.len(), to.len());
        from.into_iter().zip(to).collect()
    }

    #[test]
    fn search_keeps_each_piece_once_and_the_text_from_a_tag_on_as_it_is() {
        assert_eq!(
            once_each("a b a, b-c\r\na.b\tZoë zoë Zoë <x a> a a"),
            "a b a, c Zoë zoë <x a> a a"
        );
        assert_eq!(once_each(""), "");
        assert_eq!(once_each(" \r\n@._-/: "), "");
        assert_eq!(once_each("<b> b b"), "<b> b b");
        // a field before the body with a `<` keeps the whole text
        let ix = Indexed {
            body_text: "x x".into(),
            body_words: once_each("x x"),
            ..Indexed::default()
        };
        assert_eq!(ix.search_body("a@b.test", "Lab results"), "x");
        assert_eq!(ix.search_body("a@b.test", "Re: <b"), "x x");
    }

    #[test]
    fn query_words_fold_accents_exactly_as_the_postgres_search_column() {
        let map = migration_map();
        assert!(map.len() > 200);
        for &(accented, base) in &map {
            assert_eq!(fold_letter(accented), base, "{accented}");
        }
        // and nothing folds in Rust that the column keeps
        for c in ('\u{80}'..='\u{24F}').chain("øØłŁđĐı".chars()) {
            if fold_letter(c) != c {
                assert!(map.iter().any(|&(a, _)| a == c), "{c} folds only in Rust");
            }
        }
        assert_eq!(
            words("Café  Müller-Łukasz ZOË"),
            ["cafe", "muller", "lukasz", "zoe"]
        );
        assert_eq!(
            words("Ωμέγα 東京"),
            ["ωμέγα", "東京"],
            "other scripts are kept"
        );
    }
}
