//! Trust bundles: their settings, current anchors, refresh history, and which hosted
//! domains use them for receiving and sending.

use sqlx::{AnyConnection, Row as _, any::AnyRow};

use crate::db::Db;
use crate::store::orgs::Domain;

/// How many refreshes of each bundle are kept for the page.
const HISTORY: i64 = 20;

/// A bundle as listed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BundleRow {
    pub id: i64,
    pub name: String,
    /// `None` for a bundle imported from a file.
    pub url: Option<String>,
    #[serde(skip)]
    pub signer_pem: Option<String>,
    pub refresh_hours: i64,
    pub created_at: i64,
    pub last_attempt_at: Option<i64>,
    /// The last attempt's error; `None` when it succeeded.
    pub last_error: Option<String>,
    pub last_success_at: Option<i64>,
    pub next_refresh_at: Option<i64>,
    pub anchor_count: i64,
}

const BUNDLE_COLUMNS: &str = "b.id, b.name, b.url, b.signer_pem, b.refresh_hours, b.created_at,
    b.last_attempt_at, b.last_error, b.last_success_at, b.next_refresh_at,
    (select count(*) from trust_bundle_anchors a where a.bundle_id = b.id) as anchor_count";

impl BundleRow {
    fn from_row(row: &AnyRow) -> sqlx::Result<BundleRow> {
        Ok(BundleRow {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            url: row.try_get("url")?,
            signer_pem: row.try_get("signer_pem")?,
            refresh_hours: row.try_get("refresh_hours")?,
            created_at: row.try_get("created_at")?,
            last_attempt_at: row.try_get("last_attempt_at")?,
            last_error: row.try_get("last_error")?,
            last_success_at: row.try_get("last_success_at")?,
            next_refresh_at: row.try_get("next_refresh_at")?,
            anchor_count: row.try_get("anchor_count")?,
        })
    }
}

pub async fn list(db: &Db) -> sqlx::Result<Vec<BundleRow>> {
    let rows = sqlx::query(&format!(
        "select {BUNDLE_COLUMNS} from trust_bundles b order by b.name"
    ))
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(BundleRow::from_row).collect()
}

pub async fn get(db: &Db, id: i64) -> sqlx::Result<Option<BundleRow>> {
    let row = sqlx::query(&format!(
        "select {BUNDLE_COLUMNS} from trust_bundles b where b.id = $1"
    ))
    .bind(id)
    .fetch_optional(&db.pool)
    .await?;
    row.as_ref().map(BundleRow::from_row).transpose()
}

pub async fn by_name(db: &Db, name: &str) -> sqlx::Result<Option<BundleRow>> {
    let row = sqlx::query(&format!(
        "select {BUNDLE_COLUMNS} from trust_bundles b where b.name = $1"
    ))
    .bind(name)
    .fetch_optional(&db.pool)
    .await?;
    row.as_ref().map(BundleRow::from_row).transpose()
}

/// A new bundle's settings.
pub struct NewBundle<'a> {
    pub name: &'a str,
    pub url: Option<&'a str>,
    pub signer_pem: Option<&'a str>,
    pub refresh_hours: i64,
    /// When the first scheduled refresh is due (`None` for a file bundle).
    pub next_refresh_at: Option<i64>,
}

pub async fn insert(conn: &mut AnyConnection, b: NewBundle<'_>, now: i64) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "insert into trust_bundles (name, url, signer_pem, refresh_hours, created_at, next_refresh_at)
         values ($1, $2, $3, $4, $5, $6) returning id",
    )
    .bind(b.name)
    .bind(b.url)
    .bind(b.signer_pem)
    .bind(b.refresh_hours)
    .bind(now)
    .bind(b.next_refresh_at)
    .fetch_one(conn)
    .await
}

