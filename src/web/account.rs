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

/// The TOTP secret shown during enrolment, kept (sealed) in the session until confirmed.
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
        .route("/account/time-zone", post(set_time_zone))
        .route("/session/keepalive", post(keepalive))
        .route("/account/tokens", get(tokens_page).post(create_token))
        .route("/account/tokens/{id}/revoke", post(revoke_token))
}

#[derive(Template, WebTemplate)]
#[template(path = "account/home.html")]
struct HomePage {
    chrome: Chrome,
    mailboxes: Vec<Mailbox>,
    /// For an operator: the HISP at a glance.
    glance: Option<Glance>,
}

/// What an operator needs to see first: the queue, quarantine, and certificates and
/// anchors about to expire.
struct Glance {
    waiting: i64,
    failed: i64,
    quarantined: i64,
    /// Alert e-mails being retried or given up.
    alerts_failing: i64,
    /// Hosted certificates, domain anchors and trust-bundle anchors ending within 30
    /// days or ended, as the figures page lists them.
    expiring: Vec<super::figures::Warning>,
}

async fn home(State(state): State<AppState>, current: CurrentUser) -> AppResult<HomePage> {
    let glance = if current.user.role == crate::domain::Role::Operator {
        let now = state.clock.now();
        let (waiting, failed) =
            crate::store::outbound::queue_counts(&state.db, now, 7 * 86_400).await?;
        let expiring = super::figures::warnings(
            &crate::store::figures::certificate_ends(&state.db).await?,
            now,
            50,
        );
        Some(Glance {
            waiting,
            failed,
            quarantined: crate::store::inbound::quarantined(&state.db).await?,
            alerts_failing: crate::store::alerts::counts(&state.db).await?.1,
            expiring,
        })
    } else {
        None
    };
    Ok(HomePage {
        mailboxes: mailboxes::of_user(&state.db, current.user.id).await?,
        glance,
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
    /// Why two-step sign-in is required of this user; empty when it is their choice.
    mfa_required: String,
    codes_left: i64,
    last_login: String,
    /// The zone chosen ("" for the browser's), the choices, and what was wrong with a
    /// refused choice.
    time_zone: String,
    zones: &'static [(&'static str, &'static str)],
    zone_error: String,
    /// The organization's OpenID providers, to link an account at one of them.
    sso: Vec<super::sso::Button>,
}

async fn account_page(
    State(state): State<AppState>,
    current: CurrentUser,
) -> AppResult<AccountPage> {
    account_view(&state, current, String::new()).await
}

async fn account_view(
    state: &AppState,
    current: CurrentUser,
    zone_error: String,
) -> AppResult<AccountPage> {
    let u = &current.user;
    let sso = match u.org_id {
        Some(org) => super::sso::link_buttons(state, org).await?,
        None => Vec::new(),
    };
    Ok(AccountPage {
        sso,
        time_zone: u.time_zone.clone(),
        zones: crate::clock::TIME_ZONES,
        zone_error,
        name: u.display_name.clone(),
        email: u.email.clone(),
        role: u.role.label().to_owned(),
        org: current
            .org
            .as_ref()
            .map(|o| o.name.clone())
            .unwrap_or_default(),
        mfa_enabled: u.totp_enabled,
        mfa_required: crate::accounts::two_step_requirement(
            u,
            current.org.as_ref(),
            state.config.operator_mfa,
        )
        .unwrap_or_default()
        .to_owned(),
        codes_left: users::unused_recovery_codes(&state.db, u.id).await?,
        last_login: u
            .last_login_at
            .map(format_utc)
            .unwrap_or_else(|| "never".into()),
        chrome: current.chrome,
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TimeZoneForm {
    time_zone: String,
}

/// Chooses the zone the user's pages show times in.
async fn set_time_zone(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    form: Result<Form<TimeZoneForm>, FormRejection>,
) -> AppResult<Response> {
    let typed = match form {
        Ok(Form(f)) => f.time_zone,
        Err(rejection) => {
            let (status, message) = super::auth::unreadable(&rejection);
            let page = account_view(&state, current, message).await?;
            return Ok((status, page).into_response());
        }
    };
    let Some(label) = crate::clock::time_zone_label(&typed) else {
        let page = account_view(
            &state,
            current,
            "Choose a time zone from the list.".to_owned(),
        )
        .await?;
        return Ok((StatusCode::BAD_REQUEST, page).into_response());
    };
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    users::set_time_zone(&mut tx, current.user.id, &typed).await?;
    audit::append(
        &mut tx,
        now,
        &current.actor(ip),
        Event::new("account.time_zone", &current.user.email).detail(label),
    )
    .await?;
    tx.commit().await?;
    session::flash(
        &current.session,
        format!("Times are now shown in: {label}."),
    )
    .await?;
    Ok(Redirect::to("/account").into_response())
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
    // A forced change comes right after signing in with the one-time (or reset)
    // password: it is not asked for again, but the new one must differ from it.
    let forced = current.user.must_change_password;
    let current_ok = forced
        || super::verify_password(current.user.password_hash.clone(), form.current.clone()).await?;
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
    let same = match &new {
        Some(new) if forced => {
            super::verify_password(current.user.password_hash.clone(), new.expose().to_owned())
                .await?
        }
        Some(new) => new.expose() == form.current,
        None => false,
    };
    if same {
        page.errors.add(
            "password",
            if forced {
                "Choose a password different from the one-time password."
            } else {
                "Choose a password different from the current one."
            },
        );
    }
    let (Some(new), true) = (new, page.errors.is_empty()) else {
        return Ok((StatusCode::BAD_REQUEST, page).into_response());
    };
    let hash = super::hash_password(new.expose().to_owned()).await?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
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
        "Your password was changed. Other devices signed in as you have been signed out, and your API tokens were revoked.",
    )
    .await?;
    // the first operator (and anyone else who must use two-step sign-in) goes on to
    // enrolment straight away
    let target = if crate::accounts::lacks_required_two_step(
        &current.user,
        current.org.as_ref(),
        state.config.operator_mfa,
    ) {
        "/account/mfa"
    } else {
        "/account"
    };
    Ok(Redirect::to(target).into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "account/mfa.html")]
struct MfaPage {
    chrome: Chrome,
    enabled: bool,
    /// Why two-step sign-in is required of this user; empty when it is their choice.
    required: String,
    /// Shown while enrolling: the secret as text and as a QR code (SVG).
    secret: String,
    qr_svg: String,
    /// Shown once, right after enrolment or regeneration.
    codes: Vec<String>,
    error: String,
}

impl MfaPage {
    /// The key in groups of four, as it is typed into an app.
    fn grouped_secret(&self) -> String {
        crate::auth::grouped_key(&self.secret)
    }

    /// The recovery codes as a file to download (a `data:` address).
    fn codes_file(&self) -> String {
        let mut text = String::from("directmail recovery codes: each signs you in once.\n\n");
        for code in &self.codes {
            text.push_str(code);
            text.push('\n');
        }
        let encoded: String = text
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        format!("data:text/plain;charset=utf-8,{encoded}")
    }
}

async fn mfa_page(
    State(state): State<AppState>,
    GatedUser(current): GatedUser,
) -> AppResult<MfaPage> {
    mfa_view(&state, current, String::new()).await
}

async fn mfa_view(state: &AppState, current: CurrentUser, error: String) -> AppResult<MfaPage> {
    let required = crate::accounts::two_step_requirement(
        &current.user,
        current.org.as_ref(),
        state.config.operator_mfa,
    )
    .unwrap_or_default()
    .to_owned();
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
        let uid = current.user.id;
        let secret =
            match session::get_sealed(&current.session, &state.secret, KEY_PENDING_TOTP, uid)
                .await?
            {
                Some(s) => s,
                None => {
                    let s = auth::new_totp_secret();
                    session::insert_sealed(
                        &current.session,
                        &state.secret,
                        KEY_PENDING_TOTP,
                        uid,
                        &s,
                    )
                    .await?;
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
    let Some(secret) = session::get_sealed(
        &current.session,
        &state.secret,
        KEY_PENDING_TOTP,
        current.user.id,
    )
    .await?
    else {
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
    let mut tx = state.db.begin().await?;
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
    session::take::<String>(&current.session, KEY_PENDING_TOTP).await?;
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
    if let Some(why) = crate::accounts::two_step_requirement(
        &current.user,
        current.org.as_ref(),
        state.config.operator_mfa,
    ) {
        return Err(AppError::Forbidden(format!(
            "{why} It cannot be turned off."
        )));
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
    let mut tx = state.db.begin().await?;
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
    let mut tx = state.db.begin().await?;
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
    let mut tx = state.db.begin().await?;
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

/// The session key of a token waiting to be shown once (after the redirect), sealed.
const KEY_NEW_TOKEN: &str = "new_token";

/// The lives a token can be given on the page, in days; or a date.
const EXPIRY_CHOICES: [i64; 4] = [30, 90, 180, 365];

pub struct TokenView {
    pub id: i64,
    pub name: String,
    pub created: String,
    pub last_used: String,
    pub expires: String,
    /// "Active", "Expired", "Revoked" or "Ended …".
    pub state: String,
    pub active: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "account/tokens.html")]
struct TokensPage {
    chrome: Chrome,
    tokens: Vec<TokenView>,
    new_token: String,
    error: String,
    /// The code field is asked for when two-step sign-in is on.
    mfa_enabled: bool,
    choices: Vec<i64>,
    default_days: i64,
    max_days: i64,
    /// What was typed, kept when the form is shown again.
    name: String,
}

async fn tokens_page(State(state): State<AppState>, current: CurrentUser) -> AppResult<TokensPage> {
    let new_token = session::take_sealed(
        &current.session,
        &state.secret,
        KEY_NEW_TOKEN,
        current.user.id,
    )
    .await?
    .unwrap_or_default();
    tokens_view(&state, current, new_token, String::new(), String::new()).await
}

async fn tokens_view(
    state: &AppState,
    current: CurrentUser,
    new_token: String,
    error: String,
    name: String,
) -> AppResult<TokensPage> {
    use crate::store::tokens::{self, TokenState};
    let now = state.clock.now();
    let epoch = current.user.session_epoch;
    let tokens = tokens::of_user(&state.db, current.user.id)
        .await?
        .into_iter()
        .map(|t| {
            let token_state = t.state(epoch, now);
            TokenView {
                id: t.id,
                created: format_utc(t.created_at),
                last_used: t
                    .last_used_at
                    .map(format_utc)
                    .unwrap_or_else(|| "never".into()),
                expires: t.expires_at.map(format_utc).unwrap_or_else(|| "—".into()),
                state: match token_state {
                    TokenState::Active => "Active",
                    TokenState::Expired => "Expired",
                    TokenState::Revoked => "Revoked",
                    TokenState::Ended => {
                        "Ended (password changed, signed out everywhere, or account reset)"
                    }
                }
                .to_owned(),
                active: token_state == TokenState::Active,
                name: t.name,
            }
        })
        .collect();
    Ok(TokensPage {
        mfa_enabled: current.user.totp_enabled,
        chrome: current.chrome,
        tokens,
        new_token,
        error,
        choices: EXPIRY_CHOICES.to_vec(),
        default_days: tokens::DEFAULT_DAYS,
        max_days: tokens::MAX_DAYS,
        name,
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct TokenForm {
    name: String,
    /// A number of days from `EXPIRY_CHOICES`, or `date` for `expires_on`.
    expires: String,
    /// `YYYY-MM-DD`: the token stops at 00:00 UTC that day.
    expires_on: String,
    /// The account password, typed again.
    current: String,
    /// The current TOTP code, when two-step sign-in is on.
    code: String,
}

/// When a token asked for with this form ends, or the sentence saying why not.
fn token_expiry(form: &TokenForm, now: i64) -> Result<i64, &'static str> {
    use crate::store::tokens::{DEFAULT_DAYS, MAX_DAYS};
    let choice = form.expires.trim();
    if choice == "date" {
        let at = crate::clock::parse_date(&form.expires_on)
            .ok_or("Give the expiry date as year-month-day, such as 2026-03-31.")?;
        if at <= now {
            return Err("Choose an expiry date in the future.");
        }
        if at > now + MAX_DAYS * 86_400 {
            return Err("A token can live at most 365 days; choose an earlier date.");
        }
        return Ok(at);
    }
    let days = if choice.is_empty() {
        DEFAULT_DAYS
    } else {
        choice
            .parse::<i64>()
            .ok()
            .filter(|d| EXPIRY_CHOICES.contains(d))
            .ok_or("Choose how long the token lives from the list.")?
    };
    Ok(now + days * 86_400)
}

async fn create_token(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    form: Result<Form<TokenForm>, FormRejection>,
) -> AppResult<Response> {
    let form = match form {
        Ok(Form(f)) => f,
        Err(rejection) => {
            let (status, message) = super::auth::unreadable(&rejection);
            let page = tokens_view(&state, current, String::new(), message, String::new()).await?;
            return Ok((status, page).into_response());
        }
    };
    let name = form.name.trim().to_owned();
    let refuse = |current: CurrentUser, status: StatusCode, message: String, name: String| {
        let state = state.clone();
        async move {
            let page = tokens_view(&state, current, String::new(), message, name).await?;
            Ok::<_, AppError>((status, page).into_response())
        }
    };
    // (the enrolment gate in `CurrentUser` already sends such users to enrolment;
    // this holds should a route ever admit them)
    if crate::accounts::lacks_required_two_step(
        &current.user,
        current.org.as_ref(),
        state.config.operator_mfa,
    ) {
        let message = "You must use two-step sign-in before you can create API tokens. Set it up under My account → Two-step sign-in.".to_owned();
        return refuse(current, StatusCode::FORBIDDEN, message, name).await;
    }
    if name.is_empty() || name.chars().count() > 80 || name.chars().any(char::is_control) {
        let message =
            "Give the token a name of up to 80 characters, such as the system that will use it."
                .to_owned();
        return refuse(current, StatusCode::BAD_REQUEST, message, String::new()).await;
    }
    let now = state.clock.now();
    let expires_at = match token_expiry(&form, now) {
        Ok(at) => at,
        Err(message) => {
            return refuse(current, StatusCode::BAD_REQUEST, message.to_owned(), name).await;
        }
    };
    // A token outlives the session that makes it, so making one asks for the
    // password (and the code) again: an unattended signed-in browser is not enough.
    let password_ok =
        super::verify_password(current.user.password_hash.clone(), form.current.clone()).await?;
    if !password_ok {
        let message = super::auth::record_failed_sign_in(
            &state,
            Some(&current.user),
            &current.actor(ip.clone()),
            "wrong password to create an API token",
        )
        .await?;
        let message = if message.contains("locked") {
            message
        } else {
            "Your password is not right, so no token was made.".to_owned()
        };
        return refuse(current, StatusCode::BAD_REQUEST, message, name).await;
    }
    if current.user.totp_enabled {
        let code = form.code.trim();
        let accepted = match current
            .user
            .totp_secret
            .as_deref()
            .and_then(|s| crate::secrets::open_totp(&state.secret, current.user.id, s))
            .and_then(|s| auth::check_totp(&s, code, now))
        {
            Some(step) => {
                let mut tx = state.db.begin().await?;
                let fresh = users::accept_totp_step(&mut tx, current.user.id, step).await?;
                tx.commit().await?;
                fresh
            }
            None => false,
        };
        if !accepted {
            let message = super::auth::record_failed_sign_in(
                &state,
                Some(&current.user),
                &current.actor(ip.clone()),
                "wrong code to create an API token",
            )
            .await?;
            let message = if message.contains("locked") {
                message
            } else {
                "That code is not right or was already used, so no token was made. Enter the current 6-digit code from your authenticator app.".to_owned()
            };
            return refuse(current, StatusCode::BAD_REQUEST, message, name).await;
        }
    }
    let (token, hash) = auth::new_token();
    let mut tx = state.db.begin().await?;
    crate::store::tokens::create(&mut tx, current.user.id, &name, &hash, now, expires_at).await?;
    audit::append(
        &mut tx,
        now,
        &current.actor(ip),
        Event::new("token.create", &current.user.email)
            .detail(format!("{name}, expires {}", format_utc(expires_at))),
    )
    .await?;
    tx.commit().await?;
    session::insert_sealed(
        &current.session,
        &state.secret,
        KEY_NEW_TOKEN,
        current.user.id,
        &token,
    )
    .await?;
    Ok(Redirect::to("/account/tokens").into_response())
}

async fn revoke_token(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    axum::extract::Path(id): axum::extract::Path<i64>,
) -> AppResult<Response> {
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
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
