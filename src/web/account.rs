//! A user's own account: the home page, password, TOTP enrolment and recovery codes,
//! signing out everywhere, and keeping an idle session alive.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use super::session::{self, Chrome, CurrentUser, GatedUser, KEY_EPOCH};
use super::{AppError, AppResult, AppState, ClientIp};
use crate::audit::{self, Event};
use crate::auth;
use crate::clock::format_utc;
use crate::domain::NewPassword;
use crate::store::mailboxes::{self, Mailbox};
use crate::store::users;

/// The TOTP secret shown during enrolment, kept in the session until confirmed.
const KEY_PENDING_TOTP: &str = "totp_pending";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/account", get(account_page))
        .route(
            "/account/password",
            get(password_page).post(change_password),
        )
        .route("/account/mfa", get(mfa_page).post(confirm_mfa))
        .route("/account/mfa/disable", post(disable_mfa))
        .route("/account/mfa/recovery-codes", post(regenerate_codes))
        .route("/account/sign-out-everywhere", post(sign_out_everywhere))
        .route("/session/keepalive", post(keepalive))
        .route("/account/tokens", get(tokens_page).post(create_token))
        .route("/account/tokens/{id}/revoke", post(revoke_token))
}

#[derive(Template, WebTemplate)]
#[template(path = "account/home.html")]
struct HomePage {
    chrome: Chrome,
    mailboxes: Vec<Mailbox>,
}

async fn home(State(state): State<AppState>, current: CurrentUser) -> AppResult<HomePage> {
    Ok(HomePage {
        mailboxes: mailboxes::of_user(&state.db, current.user.id).await?,
        chrome: current.chrome,
    })
}

#[derive(Template, WebTemplate)]
#[template(path = "account/account.html")]
struct AccountPage {
    chrome: Chrome,
    name: String,
    email: String,
    role: String,
    org: String,
    mfa_enabled: bool,
    mfa_required: bool,
    codes_left: i64,
    last_login: String,
}

async fn account_page(
    State(state): State<AppState>,
    current: CurrentUser,
) -> AppResult<AccountPage> {
    let u = &current.user;
    Ok(AccountPage {
        name: u.display_name.clone(),
        email: u.email.clone(),
        role: u.role.label().to_owned(),
        org: current
            .org
            .as_ref()
            .map(|o| o.name.clone())
            .unwrap_or_default(),
        mfa_enabled: u.totp_enabled,
        mfa_required: current.org.as_ref().is_some_and(|o| o.require_mfa),
        codes_left: users::unused_recovery_codes(&state.db, u.id).await?,
        last_login: u
            .last_login_at
            .map(format_utc)
            .unwrap_or_else(|| "never".into()),
        chrome: current.chrome,
    })
}

#[derive(Template, WebTemplate)]
#[template(path = "account/password.html")]
struct PasswordPage {
    chrome: Chrome,
    forced: bool,
    errors: super::FieldErrors,
}

