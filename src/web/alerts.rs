//! New-mail alerts on the account page: the user's ordinary e-mail address, its
//! check by a single-use link, and turning alerts on and off. What an alert says is
//! decided in [`crate::alerts`].

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use super::session::{self, Chrome, CurrentUser};
use super::{AppError, AppResult, AppState, ClientIp};
use crate::alerts::{self, Kind};
use crate::audit::{self, Actor, Event};
use crate::auth;
use crate::clock::format_utc;
use crate::domain::Email;
use crate::store::alerts::{self as store, Verification};
use crate::store::users;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/account/alerts", get(alerts_page))
        .route("/account/alerts/address", post(set_address))
        .route("/account/alerts/enabled", post(set_enabled))
        .route(
            "/alerts/verify/{token}",
            get(verify_page).post(confirm_address),
        )
}

#[derive(Template, WebTemplate)]
#[template(path = "account/alerts.html")]
struct AlertsPage {
    chrome: Chrome,
    /// Whether this portal can send alerts at all (`DIRECTMAIL_ALERT_SMTP_RELAY`).
    available: bool,
    portal: String,
    interval_minutes: u32,
    /// The address as saved ("" for none) and as typed into a refused form.
    saved: String,
    typed: String,
    verified: String,
    enabled: bool,
    error: String,
}

async fn alerts_view(
    state: &AppState,
    current: CurrentUser,
    typed: String,
    error: String,
) -> AppResult<AlertsPage> {
    let address = store::address(&state.db, current.user.id).await?;
    Ok(AlertsPage {
        available: state.config.alert_smtp_relay.is_some(),
        portal: state.config.portal_name.clone(),
        interval_minutes: state.config.alert_interval,
        saved: address
            .as_ref()
            .map(|a| a.email.clone())
            .unwrap_or_default(),
        typed,
        verified: address
            .as_ref()
            .and_then(|a| a.verified_at)
            .map(format_utc)
            .unwrap_or_default(),
        enabled: address.as_ref().is_some_and(|a| a.enabled),
        error,
        chrome: current.chrome,
    })
}

