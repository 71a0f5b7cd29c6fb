//! Public-health reporting routes (migration 0034, `reporting_routes`): per
//! jurisdiction, the agency's Direct address and the document types sent there. The
//! operator keeps them in the console (`web::reporting`) or with
//! `directmail admin reporting …`.

use sqlx::{AnyConnection, Row as _, any::AnyRow};

use crate::db::Db;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Route {
    pub id: i64,
    pub jurisdiction: String,
    pub address: String,
    /// LOINC document type codes, such as 55751-2 (eICR).
    pub document_types: Vec<String>,
    pub created_at: i64,
}

impl Route {
    fn from_row(row: &AnyRow) -> sqlx::Result<Route> {
        let types: String = row.try_get("document_types")?;
        Ok(Route {
            id: row.try_get("id")?,
            jurisdiction: row.try_get("jurisdiction")?,
            address: row.try_get("address")?,
            document_types: types
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect(),
            created_at: row.try_get("created_at")?,
        })
    }

    /// Whether documents of type `code` go on this route.
    pub fn carries(&self, code: &str) -> bool {
        self.document_types.iter().any(|t| t == code.trim())
    }
}

/// Every route, by jurisdiction.
pub async fn list<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
) -> sqlx::Result<Vec<Route>> {
    let rows = sqlx::query(
        "select id, jurisdiction, address, document_types, created_at from reporting_routes
         order by jurisdiction, id",
    )
    .fetch_all(db)
    .await?;
    rows.iter().map(Route::from_row).collect()
}

/// The routes that take any of the document types `codes`, as offered on a page:
/// (route id, "Illinois: ecr@aims.example").
pub async fn offered<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    codes: &[String],
) -> sqlx::Result<Vec<(i64, String)>> {
    if codes.is_empty() {
        return Ok(Vec::new());
    }
    Ok(list(db)
        .await?
        .into_iter()
        .filter(|r| codes.iter().any(|c| r.carries(c)))
        .map(|r| (r.id, format!("{}: {}", r.jurisdiction, r.address)))
        .collect())
}

pub async fn get(db: &Db, id: i64) -> sqlx::Result<Option<Route>> {
    let row = sqlx::query(
        "select id, jurisdiction, address, document_types, created_at from reporting_routes
         where id = $1",
    )
    .bind(id)
    .fetch_optional(&db.pool)
    .await?;
    row.as_ref().map(Route::from_row).transpose()
}

/// Adds a route, or replaces the address and types of the jurisdiction's route.
/// Returns its id.
pub async fn upsert(
    conn: &mut AnyConnection,
    jurisdiction: &str,
    address: &str,
    document_types: &[String],
    now: i64,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "insert into reporting_routes (jurisdiction, address, document_types, created_at)
         values ($1, $2, $3, $4)
         on conflict (jurisdiction) do update set address = excluded.address,
             document_types = excluded.document_types
         returning id",
    )
    .bind(jurisdiction)
    .bind(address)
    .bind(document_types.join(","))
    .bind(now)
    .fetch_one(conn)
    .await
}

/// Removes a route; false when there was none.
pub async fn remove(conn: &mut AnyConnection, id: i64) -> sqlx::Result<bool> {
    let done = sqlx::query("delete from reporting_routes where id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}
