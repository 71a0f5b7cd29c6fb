//! User accounts: credentials, role, MFA, lockout state.

use sqlx::{AnyConnection, Row as _, any::AnyRow};

use super::flag;
use super::orgs::Org;
use crate::db::Db;
use crate::domain::{DisplayName, Email, Role};

#[derive(Clone, serde::Serialize)]
pub struct User {
    pub id: i64,
    pub org_id: Option<i64>,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    #[serde(skip)]
    pub password_hash: Option<String>,
    pub must_change_password: bool,
    pub disabled: bool,
    #[serde(skip)]
    pub totp_secret: Option<String>,
    pub totp_enabled: bool,
    #[serde(skip)]
    pub totp_last_step: i64,
    #[serde(skip)]
    pub session_epoch: i64,
    pub failed_logins: i64,
    pub locked_until: i64,
    pub last_login_at: Option<i64>,
    pub created_at: i64,
    /// An IANA zone from `clock::TIME_ZONES`; "" for the browser's own.
    pub time_zone: String,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("org_id", &self.org_id)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl User {
    fn from_row(row: &AnyRow) -> sqlx::Result<User> {
        let role: String = row.try_get("role")?;
        Ok(User {
            id: row.try_get("id")?,
            org_id: row.try_get("org_id")?,
            email: row.try_get("email")?,
            display_name: row.try_get("display_name")?,
            role: Role::parse(&role).map_err(|e| sqlx::Error::Decode(e.into()))?,
            password_hash: row.try_get("password_hash")?,
            must_change_password: flag(row.try_get("must_change_password")?),
            disabled: flag(row.try_get("disabled")?),
            totp_secret: row.try_get("totp_secret")?,
            totp_enabled: flag(row.try_get("totp_enabled")?),
            totp_last_step: row.try_get("totp_last_step")?,
            session_epoch: row.try_get("session_epoch")?,
            failed_logins: row.try_get("failed_logins")?,
            locked_until: row.try_get("locked_until")?,
            last_login_at: row.try_get("last_login_at")?,
            created_at: row.try_get("created_at")?,
            time_zone: row.try_get("time_zone")?,
        })
    }

    /// Whether the user has completed an invite (has a password at all).
    pub fn is_active(&self) -> bool {
        self.password_hash.is_some() && !self.disabled
    }
}

/// A new account. `password_hash` is `None` for an invited user who has not yet
/// chosen a password.
pub struct NewUser<'a> {
    pub org_id: Option<i64>,
    pub email: &'a Email,
    pub display_name: &'a DisplayName,
    pub role: Role,
    pub password_hash: Option<String>,
    pub must_change_password: bool,
}

pub async fn create(conn: &mut AnyConnection, user: NewUser<'_>, now: i64) -> sqlx::Result<User> {
    let row = sqlx::query(
        "insert into users (org_id, email, display_name, role, password_hash, must_change_password, created_at)
         values ($1, $2, $3, $4, $5, $6, $7) returning *",
    )
    .bind(user.org_id)
    .bind(user.email.as_str())
    .bind(user.display_name.as_str())
    .bind(user.role.as_str())
    .bind(user.password_hash)
    .bind(i64::from(user.must_change_password))
    .bind(now)
    .fetch_one(conn)
    .await?;
    User::from_row(&row)
}

pub async fn get(db: &Db, id: i64) -> sqlx::Result<Option<User>> {
    let row = sqlx::query("select * from users where id = $1")
        .bind(id)
        .fetch_optional(&db.pool)
        .await?;
    row.as_ref().map(User::from_row).transpose()
}

