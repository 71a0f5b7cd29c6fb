//! The provider directory's records: entries and their addresses, search on SQLite
//! (FTS5) and PostgreSQL (tsvector + GIN), hosted mailboxes kept listed, uploads
//! waiting for confirmation and the state of scheduled refreshes.
//!
//! Search columns hold lowercase ASCII tokens made by `directory::search`, and queries
//! are made of the same tokens, so both databases see only `[a-z0-9 ]`.

use std::collections::HashMap;

use sqlx::{AnyConnection, Row as _, any::AnyRow};

use crate::db::{Backend, Db};
use crate::directory::search::{cut_query, folded, name_key, tokens};
use crate::directory::{Attached, EntryData, Kind, Scope};
use crate::domain::{Email, Specialty};

/// Who is looking: members see the shared directory, their organization's contacts
/// and their own address book.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Viewer {
    pub user_id: i64,
    pub org_id: Option<i64>,
}

/// The columns `Entry::from_row` reads, from `directory_entries e` (never `e.*`: the
/// `Any` driver cannot read PostgreSQL's tsvector column).
const ENTRY: &str = "e.id, e.kind, e.scope, e.org_id, e.owner_id, e.mailbox_id, e.name, \
     e.organization, e.npi, e.specialties, e.address_line, e.city, e.state, e.zip, e.phone, \
     e.source, e.fhir_id, e.wants_xdm, e.confirmed_at, e.updated_at";

/// One Direct address of an entry, with the certificate attached to it, if any.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AddressRow {
    pub address: String,
    pub cert_subject: Option<String>,
    pub cert_fingerprint: Option<String>,
    pub cert_not_after: Option<i64>,
}

/// A stored entry with its addresses.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    pub id: i64,
    pub kind: Kind,
    /// `public`, `org` or `personal`.
    pub scope: String,
    pub org_id: Option<i64>,
    pub owner_id: Option<i64>,
    /// Set when the entry lists a mailbox hosted here.
    pub mailbox_id: Option<i64>,
    pub name: String,
    pub organization: String,
    pub npi: Option<String>,
    pub specialties: Vec<Specialty>,
    pub address_line: String,
    pub city: String,
    pub state: String,
    pub zip: String,
    pub phone: String,
    pub source: String,
    pub fhir_id: Option<String>,
    /// Whether this recipient wants a message's documents as an XDM package.
    pub wants_xdm: bool,
    pub confirmed_at: i64,
    pub updated_at: i64,
    pub addresses: Vec<AddressRow>,
}

impl Entry {
    fn from_row(row: &AnyRow) -> sqlx::Result<Entry> {
        let kind: String = row.try_get("kind")?;
        let specialties: String = row.try_get("specialties")?;
        Ok(Entry {
            id: row.try_get("id")?,
            kind: Kind::parse(&kind).unwrap_or(Kind::Practitioner),
            scope: row.try_get("scope")?,
            org_id: row.try_get("org_id")?,
            owner_id: row.try_get("owner_id")?,
            mailbox_id: row.try_get("mailbox_id")?,
            name: row.try_get("name")?,
            organization: row.try_get("organization")?,
            npi: row.try_get("npi")?,
            specialties: serde_json::from_str(&specialties).unwrap_or_default(),
            address_line: row.try_get("address_line")?,
            city: row.try_get("city")?,
            state: row.try_get("state")?,
            zip: row.try_get("zip")?,
            phone: row.try_get("phone")?,
            source: row.try_get("source")?,
            fhir_id: row.try_get("fhir_id")?,
            wants_xdm: super::flag(row.try_get("wants_xdm")?),
            confirmed_at: row.try_get("confirmed_at")?,
            updated_at: row.try_get("updated_at")?,
            addresses: Vec::new(),
        })
    }

    /// The scope this entry belongs to.
    pub fn scope(&self) -> Scope {
        match (self.scope.as_str(), self.org_id, self.owner_id) {
            ("org", Some(org), _) => Scope::Org(org),
            ("personal", _, Some(user)) => Scope::Personal(user),
            _ => Scope::Public,
        }
    }

    /// Whether `viewer` may see this entry at all.
    pub fn visible_to(&self, viewer: &Viewer) -> bool {
        match self.scope() {
            Scope::Public => true,
            Scope::Org(org) => viewer.org_id == Some(org),
            Scope::Personal(user) => viewer.user_id == user,
        }
    }

    /// `org · specialty · city, ST`.
    pub fn detail(&self) -> String {
        crate::directory::detail(
            &self.organization,
            self.specialties.first().map(Specialty::shown),
            &self.city,
            &self.state,
        )
    }

    pub fn is_hosted(&self) -> bool {
        self.mailbox_id.is_some()
    }

    /// Back into the shape the forms and files use.
    pub fn to_input(&self) -> crate::directory::EntryInput {
        crate::directory::EntryInput {
            kind: self.kind.as_str().to_owned(),
            name: self.name.clone(),
            organization: self.organization.clone(),
            npi: self.npi.clone().unwrap_or_default(),
            specialties: self
                .specialties
                .iter()
                .map(|s| (s.code.clone(), s.label.clone()))
                .collect(),
            address_line: self.address_line.clone(),
            city: self.city.clone(),
            state: self.state.clone(),
            zip: self.zip.clone(),
            phone: self.phone.clone(),
            addresses: self.addresses.iter().map(|a| a.address.clone()).collect(),
            certificate: None,
            fhir_id: self.fhir_id.clone().unwrap_or_default(),
            wants_xdm: Some(self.wants_xdm),
        }
    }
}

