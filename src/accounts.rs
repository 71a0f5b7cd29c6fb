//! Account operations shared by the console and `directmail admin`: each one changes
//! the records and appends its audit entry in one transaction. Callers check who may
//! do it; these functions check only what must hold whoever asks.

use crate::audit::{self, Actor, Event};
use crate::auth;
use crate::db::Db;
use crate::domain::{DisplayName, Email, Role};
use crate::store::invites::{self, Purpose};
use crate::store::is_unique_violation;
use crate::store::mailboxes::{self, Mailbox, MailboxKind};
use crate::store::orgs::{self, Org};
use crate::store::users::{self, User};

/// Why an operation was refused, in a sentence; or a failure of the store.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

pub type Outcome<T> = Result<T, Refusal>;

/// Creates an account without a password and a single-use invitation; returns the
/// user and the token for the link (shown once).
pub async fn invite(
    db: &Db,
    actor: &Actor,
    org: &Org,
    email: &Email,
    name: &DisplayName,
    role: Role,
    now: i64,
) -> Outcome<(User, String)> {
    if role == Role::Operator {
        return Err(Refusal::Refused(
            "An organization's users are members or organization administrators.".into(),
        ));
    }
    let taken =
        || Refusal::Refused("Someone with this e-mail address already has an account.".into());
    if users::by_email(db, email.as_str()).await?.is_some() {
        return Err(taken());
    }
    let (token, token_hash) = auth::new_token();
    let mut tx = db.begin().await?;
    let created = users::create(
        &mut tx,
        users::NewUser {
            org_id: Some(org.id),
            email,
            display_name: name,
            role,
            password_hash: None,
            must_change_password: false,
        },
        now,
    )
    .await;
    let user = match created {
        Ok(u) => u,
        Err(e) if is_unique_violation(&e) => return Err(taken()),
        Err(e) => return Err(e.into()),
    };
    invites::create(
        &mut tx,
        user.id,
        Purpose::Invite,
        &token_hash,
        actor.user_id,
        now,
    )
    .await?;
    audit::append(
        &mut tx,
        now,
        actor,
        Event::new("user.invite", &user.email)
            .detail(format!("role {}", role.as_str()))
            .org(Some(org.id)),
    )
    .await?;
    tx.commit().await?;
    Ok((user, token))
}