pub async fn delete(conn: &mut AnyConnection, id: i64) -> sqlx::Result<bool> {
    // the anchors, history and assignments go with it (on delete cascade)
    let done = sqlx::query("delete from trust_bundles where id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// One anchor of a bundle.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BundleAnchor {
    pub fingerprint: String,
    pub subject: String,
    pub issuer: String,
    pub not_before: i64,
    pub not_after: i64,
    #[serde(skip)]
    pub cert_pem: String,
}

pub async fn anchors(db: &Db, bundle_id: i64) -> sqlx::Result<Vec<BundleAnchor>> {
    anchors_on(&mut *db.pool.acquire().await?, bundle_id).await
}

/// The anchors as the connection sees them (inside a refresh's transaction).
pub async fn anchors_on(
    conn: &mut AnyConnection,
    bundle_id: i64,
) -> sqlx::Result<Vec<BundleAnchor>> {
    let rows = sqlx::query(
        "select fingerprint, subject, issuer, not_before, not_after, cert_pem
         from trust_bundle_anchors where bundle_id = $1 order by subject, fingerprint",
    )
    .bind(bundle_id)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(BundleAnchor {
                fingerprint: r.try_get("fingerprint")?,
                subject: r.try_get("subject")?,
                issuer: r.try_get("issuer")?,
                not_before: r.try_get("not_before")?,
                not_after: r.try_get("not_after")?,
                cert_pem: r.try_get("cert_pem")?,
            })
        })
        .collect()
}

/// Replaces a bundle's anchors with `anchors`.
pub async fn replace_anchors(
    conn: &mut AnyConnection,
    bundle_id: i64,
    anchors: &[BundleAnchor],
) -> sqlx::Result<()> {
    sqlx::query("delete from trust_bundle_anchors where bundle_id = $1")
        .bind(bundle_id)
        .execute(&mut *conn)
        .await?;
    for a in anchors {
        sqlx::query(
            "insert into trust_bundle_anchors
               (bundle_id, fingerprint, subject, issuer, not_before, not_after, cert_pem)
             values ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(bundle_id)
        .bind(&a.fingerprint)
        .bind(&a.subject)
        .bind(&a.issuer)
        .bind(a.not_before)
        .bind(a.not_after)
        .bind(&a.cert_pem)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// An anchor named in a refresh's changes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AnchorFact {
    pub subject: String,
    pub fingerprint: String,
    pub not_after: i64,
}

/// One import or refresh of a bundle.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Refresh {
    pub at: i64,
    /// Why it failed; `None` when the anchors were replaced.
    pub error: Option<String>,
    pub added: Vec<AnchorFact>,
    pub removed: Vec<AnchorFact>,
    /// Anchors of the new set whose validity ends within 30 days (or has ended).
    pub expiring: Vec<AnchorFact>,
    pub anchor_count: i64,
}

/// Records an attempt: its history row, the bundle's last outcome and when it is next
/// due. The anchors themselves are replaced separately, and only on success.
pub async fn record_refresh(
    conn: &mut AnyConnection,
    bundle_id: i64,
    refresh: &Refresh,
    next_refresh_at: Option<i64>,
) -> sqlx::Result<()> {
    let json = |facts: &[AnchorFact]| serde_json::to_string(facts).unwrap_or_else(|_| "[]".into());
    sqlx::query(
        "insert into trust_bundle_refreshes (bundle_id, at, error, added, removed, expiring, anchor_count)
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(bundle_id)
    .bind(refresh.at)
    .bind(refresh.error.as_deref())
    .bind(json(&refresh.added))
    .bind(json(&refresh.removed))
    .bind(json(&refresh.expiring))
    .bind(refresh.anchor_count)
    .execute(&mut *conn)
    .await?;
    let success = refresh.error.is_none().then_some(refresh.at);
    sqlx::query(
        "update trust_bundles set last_attempt_at = $2, last_error = $3,
           last_success_at = coalesce($4, last_success_at), next_refresh_at = $5
         where id = $1",
    )
    .bind(bundle_id)
    .bind(refresh.at)
    .bind(refresh.error.as_deref())
    .bind(success)
    .bind(next_refresh_at)
    .execute(&mut *conn)
    .await?;
    // keep the newest few
    sqlx::query(
        "delete from trust_bundle_refreshes where bundle_id = $1 and id not in
           (select id from trust_bundle_refreshes where bundle_id = $1 order by id desc limit $2)",
    )
    .bind(bundle_id)
    .bind(HISTORY)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The newest refreshes first.
pub async fn refreshes(db: &Db, bundle_id: i64) -> sqlx::Result<Vec<Refresh>> {
    let rows = sqlx::query(
        "select at, error, added, removed, expiring, anchor_count from trust_bundle_refreshes
         where bundle_id = $1 order by id desc",
    )
    .bind(bundle_id)
    .fetch_all(&db.pool)
    .await?;
    let facts = |text: String| serde_json::from_str::<Vec<AnchorFact>>(&text).unwrap_or_default();
    rows.iter()
        .map(|r| {
            Ok(Refresh {
                at: r.try_get("at")?,
                error: r.try_get("error")?,
                added: facts(r.try_get("added")?),
                removed: facts(r.try_get("removed")?),
                expiring: facts(r.try_get("expiring")?),
                anchor_count: r.try_get("anchor_count")?,
            })
        })
        .collect()
}

/// URL bundles whose scheduled refresh is due, as `(id, next_refresh_at)`.
pub async fn due(db: &Db, now: i64) -> sqlx::Result<Vec<(i64, i64)>> {
    let rows = sqlx::query(
        "select id, next_refresh_at from trust_bundles
         where url is not null and next_refresh_at is not null and next_refresh_at <= $1
         order by next_refresh_at",
    )
    .bind(now)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("id")?, r.try_get("next_refresh_at")?)))
        .collect()
}