/// What the compose page offers for a typed prefix.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Suggestion {
    pub name: String,
    pub address: String,
    /// `organization · specialty · city, ST`
    pub detail: String,
    /// Whether a certificate for the address is on file (attached to the entry, or
    /// the hosted domain's own), so a message can be encrypted without discovery.
    pub has_certificate: bool,
}

/// How many matches of each rank a search considers: a broad search ("ma") ranks
/// and sorts the first ones the index yields rather than every match.
pub const CANDIDATES: i64 = 1000;

/// What to look for; every part optional.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Names, organizations, specialties, places, NPIs, addresses: every word must
    /// match the start of a word of the entry.
    pub text: String,
    /// Only entries with a specialty whose code or name starts with these words.
    pub specialty: String,
    /// Only entries whose city, state or ZIP starts with these words.
    pub place: String,
}

/// The search columns for an entry.
struct SearchColumns {
    name: String,
    org: String,
    specialty: String,
    place: String,
    ident: String,
    name_key: String,
    sort_name: String,
}

fn search_columns(e: &EntryData) -> SearchColumns {
    let specialty = e
        .specialties
        .iter()
        .map(|s| format!("{} {}", s.code, s.label))
        .collect::<Vec<_>>()
        .join(" ");
    let mut ident = e
        .addresses
        .iter()
        .map(|a| a.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(npi) = &e.npi {
        ident.push(' ');
        ident.push_str(npi.as_str());
    }
    SearchColumns {
        name: folded(&e.name),
        org: folded(&e.organization),
        specialty: folded(&specialty),
        place: folded(&format!("{} {} {}", e.city, e.state, e.zip)),
        ident: folded(&ident),
        name_key: name_key(&e.name),
        sort_name: folded(&e.name),
    }
}

/// Stores a new entry and its addresses; returns its id.
pub async fn insert(
    conn: &mut AnyConnection,
    scope: Scope,
    source: &str,
    e: &EntryData,
    mailbox_id: Option<i64>,
    now: i64,
) -> sqlx::Result<i64> {
    let s = search_columns(e);
    let query = sqlx::query_scalar(
        "insert into directory_entries (kind, scope, scope_key, org_id, owner_id, mailbox_id,
             name, organization, npi, specialties, address_line, city, state, zip, phone,
             source, fhir_id, confirmed_at, created_at, updated_at,
             search_name, search_org, search_specialty, search_place, search_ident, name_key, sort_name,
             wants_xdm)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                 $18, $18, $18, $19, $20, $21, $22, $23, $24, $25, coalesce($26, 0))
         returning id",
    )
    .bind(e.kind.as_str())
    .bind(scope.name())
    .bind(scope.key())
    .bind(scope.org_id())
    .bind(scope.owner_id())
    .bind(mailbox_id);
    let id: i64 = bind_entry(query, e, &s, source, now)
        .bind(e.wants_xdm.map(i64::from))
        .fetch_one(&mut *conn)
        .await?;
    set_addresses(conn, id, &scope.key(), e).await?;
    Ok(id)
}

type ScalarQuery<'q, T> = sqlx::query::QueryScalar<'q, sqlx::Any, T, sqlx::any::AnyArguments<'q>>;

/// Binds an entry's fields, source, time and search columns, in the order both
/// `insert` and `update` name them.
fn bind_entry<'q, T>(
    query: ScalarQuery<'q, T>,
    e: &'q EntryData,
    s: &'q SearchColumns,
    source: &'q str,
    now: i64,
) -> ScalarQuery<'q, T> {
    query
        .bind(&e.name)
        .bind(&e.organization)
        .bind(e.npi.as_ref().map(|n| n.as_str().to_owned()))
        .bind(specialties_json(&e.specialties))
        .bind(&e.address_line)
        .bind(&e.city)
        .bind(&e.state)
        .bind(&e.zip)
        .bind(&e.phone)
        .bind(source)
        .bind(e.fhir_id.as_deref())
        .bind(now)
        .bind(&s.name)
        .bind(&s.org)
        .bind(&s.specialty)
        .bind(&s.place)
        .bind(&s.ident)
        .bind(&s.name_key)
        .bind(&s.sort_name)
}

fn specialties_json(list: &[Specialty]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
}

/// Replaces an entry's fields and addresses (certificates stay with the addresses
/// that remain); the source and confirmation time are updated too.
pub async fn update(
    conn: &mut AnyConnection,
    id: i64,
    source: &str,
    e: &EntryData,
    now: i64,
) -> sqlx::Result<()> {
    let s = search_columns(e);
    let query = sqlx::query_scalar(
        "update directory_entries set kind = $1, name = $2, organization = $3, npi = $4,
             specialties = $5, address_line = $6, city = $7, state = $8, zip = $9, phone = $10,
             source = $11, fhir_id = coalesce($12, fhir_id), confirmed_at = $13, updated_at = $13,
             search_name = $14, search_org = $15, search_specialty = $16, search_place = $17,
             search_ident = $18, name_key = $19, sort_name = $20,
             wants_xdm = coalesce($21, wants_xdm)
         where id = $22 returning scope_key",
    )
    .bind(e.kind.as_str());
    let scope_key: String = bind_entry(query, e, &s, source, now)
        .bind(e.wants_xdm.map(i64::from))
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
    set_addresses(conn, id, &scope_key, e).await
}

