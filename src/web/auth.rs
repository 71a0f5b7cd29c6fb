//! Signing in (password, then TOTP when enrolled), lockout, invites and password
//! resets, and signing out.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use tower_sessions::Session;

use super::session::{self, Chrome, GatedUser, KEY_STAGE, KEY_USER};
use super::{AppResult, AppState, ClientIp};
use crate::accounts;
use crate::audit::{self, Actor, Event};
use crate::auth;
use crate::clock::format_utc;
use crate::domain::{Email, NewPassword};
use crate::store::invites::{self, Lookup, Purpose};
use crate::store::users::{self, User};
use crate::store::{orgs, throttle};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/login/org/{org}", get(org_login_page))
        .route("/login/mfa", get(mfa_page).post(mfa))
        .route("/logout", post(logout))
        .route("/invite/{token}", get(invite_page).post(accept_invite))
}

/// A form that could not be read at all (bad encoding, wrong type): a sentence for
/// the page and the status to answer with.
pub fn unreadable(rejection: &FormRejection) -> (StatusCode, String) {
    let status = rejection.status();
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "What you sent was larger than this form accepts, so nothing was saved.".to_owned()
    } else {
        "The form could not be read, so nothing was saved. Fill it in again and send it.".to_owned()
    };
    // 413 for too large; every other unreadable form is a plain 400
    let status = if status == StatusCode::PAYLOAD_TOO_LARGE {
        status
    } else {
        StatusCode::BAD_REQUEST
    };
    (status, message)
}

#[derive(Template, WebTemplate)]
#[template(path = "auth/login.html")]
pub(crate) struct LoginPage {
    pub chrome: Chrome,
    pub email: String,
    pub next: String,
    pub notice: String,
    pub error: String,
    /// "Sign in with …" buttons: the organization's identity providers (on its own
    /// sign-in link, `/login/org/{id}`).
    pub sso: Vec<super::sso::Button>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct LoginQuery {
    reason: String,
    next: String,
}

fn reason_text(reason: &str) -> &'static str {
    match reason {
        "idle" => {
            "You were signed out after a period of inactivity. Sign in again to continue where you left off."
        }
        "lifetime" => "Your session reached its maximum length. Sign in again to continue.",
        "ended" => {
            "Your session was ended (a password change, a sign-out everywhere, or an administrator). Sign in again."
        }
        "signedout" => "You have signed out.",
        "everywhere" => "You have been signed out on every device.",
        "signin" => "Sign in to continue.",
        _ => "",
    }
}

/// Only local paths are followed after sign-in (no open redirect).
pub(crate) fn safe_next(next: &str) -> String {
    // Browsers drop tabs and newlines from URLs and read `\\` as `/`, so `/\t/evil`
    // would become `//evil`: refuse any of them, and anything that leaves this host.
    let local = next.starts_with('/')
        && !next.chars().any(|c| c.is_control() || c == '\\')
        && url::Url::parse("http://directmail.invalid/")
            .and_then(|base| base.join(next))
            .is_ok_and(|u| u.host_str() == Some("directmail.invalid"));
    if local && !next.starts_with("//") {
        next.to_owned()
    } else {
        "/".to_owned()
    }
}

async fn login_page(chrome: Chrome, Query(q): Query<LoginQuery>) -> LoginPage {
    LoginPage {
        chrome,
        email: String::new(),
        next: q.next,
        notice: reason_text(&q.reason).to_owned(),
        error: String::new(),
        sso: Vec::new(),
    }
}

