//! Single sign-on records: an organization's identity providers and EHRs, the links
//! from their subjects to users, and the sign-ins under way.

use sqlx::{AnyConnection, Row as _};

use crate::db::Db;

/// How long a sign-in may stay at the provider before its callback is refused.
pub const PENDING_SECONDS: i64 = 10 * 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An organization's own OpenID provider.
    Oidc,
    /// An EHR that launches the portal as a SMART app.
    Smart,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Oidc => "oidc",
            Kind::Smart => "smart",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "oidc" => Some(Kind::Oidc),
            "smart" => Some(Kind::Smart),
            _ => None,
        }
    }

    pub fn words(self) -> &'static str {
        match self {
            Kind::Oidc => "OpenID provider",
            Kind::Smart => "EHR (SMART launch)",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Provider {
    pub id: i64,
    pub org_id: i64,
    pub kind: Kind,
    pub name: String,
    pub issuer: String,
    pub client_id: String,
    /// Sealed; empty for a public client.
    pub client_secret: String,
    /// The `amr`/`acr` values that count as two-step sign-in.
    pub two_step_values: Vec<String>,
    pub create_accounts: bool,
}

const COLUMNS: &str =
    "id, org_id, kind, name, issuer, client_id, client_secret, two_step_values, create_accounts";

fn provider(row: &sqlx::any::AnyRow) -> sqlx::Result<Provider> {
    let kind: String = row.try_get("kind")?;
    let values: String = row.try_get("two_step_values")?;
    Ok(Provider {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        kind: Kind::parse(&kind).unwrap_or(Kind::Oidc),
        name: row.try_get("name")?,
        issuer: row.try_get("issuer")?,
        client_id: row.try_get("client_id")?,
        client_secret: row.try_get("client_secret")?,
        two_step_values: values.split_whitespace().map(str::to_owned).collect(),
        create_accounts: row.try_get::<i64, _>("create_accounts")? != 0,
    })
}

/// What the console saves.
pub struct NewProvider<'a> {
    pub org_id: i64,
    pub kind: Kind,
    pub name: &'a str,
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub sealed_secret: &'a str,
    pub two_step_values: &'a str,
    pub create_accounts: bool,
}

pub async fn create(conn: &mut AnyConnection, p: &NewProvider<'_>, now: i64) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "insert into sso_providers (org_id, kind, name, issuer, client_id, client_secret, two_step_values, create_accounts, created_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9) returning id",
    )
    .bind(p.org_id)
    .bind(p.kind.as_str())
    .bind(p.name)
    .bind(p.issuer)
    .bind(p.client_id)
    .bind(p.sealed_secret)
    .bind(p.two_step_values)
    .bind(i64::from(p.create_accounts))
    .bind(now)
    .fetch_one(conn)
    .await
}

pub async fn get(db: &Db, id: i64) -> sqlx::Result<Option<Provider>> {
    sqlx::query(&format!(
        "select {COLUMNS} from sso_providers where id = $1"
    ))
    .bind(id)
    .fetch_optional(&db.pool)
    .await?
    .as_ref()
    .map(provider)
    .transpose()
}

/// The provider of this kind at this issuer, whichever organization registered it:
/// for an EHR's FHIR base URL (unique among EHRs), the one a launch names.
pub async fn by_issuer(db: &Db, kind: Kind, issuer: &str) -> sqlx::Result<Option<Provider>> {
    sqlx::query(&format!(
        "select {COLUMNS} from sso_providers where kind = $1 and issuer = $2"
    ))
    .bind(kind.as_str())
    .bind(issuer)
    .fetch_optional(&db.pool)
    .await?
    .as_ref()
    .map(provider)
    .transpose()
}

pub async fn of_org(db: &Db, org_id: i64) -> sqlx::Result<Vec<Provider>> {
    sqlx::query(&format!(
        "select {COLUMNS} from sso_providers where org_id = $1 order by name, id"
    ))
    .bind(org_id)
    .fetch_all(&db.pool)
    .await?
    .iter()
    .map(provider)
    .collect()
}

