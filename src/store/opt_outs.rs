//! The HIE opt-out list of each organization (migration 0022): patients who opted out
//! of further HIE disclosure. A removal keeps the row, with who removed it and why.
//! [`find_match`] is the rule a sending check asks (see docs/sensitive-records.md).

use sqlx::{AnyConnection, Row as _, any::AnyRow};

use crate::db::Db;
use crate::directory::search::{folded, tokens};

/// One entry of the list.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OptOut {
    pub id: i64,
    pub org_id: i64,
    pub family_name: String,
    pub given_name: String,
    /// `YYYY-MM-DD`.
    pub birth_date: String,
    /// The assigning authority (an OID) and the identifier, when recorded.
    pub identifier: Option<(String, String)>,
    pub recorded_at: i64,
    pub recorded_by_id: Option<i64>,
    pub recorded_by_name: String,
    pub removed_at: Option<i64>,
    pub removed_by_id: Option<i64>,
    pub removed_by_name: Option<String>,
    pub removal_reason: Option<String>,
    sort_name: String,
}

impl OptOut {
    fn from_row(row: &AnyRow) -> sqlx::Result<OptOut> {
        let authority: Option<String> = row.try_get("id_authority")?;
        let value: Option<String> = row.try_get("id_value")?;
        Ok(OptOut {
            id: row.try_get("id")?,
            org_id: row.try_get("org_id")?,
            family_name: row.try_get("family_name")?,
            given_name: row.try_get("given_name")?,
            birth_date: row.try_get("birth_date")?,
            identifier: authority.zip(value),
            recorded_at: row.try_get("recorded_at")?,
            recorded_by_id: row.try_get("recorded_by_id")?,
            recorded_by_name: row.try_get("recorded_by_name")?,
            removed_at: row.try_get("removed_at")?,
            removed_by_id: row.try_get("removed_by_id")?,
            removed_by_name: row.try_get("removed_by_name")?,
            removal_reason: row.try_get("removal_reason")?,
            sort_name: row.try_get("sort_name")?,
        })
    }

    /// The identifier as typed: `authority:id`, or empty.
    pub fn identifier_text(&self) -> String {
        self.identifier
            .as_ref()
            .map(|(a, id)| format!("{a}:{id}"))
            .unwrap_or_default()
    }

    pub fn is_removed(&self) -> bool {
        self.removed_at.is_some()
    }
}

/// A checked new entry (see `crate::opt_outs::OptOutInput::check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOptOut {
    pub family_name: String,
    pub given_name: String,
    pub birth_date: String,
    pub identifier: Option<(String, String)>,
}

/// Who recorded or removed an entry.
#[derive(Debug, Clone)]
pub struct Recorder {
    pub user_id: i64,
    pub display_name: String,
}

/// What a sending check knows of a message's patient.
#[derive(Debug, Clone, Default)]
pub struct MatchInput {
    /// Assigning authority (an OID) and identifier.
    pub identifier: Option<(String, String)>,
    pub family: String,
    pub given: String,
    /// `YYYY-MM-DD`.
    pub birth_date: String,
}

pub async fn insert(
    conn: &mut AnyConnection,
    org_id: i64,
    entry: &NewOptOut,
    by: &Recorder,
    now: i64,
) -> sqlx::Result<i64> {
    let (authority, value) = entry.identifier.clone().unzip();
    sqlx::query_scalar(
        "insert into hie_opt_outs (org_id, family_name, given_name, birth_date, id_authority,
             id_value, match_family, match_given, sort_name, recorded_at, recorded_by_id,
             recorded_by_name)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) returning id",
    )
    .bind(org_id)
    .bind(&entry.family_name)
    .bind(&entry.given_name)
    .bind(&entry.birth_date)
    .bind(authority)
    .bind(value)
    .bind(folded(&entry.family_name))
    .bind(folded(&entry.given_name))
    .bind(folded(&format!(
        "{} {}",
        entry.family_name, entry.given_name
    )))
    .bind(now)
    .bind(by.user_id)
    .bind(&by.display_name)
    .fetch_one(conn)
    .await
}

/// Marks an active entry removed; false when it was already removed.
pub async fn remove(
    conn: &mut AnyConnection,
    id: i64,
    by: &Recorder,
    reason: &str,
    now: i64,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "update hie_opt_outs set removed_at = $1, removed_by_id = $2, removed_by_name = $3,
             removal_reason = $4
         where id = $5 and removed_at is null",
    )
    .bind(now)
    .bind(by.user_id)
    .bind(&by.display_name)
    .bind(reason)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The entry `id` of organization `org_id`, removed or not.
pub async fn get(db: &Db, org_id: i64, id: i64) -> sqlx::Result<Option<OptOut>> {
    let row = sqlx::query("select * from hie_opt_outs where id = $1 and org_id = $2")
        .bind(id)
        .bind(org_id)
        .fetch_optional(&db.pool)
        .await?;
    row.as_ref().map(OptOut::from_row).transpose()
}

/// Which part of the list, which page.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// The removed entries instead of the active ones.
    pub removed: bool,
    /// Words of the name (any order, case and accents ignored).
    pub search: String,
    /// Keyset paging: entries after this one (by family name, given name, id).
    pub after: Option<i64>,
    pub limit: i64,
}