async fn set_addresses(
    conn: &mut AnyConnection,
    id: i64,
    scope_key: &str,
    e: &EntryData,
) -> sqlx::Result<()> {
    let existing: Vec<String> =
        sqlx::query_scalar("select address from directory_addresses where entry_id = $1")
            .bind(id)
            .fetch_all(&mut *conn)
            .await?;
    for old in &existing {
        if !e.addresses.iter().any(|a| a.as_str() == old) {
            sqlx::query("delete from directory_addresses where entry_id = $1 and address = $2")
                .bind(id)
                .bind(old)
                .execute(&mut *conn)
                .await?;
        }
    }
    for a in &e.addresses {
        if !existing.iter().any(|old| old == a.as_str()) {
            sqlx::query(
                "insert into directory_addresses (entry_id, scope_key, address) values ($1, $2, $3)",
            )
            .bind(id)
            .bind(scope_key)
            .bind(a.as_str())
            .execute(&mut *conn)
            .await?;
        }
    }
    if let Some((address, cert)) = &e.certificate {
        attach_certificate(conn, id, address, Some(cert)).await?;
    }
    Ok(())
}

/// Attaches (or with `None` removes) the certificate of one of an entry's addresses.
/// False when the entry has no such address.
pub async fn attach_certificate(
    conn: &mut AnyConnection,
    entry_id: i64,
    address: &Email,
    cert: Option<&Attached>,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "update directory_addresses set cert_pem = $1, cert_subject = $2, cert_fingerprint = $3,
             cert_not_after = $4
         where entry_id = $5 and address = $6",
    )
    .bind(cert.map(|c| c.pem.clone()))
    .bind(cert.map(|c| c.subject.clone()))
    .bind(cert.map(|c| c.fingerprint.clone()))
    .bind(cert.map(|c| c.not_after))
    .bind(entry_id)
    .bind(address.as_str())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn delete(conn: &mut AnyConnection, id: i64) -> sqlx::Result<bool> {
    // addresses first: SQLite only cascades with foreign keys on, which every
    // connection of the pool sets, but the order costs nothing
    sqlx::query("delete from directory_addresses where entry_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    let done = sqlx::query("delete from directory_entries where id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// An entry by id, with its addresses; visibility is the caller's to check.
pub async fn get(db: &Db, id: i64) -> sqlx::Result<Option<Entry>> {
    sync_hosted(db).await?;
    let row = sqlx::query(&format!(
        "select {ENTRY} from directory_entries e where e.id = $1"
    ))
    .bind(id)
    .fetch_optional(&db.pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let mut entries = vec![Entry::from_row(&row)?];
    fill_addresses(&db.pool, &mut entries).await?;
    Ok(entries.pop())
}

async fn fill_addresses<'e, E>(executor: E, entries: &mut [Entry]) -> sqlx::Result<()>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    if entries.is_empty() {
        return Ok(());
    }
    let placeholders = (1..=entries.len())
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "select entry_id, address, cert_subject, cert_fingerprint, cert_not_after
         from directory_addresses where entry_id in ({placeholders}) order by id"
    );
    let mut query = sqlx::query(&sql);
    for e in entries.iter() {
        query = query.bind(e.id);
    }
    for row in query.fetch_all(executor).await? {
        let entry_id: i64 = row.try_get("entry_id")?;
        if let Some(e) = entries.iter_mut().find(|e| e.id == entry_id) {
            e.addresses.push(AddressRow {
                address: row.try_get("address")?,
                cert_subject: row.try_get("cert_subject")?,
                cert_fingerprint: row.try_get("cert_fingerprint")?,
                cert_not_after: row.try_get("cert_not_after")?,
            });
        }
    }
    Ok(())
}

/// The entry of `scope_key` with this NPI, FHIR id or address: `(id, mailbox_id)`.
pub async fn find_by_key(
    conn: &mut AnyConnection,
    scope_key: &str,
    column: KeyColumn,
    value: &str,
) -> sqlx::Result<Option<(i64, Option<i64>)>> {
    let sql = match column {
        KeyColumn::Npi => "select id, mailbox_id from directory_entries where scope_key = $1 and npi = $2",
        KeyColumn::FhirId => {
            "select id, mailbox_id from directory_entries where scope_key = $1 and fhir_id = $2"
        }
        KeyColumn::Address => {
            "select e.id, e.mailbox_id from directory_addresses a join directory_entries e on e.id = a.entry_id
             where a.scope_key = $1 and a.address = $2"
        }
    };
    let row = sqlx::query(sql)
        .bind(scope_key)
        .bind(value)
        .fetch_optional(conn)
        .await?;
    row.map(|r| Ok((r.try_get("id")?, r.try_get("mailbox_id")?)))
        .transpose()
}

/// What identifies an entry on re-import, in order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyColumn {
    Npi,
    FhirId,
    Address,
}

