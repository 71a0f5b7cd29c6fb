//! Organizations and their Direct domains.

use sqlx::{AnyConnection, Row as _, any::AnyRow};

use crate::db::Db;
use crate::domain::{DomainName, OrgName};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Org {
    pub id: i64,
    pub name: String,
    pub idle_timeout_minutes: i64,
    pub require_mfa: bool,
    pub created_at: i64,
}

impl Org {
    fn from_row(row: &AnyRow) -> sqlx::Result<Org> {
        Ok(Org {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            idle_timeout_minutes: row.try_get("idle_timeout_minutes")?,
            require_mfa: super::flag(row.try_get("require_mfa")?),
            created_at: row.try_get("created_at")?,
        })
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Domain {
    pub id: i64,
    pub org_id: Option<i64>,
    pub name: String,
}

impl Domain {
    fn from_row(row: &AnyRow) -> sqlx::Result<Domain> {
        Ok(Domain {
            id: row.try_get("id")?,
            org_id: row.try_get("org_id")?,
            name: row.try_get("name")?,
        })
    }
}

pub async fn create(conn: &mut AnyConnection, name: &OrgName, now: i64) -> sqlx::Result<Org> {
    let row =
        sqlx::query("insert into organizations (name, created_at) values ($1, $2) returning *")
            .bind(name.as_str())
            .bind(now)
            .fetch_one(conn)
            .await?;
    Org::from_row(&row)
}

pub async fn get(db: &Db, id: i64) -> sqlx::Result<Option<Org>> {
    let row = sqlx::query("select * from organizations where id = $1")
        .bind(id)
        .fetch_optional(&db.pool)
        .await?;
    row.as_ref().map(Org::from_row).transpose()
}

pub async fn by_name(db: &Db, name: &str) -> sqlx::Result<Option<Org>> {
    let row = sqlx::query("select * from organizations where lower(name) = lower($1)")
        .bind(name.trim())
        .fetch_optional(&db.pool)
        .await?;
    row.as_ref().map(Org::from_row).transpose()
}

/// Every organization by name; operators see a handful to a few thousand.
pub async fn list(db: &Db, search: &str, limit: i64, offset: i64) -> sqlx::Result<Vec<Org>> {
    let rows = sqlx::query(
        "select * from organizations where lower(name) like $1 order by lower(name), id limit $2 offset $3",
    )
    .bind(like_pattern(search))
    .bind(limit)
    .bind(offset)
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(Org::from_row).collect()
}

pub async fn update_settings(
    conn: &mut AnyConnection,
    org_id: i64,
    idle_timeout_minutes: i64,
    require_mfa: bool,
) -> sqlx::Result<()> {
    sqlx::query(
        "update organizations set idle_timeout_minutes = $1, require_mfa = $2 where id = $3",
    )
    .bind(idle_timeout_minutes)
    .bind(i64::from(require_mfa))
    .bind(org_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Adds a domain to an organization (or unassigned, for the HISP's own at first start).
pub async fn add_domain(
    conn: &mut AnyConnection,
    org_id: Option<i64>,
    name: &DomainName,
    now: i64,
) -> sqlx::Result<Domain> {
    let row = sqlx::query(
        "insert into domains (org_id, name, created_at) values ($1, $2, $3) returning id, org_id, name",
    )
    .bind(org_id)
    .bind(name.as_str())
    .bind(now)
    .fetch_one(conn)
    .await?;
    Domain::from_row(&row)
}

/// Gives an unassigned domain (the HISP's own) to an organization.
pub async fn assign_domain(
    conn: &mut AnyConnection,
    domain_id: i64,
    org_id: i64,
) -> sqlx::Result<bool> {
    let done = sqlx::query("update domains set org_id = $1 where id = $2 and org_id is null")
        .bind(org_id)
        .bind(domain_id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// The one rule for giving a domain to an organization, on the create form and on the
/// organization's domain page alike: a new name is added; a domain that no organization
/// holds (the HISP's own, made at first start, or one released earlier) is given to it;
/// a domain another organization holds is refused (`false`).
pub async fn claim_domain(
    conn: &mut AnyConnection,
    org_id: i64,
    name: &DomainName,
    now: i64,
) -> sqlx::Result<bool> {
    let existing = sqlx::query("select id, org_id, name from domains where name = $1")
        .bind(name.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    match existing.as_ref().map(Domain::from_row).transpose()? {
        None => add_domain(conn, Some(org_id), name, now)
            .await
            .map(|_| true),
        Some(d) if d.org_id.is_none() => assign_domain(conn, d.id, org_id).await,
        Some(_) => Ok(false),
    }
}

/// Whether an organization already holds this domain: the one sentence both forms give.
pub async fn domain_taken(db: &Db, name: &DomainName) -> sqlx::Result<Option<String>> {
    Ok(domain_by_name(db, name.as_str())
        .await?
        .filter(|d| d.org_id.is_some())
        .map(|_| taken_sentence(name)))
}

pub fn taken_sentence(name: &DomainName) -> String {
    format!("The domain {name} already belongs to an organization.")
}

pub async fn domain_by_name(db: &Db, name: &str) -> sqlx::Result<Option<Domain>> {
    let row = sqlx::query("select id, org_id, name from domains where name = $1")
        .bind(name)
        .fetch_optional(&db.pool)
        .await?;
    row.as_ref().map(Domain::from_row).transpose()
}

pub async fn domains_of(db: &Db, org_id: i64) -> sqlx::Result<Vec<Domain>> {
    let rows = sqlx::query("select id, org_id, name from domains where org_id = $1 order by name")
        .bind(org_id)
        .fetch_all(&db.pool)
        .await?;
    rows.iter().map(Domain::from_row).collect()
}

pub async fn unassigned_domains(db: &Db) -> sqlx::Result<Vec<Domain>> {
    let rows =
        sqlx::query("select id, org_id, name from domains where org_id is null order by name")
            .fetch_all(&db.pool)
            .await?;
    rows.iter().map(Domain::from_row).collect()
}

/// `%text%` for a case-insensitive `like`, with the wildcards in `text` escaped away.
pub(crate) fn like_pattern(text: &str) -> String {
    let cleaned: String = text
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| *c != '%' && *c != '_' && *c != '\\')
        .collect();
    format!("%{cleaned}%")
}

/// What a hosted domain does when a sender's CRL cannot be fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum CrlUnreachable {
    /// Deliver, and record and show that revocation was not checked.
    SoftFail,
    /// Refuse the message as `revocation_unknown`.
    FailClosed,
}

impl CrlUnreachable {
    pub fn as_str(self) -> &'static str {
        match self {
            CrlUnreachable::SoftFail => "soft-fail",
            CrlUnreachable::FailClosed => "fail-closed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "soft-fail" => Some(CrlUnreachable::SoftFail),
            "fail-closed" => Some(CrlUnreachable::FailClosed),
            _ => None,
        }
    }
}

pub async fn crl_policy(db: &Db, domain_id: i64) -> sqlx::Result<CrlUnreachable> {
    let value: Option<String> =
        sqlx::query_scalar("select crl_unreachable from domains where id = $1")
            .bind(domain_id)
            .fetch_optional(&db.pool)
            .await?;
    Ok(value
        .as_deref()
        .and_then(CrlUnreachable::parse)
        .unwrap_or(CrlUnreachable::SoftFail))
}

pub async fn set_crl_policy(
    conn: &mut AnyConnection,
    domain_id: i64,
    policy: CrlUnreachable,
) -> sqlx::Result<()> {
    sqlx::query("update domains set crl_unreachable = $1 where id = $2")
        .bind(policy.as_str())
        .bind(domain_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The key transport to use for a recipient domain: `rsa-pkcs1v15` where set, else
/// RSA-OAEP with SHA-256.
pub async fn remote_key_transport(db: &Db, domain: &str) -> sqlx::Result<String> {
    let value: Option<String> =
        sqlx::query_scalar("select key_transport from remote_domains where name = $1")
            .bind(domain.trim().to_ascii_lowercase())
            .fetch_optional(&db.pool)
            .await?;
    Ok(value.unwrap_or_else(|| "rsa-oaep-sha256".into()))
}

pub async fn set_remote_key_transport(
    conn: &mut AnyConnection,
    domain: &DomainName,
    key_transport: &str,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into remote_domains (name, key_transport, updated_at) values ($1, $2, $3)
         on conflict (name) do update set key_transport = $2, updated_at = $3",
    )
    .bind(domain.as_str())
    .bind(key_transport)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}