pub async fn set_role(db: &Db, actor: &Actor, user: &User, role: Role, now: i64) -> Outcome<()> {
    if role == Role::Operator || user.role == Role::Operator {
        return Err(Refusal::Refused(
            "An organization's users are members or organization administrators.".into(),
        ));
    }
    let mut tx = db.begin().await?;
    users::set_role(&mut tx, user.id, role).await?;
    audit::append(
        &mut tx,
        now,
        actor,
        Event::new("user.role", &user.email)
            .detail(format!("{} -> {}", user.role.as_str(), role.as_str()))
            .org(user.org_id),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Disables (and signs out everywhere) or re-enables an account.
pub async fn set_disabled(
    db: &Db,
    actor: &Actor,
    user: &User,
    disabled: bool,
    now: i64,
) -> Outcome<()> {
    let mut tx = db.begin().await?;
    users::set_disabled(&mut tx, user.id, disabled).await?;
    let action = if disabled {
        "user.disable"
    } else {
        "user.enable"
    };
    audit::append(
        &mut tx,
        now,
        actor,
        Event::new(action, &user.email).org(user.org_id),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Ends the password at once (and every session) and issues a single-use link to
/// choose a new one; for an invitation never used, issues a fresh invitation.
/// Returns the token for the link.
pub async fn reset_password(db: &Db, actor: &Actor, user: &User, now: i64) -> Outcome<String> {
    let (token, token_hash) = auth::new_token();
    let purpose = if user.password_hash.is_some() {
        Purpose::Reset
    } else {
        Purpose::Invite
    };
    let mut tx = db.begin().await?;
    if purpose == Purpose::Reset {
        users::clear_password(&mut tx, user.id).await?;
    }
    invites::create(&mut tx, user.id, purpose, &token_hash, actor.user_id, now).await?;
    let action = if purpose == Purpose::Reset {
        "password.reset"
    } else {
        "user.reinvite"
    };
    audit::append(
        &mut tx,
        now,
        actor,
        Event::new(action, &user.email).org(user.org_id),
    )
    .await?;
    tx.commit().await?;
    Ok(token)
}

/// Queues the e-mail carrying an invitation or password link to the user's own
/// (login) address, sent through the alert relay by the running portal. The e-mail
/// says only what the link is for (`crate::alerts::invite_letter`).
pub async fn email_link(
    db: &Db,
    secret: &crate::secrets::SecretKey,
    actor: &Actor,
    user: &User,
    link: &str,
    now: i64,
) -> anyhow::Result<()> {
    use crate::alerts::Kind;
    // a reset clears the password, so the user record alone cannot tell it from an
    // invitation: the open link says
    let kind = if invites::open_purpose(db, user.id, now).await? == Some(Purpose::Reset) {
        Kind::Reset
    } else {
        Kind::Invite
    };
    let mut tx = db.begin().await?;
    crate::alerts::queue_link(&mut tx, secret, kind, user.id, &user.email, link, now).await?;
    audit::append(
        &mut tx,
        now,
        actor,
        Event::new("link.emailed", &user.email)
            .detail(format!("{} link queued for the alert relay", kind.as_str()))
            .org(user.org_id),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Removes two-step sign-in and the recovery codes, and signs the user out.
pub async fn reset_mfa(db: &Db, actor: &Actor, user: &User, now: i64) -> Outcome<()> {
    let mut tx = db.begin().await?;
    users::clear_totp(&mut tx, user.id).await?;
    users::bump_epoch(&mut tx, user.id).await?;
    audit::append(
        &mut tx,
        now,
        actor,
        Event::new("mfa.reset", &user.email).org(user.org_id),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Ends the lock that repeated failed sign-ins put on `user` (an administrator who
/// knows it was them, and not someone guessing).
pub async fn unlock(db: &Db, actor: &Actor, user: &User, now: i64) -> Outcome<()> {
    let mut tx = db.begin().await?;
    users::lock_until(&mut tx, user.id, 0).await?;
    audit::append(
        &mut tx,
        now,
        actor,
        Event::new("user.unlock", &user.email).org(user.org_id),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Lets `user` use `mailbox`. A personal mailbox belongs to one person. Returns
/// false when the user could already use it.
pub async fn assign(
    db: &Db,
    actor: &Actor,
    mailbox: &Mailbox,
    user: &User,
    now: i64,
) -> Outcome<bool> {
    if user.org_id != Some(mailbox.org_id) {
        return Err(Refusal::Refused(format!(
            "{} is not a user of the organization that owns {}.",
            user.email, mailbox.address
        )));
    }
    if mailbox.kind == MailboxKind::Personal {
        let members = mailboxes::members(db, mailbox.id).await?;
        if let Some(other) = members.iter().find(|m| m.user_id != user.id) {
            return Err(Refusal::Refused(format!(
                "{} is a personal mailbox and already belongs to {}; nothing changed. Make a shared mailbox for a team.",
                mailbox.address, other.email
            )));
        }
    }
    let mut tx = db.begin().await?;
    let added = mailboxes::assign(&mut tx, mailbox.id, user.id).await?;
    if added {
        audit::append(
            &mut tx,
            now,
            actor,
            Event::new("mailbox.assign", &mailbox.address)
                .detail(&user.email)
                .org(Some(mailbox.org_id)),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(added)
}

/// Takes `mailbox` away from `user`; false when they did not have it.
pub async fn unassign(
    db: &Db,
    actor: &Actor,
    mailbox: &Mailbox,
    user: &User,
    now: i64,
) -> Outcome<bool> {
    let mut tx = db.begin().await?;
    let removed = mailboxes::unassign(&mut tx, mailbox.id, user.id).await?;
    if removed {
        audit::append(
            &mut tx,
            now,
            actor,
            Event::new("mailbox.unassign", &mailbox.address)
                .detail(&user.email)
                .org(Some(mailbox.org_id)),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(removed)
}

/// Sets the organization's idle timeout (1–60 minutes) and MFA requirement.
pub async fn update_settings(
    db: &Db,
    actor: &Actor,
    org: &Org,
    idle_minutes: i64,
    require_mfa: bool,
    now: i64,
) -> Outcome<()> {
    let mut tx = db.begin().await?;
    orgs::update_settings(&mut tx, org.id, idle_minutes, require_mfa).await?;
    audit::append(
        &mut tx,
        now,
        actor,
        Event::new("org.settings", format!("org:{}", org.id))
            .detail(format!(
                "idle {idle_minutes} min, mfa required {require_mfa}"
            ))
            .org(Some(org.id)),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Lets new-mail alerts name the sender's organization, or stops it (off by default:
/// an organization's name can say more than it seems, e.g. a specialist clinic).
pub async fn set_alert_policy(
    db: &Db,
    actor: &Actor,
    org: &Org,
    name_sender: bool,
    now: i64,
) -> Outcome<()> {
    let mut tx = db.begin().await?;
    crate::store::alerts::set_names_sender(&mut tx, org.id, name_sender).await?;
    audit::append(
        &mut tx,
        now,
        actor,
        Event::new("org.alerts", format!("org:{}", org.id))
            .detail(format!(
                "alerts name the sender's organization: {name_sender}"
            ))
            .org(Some(org.id)),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Why `user` must use two-step sign-in, as a sentence, or `None` when they may
/// choose: their organization requires it, or they are a HISP operator and
/// `DIRECTMAIL_OPERATOR_MFA` is on. The one rule behind the enrolment gate, the MFA
/// page, and the refusal of API tokens to users who lack it.
pub fn two_step_requirement(
    user: &User,
    org: Option<&Org>,
    operator_mfa: bool,
) -> Option<&'static str> {
    if org.is_some_and(|o| o.require_mfa) {
        Some("Your organization requires two-step sign-in.")
    } else if user.role == Role::Operator && operator_mfa {
        Some("HISP operators must use two-step sign-in.")
    } else {
        None
    }
}

/// Whether `user` is required to use two-step sign-in and has not set it up.
pub fn lacks_required_two_step(user: &User, org: Option<&Org>, operator_mfa: bool) -> bool {
    !user.totp_enabled && two_step_requirement(user, org, operator_mfa).is_some()
}

/// Audits a refused sign-in (address paused, account locked) without letting one
/// address flood the log: the first refusal from `actor.ip` in a lockout window is
/// appended as `event`; later ones in the window are only counted, and the count is
/// appended as one `signin.refusals` entry when the window has closed (at the next
/// refusal from that address, or by the periodic [`summarise_refusals`]).
pub async fn record_refusal(
    db: &Db,
    actor: &Actor,
    event: Event<'_>,
    now: i64,
    window_seconds: i64,
) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    let closed = crate::store::throttle::take_closed_refusal_windows(
        &mut tx,
        Some(&actor.ip),
        now,
        window_seconds,
    )
    .await?;
    for w in &closed {
        append_refusal_summary(&mut tx, w, now, window_seconds).await?;
    }
    if crate::store::throttle::count_refusal(&mut tx, &actor.ip, now).await? {
        audit::append(&mut tx, now, actor, event).await?;
    }
    tx.commit().await
}

/// Appends the summary entries of every refusal window that has closed.
pub async fn summarise_refusals(
    db: &Db,
    now: i64,
    window_seconds: i64,
) -> Result<usize, sqlx::Error> {
    let mut tx = db.begin().await?;
    let closed =
        crate::store::throttle::take_closed_refusal_windows(&mut tx, None, now, window_seconds)
            .await?;
    let mut written = 0;
    for w in &closed {
        written += usize::from(append_refusal_summary(&mut tx, w, now, window_seconds).await?);
    }
    tx.commit().await?;
    Ok(written)
}

async fn append_refusal_summary(
    conn: &mut sqlx::AnyConnection,
    window: &crate::store::throttle::ClosedWindow,
    now: i64,
    window_seconds: i64,
) -> Result<bool, sqlx::Error> {
    if window.suppressed == 0 {
        return Ok(false);
    }
    let actor = Actor {
        ip: window.ip.clone(),
        ..Actor::system()
    };
    let end = (window.window_start + window_seconds).min(now);
    audit::append(
        conn,
        now,
        &actor,
        Event::new("signin.refusals", &window.ip).detail(format!(
            "{} more refused sign-ins from this address between {} and {}, after the one recorded",
            window.suppressed,
            crate::clock::format_utc(window.window_start),
            crate::clock::format_utc(end),
        )),
    )
    .await?;
    Ok(true)
}