/// Ids of a scope's entries from one source (for pruning after a refresh).
pub async fn ids_from_source(
    conn: &mut AnyConnection,
    scope_key: &str,
    source: &str,
) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar("select id from directory_entries where scope_key = $1 and source = $2")
        .bind(scope_key)
        .bind(source)
        .fetch_all(conn)
        .await
}

/// Every entry of a scope by name, with addresses (exports; address-book pages).
pub async fn list_scope(
    db: &Db,
    scope: Scope,
    limit: i64,
    offset: i64,
) -> sqlx::Result<Vec<Entry>> {
    sync_hosted(db).await?;
    let rows = sqlx::query(&format!(
        "select {ENTRY} from directory_entries e where e.scope_key = $1
         order by e.sort_name, e.id limit $2 offset $3"
    ))
    .bind(scope.key())
    .bind(limit)
    .bind(offset)
    .fetch_all(&db.pool)
    .await?;
    let mut entries = rows
        .iter()
        .map(Entry::from_row)
        .collect::<sqlx::Result<Vec<_>>>()?;
    fill_addresses(&db.pool, &mut entries).await?;
    Ok(entries)
}

/// A search query as the backend runs it.
struct Compiled {
    /// SQLite: the FTS5 query everything must match.
    fts_all: String,
    /// SQLite: the text's words against names only (the second rank).
    fts_names: String,
    /// Whether there is text (else only filters, and every match ranks alike).
    has_text: bool,
    /// The sorted words of the text, for exact names (the first rank).
    key: String,
    /// A predicate on one row `e`: it matches the whole query.
    matches: String,
    /// A predicate on one row `e`: it matches with the text's words in its name (the
    /// second rank; without text, every match).
    matches_names: String,
}

/// The characters of a word PostgreSQL's `search_prefixes` keeps (migration 0036).
const PREFIX_CHARS: usize = 8;

/// `(' ' || columns) like '% word%'` for each word: a word-prefix match on one row.
fn like_words<'w>(columns: &str, words: impl IntoIterator<Item = &'w String>) -> Vec<String> {
    words
        .into_iter()
        .map(|w| format!("(' ' || {columns}) like '% {w}%'"))
        .collect()
}

/// The conditions joined by `and` (true when there is none).
fn all_of(conditions: Vec<String>) -> String {
    if conditions.is_empty() {
        "1 = 1".to_owned()
    } else {
        conditions.join(" and ")
    }
}

const ALL_COLUMNS: &str = "e.search_name || ' ' || e.search_org || ' ' || e.search_specialty || ' ' || e.search_place || ' ' || e.search_ident";

fn compile(backend: Backend, q: &Query) -> Option<Compiled> {
    // words go into the SQL as literals: `[a-z0-9]` only (as `search::tokens` makes
    // them; anything else is dropped)
    let words = |s: &str| -> Vec<String> {
        tokens(s)
            .into_iter()
            .filter(|w| {
                w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            })
            .collect()
    };
    let text = words(&q.text);
    let specialty = words(&q.specialty);
    let place = words(&q.place);
    if text.is_empty() && specialty.is_empty() && place.is_empty() {
        return None;
    }
    let mut key = text.clone();
    key.sort();
    // specialties and places are checked on their own column on both backends
    let mut filters = like_words("e.search_specialty", &specialty);
    filters.extend(like_words("e.search_place", &place));
    let (fts_all, fts_names, matches, matches_names) = match backend {
        // FTS5: "word"* is a prefix query; a {column} filter limits a group. The
        // rows are checked with word-prefix `like`s where FTS5 is not used (exact
        // names, the viewer's own contacts).
        Backend::Sqlite => {
            let group = |words: &[String], column: Option<&str>| -> Option<String> {
                if words.is_empty() {
                    return None;
                }
                let terms = words
                    .iter()
                    .map(|w| format!("\"{w}\"*"))
                    .collect::<Vec<_>>()
                    .join(" ");
                Some(match column {
                    Some(col) => format!("{{{col}}} : ({terms})"),
                    None => format!("({terms})"),
                })
            };
            let filter_groups = [
                group(&specialty, Some("search_specialty")),
                group(&place, Some("search_place")),
            ];
            let fts = |text_group: Option<String>| {
                std::iter::once(text_group)
                    .chain(filter_groups.iter().cloned())
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" AND ")
            };
            let mut matches = like_words(ALL_COLUMNS, &text);
            matches.extend(filters.iter().cloned());
            let mut matches_names = like_words("e.search_name", &text);
            matches_names.extend(filters);
            (
                fts(group(&text, None)),
                fts(group(&text, Some("search_name"))),
                all_of(matches),
                all_of(matches_names),
            )
        }
        // search_prefixes (migration 0036) holds the first PREFIX_CHARS characters of
        // every word, and of the name's words again behind an `N`: a word that short
        // is one exact lexeme, a longer one its first PREFIX_CHARS characters and a
        // `like` on the row. Literals rather than parameters, so that the planner
        // sees the lexemes (a broad word reads the table in order and stops early).
        Backend::Postgres => {
            let long = |words: &[String]| -> Vec<String> {
                words
                    .iter()
                    .filter(|w| w.len() > PREFIX_CHARS)
                    .cloned()
                    .collect()
            };
            let tsquery = |tag: &str| {
                let lexemes = text
                    .iter()
                    .map(|w| (tag, w))
                    .chain(specialty.iter().chain(&place).map(|w| ("", w)))
                    .map(|(tag, w)| format!("{tag}{}", &w[..w.len().min(PREFIX_CHARS)]))
                    .collect::<Vec<_>>();
                format!("e.search_prefixes @@ '{}'::tsquery", lexemes.join(" & "))
            };
            let mut matches = vec![tsquery("")];
            matches.extend(like_words(ALL_COLUMNS, &long(&text)));
            matches.extend(filters.iter().cloned());
            let mut matches_names = vec![tsquery("N")];
            matches_names.extend(like_words("e.search_name", &long(&text)));
            matches_names.extend(filters);
            (
                String::new(),
                String::new(),
                all_of(matches),
                all_of(matches_names),
            )
        }
    };
    Some(Compiled {
        fts_all,
        fts_names,
        has_text: !text.is_empty(),
        key: key.join(" "),
        matches,
        matches_names,
    })
}

