//! Mailboxes (personal like `dr.lee@…`, shared like `referrals@…`) and who may use them.

use sqlx::{AnyConnection, Row as _, any::AnyRow};

use crate::db::Db;
use crate::domain::{DisplayName, Email};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum MailboxKind {
    Personal,
    Shared,
}

impl MailboxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MailboxKind::Personal => "personal",
            MailboxKind::Shared => "shared",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "personal" => Some(MailboxKind::Personal),
            "shared" => Some(MailboxKind::Shared),
            _ => None,
        }
    }
}

/// A user assigned to a mailbox.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Member {
    pub user_id: i64,
    pub email: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Mailbox {
    pub id: i64,
    pub org_id: i64,
    pub domain_id: i64,
    pub address: String,
    pub kind: MailboxKind,
    pub display_name: String,
    /// The users assigned, filled by `list_for_org`.
    pub members: Vec<Member>,
}

impl Mailbox {
    fn from_row(row: &AnyRow) -> sqlx::Result<Mailbox> {
        let kind: String = row.try_get("kind")?;
        Ok(Mailbox {
            id: row.try_get("id")?,
            org_id: row.try_get("org_id")?,
            domain_id: row.try_get("domain_id")?,
            address: row.try_get("address")?,
            kind: MailboxKind::parse(&kind).unwrap_or(MailboxKind::Personal),
            display_name: row.try_get("display_name")?,
            members: Vec::new(),
        })
    }
}

pub async fn create(
    conn: &mut AnyConnection,
    org_id: i64,
    domain_id: i64,
    address: &Email,
    kind: MailboxKind,
    display_name: &DisplayName,
    now: i64,
) -> sqlx::Result<Mailbox> {
    let row = sqlx::query(
        "insert into mailboxes (org_id, domain_id, address, kind, display_name, created_at)
         values ($1, $2, $3, $4, $5, $6) returning *",
    )
    .bind(org_id)
    .bind(domain_id)
    .bind(address.as_str())
    .bind(kind.as_str())
    .bind(display_name.as_str())
    .bind(now)
    .fetch_one(conn)
    .await?;
    Mailbox::from_row(&row)
}

pub async fn get(db: &Db, id: i64) -> sqlx::Result<Option<Mailbox>> {
    let row = sqlx::query("select * from mailboxes where id = $1")
        .bind(id)
        .fetch_optional(&db.pool)
        .await?;
    row.as_ref().map(Mailbox::from_row).transpose()
}

pub async fn by_address(db: &Db, address: &str) -> sqlx::Result<Option<Mailbox>> {
    let row = sqlx::query("select * from mailboxes where address = $1")
        .bind(address)
        .fetch_optional(&db.pool)
        .await?;
    row.as_ref().map(Mailbox::from_row).transpose()
}

/// Assigns a user to a mailbox; assigning twice is not an error.
pub async fn assign(conn: &mut AnyConnection, mailbox_id: i64, user_id: i64) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "insert into mailbox_members (mailbox_id, user_id) values ($1, $2) on conflict do nothing",
    )
    .bind(mailbox_id)
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn unassign(
    conn: &mut AnyConnection,
    mailbox_id: i64,
    user_id: i64,
) -> sqlx::Result<bool> {
    let done = sqlx::query("delete from mailbox_members where mailbox_id = $1 and user_id = $2")
        .bind(mailbox_id)
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// The organization's mailboxes with their members, by address.
pub async fn list_for_org(
    db: &Db,
    org_id: i64,
    search: &str,
    limit: i64,
    offset: i64,
) -> sqlx::Result<Vec<Mailbox>> {
    let rows = sqlx::query(
        "select * from mailboxes where org_id = $1 and (address like $2 or lower(display_name) like $2)
         order by address limit $3 offset $4",
    )
    .bind(org_id)
    .bind(super::orgs::like_pattern(search))
    .bind(limit)
    .bind(offset)
    .fetch_all(&db.pool)
    .await?;
    let mut boxes = rows
        .iter()
        .map(Mailbox::from_row)
        .collect::<sqlx::Result<Vec<_>>>()?;
    for mailbox in &mut boxes {
        mailbox.members = members(db, mailbox.id).await?;
    }
    Ok(boxes)
}

/// The users assigned to a mailbox, by address.
pub async fn members(db: &Db, mailbox_id: i64) -> sqlx::Result<Vec<Member>> {
    let rows = sqlx::query(
        "select u.id, u.email from mailbox_members m join users u on u.id = m.user_id
         where m.mailbox_id = $1 order by u.email",
    )
    .bind(mailbox_id)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Member {
                user_id: r.try_get("id")?,
                email: r.try_get("email")?,
            })
        })
        .collect()
}

/// The organization's mailboxes by address, without members (for choosing one).
pub async fn names_for_org(db: &Db, org_id: i64) -> sqlx::Result<Vec<Mailbox>> {
    let rows = sqlx::query("select * from mailboxes where org_id = $1 order by address")
        .bind(org_id)
        .fetch_all(&db.pool)
        .await?;
    rows.iter().map(Mailbox::from_row).collect()
}

/// The ids of the mailboxes a user may read and send from (those assigned to them),
/// for the user bound as `$1`: the one rule of [`of_user`] (and so of every mail
/// page) for queries over messages of several mailboxes.
pub const MAILBOXES_OF_USER: &str = "select mailbox_id from mailbox_members where user_id = $1";

/// The mailboxes a user may read and send from.
pub async fn of_user<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    user_id: i64,
) -> sqlx::Result<Vec<Mailbox>> {
    let rows = sqlx::query(&format!(
        "select b.* from mailboxes b where b.id in ({MAILBOXES_OF_USER}) order by b.kind, b.address"
    ))
    .bind(user_id)
    .fetch_all(db)
    .await?;
    rows.iter().map(Mailbox::from_row).collect()
}