/// Claims a due refresh for this instance by moving its due time to `until`; false
/// when another instance claimed it first.
pub async fn claim(db: &Db, id: i64, was_due: i64, until: i64) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "update trust_bundles set next_refresh_at = $3 where id = $1 and next_refresh_at = $2",
    )
    .bind(id)
    .bind(was_due)
    .bind(until)
    .execute(&db.pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Which trust a hosted domain takes from a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Uses {
    pub receiving: bool,
    pub sending: bool,
}

impl Uses {
    pub const NONE: Uses = Uses {
        receiving: false,
        sending: false,
    };

    /// `receiving`, `sending`, `both` or `none`.
    pub fn parse(s: &str) -> Option<Uses> {
        let (receiving, sending) = match s.trim() {
            "receiving" => (true, false),
            "sending" => (false, true),
            "both" => (true, true),
            "none" => (false, false),
            _ => return None,
        };
        Some(Uses { receiving, sending })
    }

    pub fn as_str(self) -> &'static str {
        match (self.receiving, self.sending) {
            (true, true) => "both",
            (true, false) => "receiving",
            (false, true) => "sending",
            (false, false) => "none",
        }
    }

    /// "receiving and sending", "receiving only", …
    pub fn label(self) -> &'static str {
        match (self.receiving, self.sending) {
            (true, true) => "receiving and sending",
            (true, false) => "receiving only",
            (false, true) => "sending only",
            (false, false) => "nothing",
        }
    }
}

/// Sets what `domain_id` uses the bundle for (no row at all for [`Uses::NONE`]).
/// Returns what it used it for before.
pub async fn assign(
    conn: &mut AnyConnection,
    domain_id: i64,
    bundle_id: i64,
    uses: Uses,
) -> sqlx::Result<Uses> {
    let before: Option<(i64, i64)> = sqlx::query_as(
        "select for_receiving, for_sending from domain_trust_bundles
         where domain_id = $1 and bundle_id = $2",
    )
    .bind(domain_id)
    .bind(bundle_id)
    .fetch_optional(&mut *conn)
    .await?;
    let before = before
        .map(|(r, s)| Uses {
            receiving: super::flag(r),
            sending: super::flag(s),
        })
        .unwrap_or(Uses::NONE);
    if uses == Uses::NONE {
        sqlx::query("delete from domain_trust_bundles where domain_id = $1 and bundle_id = $2")
            .bind(domain_id)
            .bind(bundle_id)
            .execute(&mut *conn)
            .await?;
    } else {
        sqlx::query(
            "insert into domain_trust_bundles (domain_id, bundle_id, for_receiving, for_sending)
             values ($1, $2, $3, $4)
             on conflict (domain_id, bundle_id)
             do update set for_receiving = excluded.for_receiving, for_sending = excluded.for_sending",
        )
        .bind(domain_id)
        .bind(bundle_id)
        .bind(i64::from(uses.receiving))
        .bind(i64::from(uses.sending))
        .execute(&mut *conn)
        .await?;
    }
    Ok(before)
}