/// Brings the entries of hosted mailboxes up to date with the mailboxes changed since
/// the last search (the triggers of migration 0011 note them). Cheap when nothing
/// changed: one indexed read.
pub async fn sync_hosted(db: &Db) -> sqlx::Result<()> {
    loop {
        let pending: Vec<i64> =
            sqlx::query_scalar("select mailbox_id from directory_hosted_queue limit 200")
                .fetch_all(&db.pool)
                .await?;
        if pending.is_empty() {
            return Ok(());
        }
        let _turn = db.write_turn().await;
        let now = crate::clock::Clock::default().now();
        let mut tx = db.begin().await?;
        for mailbox_id in pending {
            let taken = sqlx::query("delete from directory_hosted_queue where mailbox_id = $1")
                .bind(mailbox_id)
                .execute(&mut *tx)
                .await?;
            if taken.rows_affected() == 0 {
                continue; // another instance did it
            }
            sync_mailbox(&mut tx, mailbox_id, now).await?;
        }
        tx.commit().await?;
    }
}

async fn sync_mailbox(conn: &mut AnyConnection, mailbox_id: i64, now: i64) -> sqlx::Result<()> {
    let row = sqlx::query(
        "select m.address, m.kind, m.display_name, m.directory_listed, o.name as org_name
         from mailboxes m join organizations o on o.id = m.org_id where m.id = $1",
    )
    .bind(mailbox_id)
    .fetch_optional(&mut *conn)
    .await?;
    let existing: Option<i64> =
        sqlx::query_scalar("select id from directory_entries where mailbox_id = $1")
            .bind(mailbox_id)
            .fetch_optional(&mut *conn)
            .await?;
    let listed = match &row {
        Some(r) => super::flag(r.try_get("directory_listed")?),
        None => false,
    };
    let (Some(row), true) = (row, listed) else {
        if let Some(id) = existing {
            delete(conn, id).await?;
        }
        return Ok(());
    };
    let address: String = row.try_get("address")?;
    let Ok(address) = Email::parse(&address) else {
        return Ok(());
    };
    let kind: String = row.try_get("kind")?;
    let data = EntryData {
        kind: if kind == "shared" {
            Kind::Service
        } else {
            Kind::Practitioner
        },
        name: row.try_get("display_name")?,
        organization: row.try_get("org_name")?,
        npi: None,
        specialties: Vec::new(),
        address_line: String::new(),
        city: String::new(),
        state: String::new(),
        zip: String::new(),
        phone: String::new(),
        addresses: vec![address.clone()],
        certificate: None,
        fhir_id: None,
        wants_xdm: None,
    };
    // an imported or manual public entry with this address gives way to the mailbox,
    // which is the authority on its own address
    if let Some((other, _)) =
        find_by_key(conn, "public", KeyColumn::Address, address.as_str()).await?
        && Some(other) != existing
    {
        delete(conn, other).await?;
    }
    match existing {
        Some(id) => update(conn, id, "hosted", &data, now).await,
        None => insert(conn, Scope::Public, "hosted", &data, Some(mailbox_id), now)
            .await
            .map(|_| ()),
    }
}