async fn alerts_page(State(state): State<AppState>, current: CurrentUser) -> AppResult<AlertsPage> {
    alerts_view(&state, current, String::new(), String::new()).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AddressForm {
    email: String,
}

/// Saves the alert address (unverified) and e-mails it a link to confirm it.
async fn set_address(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    form: Result<Form<AddressForm>, FormRejection>,
) -> AppResult<Response> {
    let typed = match form {
        Ok(Form(f)) => f.email,
        Err(rejection) => {
            let (status, message) = super::auth::unreadable(&rejection);
            let page = alerts_view(&state, current, String::new(), message).await?;
            return Ok((status, page).into_response());
        }
    };
    if state.config.alert_smtp_relay.is_none() {
        return Err(AppError::BadRequest(
            "This portal sends no alerts: its operator has not set up an alert relay.".into(),
        ));
    }
    let email = match Email::parse(&typed) {
        Ok(e) => e,
        Err(problem) => {
            let page = alerts_view(&state, current, typed, problem.0).await?;
            return Ok((StatusCode::BAD_REQUEST, page).into_response());
        }
    };
    let now = state.clock.now();
    let (token, token_hash) = auth::new_token();
    let link = format!("{}/alerts/verify/{token}", state.public_base);
    let user = &current.user;
    let mut tx = state.db.begin().await?;
    store::set_address(&mut tx, user.id, email.as_str(), now).await?;
    store::create_verification(&mut tx, user.id, email.as_str(), &token_hash, now).await?;
    alerts::queue_link(
        &mut tx,
        &state.secret,
        Kind::Verify,
        user.id,
        email.as_str(),
        &link,
        now,
    )
    .await?;
    // the address itself is not written to the audit log: it is personal, and the
    // organization's administrators read the log
    audit::append(
        &mut tx,
        now,
        &current.actor(ip),
        Event::new("alerts.address", &user.email)
            .detail("alert address set; a link to confirm it was e-mailed")
            .org(user.org_id),
    )
    .await?;
    tx.commit().await?;
    state.wake_alerts.notify_one();
    session::flash(
        &current.session,
        format!(
            "We sent a link to {}. Open it to confirm the address; alerts start once it is confirmed.",
            email.as_str()
        ),
    )
    .await?;
    Ok(Redirect::to("/account/alerts").into_response())
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct EnabledForm {
    enabled: String,
}

/// Turns alerts on or off.
async fn set_enabled(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    form: Result<Form<EnabledForm>, FormRejection>,
) -> AppResult<Response> {
    let Ok(Form(form)) = form else {
        return Err(AppError::BadRequest(
            "The form could not be read; reload the page and try again.".into(),
        ));
    };
    let on = form.enabled == "1";
    let now = state.clock.now();
    let user = &current.user;
    let mut tx = state.db.begin().await?;
    if !store::set_enabled(&mut tx, user.id, on, now).await? {
        return Err(AppError::BadRequest(
            "Give an address for alerts first.".into(),
        ));
    }
    audit::append(
        &mut tx,
        now,
        &current.actor(ip),
        Event::new(if on { "alerts.on" } else { "alerts.off" }, &user.email).org(user.org_id),
    )
    .await?;
    tx.commit().await?;
    session::flash(
        &current.session,
        if on {
            "New-mail alerts are on."
        } else {
            "New-mail alerts are off."
        },
    )
    .await?;
    Ok(Redirect::to("/account/alerts").into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "auth/alert_verify.html")]
struct VerifyPage {
    chrome: Chrome,
    portal: String,
    /// Empty when the link is usable; why not otherwise.
    problem: String,
    /// After confirming.
    done: bool,
}

/// Why a link cannot be used, in a sentence, with its status; `None` when it can.
async fn check_link(state: &AppState, token: &str) -> AppResult<Option<(StatusCode, String)>> {
    let now = state.clock.now();
    Ok(
        match store::lookup_verification(&state.db, &auth::token_hash(token), now).await? {
            Verification::Valid { .. } => None,
            Verification::Expired => Some((
                StatusCode::GONE,
                "This link has expired (links are valid for 24 hours). Sign in and give the address again on your account's alerts page to get a new one.".into(),
            )),
            Verification::Used => Some((
                StatusCode::GONE,
                "This link was already used: the address is confirmed. Nothing more to do.".into(),
            )),
            Verification::Unknown => Some((
                StatusCode::NOT_FOUND,
                "This link is not valid, or the address was changed since it was sent. Check that you opened all of it, or use the newest link you received.".into(),
            )),
        },
    )
}

/// Shows a button rather than confirming at once: mail scanners open links too.
async fn verify_page(
    State(state): State<AppState>,
    chrome: Chrome,
    Path(token): Path<String>,
) -> AppResult<Response> {
    let portal = state.config.portal_name.clone();
    let (status, problem) = check_link(&state, &token)
        .await?
        .unwrap_or((StatusCode::OK, String::new()));
    let page = VerifyPage {
        chrome,
        portal,
        problem,
        done: false,
    };
    Ok((status, page).into_response())
}

async fn confirm_address(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    chrome: Chrome,
    Path(token): Path<String>,
) -> AppResult<Response> {
    let mut page = VerifyPage {
        chrome,
        portal: state.config.portal_name.clone(),
        problem: String::new(),
        done: false,
    };
    if let Some((status, problem)) = check_link(&state, &token).await? {
        page.problem = problem;
        return Ok((status, page).into_response());
    }
    let now = state.clock.now();
    let hash = auth::token_hash(&token);
    let Verification::Valid { user_id, .. } =
        store::lookup_verification(&state.db, &hash, now).await?
    else {
        return Err(AppError::NotFound);
    };
    let Some(user) = users::get(&state.db, user_id).await? else {
        return Err(AppError::NotFound);
    };
    let actor = Actor::user(&user, ip);
    let mut tx = state.db.begin().await?;
    if !store::verify(&mut tx, &hash, now).await? {
        page.problem =
            "This link was used, or the address changed, a moment ago. Use the newest link you received.".into();
        return Ok((StatusCode::GONE, page).into_response());
    }
    audit::append(
        &mut tx,
        now,
        &actor,
        Event::new("alerts.verified", &user.email).org(user.org_id),
    )
    .await?;
    tx.commit().await?;
    page.done = true;
    Ok(page.into_response())
}