/// A page of the list, by family name then given name.
pub async fn list(db: &Db, org_id: i64, q: &ListQuery) -> sqlx::Result<Vec<OptOut>> {
    let key = match q.after {
        Some(id) => get(db, org_id, id).await?.map(|e| (e.sort_name, e.id)),
        None => None,
    };
    let words: Vec<String> = tokens(crate::directory::search::cut_query(&q.search))
        .into_iter()
        .take(5)
        .collect();
    let mut sql = format!(
        "select * from hie_opt_outs where org_id = $1 and removed_at is {} null",
        if q.removed { "not" } else { "" }
    );
    let mut n = 1;
    for _ in &words {
        n += 1;
        sql.push_str(&format!(" and sort_name like ${n}"));
    }
    if key.is_some() {
        sql.push_str(&format!(
            " and (sort_name > ${} or (sort_name = ${} and id > ${}))",
            n + 1,
            n + 1,
            n + 2
        ));
        n += 2;
    }
    sql.push_str(&format!(" order by sort_name, id limit ${}", n + 1));
    let mut query = sqlx::query(&sql).bind(org_id);
    for w in &words {
        query = query.bind(format!("%{w}%"));
    }
    if let Some((name, id)) = &key {
        query = query.bind(name.clone()).bind(*id);
    }
    let rows = query.bind(q.limit).fetch_all(&db.pool).await?;
    rows.iter().map(OptOut::from_row).collect()
}

/// Every entry of the organization, active first, for the CSV export.
pub async fn all(db: &Db, org_id: i64) -> sqlx::Result<Vec<OptOut>> {
    let rows = sqlx::query(
        "select * from hie_opt_outs where org_id = $1
         order by case when removed_at is null then 0 else 1 end, sort_name, id",
    )
    .bind(org_id)
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(OptOut::from_row).collect()
}

/// The active entry that matches `patient`, if any. The rule: the identifier first
/// (same assigning authority and same identifier, exactly); else family name, given
/// name and birth date together (names without regard to case or accents). Removed
/// entries never match. A patient whose identifier matches nothing is still compared
/// by name and birth date: an opt-out recorded without an identifier, or under
/// another, must not be missed.
pub async fn find_match(
    db: &Db,
    org_id: i64,
    patient: &MatchInput,
) -> sqlx::Result<Option<OptOut>> {
    if let Some((authority, id)) = &patient.identifier
        && !authority.trim().is_empty()
        && !id.trim().is_empty()
    {
        let row = sqlx::query(
            "select * from hie_opt_outs where org_id = $1 and removed_at is null
               and id_authority = $2 and id_value = $3
             order by id limit 1",
        )
        .bind(org_id)
        .bind(authority.trim())
        .bind(id.trim())
        .fetch_optional(&db.pool)
        .await?;
        if let Some(row) = row {
            return OptOut::from_row(&row).map(Some);
        }
    }
    let (family, given) = (folded(&patient.family), folded(&patient.given));
    let birth = patient.birth_date.trim();
    if family.is_empty() || given.is_empty() || birth.is_empty() {
        return Ok(None);
    }
    let row = sqlx::query(
        "select * from hie_opt_outs where org_id = $1 and removed_at is null
           and match_family = $2 and match_given = $3 and birth_date = $4
         order by id limit 1",
    )
    .bind(org_id)
    .bind(family)
    .bind(given)
    .bind(birth)
    .fetch_optional(&db.pool)
    .await?;
    row.as_ref().map(OptOut::from_row).transpose()
}

/// The active entry a new one would repeat: same identifier, or same names and birth
/// date (the same rule as [`find_match`]).
pub async fn active_duplicate(
    db: &Db,
    org_id: i64,
    entry: &NewOptOut,
) -> sqlx::Result<Option<OptOut>> {
    find_match(
        db,
        org_id,
        &MatchInput {
            identifier: entry.identifier.clone(),
            family: entry.family_name.clone(),
            given: entry.given_name.clone(),
            birth_date: entry.birth_date.clone(),
        },
    )
    .await
}

// ---------- uploads kept between preview and confirmation ----------

/// Keeps an upload for an hour (and forgets this user's earlier ones).
pub async fn save_upload(
    db: &Db,
    org_id: i64,
    user_id: i64,
    content: &str,
    now: i64,
) -> sqlx::Result<i64> {
    let _turn = db.write_turn().await;
    let mut tx = db.begin().await?;
    sqlx::query("delete from hie_opt_out_uploads where created_at < $1 or user_id = $2")
        .bind(now - 3600)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    let id = sqlx::query_scalar(
        "insert into hie_opt_out_uploads (org_id, user_id, content, created_at)
         values ($1, $2, $3, $4) returning id",
    )
    .bind(org_id)
    .bind(user_id)
    .bind(content)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// The content of upload `id`, when it is this user's, for this organization, and
/// less than an hour old.
pub async fn upload(
    db: &Db,
    id: i64,
    org_id: i64,
    user_id: i64,
    now: i64,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "select content from hie_opt_out_uploads
         where id = $1 and org_id = $2 and user_id = $3 and created_at >= $4",
    )
    .bind(id)
    .bind(org_id)
    .bind(user_id)
    .bind(now - 3600)
    .fetch_optional(&db.pool)
    .await
}

pub async fn delete_upload(conn: &mut AnyConnection, id: i64) -> sqlx::Result<()> {
    sqlx::query("delete from hie_opt_out_uploads where id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}