/// Lists or unlists a hosted mailbox in the directory.
pub async fn set_listed(
    conn: &mut AnyConnection,
    mailbox_id: i64,
    listed: bool,
) -> sqlx::Result<bool> {
    let done = sqlx::query("update mailboxes set directory_listed = $1 where id = $2")
        .bind(i64::from(listed))
        .bind(mailbox_id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Whether a hosted mailbox is listed.
pub async fn is_listed(db: &Db, mailbox_id: i64) -> sqlx::Result<bool> {
    let v: Option<i64> = sqlx::query_scalar("select directory_listed from mailboxes where id = $1")
        .bind(mailbox_id)
        .fetch_optional(&db.pool)
        .await?;
    Ok(v.is_some_and(super::flag))
}

/// The entries `viewer` may see that match `q`, best first: names equal to the text
/// (any word order), then names starting with its words, then matches elsewhere
/// (organization, specialty, place, NPI, address); within a rank the viewer's own
/// address book, then their organization's contacts, then by name. Of a
/// broad search, the first [`CANDIDATES`] matches of each rank are ranked (and the
/// viewer's own contacts always): more letters narrow it.
pub async fn search(
    db: &Db,
    viewer: &Viewer,
    q: &Query,
    limit: i64,
    offset: i64,
) -> sqlx::Result<Vec<Entry>> {
    sync_hosted(db).await?;
    let visible = "(e.scope = 'public' or e.org_id = $1 or e.owner_id = $2)";
    let rows = match compile(db.backend, q) {
        None => {
            sqlx::query(&format!(
                "select {ENTRY} from directory_entries e where {visible}
                 order by e.sort_name, e.id limit $3 offset $4"
            ))
            .bind(viewer.org_id)
            .bind(viewer.user_id)
            .bind(limit)
            .bind(offset)
            .fetch_all(&db.pool)
            .await?
        }
        Some(c) => {
            // Candidates first, each rank capped, so a broad prefix ("ma") costs no
            // more than a narrow one: the backend stops after CANDIDATES matches in
            // its own order, and only those are ranked and sorted by name. The
            // viewer's own contacts and exact names are always candidates; exact
            // names and name prefixes only when there is text (with filters alone
            // every match ranks alike).
            let Compiled {
                matches,
                matches_names,
                key,
                ..
            } = &c;
            let exact = |columns: &str| {
                format!(
                    "select {columns}, 0 from directory_entries e
                     where e.name_key = '{key}' and {matches_names} limit {CANDIDATES}"
                )
            };
            let own = |columns: &str| {
                format!(
                    "select {columns}, case when {matches_names} then 1 else 2 end
                     from directory_entries e
                     where (e.owner_id = $2 or e.org_id = $1) and {matches} limit {CANDIDATES}"
                )
            };
            let scope_rank = "case e.scope when 'personal' then 0 when 'org' then 1 else 2 end";
            let query = match db.backend {
                Backend::Sqlite => {
                    let fts = "select rowid as id from directory_fts where directory_fts match";
                    let by_name = if c.has_text {
                        format!(
                            "select * from ({}) exact union all
                             select id, 1 from ({fts} $6 limit {CANDIDATES}) names union all",
                            exact("e.id")
                        )
                    } else {
                        String::new()
                    };
                    format!(
                        "with cand (id, tier) as (
                             {by_name}
                             select id, 2 from ({fts} $5 limit {CANDIDATES}) anywhere
                             union all
                             select * from ({}) own
                         )
                         select {ENTRY} from directory_entries e
                         join (select id, min(tier) as tier from cand group by id) c on c.id = e.id
                         where {visible}
                         order by c.tier, {scope_rank}, e.sort_name, e.id
                         limit $3 offset $4",
                        own("e.id")
                    )
                }
                // The candidates carry what ranks them (read with the match), so only
                // the page's rows are read again; and the matches elsewhere are not
                // looked for when the exact names and name prefixes the viewer may
                // see fill the page already (they would all rank before them).
                Backend::Postgres => {
                    let keys = "e.id, e.scope, e.org_id, e.owner_id, e.sort_name";
                    let by_name = if c.has_text {
                        format!(
                            "select * from ({}) exact union all
                             select * from (select {keys}, 1 from directory_entries e
                                 where {matches_names} limit {CANDIDATES}) names union all",
                            exact(keys)
                        )
                    } else {
                        String::new()
                    };
                    format!(
                        "with named (id, scope, org_id, owner_id, sort_name, tier) as (
                             {by_name}
                             select * from ({}) own
                         ), cand as (
                             select * from named
                             union all
                             select * from (select {keys}, 2 from directory_entries e
                                 where {matches}
                                 and (select count(distinct e.id) from named e
                                      where e.tier < 2 and {visible}) < $3 + $4
                                 limit {CANDIDATES}) anywhere
                         )
                         select {ENTRY} from directory_entries e
                         join (select e.id, min(e.tier) as tier from cand e where {visible}
                             group by e.id, e.scope, e.sort_name
                             order by min(e.tier), {scope_rank}, e.sort_name, e.id
                             limit $3 offset $4) c on c.id = e.id
                         order by c.tier, {scope_rank}, e.sort_name, e.id",
                        own(keys)
                    )
                }
            };
            let mut q = sqlx::query(&query)
                .bind(viewer.org_id)
                .bind(viewer.user_id)
                .bind(limit)
                .bind(offset);
            if db.backend == Backend::Sqlite {
                q = q.bind(&c.fts_all);
                if c.has_text {
                    q = q.bind(&c.fts_names);
                }
            }
            q.fetch_all(&db.pool).await?
        }
    };
    let mut entries = rows
        .iter()
        .map(Entry::from_row)
        .collect::<sqlx::Result<Vec<_>>>()?;
    fill_addresses(&db.pool, &mut entries).await?;
    Ok(entries)
}

/// Addresses for the compose page's autocomplete: at most `limit`, ranked as
/// [`search`] ranks entries (the viewer's own book first among equals), each address
/// once.
pub async fn suggest(
    db: &Db,
    viewer: &Viewer,
    query: &str,
    limit: usize,
) -> sqlx::Result<Vec<Suggestion>> {
    // every caller's text (the directory's and the compose page's autocomplete) is
    // cut here, like the search page's
    let query = cut_query(query);
    if tokens(query).is_empty() || limit == 0 {
        return Ok(Vec::new());
    }
    let q = Query {
        text: query.to_owned(),
        ..Query::default()
    };
    let entries = search(db, viewer, &q, limit as i64, 0).await?;
    let mut out: Vec<Suggestion> = Vec::new();
    for e in &entries {
        let hosted_cert = match e.mailbox_id {
            Some(id) => hosted_domain_has_certificate(db, id).await?,
            None => false,
        };
        for a in &e.addresses {
            if out.iter().any(|s| s.address == a.address) {
                continue;
            }
            out.push(Suggestion {
                name: e.name.clone(),
                address: a.address.clone(),
                detail: e.detail(),
                has_certificate: hosted_cert
                    || (a.cert_fingerprint.is_some() && e.scope != "personal"),
            });
        }
    }
    out.truncate(limit);
    Ok(out)
}