/// A user with their organization in one round trip (read on every signed-in
/// request).
pub async fn get_with_org(db: &Db, id: i64) -> sqlx::Result<Option<(User, Option<Org>)>> {
    let row = sqlx::query(
        "select u.*, o.name as org_name, o.idle_timeout_minutes as org_idle_timeout_minutes,
                o.require_mfa as org_require_mfa, o.created_at as org_created_at
         from users u left join organizations o on o.id = u.org_id where u.id = $1",
    )
    .bind(id)
    .fetch_optional(&db.pool)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let user = User::from_row(&row)?;
    let org = match (user.org_id, row.try_get::<Option<String>, _>("org_name")?) {
        (Some(id), Some(name)) => Some(Org {
            id,
            name,
            idle_timeout_minutes: row.try_get("org_idle_timeout_minutes")?,
            require_mfa: flag(row.try_get("org_require_mfa")?),
            created_at: row.try_get("org_created_at")?,
        }),
        _ => None,
    };
    Ok(Some((user, org)))
}

pub async fn by_email(db: &Db, email: &str) -> sqlx::Result<Option<User>> {
    let row = sqlx::query("select * from users where email = $1")
        .bind(email.trim().to_ascii_lowercase())
        .fetch_optional(&db.pool)
        .await?;
    row.as_ref().map(User::from_row).transpose()
}

/// Users of one organization (or operators, with `org_id` `None`), searched by name
/// or address, by name. Fetches `limit` rows from `offset`.
pub async fn list(
    db: &Db,
    org_id: Option<i64>,
    search: &str,
    limit: i64,
    offset: i64,
) -> sqlx::Result<Vec<User>> {
    let pattern = super::orgs::like_pattern(search);
    let rows = match org_id {
        Some(org) => {
            sqlx::query(
                "select * from users where org_id = $1 and (lower(display_name) like $2 or email like $2)
                 order by lower(display_name), id limit $3 offset $4",
            )
            .bind(org)
            .bind(pattern)
            .bind(limit)
            .bind(offset)
            .fetch_all(&db.pool)
            .await?
        }
        None => {
            sqlx::query(
                "select * from users where org_id is null and (lower(display_name) like $1 or email like $1)
                 order by lower(display_name), id limit $2 offset $3",
            )
            .bind(pattern)
            .bind(limit)
            .bind(offset)
            .fetch_all(&db.pool)
            .await?
        }
    };
    rows.iter().map(User::from_row).collect()
}

pub async fn admins_of(db: &Db, org_id: i64) -> sqlx::Result<Vec<User>> {
    let rows =
        sqlx::query("select * from users where org_id = $1 and role = 'org-admin' order by email")
            .bind(org_id)
            .fetch_all(&db.pool)
            .await?;
    rows.iter().map(User::from_row).collect()
}

/// Sets a new password; `must_change` forces another change at next sign-in. Ends the
/// user's other sessions (the epoch moves) and clears any lockout.
pub async fn set_password(
    conn: &mut AnyConnection,
    user_id: i64,
    password_hash: &str,
    must_change: bool,
) -> sqlx::Result<i64> {
    let row = sqlx::query(
        "update users set password_hash = $1, must_change_password = $2, session_epoch = session_epoch + 1,
                          failed_logins = 0, locked_until = 0
         where id = $3 returning session_epoch",
    )
    .bind(password_hash)
    .bind(i64::from(must_change))
    .bind(user_id)
    .fetch_one(conn)
    .await?;
    row.try_get("session_epoch")
}