async fn password_page(GatedUser(current): GatedUser) -> PasswordPage {
    PasswordPage {
        forced: current.user.must_change_password,
        chrome: current.chrome,
        errors: Default::default(),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct PasswordForm {
    current: String,
    password: String,
    confirm: String,
}

async fn change_password(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    GatedUser(current): GatedUser,
    form: Result<Form<PasswordForm>, FormRejection>,
) -> AppResult<Response> {
    let mut page = PasswordPage {
        forced: current.user.must_change_password,
        chrome: current.chrome.clone(),
        errors: Default::default(),
    };
    let form = match form {
        Ok(Form(f)) => f,
        Err(rejection) => {
            let (status, message) = super::auth::unreadable(&rejection);
            page.errors.add("form", message);
            return Ok((status, page).into_response());
        }
    };
    let current_ok =
        super::verify_password(current.user.password_hash.clone(), form.current.clone()).await?;
    if !current_ok {
        let message = super::auth::record_failed_sign_in(
            &state,
            Some(&current.user),
            &current.actor(ip.clone()),
            "wrong current password",
        )
        .await?;
        page.errors.add(
            "current",
            if message.contains("locked") {
                message
            } else {
                "Your current password is not right.".to_owned()
            },
        );
    }
    let new = page.errors.check(
        "password",
        NewPassword::parse(&form.password, &form.confirm),
    );
    if let Some(new) = &new
        && new.expose() == form.current
    {
        page.errors.add(
            "password",
            "Choose a password different from the current one.",
        );
    }
    let (Some(new), true) = (new, page.errors.is_empty()) else {
        return Ok((StatusCode::BAD_REQUEST, page).into_response());
    };
    let hash = super::hash_password(new.expose().to_owned()).await?;
    let now = state.clock.now();
    let mut tx = state.db.pool.begin().await?;
    // the epoch moves: every other session of this user ends
    let epoch = users::set_password(&mut tx, current.user.id, &hash, false).await?;
    audit::append(
        &mut tx,
        now,
        &current.actor(ip),
        Event::new("password.change", &current.user.email),
    )
    .await?;
    tx.commit().await?;
    current.session.cycle_id().await?;
    current.session.insert(KEY_EPOCH, epoch).await?;
    session::flash(
        &current.session,
        "Your password was changed. Other devices signed in as you have been signed out.",
    )
    .await?;
    Ok(Redirect::to("/account").into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "account/mfa.html")]
struct MfaPage {
    chrome: Chrome,
    enabled: bool,
    required: bool,
    /// Shown while enrolling: the secret as text and as a QR code (SVG).
    secret: String,
    qr_svg: String,
    /// Shown once, right after enrolment or regeneration.
    codes: Vec<String>,
    error: String,
}

async fn mfa_page(
    State(state): State<AppState>,
    GatedUser(current): GatedUser,
) -> AppResult<MfaPage> {
    mfa_view(&state, current, String::new()).await
}

async fn mfa_view(state: &AppState, current: CurrentUser, error: String) -> AppResult<MfaPage> {
    let required = current.org.as_ref().is_some_and(|o| o.require_mfa);
    let mut page = MfaPage {
        enabled: current.user.totp_enabled,
        required,
        secret: String::new(),
        qr_svg: String::new(),
        codes: Vec::new(),
        error,
        chrome: current.chrome.clone(),
    };
    if !page.enabled {
        let secret = match current.session.get::<String>(KEY_PENDING_TOTP).await? {
            Some(s) => s,
            None => {
                let s = auth::new_totp_secret();
                current.session.insert(KEY_PENDING_TOTP, &s).await?;
                s
            }
        };
        let issuer = format!("directmail {}", state.config.hisp_domain);
        let url = auth::totp_url(&secret, &issuer, &current.user.email)
            .ok_or_else(|| anyhow::anyhow!("cannot build the otpauth URL"))?;
        page.qr_svg =
            auth::qr_svg(&url).ok_or_else(|| anyhow::anyhow!("cannot render the QR code"))?;
        page.secret = secret;
    }
    Ok(page)
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CodeForm {
    code: String,
}

async fn confirm_mfa(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    GatedUser(current): GatedUser,
    form: Result<Form<CodeForm>, FormRejection>,
) -> AppResult<Response> {
    if current.user.totp_enabled {
        return Ok(Redirect::to("/account/mfa").into_response());
    }
    let code = match form {
        Ok(Form(f)) => f.code,
        Err(rejection) => {
            let (status, message) = super::auth::unreadable(&rejection);
            return Ok((status, mfa_view(&state, current, message).await?).into_response());
        }
    };
    let Some(secret) = current.session.get::<String>(KEY_PENDING_TOTP).await? else {
        return Ok(Redirect::to("/account/mfa").into_response());
    };
    let now = state.clock.now();
    let Some(step) = auth::check_totp(&secret, &code, now) else {
        let message = "That code does not match. Check that your device's clock is right and enter the 6-digit code your app shows now.".to_owned();
        return Ok((
            StatusCode::BAD_REQUEST,
            mfa_view(&state, current, message).await?,
        )
            .into_response());
    };
    let codes = auth::new_recovery_codes();
    let hashes: Vec<String> = codes.iter().map(|(_, h)| h.clone()).collect();
    let mut tx = state.db.pool.begin().await?;
    let sealed = crate::secrets::seal_totp(&state.secret, current.user.id, &secret)?;
    users::set_pending_totp(&mut tx, current.user.id, &sealed).await?;
    users::enable_totp(&mut tx, current.user.id, step).await?;
    users::replace_recovery_codes(&mut tx, current.user.id, &hashes).await?;
    audit::append(
        &mut tx,
        now,
        &current.actor(ip),
        Event::new("mfa.enable", &current.user.email),
    )
    .await?;
    tx.commit().await?;
    current.session.remove::<String>(KEY_PENDING_TOTP).await?;
    let mut page = mfa_view(&state, current, String::new()).await?;
    page.enabled = true;
    page.codes = codes.into_iter().map(|(c, _)| c).collect();
    Ok(page.into_response())
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ConfirmPasswordForm {
    current: String,
}

async fn disable_mfa(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    form: Result<Form<ConfirmPasswordForm>, FormRejection>,
) -> AppResult<Response> {
    if current.org.as_ref().is_some_and(|o| o.require_mfa) {
        return Err(AppError::Forbidden(
            "Your organization requires two-step sign-in, so it cannot be turned off.".into(),
        ));
    }
    let typed = form.map(|Form(f)| f.current).unwrap_or_default();
    let ok = super::verify_password(current.user.password_hash.clone(), typed).await?;
    if !ok {
        super::auth::record_failed_sign_in(
            &state,
            Some(&current.user),
            &current.actor(ip.clone()),
            "wrong password to turn off MFA",
        )
        .await?;
        let message = "Your password is not right, so two-step sign-in stays on.".to_owned();
        return Ok((
            StatusCode::BAD_REQUEST,
            mfa_view(&state, current, message).await?,
        )
            .into_response());
    }
    let now = state.clock.now();
    let mut tx = state.db.pool.begin().await?;
    users::clear_totp(&mut tx, current.user.id).await?;
    audit::append(
        &mut tx,
        now,
        &current.actor(ip),
        Event::new("mfa.disable", &current.user.email),
    )
    .await?;
    tx.commit().await?;
    session::flash(&current.session, "Two-step sign-in is off.").await?;
    Ok(Redirect::to("/account").into_response())
}

async fn regenerate_codes(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
) -> AppResult<Response> {
    if !current.user.totp_enabled {
        return Ok(Redirect::to("/account/mfa").into_response());
    }
    let codes = auth::new_recovery_codes();
    let hashes: Vec<String> = codes.iter().map(|(_, h)| h.clone()).collect();
    let now = state.clock.now();
    let mut tx = state.db.pool.begin().await?;
    users::replace_recovery_codes(&mut tx, current.user.id, &hashes).await?;
    audit::append(
        &mut tx,
        now,
        &current.actor(ip),
        Event::new("mfa.recovery-codes", &current.user.email),
    )
    .await?;
    tx.commit().await?;
    let mut page = mfa_view(&state, current, String::new()).await?;
    page.codes = codes.into_iter().map(|(c, _)| c).collect();
    Ok(page.into_response())
}

async fn sign_out_everywhere(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    GatedUser(current): GatedUser,
) -> AppResult<Response> {
    let now = state.clock.now();
    let mut tx = state.db.pool.begin().await?;
    users::bump_epoch(&mut tx, current.user.id).await?;
    audit::append(
        &mut tx,
        now,
        &current.actor(ip),
        Event::new("signout.everywhere", &current.user.email),
    )
    .await?;
    tx.commit().await?;
    current.session.flush().await?;
    Ok(Redirect::to("/login?reason=everywhere").into_response())
}

/// "Stay signed in": records activity now.
async fn keepalive(
    State(state): State<AppState>,
    GatedUser(current): GatedUser,
) -> AppResult<Response> {
    current
        .session
        .insert(session::KEY_SEEN, state.clock.now())
        .await?;
    let idle = current.chrome.idle_seconds;
    Ok((
        StatusCode::OK,
        axum::Json(serde_json::json!({ "idle_seconds": idle })),
    )
        .into_response())
}

/// The session key of a token waiting to be shown once (after the redirect).
const KEY_NEW_TOKEN: &str = "new_token";

pub struct TokenView {
    pub id: i64,
    pub name: String,
    pub created: String,
    pub last_used: String,
    pub revoked: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "account/tokens.html")]
struct TokensPage {
    chrome: Chrome,
    tokens: Vec<TokenView>,
    new_token: String,
    error: String,
}

async fn tokens_page(State(state): State<AppState>, current: CurrentUser) -> AppResult<TokensPage> {
    let new_token = session::take::<String>(&current.session, KEY_NEW_TOKEN)
        .await?
        .unwrap_or_default();
    tokens_view(&state, current, new_token, String::new()).await
}

async fn tokens_view(
    state: &AppState,
    current: CurrentUser,
    new_token: String,
    error: String,
) -> AppResult<TokensPage> {
    let tokens = crate::store::tokens::of_user(&state.db, current.user.id)
        .await?
        .into_iter()
        .map(|t| TokenView {
            id: t.id,
            name: t.name,
            created: format_utc(t.created_at),
            last_used: t
                .last_used_at
                .map(format_utc)
                .unwrap_or_else(|| "never".into()),
            revoked: t.revoked,
        })
        .collect();
    Ok(TokensPage {
        chrome: current.chrome,
        tokens,
        new_token,
        error,
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct TokenForm {
    name: String,
}

async fn create_token(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    form: Result<Form<TokenForm>, FormRejection>,
) -> AppResult<Response> {
    let name = form.map(|Form(f)| f.name).unwrap_or_default();
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 80 || name.chars().any(char::is_control) {
        let page = tokens_view(
            &state,
            current,
            String::new(),
            "Give the token a name of up to 80 characters, such as the system that will use it."
                .into(),
        )
        .await?;
        return Ok((StatusCode::BAD_REQUEST, page).into_response());
    }
    let now = state.clock.now();
    let (token, hash) = auth::new_token();
    let mut tx = state.db.pool.begin().await?;
    crate::store::tokens::create(&mut tx, current.user.id, name, &hash, now).await?;
    audit::append(
        &mut tx,
        now,
        &current.actor(ip),
        Event::new("token.create", &current.user.email).detail(name),
    )
    .await?;
    tx.commit().await?;
    current.session.insert(KEY_NEW_TOKEN, token).await?;
    Ok(Redirect::to("/account/tokens").into_response())
}

async fn revoke_token(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    axum::extract::Path(id): axum::extract::Path<i64>,
) -> AppResult<Response> {
    let now = state.clock.now();
    let mut tx = state.db.pool.begin().await?;
    if !crate::store::tokens::revoke(&mut tx, current.user.id, id, now).await? {
        return Err(AppError::NotFound);
    }
    audit::append(
        &mut tx,
        now,
        &current.actor(ip),
        Event::new("token.revoke", &current.user.email).detail(format!("token:{id}")),
    )
    .await?;
    tx.commit().await?;
    session::flash(
        &current.session,
        "The token was revoked; it no longer works.",
    )
    .await?;
    Ok(Redirect::to("/account/tokens").into_response())
}