async fn hosted_domain_has_certificate(db: &Db, mailbox_id: i64) -> sqlx::Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "select count(*) from domain_certificates c join mailboxes m on m.domain_id = c.domain_id
         where m.id = $1 and (c.address is null or c.address = m.address)",
    )
    .bind(mailbox_id)
    .fetch_one(&db.pool)
    .await?;
    Ok(n > 0)
}

/// The names the shared directory gives these addresses (hosted mailboxes included),
/// for showing senders in message lists: lower-cased address → name, for those it
/// knows. Personal and organization entries are never used here: their names are
/// private to their owners.
pub async fn names_for(db: &Db, addresses: &[&str]) -> sqlx::Result<HashMap<String, String>> {
    let mut wanted: Vec<String> = addresses
        .iter()
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    wanted.sort();
    wanted.dedup();
    if wanted.is_empty() {
        return Ok(HashMap::new());
    }
    // One round trip on every list page: the names, and a row of nulls when hosted
    // mailboxes changed since the last sync, in which case they are synced first and
    // the names read again (once: changes made meanwhile wait for the next page).
    let sql = format!(
        "select a.address, e.name from directory_addresses a
           join directory_entries e on e.id = a.entry_id
         where a.scope_key = 'public' and a.address in ({})
         union all
         select null, null where exists (select 1 from directory_hosted_queue)",
        crate::store::messages::placeholders(1, wanted.len())
    );
    let mut synced = false;
    loop {
        let mut query = sqlx::query(&sql);
        for a in &wanted {
            query = query.bind(a.clone());
        }
        let mut names = HashMap::new();
        let mut stale = false;
        for r in query.fetch_all(&db.pool).await? {
            match r.try_get::<Option<String>, _>("address")? {
                Some(address) => {
                    names.insert(address, r.try_get("name")?);
                }
                None => stale = true,
            }
        }
        if !stale || synced {
            return Ok(names);
        }
        sync_hosted(db).await?;
        synced = true;
    }
}

/// What the directory entries `viewer` can see (the shared directory, their
/// organization's contacts, their address book) say of one address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Known {
    /// Lower case.
    pub address: String,
    pub name: String,
    pub organization: String,
    /// The entry asks for documents as an XDM package.
    pub wants_xdm: bool,
}

/// The entries `viewer` can see for each of `addresses` that has one: the shared
/// directory first, then the organization's contacts, then the address book.
pub async fn known(db: &Db, viewer: &Viewer, addresses: &[String]) -> sqlx::Result<Vec<Known>> {
    let mut wanted: Vec<String> = addresses
        .iter()
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    wanted.sort();
    wanted.dedup();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "select a.address, a.scope_key, e.name, e.organization, e.wants_xdm
           from directory_addresses a join directory_entries e on e.id = a.entry_id
          where a.scope_key in ('public', $1, $2) and a.address in ({})
          order by a.address, case a.scope_key when 'public' then 0 when $1 then 1 else 2 end, e.id",
        crate::store::messages::placeholders(3, wanted.len())
    );
    let org = viewer
        .org_id
        .map(|org| Scope::Org(org).key())
        .unwrap_or_else(|| "public".into());
    let mut query = sqlx::query(&sql)
        .bind(org)
        .bind(Scope::Personal(viewer.user_id).key());
    for a in &wanted {
        query = query.bind(a.clone());
    }
    let mut found: Vec<Known> = Vec::new();
    for row in query.fetch_all(&db.pool).await? {
        let address: String = row.try_get("address")?;
        let wants_xdm = super::flag(row.try_get("wants_xdm")?);
        match found.last_mut() {
            // a later entry for the same address can only add the wish for packages
            Some(last) if last.address == address => last.wants_xdm |= wants_xdm,
            _ => found.push(Known {
                address,
                name: row.try_get("name")?,
                organization: row.try_get("organization")?,
                wants_xdm,
            }),
        }
    }
    Ok(found)
}

/// Which of `addresses` a directory entry that `viewer` can see marks as wanting
/// documents as an XDM package; lower-cased.
pub async fn wanting_xdm(
    db: &Db,
    viewer: &Viewer,
    addresses: &[String],
) -> sqlx::Result<Vec<String>> {
    Ok(known(db, viewer, addresses)
        .await?
        .into_iter()
        .filter(|k| k.wants_xdm)
        .map(|k| k.address)
        .collect())
}

