//! Document sources (FHIR servers an organization's members may query) and the
//! documents members retrieved from them (migration 0035).

use sqlx::{AnyConnection, Row as _, any::AnyRow};

use crate::db::Db;

/// A configured FHIR server.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Source {
    pub id: i64,
    pub org_id: i64,
    pub name: String,
    /// The FHIR R4 base, without a trailing slash.
    pub base_url: String,
    /// The token endpoint; "" when it is discovered.
    pub token_url: String,
    pub client_id: String,
    pub scopes: String,
    pub created_at: i64,
}

const SOURCE_COLUMNS: &str = "id, org_id, name, base_url, token_url, client_id, scopes, created_at";

impl Source {
    fn from_row(r: &AnyRow) -> sqlx::Result<Source> {
        Ok(Source {
            id: r.try_get("id")?,
            org_id: r.try_get("org_id")?,
            name: r.try_get("name")?,
            base_url: r.try_get("base_url")?,
            token_url: r.try_get("token_url")?,
            client_id: r.try_get("client_id")?,
            scopes: r.try_get("scopes")?,
            created_at: r.try_get("created_at")?,
        })
    }
}

/// What an operator gives for a new source (checked by `records::NewSource::check`).
#[derive(Debug, Clone, Default)]
pub struct NewSource {
    pub org_id: i64,
    pub name: String,
    pub base_url: String,
    pub token_url: String,
    pub client_id: String,
    pub scopes: String,
}

/// Adds a source; `None` when the organization already has one by that name.
pub async fn add(conn: &mut AnyConnection, s: &NewSource, now: i64) -> sqlx::Result<Option<i64>> {
    let result = sqlx::query_scalar(
        "insert into document_sources (org_id, name, base_url, token_url, client_id, scopes, created_at)
         values ($1, $2, $3, $4, $5, $6, $7) returning id",
    )
    .bind(s.org_id)
    .bind(&s.name)
    .bind(&s.base_url)
    .bind(&s.token_url)
    .bind(&s.client_id)
    .bind(&s.scopes)
    .bind(now)
    .fetch_one(conn)
    .await;
    match result {
        Ok(id) => Ok(Some(id)),
        Err(e) if super::is_unique_violation(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every source, by organization and name (the operator's list).
pub async fn list(db: &Db) -> sqlx::Result<Vec<Source>> {
    let rows = sqlx::query(&format!(
        "select {SOURCE_COLUMNS} from document_sources order by org_id, name"
    ))
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(Source::from_row).collect()
}

/// The sources of one organization, by name (what its members may query).
pub async fn of_org(db: &Db, org_id: i64) -> sqlx::Result<Vec<Source>> {
    let rows = sqlx::query(&format!(
        "select {SOURCE_COLUMNS} from document_sources where org_id = $1 order by name"
    ))
    .bind(org_id)
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(Source::from_row).collect()
}

pub async fn get(db: &Db, id: i64) -> sqlx::Result<Option<Source>> {
    let row = sqlx::query(&format!(
        "select {SOURCE_COLUMNS} from document_sources where id = $1"
    ))
    .bind(id)
    .fetch_optional(&db.pool)
    .await?;
    row.as_ref().map(Source::from_row).transpose()
}

/// Removes a source and the documents retrieved from it; whether there was one.
pub async fn remove(conn: &mut AnyConnection, id: i64) -> sqlx::Result<bool> {
    sqlx::query("delete from record_retrievals where source_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    let done = sqlx::query("delete from document_sources where id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// A document a member retrieved.
#[derive(Debug, Clone)]
pub struct Retrieval {
    pub id: i64,
    pub user_id: i64,
    pub source_id: i64,
    /// `Patient/{id}` on the source.
    pub patient_ref: String,
    /// The patient's name and birth date as the source gave them.
    pub patient_label: String,
    /// `DocumentReference/{id}` on the source, with the attachment's number.
    pub document_ref: String,
    pub title: String,
    pub declared_type: String,
    pub purpose: String,
    pub data: Vec<u8>,
    pub retrieved_at: i64,
}

/// Retrieved documents are kept this long for their member to view, file or forward
/// (a filed or forwarded copy is an ordinary message, kept as messages are).
pub const KEEP_SECONDS: i64 = 24 * 3600;

/// Keeps a retrieved document (and forgets the member's retrievals older than
/// [`KEEP_SECONDS`]); its id.
pub async fn keep(conn: &mut AnyConnection, r: &Retrieval, now: i64) -> sqlx::Result<i64> {
    sqlx::query("delete from record_retrievals where user_id = $1 and retrieved_at < $2")
        .bind(r.user_id)
        .bind(now - KEEP_SECONDS)
        .execute(&mut *conn)
        .await?;
    sqlx::query_scalar(
        "insert into record_retrievals (user_id, source_id, patient_ref, patient_label, document_ref,
                                        title, declared_type, purpose, data, retrieved_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) returning id",
    )
    .bind(r.user_id)
    .bind(r.source_id)
    .bind(&r.patient_ref)
    .bind(&r.patient_label)
    .bind(&r.document_ref)
    .bind(&r.title)
    .bind(&r.declared_type)
    .bind(&r.purpose)
    .bind(r.data.clone())
    .bind(now)
    .fetch_one(conn)
    .await
}

/// Retrieval `id` of user `user_id`, while it is kept; `None` for anybody else's.
pub async fn retrieval(
    db: &Db,
    id: i64,
    user_id: i64,
    now: i64,
) -> sqlx::Result<Option<Retrieval>> {
    let row = sqlx::query(
        "select id, user_id, source_id, patient_ref, patient_label, document_ref, title,
                declared_type, purpose, data, retrieved_at
         from record_retrievals where id = $1 and user_id = $2 and retrieved_at >= $3",
    )
    .bind(id)
    .bind(user_id)
    .bind(now - KEEP_SECONDS)
    .fetch_optional(&db.pool)
    .await?;
    row.map(|r| {
        Ok(Retrieval {
            id: r.try_get("id")?,
            user_id: r.try_get("user_id")?,
            source_id: r.try_get("source_id")?,
            patient_ref: r.try_get("patient_ref")?,
            patient_label: r.try_get("patient_label")?,
            document_ref: r.try_get("document_ref")?,
            title: r.try_get("title")?,
            declared_type: r.try_get("declared_type")?,
            purpose: r.try_get("purpose")?,
            data: r.try_get("data")?,
            retrieved_at: r.try_get("retrieved_at")?,
        })
    })
    .transpose()
}