/// An organization's own sign-in link: the sign-in page with a "Sign in with …"
/// button for each of its identity providers (the password form stays).
async fn org_login_page(
    State(state): State<AppState>,
    chrome: Chrome,
    Path(org): Path<i64>,
    Query(q): Query<LoginQuery>,
) -> AppResult<LoginPage> {
    let mut page = login_page(chrome, Query(q)).await;
    page.sso = super::sso::buttons(&state, org).await?;
    Ok(page)
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct LoginForm {
    email: String,
    password: String,
    next: String,
}

async fn login(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    chrome: Chrome,
    form: Result<Form<LoginForm>, FormRejection>,
) -> AppResult<Response> {
    let page = |status: StatusCode, email: &str, next: &str, error: String| {
        (
            status,
            LoginPage {
                chrome: chrome.clone(),
                email: email.to_owned(),
                next: next.to_owned(),
                notice: String::new(),
                error,
                sso: Vec::new(),
            },
        )
            .into_response()
    };
    let form = match form {
        Ok(Form(f)) => f,
        Err(rejection) => {
            let (status, message) = unreadable(&rejection);
            return Ok(page(status, "", "", message));
        }
    };
    let now = state.clock.now();
    let db = &state.db;
    let email = form.email.trim().to_ascii_lowercase();
    if email.len() > 254 || form.password.len() > 1024 {
        return Ok(page(
            StatusCode::BAD_REQUEST,
            "",
            &form.next,
            "The e-mail address or password is too long to be right.".into(),
        ));
    }
    // One turn at hashing per attempt, taken before the throttle is read, so parallel
    // guesses cannot all slip past a block that the first of them triggers.
    let turn = super::hashing_permit().await?;
    // only a well-formed address goes into the audit log (people type passwords here)
    let label = if Email::parse(&email).is_ok() {
        email.clone()
    } else {
        "(not an address)".to_owned()
    };
    let window = i64::from(state.config.lockout_minutes) * 60;
    if let Some(until) = throttle::blocked_until(db, &ip, now).await? {
        let actor = Actor {
            user_id: None,
            label: label.clone(),
            org_id: None,
            ip: ip.clone(),
        };
        accounts::record_refusal(
            db,
            &actor,
            Event::new("signin.fail", &label).detail("address paused"),
            now,
            window,
        )
        .await?;
        return Ok(page(
            StatusCode::TOO_MANY_REQUESTS,
            &email,
            &form.next,
            format!(
                "Too many failed sign-ins came from your network. Sign-in from it is paused until {}.",
                format_utc(until)
            ),
        ));
    }
    let user = users::by_email(db, &email).await?;
    // An address without an account locks after as many failures as one with, and
    // is refused the same way, so a lock does not tell whether the account exists.
    let locked_until = match &user {
        Some(u) => Some(u.locked_until).filter(|t| *t > now),
        None if label == email => throttle::unknown_locked_until(db, &email, now).await?,
        None => None,
    };
    if let Some(until) = locked_until {
        // as long as a password check, like a wrong password
        let password = form.password.clone();
        tokio::task::spawn_blocking(move || auth::verify_password(None, &password)).await?;
        let actor = Actor {
            user_id: user.as_ref().map(|u| u.id),
            label: label.clone(),
            org_id: user.as_ref().and_then(|u| u.org_id),
            ip: ip.clone(),
        };
        accounts::record_refusal(
            db,
            &actor,
            Event::new("signin.fail", &label).detail("account locked"),
            now,
            window,
        )
        .await?;
        return Ok(page(
            StatusCode::TOO_MANY_REQUESTS,
            &email,
            &form.next,
            locked_message(until),
        ));
    }
    let stored = user.as_ref().and_then(|u| u.password_hash.clone());
    let password = form.password.clone();
    let verified =
        tokio::task::spawn_blocking(move || auth::verify_password(stored.as_deref(), &password))
            .await?;
    drop(turn);
    let actor = |u: Option<&User>| Actor {
        user_id: u.map(|u| u.id),
        label: u.map(|u| u.email.clone()).unwrap_or_else(|| label.clone()),
        org_id: u.and_then(|u| u.org_id),
        ip: ip.clone(),
    };
    let user = match user {
        Some(u) if verified => u,
        _ => {
            let message = record_failed_sign_in(
                &state,
                user.as_ref(),
                &actor(user.as_ref()),
                "wrong password",
            )
            .await?;
            return Ok(page(StatusCode::UNAUTHORIZED, &email, &form.next, message));
        }
    };
    if user.disabled {
        audit::record(
            db,
            now,
            &actor(Some(&user)),
            Event::new("signin.refused", &user.email).detail("account disabled"),
        )
        .await?;
        return Ok(page(
            StatusCode::FORBIDDEN,
            &email,
            &form.next,
            "This account is disabled. Ask your organization's administrator to re-enable it."
                .into(),
        ));
    }
    let next = safe_next(&form.next);
    if user.totp_enabled {
        session::begin(&session, &user, "mfa", now).await?;
        session.insert("next", &next).await?;
        session.insert(KEY_METHOD, "password").await?;
        audit::record(
            db,
            now,
            &actor(Some(&user)),
            Event::new("signin.password", &user.email),
        )
        .await?;
        return Ok(Redirect::to("/login/mfa").into_response());
    }
    complete_sign_in(&state, &session, &user, &actor(Some(&user)), "password").await?;
    Ok(Redirect::to(&next).into_response())
}

/// What a locked sign-in is told, the same whether or not the account exists.
fn locked_message(until: i64) -> String {
    format!(
        "Too many failed sign-ins: signing in with this e-mail address is locked until {}. Wait until then, or ask your administrator to reset your password.",
        format_utc(until)
    )
}

/// Counts a failed attempt against the account and the source address, locks when a
/// threshold is reached, audits, and says what happened.
pub(crate) async fn record_failed_sign_in(
    state: &AppState,
    user: Option<&User>,
    actor: &Actor,
    why: &str,
) -> AppResult<String> {
    let now = state.clock.now();
    let config = &state.config;
    let block = i64::from(config.lockout_minutes) * 60;
    let mut tx = state.db.begin().await?;
    let ip_blocked = throttle::record_failure(
        &mut tx,
        &actor.ip,
        now,
        block,
        i64::from(config.ip_lockout_threshold),
        block,
    )
    .await?;
    audit::append(
        &mut tx,
        now,
        actor,
        Event::new("signin.fail", &actor.label).detail(why),
    )
    .await?;
    if ip_blocked {
        audit::append(
            &mut tx,
            now,
            actor,
            Event::new("signin.block-address", &actor.ip),
        )
        .await?;
    }
    let mut locked = false;
    let threshold = i64::from(config.lockout_threshold);
    if let Some(u) = user {
        let failures = users::record_failure(&mut tx, u.id).await?;
        if failures >= threshold {
            users::lock_until(&mut tx, u.id, now + block).await?;
            audit::append(
                &mut tx,
                now,
                actor,
                Event::new("account.lock", &u.email).detail(format!("{failures} failed sign-ins")),
            )
            .await?;
            locked = true;
        }
    } else if Email::parse(&actor.label).is_ok() {
        // counted like an account's failures (see `login`)
        locked =
            throttle::record_unknown_failure(&mut tx, &actor.label, now, threshold, block).await?;
    }
    tx.commit().await?;
    Ok(if locked {
        locked_message(now + block)
    } else if ip_blocked {
        format!(
            "Too many failed sign-ins came from your network. Sign-in from it is paused until {}.",
            format_utc(now + block)
        )
    } else {
        "The e-mail address or the password is not right. Check both and try again.".to_owned()
    })
}

/// How the first step of a sign-in in its TOTP stage was made ("password", or a
/// single sign-on provider), for the audit entry of the whole sign-in.
pub(crate) const KEY_METHOD: &str = "method";

/// Signs `user` in fully, audited as `signin` with how (`method`).
pub(crate) async fn complete_sign_in(
    state: &AppState,
    session: &Session,
    user: &User,
    actor: &Actor,
    method: &str,
) -> AppResult<()> {
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    users::record_sign_in(&mut tx, user.id, now).await?;
    audit::append(
        &mut tx,
        now,
        actor,
        Event::new("signin", &user.email).detail(method),
    )
    .await?;
    tx.commit().await?;
    session::begin(session, user, "full", now).await
}

/// How long the code may take after the password, in seconds.
const MFA_STAGE_SECONDS: i64 = 10 * 60;

#[derive(Template, WebTemplate)]
#[template(path = "auth/mfa.html")]
struct MfaPage {
    chrome: Chrome,
    error: String,
}

async fn mfa_page(chrome: Chrome, session: Session) -> AppResult<Response> {
    if session.get::<String>(KEY_STAGE).await?.as_deref() != Some("mfa") {
        return Ok(Redirect::to("/login").into_response());
    }
    Ok(MfaPage {
        chrome,
        error: String::new(),
    }
    .into_response())
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct MfaForm {
    code: String,
}

async fn mfa(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    chrome: Chrome,
    form: Result<Form<MfaForm>, FormRejection>,
) -> AppResult<Response> {
    let page = |status: StatusCode, error: String| {
        (
            status,
            MfaPage {
                chrome: chrome.clone(),
                error,
            },
        )
            .into_response()
    };
    let uid: Option<i64> = session.get(KEY_USER).await?;
    let stage: Option<String> = session.get(KEY_STAGE).await?;
    let (Some(uid), Some("mfa")) = (uid, stage.as_deref()) else {
        return Ok(Redirect::to("/login?reason=signin").into_response());
    };
    let form = match form {
        Ok(Form(f)) => f,
        Err(rejection) => {
            let (status, message) = unreadable(&rejection);
            return Ok(page(status, message));
        }
    };
    let Some(user) = users::get(&state.db, uid).await? else {
        session.flush().await?;
        return Ok(Redirect::to("/login?reason=ended").into_response());
    };
    let now = state.clock.now();
    let actor = Actor::user(&user, ip);
    // The half-signed-in session is held to the same rules as a full one: it ends
    // with the user's other sessions (password change, sign out everywhere), it is
    // short-lived, and a paused address or locked account cannot finish it.
    let epoch: Option<i64> = session.get(session::KEY_EPOCH).await?;
    let started: i64 = session.get(session::KEY_CREATED).await?.unwrap_or(0);
    let stale = epoch != Some(user.session_epoch) || now - started > MFA_STAGE_SECONDS;
    let paused = throttle::blocked_until(&state.db, &actor.ip, now)
        .await?
        .is_some();
    if stale || paused || user.locked_until > now || user.disabled || user.password_hash.is_none() {
        session.flush().await?;
        return Ok(Redirect::to(if stale {
            "/login?reason=signin"
        } else {
            "/login"
        })
        .into_response());
    }
    let code = form.code.trim();
    let mut tx = state.db.begin().await?;
    let accepted = if code.len() <= 7 {
        match user
            .totp_secret
            .as_deref()
            .and_then(|s| crate::secrets::open_totp(&state.secret, user.id, s))
            .and_then(|s| auth::check_totp(&s, code, now))
        {
            Some(step) => users::accept_totp_step(&mut tx, user.id, step).await?,
            None => false,
        }
    } else {
        let hash = auth::token_hash(&auth::normalize_recovery_code(code));
        let used = users::use_recovery_code(&mut tx, user.id, &hash, now).await?;
        if used {
            audit::append(
                &mut tx,
                now,
                &actor,
                Event::new("mfa.recovery-code-used", &user.email),
            )
            .await?;
        }
        used
    };
    tx.commit().await?;
    if !accepted {
        let message = record_failed_sign_in(&state, Some(&user), &actor, "wrong code").await?;
        if message.contains("locked") {
            session.flush().await?;
        }
        return Ok(page(
            StatusCode::UNAUTHORIZED,
            if message.contains("locked") || message.contains("paused") {
                message
            } else {
                "That code is not right or was already used. Enter the current 6-digit code from your authenticator app, or one of your recovery codes.".into()
            },
        ));
    }
    let next: String = session.get("next").await?.unwrap_or_else(|| "/".into());
    let first: String = session
        .get(KEY_METHOD)
        .await?
        .unwrap_or_else(|| "password".into());
    complete_sign_in(
        &state,
        &session,
        &user,
        &actor,
        &format!("{first}, then TOTP"),
    )
    .await?;
    Ok(Redirect::to(&safe_next(&next)).into_response())
}

async fn logout(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    GatedUser(current): GatedUser,
) -> AppResult<Response> {
    let actor = Actor {
        user_id: Some(current.user.id),
        label: current.user.email.clone(),
        org_id: current.user.org_id,
        ip,
    };
    audit::record(
        &state.db,
        state.clock.now(),
        &actor,
        Event::new("signout", &current.user.email),
    )
    .await?;
    current.session.flush().await?;
    Ok(Redirect::to("/login?reason=signedout").into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "auth/invite.html")]
struct InvitePage {
    chrome: Chrome,
    /// Empty when the link is not usable; `problem` then says why.
    email: String,
    name: String,
    reset: bool,
    problem: String,
    error: String,
}

async fn invite_page(
    State(state): State<AppState>,
    chrome: Chrome,
    Path(token): Path<String>,
) -> AppResult<Response> {
    let (status, page) = invite_view(&state, chrome, &token).await?;
    Ok((status, page).into_response())
}

async fn invite_view(
    state: &AppState,
    chrome: Chrome,
    token: &str,
) -> AppResult<(StatusCode, InvitePage)> {
    let now = state.clock.now();
    let mut page = InvitePage {
        chrome,
        email: String::new(),
        name: String::new(),
        reset: false,
        problem: String::new(),
        error: String::new(),
    };
    let lookup = invites::lookup(&state.db, &auth::token_hash(token), now).await?;
    let status = match lookup {
        Lookup::Valid { user_id, purpose } => match users::get(&state.db, user_id).await? {
            Some(user) if !user.disabled => {
                page.email = user.email;
                page.name = user.display_name;
                page.reset = purpose == Purpose::Reset;
                StatusCode::OK
            }
            _ => {
                page.problem =
                    "This link belongs to an account that is disabled. Ask your administrator."
                        .into();
                StatusCode::GONE
            }
        },
        Lookup::Expired => {
            page.problem = "This link has expired (links are valid for 72 hours). Ask your administrator to send a new one.".into();
            StatusCode::GONE
        }
        Lookup::Used => {
            page.problem = "This link was already used. Sign in with the password you chose, or ask your administrator for a new link.".into();
            StatusCode::GONE
        }
        Lookup::Unknown => {
            page.problem = "This link is not valid. Check that you copied all of it, or ask your administrator for a new one.".into();
            StatusCode::NOT_FOUND
        }
    };
    Ok((status, page))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct SetPasswordForm {
    password: String,
    confirm: String,
}

async fn accept_invite(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    chrome: Chrome,
    Path(token): Path<String>,
    form: Result<Form<SetPasswordForm>, FormRejection>,
) -> AppResult<Response> {
    let (status, mut page) = invite_view(&state, chrome, &token).await?;
    if status != StatusCode::OK {
        return Ok((status, page).into_response());
    }
    let form = match form {
        Ok(Form(f)) => f,
        Err(rejection) => {
            let (status, message) = unreadable(&rejection);
            page.error = message;
            return Ok((status, page).into_response());
        }
    };
    let password = match NewPassword::parse(&form.password, &form.confirm) {
        Ok(p) => p,
        Err(problem) => {
            page.error = problem.to_string();
            return Ok((StatusCode::BAD_REQUEST, page).into_response());
        }
    };
    let Some(user) = users::by_email(&state.db, &page.email).await? else {
        return Err(super::AppError::NotFound);
    };
    let hash = super::hash_password(password.expose().to_owned()).await?;
    let now = state.clock.now();
    let actor = Actor::user(&user, ip);
    let mut tx = state.db.begin().await?;
    if !invites::consume(&mut tx, &auth::token_hash(&token), now).await? {
        page.problem =
            "This link was used or expired a moment ago. Ask your administrator for a new one."
                .into();
        return Ok((StatusCode::GONE, page).into_response());
    }
    users::set_password(&mut tx, user.id, &hash, false).await?;
    let action = if page.reset {
        "password.reset-complete"
    } else {
        "invite.accept"
    };
    audit::append(&mut tx, now, &actor, Event::new(action, &user.email)).await?;
    tx.commit().await?;
    let Some(user) = users::get(&state.db, user.id).await? else {
        return Err(super::AppError::NotFound);
    };
    if user.totp_enabled {
        // a reset keeps MFA: the second factor is still asked for
        session::begin(&session, &user, "mfa", now).await?;
        return Ok(Redirect::to("/login/mfa").into_response());
    }
    complete_sign_in(&state, &session, &user, &actor, "invitation link").await?;
    let org = match user.org_id {
        Some(id) => orgs::get(&state.db, id).await?,
        None => None,
    };
    let required = accounts::two_step_requirement(&user, org.as_ref(), state.config.operator_mfa);
    let target = if !page.reset || required.is_some() {
        "/account/mfa"
    } else {
        "/"
    };
    Ok(Redirect::to(target).into_response())
}