/// A domain's use of a bundle.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Assignment {
    pub domain_id: i64,
    pub domain: String,
    pub org_id: Option<i64>,
    pub bundle_id: i64,
    pub bundle: String,
    pub uses: Uses,
}

const ASSIGNMENT_QUERY: &str = "select d.id as domain_id, d.name as domain, d.org_id,
    b.id as bundle_id, b.name as bundle, t.for_receiving, t.for_sending
    from domain_trust_bundles t
    join domains d on d.id = t.domain_id
    join trust_bundles b on b.id = t.bundle_id";

fn assignment(r: &AnyRow) -> sqlx::Result<Assignment> {
    Ok(Assignment {
        domain_id: r.try_get("domain_id")?,
        domain: r.try_get("domain")?,
        org_id: r.try_get("org_id")?,
        bundle_id: r.try_get("bundle_id")?,
        bundle: r.try_get("bundle")?,
        uses: Uses {
            receiving: super::flag(r.try_get("for_receiving")?),
            sending: super::flag(r.try_get("for_sending")?),
        },
    })
}

pub async fn assignments_of_bundle(db: &Db, bundle_id: i64) -> sqlx::Result<Vec<Assignment>> {
    let rows = sqlx::query(&format!(
        "{ASSIGNMENT_QUERY} where t.bundle_id = $1 order by d.name"
    ))
    .bind(bundle_id)
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(assignment).collect()
}

pub async fn assignments_of_domain(db: &Db, domain_id: i64) -> sqlx::Result<Vec<Assignment>> {
    let rows = sqlx::query(&format!(
        "{ASSIGNMENT_QUERY} where t.domain_id = $1 order by b.name"
    ))
    .bind(domain_id)
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(assignment).collect()
}

/// Every hosted domain, for choosing where a bundle is used.
pub async fn hosted_domains(db: &Db) -> sqlx::Result<Vec<Domain>> {
    let rows = sqlx::query("select id, org_id, name from domains order by name")
        .fetch_all(&db.pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Domain {
                id: r.try_get("id")?,
                org_id: r.try_get("org_id")?,
                name: r.try_get("name")?,
            })
        })
        .collect()
}

/// The PEM of every anchor of the bundles a domain uses for receiving.
pub async fn receiving_anchor_pems(db: &Db, domain_id: i64) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "select distinct a.cert_pem from trust_bundle_anchors a
         join domain_trust_bundles t on t.bundle_id = a.bundle_id
         where t.domain_id = $1 and t.for_receiving = 1",
    )
    .bind(domain_id)
    .fetch_all(&db.pool)
    .await
}

/// The anchors recipients' certificates are checked against: every hosted domain's
/// own anchors, and the anchors of every bundle some domain uses for sending.
pub async fn sending_anchor_pems(db: &Db) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "select cert_pem from trust_anchors
         union
         select a.cert_pem from trust_bundle_anchors a
         join domain_trust_bundles t on t.bundle_id = a.bundle_id
         where t.for_sending = 1",
    )
    .fetch_all(&db.pool)
    .await
}

/// The fingerprints of [`sending_anchor_pems`], sorted: when they change, what
/// certificate discovery remembered about recipients is out of date.
pub async fn sending_fingerprints(db: &Db) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "select fingerprint from trust_anchors
         union
         select a.fingerprint from trust_bundle_anchors a
         join domain_trust_bundles t on t.bundle_id = a.bundle_id
         where t.for_sending = 1
         order by 1",
    )
    .fetch_all(&db.pool)
    .await
}