/// Ends the password at once (a reset), with every session and any lockout.
pub async fn clear_password(conn: &mut AnyConnection, user_id: i64) -> sqlx::Result<()> {
    sqlx::query(
        "update users set password_hash = null, session_epoch = session_epoch + 1, failed_logins = 0, locked_until = 0
         where id = $1",
    )
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// The zone the user reads times in (checked against `clock::TIME_ZONES` by the caller).
pub async fn set_time_zone(conn: &mut AnyConnection, user_id: i64, zone: &str) -> sqlx::Result<()> {
    sqlx::query("update users set time_zone = $1 where id = $2")
        .bind(zone)
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Ends every session of the user; returns the new epoch.
pub async fn bump_epoch(conn: &mut AnyConnection, user_id: i64) -> sqlx::Result<i64> {
    let row = sqlx::query(
        "update users set session_epoch = session_epoch + 1 where id = $1 returning session_epoch",
    )
    .bind(user_id)
    .fetch_one(conn)
    .await?;
    row.try_get("session_epoch")
}

pub async fn set_role(conn: &mut AnyConnection, user_id: i64, role: Role) -> sqlx::Result<()> {
    sqlx::query("update users set role = $1 where id = $2")
        .bind(role.as_str())
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Disables or re-enables an account; disabling also ends its sessions.
pub async fn set_disabled(
    conn: &mut AnyConnection,
    user_id: i64,
    disabled: bool,
) -> sqlx::Result<()> {
    sqlx::query(
        "update users set disabled = $1, session_epoch = session_epoch + $2, failed_logins = 0, locked_until = 0
         where id = $3",
    )
    .bind(i64::from(disabled))
    .bind(i64::from(disabled))
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a wrong password; returns the number of failures in a row.
pub async fn record_failure(conn: &mut AnyConnection, user_id: i64) -> sqlx::Result<i64> {
    let row = sqlx::query(
        "update users set failed_logins = failed_logins + 1 where id = $1 returning failed_logins",
    )
    .bind(user_id)
    .fetch_one(conn)
    .await?;
    row.try_get("failed_logins")
}

pub async fn lock_until(conn: &mut AnyConnection, user_id: i64, until: i64) -> sqlx::Result<()> {
    sqlx::query("update users set locked_until = $1, failed_logins = 0 where id = $2")
        .bind(until)
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn record_sign_in(conn: &mut AnyConnection, user_id: i64, now: i64) -> sqlx::Result<()> {
    sqlx::query("update users set failed_logins = 0, last_login_at = $1 where id = $2")
        .bind(now)
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Stores a TOTP secret (sealed by the caller), not yet enabled.
pub async fn set_pending_totp(
    conn: &mut AnyConnection,
    user_id: i64,
    secret: &str,
) -> sqlx::Result<()> {
    sqlx::query("update users set totp_secret = $1, totp_enabled = 0 where id = $2")
        .bind(secret)
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn enable_totp(conn: &mut AnyConnection, user_id: i64, step: i64) -> sqlx::Result<()> {
    sqlx::query("update users set totp_enabled = 1, totp_last_step = $1 where id = $2")
        .bind(step)
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Accepts a TOTP time step only if it is newer than the last accepted one, so a code
/// cannot be used twice. Returns whether it was accepted.
pub async fn accept_totp_step(
    conn: &mut AnyConnection,
    user_id: i64,
    step: i64,
) -> sqlx::Result<bool> {
    let done =
        sqlx::query("update users set totp_last_step = $1 where id = $2 and totp_last_step < $1")
            .bind(step)
            .bind(user_id)
            .execute(conn)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// Removes MFA (a reset by an administrator, or the user turning it off).
pub async fn clear_totp(conn: &mut AnyConnection, user_id: i64) -> sqlx::Result<()> {
    sqlx::query(
        "update users set totp_secret = null, totp_enabled = 0, totp_last_step = 0 where id = $1",
    )
    .bind(user_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("delete from recovery_codes where user_id = $1")
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Replaces the user's recovery codes with these hashes.
pub async fn replace_recovery_codes(
    conn: &mut AnyConnection,
    user_id: i64,
    code_hashes: &[String],
) -> sqlx::Result<()> {
    sqlx::query("delete from recovery_codes where user_id = $1")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    for hash in code_hashes {
        sqlx::query("insert into recovery_codes (user_id, code_hash) values ($1, $2)")
            .bind(user_id)
            .bind(hash)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Uses up a recovery code; returns whether it was valid and unused.
pub async fn use_recovery_code(
    conn: &mut AnyConnection,
    user_id: i64,
    code_hash: &str,
    now: i64,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "update recovery_codes set used_at = $1 where user_id = $2 and code_hash = $3 and used_at is null",
    )
    .bind(now)
    .bind(user_id)
    .bind(code_hash)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn unused_recovery_codes(db: &Db, user_id: i64) -> sqlx::Result<i64> {
    sqlx::query_scalar("select count(*) from recovery_codes where user_id = $1 and used_at is null")
        .bind(user_id)
        .fetch_one(&db.pool)
        .await
}