/// Removes a provider with its links and sign-ins under way.
pub async fn delete(conn: &mut AnyConnection, id: i64) -> sqlx::Result<()> {
    for table in ["sso_pending", "sso_links"] {
        sqlx::query(&format!("delete from {table} where provider_id = $1"))
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query("delete from sso_providers where id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The user a subject is linked to.
pub async fn linked_user(db: &Db, provider_id: i64, subject: &str) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("select user_id from sso_links where provider_id = $1 and subject = $2")
        .bind(provider_id)
        .bind(subject)
        .fetch_optional(&db.pool)
        .await
}

/// Links `subject` to `user_id`; false when the subject is already linked.
pub async fn link(
    conn: &mut AnyConnection,
    provider_id: i64,
    subject: &str,
    user_id: i64,
    now: i64,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "insert into sso_links (provider_id, subject, user_id, created_at) values ($1, $2, $3, $4)
         on conflict (provider_id, subject) do nothing",
    )
    .bind(provider_id)
    .bind(subject)
    .bind(user_id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn unlink(
    conn: &mut AnyConnection,
    provider_id: i64,
    subject: &str,
) -> sqlx::Result<bool> {
    let done = sqlx::query("delete from sso_links where provider_id = $1 and subject = $2")
        .bind(provider_id)
        .bind(subject)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// A link as the console lists it.
pub struct LinkRow {
    pub provider_id: i64,
    pub provider: String,
    pub subject: String,
    pub email: String,
}

pub async fn links_of_org(db: &Db, org_id: i64) -> sqlx::Result<Vec<LinkRow>> {
    let rows = sqlx::query(
        "select l.provider_id, p.name, l.subject, u.email from sso_links l
         join sso_providers p on p.id = l.provider_id join users u on u.id = l.user_id
         where p.org_id = $1 order by p.name, u.email, l.subject",
    )
    .bind(org_id)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(LinkRow {
                provider_id: r.try_get(0)?,
                provider: r.try_get(1)?,
                subject: r.try_get(2)?,
                email: r.try_get(3)?,
            })
        })
        .collect()
}

/// A sign-in under way.
pub struct Pending {
    pub provider_id: i64,
    pub binding_hash: String,
    pub secrets: String,
    pub next: String,
    pub link_user_id: Option<i64>,
    pub created_at: i64,
}

pub async fn start(conn: &mut AnyConnection, state_hash: &str, p: &Pending) -> sqlx::Result<()> {
    // sign-ins abandoned at the provider are forgotten as new ones start
    sqlx::query("delete from sso_pending where created_at < $1")
        .bind(p.created_at - PENDING_SECONDS)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "insert into sso_pending (state_hash, provider_id, binding_hash, secrets, next, link_user_id, created_at)
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(state_hash)
    .bind(p.provider_id)
    .bind(&p.binding_hash)
    .bind(&p.secrets)
    .bind(&p.next)
    .bind(p.link_user_id)
    .bind(p.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Takes the sign-in with this state (it is used once, whatever happens next).
pub async fn take(conn: &mut AnyConnection, state_hash: &str) -> sqlx::Result<Option<Pending>> {
    let row = sqlx::query(
        "delete from sso_pending where state_hash = $1
         returning provider_id, binding_hash, secrets, next, link_user_id, created_at",
    )
    .bind(state_hash)
    .fetch_optional(conn)
    .await?;
    row.map(|r| {
        Ok(Pending {
            provider_id: r.try_get("provider_id")?,
            binding_hash: r.try_get("binding_hash")?,
            secrets: r.try_get("secrets")?,
            next: r.try_get("next")?,
            link_user_id: r.try_get("link_user_id")?,
            created_at: r.try_get("created_at")?,
        })
    })
    .transpose()
}