/// The certificate (DER) attached by hand or by an import to this address in the
/// shared directory or an organization's contacts. It takes precedence over
/// certificate discovery. Address-book entries never carry certificates.
pub async fn certificate_for(db: &Db, address: &str) -> sqlx::Result<Option<Vec<u8>>> {
    let pem: Option<String> = sqlx::query_scalar(
        "select cert_pem from directory_addresses
         where address = $1 and cert_pem is not null and scope_key not like 'user:%'
         order by case when scope_key = 'public' then 0 else 1 end, id desc limit 1",
    )
    .bind(address.trim().to_ascii_lowercase())
    .fetch_optional(&db.pool)
    .await?;
    Ok(pem.as_deref().and_then(pem_to_der))
}

/// An uploaded import waiting for its confirmation.
#[derive(Debug, Clone)]
pub struct Upload {
    pub id: i64,
    pub user_id: i64,
    pub file_name: String,
    pub content: String,
    pub org_id: Option<i64>,
}

/// Keeps an upload for an hour; older ones are removed on the way.
pub async fn save_upload(
    db: &Db,
    user_id: i64,
    file_name: &str,
    content: &str,
    org_id: Option<i64>,
    now: i64,
) -> sqlx::Result<i64> {
    let _turn = db.write_turn().await;
    let mut tx = db.begin().await?;
    sqlx::query("delete from directory_uploads where created_at < $1 or user_id = $2")
        .bind(now - 3600)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    let id = sqlx::query_scalar(
        "insert into directory_uploads (user_id, file_name, content, org_id, created_at)
         values ($1, $2, $3, $4, $5) returning id",
    )
    .bind(user_id)
    .bind(file_name)
    .bind(content)
    .bind(org_id)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// The upload `id` of `user_id`, if still there.
pub async fn upload(db: &Db, id: i64, user_id: i64, now: i64) -> sqlx::Result<Option<Upload>> {
    let row = sqlx::query(
        "select * from directory_uploads where id = $1 and user_id = $2 and created_at >= $3",
    )
    .bind(id)
    .bind(user_id)
    .bind(now - 3600)
    .fetch_optional(&db.pool)
    .await?;
    row.map(|r| {
        Ok(Upload {
            id: r.try_get("id")?,
            user_id: r.try_get("user_id")?,
            file_name: r.try_get("file_name")?,
            content: r.try_get("content")?,
            org_id: r.try_get("org_id")?,
        })
    })
    .transpose()
}

pub async fn delete_upload(conn: &mut AnyConnection, id: i64) -> sqlx::Result<()> {
    sqlx::query("delete from directory_uploads where id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The state of one scheduled source.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceState {
    pub url: String,
    pub last_attempt_at: i64,
    pub last_success_at: Option<i64>,
    pub last_error: Option<String>,
    pub entries: i64,
}

/// Claims the refresh of `url` when its last attempt is older than `every` seconds;
/// with several instances, one of them wins.
pub async fn claim_source(db: &Db, url: &str, now: i64, every: i64) -> sqlx::Result<bool> {
    let _turn = db.write_turn().await;
    sqlx::query(
        "insert into directory_sources (url, last_attempt_at) values ($1, 0) on conflict (url) do nothing",
    )
    .bind(url)
    .execute(&db.pool)
    .await?;
    let done = sqlx::query(
        "update directory_sources set last_attempt_at = $1 where url = $2 and last_attempt_at <= $3",
    )
    .bind(now)
    .bind(url)
    .bind(now - every)
    .execute(&db.pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records how a refresh of `url` went; a failed one is tried again after
/// `retry_in` seconds rather than a whole interval (`every`) later.
pub async fn record_source(
    db: &Db,
    url: &str,
    result: Result<i64, &str>,
    now: i64,
    every: i64,
    retry_in: i64,
) -> sqlx::Result<()> {
    let _turn = db.write_turn().await;
    match result {
        Ok(entries) => sqlx::query(
            "update directory_sources set last_success_at = $1, last_error = null, entries = $2 where url = $3",
        )
        .bind(now)
        .bind(entries)
        .bind(url),
        Err(e) => sqlx::query(
            "update directory_sources set last_error = $1, last_attempt_at = $2 where url = $3",
        )
        .bind(e.to_owned())
        .bind(now - every + retry_in.min(every))
        .bind(url),
    }
    .execute(&db.pool)
    .await?;
    Ok(())
}

pub async fn sources(db: &Db) -> sqlx::Result<Vec<SourceState>> {
    let rows = sqlx::query("select * from directory_sources order by url")
        .fetch_all(&db.pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(SourceState {
                url: r.try_get("url")?,
                last_attempt_at: r.try_get("last_attempt_at")?,
                last_success_at: r.try_get("last_success_at")?,
                last_error: r.try_get("last_error")?,
                entries: r.try_get("entries")?,
            })
        })
        .collect()
}

/// The certificates (DER) attached to an entry's addresses.
pub async fn certificates_of(
    db: &Db,
    entry_id: i64,
) -> sqlx::Result<Vec<(String, Option<Vec<u8>>)>> {
    let rows = sqlx::query(
        "select address, cert_pem from directory_addresses where entry_id = $1 and cert_pem is not null",
    )
    .bind(entry_id)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            let pem: String = r.try_get("cert_pem")?;
            Ok((r.try_get("address")?, pem_to_der(&pem)))
        })
        .collect()
}

fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    directmail_smime::parse_certificates(pem.as_bytes())
        .ok()
        .and_then(|certs| certs.into_iter().next())
        .and_then(|c| der::Encode::to_der(&c).ok())
}
