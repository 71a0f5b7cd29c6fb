//! Who is signed in: the session's keys, the idle and absolute timeouts, the gates
//! (forced password change, required MFA) and the page frame every template gets.

use axum::extract::{FromRef, FromRequestParts, OriginalUri};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use tower_sessions::Session;

use super::{AppError, AppState};
use crate::auth;
use crate::domain::Role;
use crate::secrets::SecretKey;
use crate::store::orgs::Org;
use crate::store::users::{self, User};

pub const KEY_CSRF: &str = "csrf";
pub const KEY_USER: &str = "uid";
pub const KEY_EPOCH: &str = "epoch";
/// `mfa` after the password when a TOTP code is still owed; `full` when signed in.
pub const KEY_STAGE: &str = "stage";
pub const KEY_CREATED: &str = "created";
pub const KEY_SEEN: &str = "seen";
pub const KEY_FLASH: &str = "flash";
/// Set when a single sign-on provider's id_token said the user signed in with two
/// steps (its `amr`/`acr`, as the provider's settings name): the organization's
/// two-step requirement is met for this session without our TOTP.
pub const KEY_PROVIDER_TWO_STEP: &str = "provider_two_step";

/// Idle timeout for users without an organization (operators).
pub const DEFAULT_IDLE_MINUTES: i64 = 15;
/// Requests carrying this header (polling for new mail) do not count as activity.
pub const BACKGROUND_HEADER: &str = "x-background";

/// A message shown above a form that the server re-rendered (expired form,
/// oversized post). Put in request extensions by `middleware::csrf`.
#[derive(Debug, Clone)]
pub struct Banner(pub String);

/// The frame around every page: navigation, CSRF token, messages, timeout.
#[derive(Debug, Clone, Default)]
pub struct Chrome {
    pub csrf: String,
    pub user: Option<NavUser>,
    /// A one-time message from the previous action ("Invitation created").
    pub flash: String,
    /// A warning the server added when it re-rendered this form.
    pub banner: String,
    /// Seconds of inactivity before sign-out; 0 when not signed in.
    pub idle_seconds: i64,
    /// The user must finish a step first (choose a password, set up two-step
    /// sign-in): the page shows no navigation that would only bounce back.
    pub gated: bool,
    /// The IANA zone the user chose for times; "" for the browser's own.
    pub time_zone: String,
}

#[derive(Debug, Clone)]
pub struct NavUser {
    pub name: String,
    pub email: String,
    pub role: Role,
    pub org_id: Option<i64>,
    pub org_name: String,
}

impl NavUser {
    pub fn is_operator(&self) -> bool {
        self.role == Role::Operator
    }
    pub fn is_org_admin(&self) -> bool {
        self.role == Role::OrgAdmin
    }
    /// The organization console link for an office manager, "" otherwise.
    pub fn admin_org(&self) -> String {
        match (self.role, self.org_id) {
            (Role::OrgAdmin, Some(id)) => id.to_string(),
            _ => String::new(),
        }
    }
}

/// The session's CSRF token, made on first use.
pub async fn csrf_token(session: &Session) -> Result<String, AppError> {
    if let Some(token) = session.get::<String>(KEY_CSRF).await? {
        return Ok(token);
    }
    let (token, _) = auth::new_token();
    session.insert(KEY_CSRF, &token).await?;
    Ok(token)
}

async fn chrome_for(parts: &Parts, session: &Session) -> Result<Chrome, AppError> {
    Ok(Chrome {
        csrf: csrf_token(session).await?,
        user: None,
        flash: take::<String>(session, KEY_FLASH)
            .await?
            .unwrap_or_default(),
        banner: parts
            .extensions
            .get::<Banner>()
            .map(|b| b.0.clone())
            .unwrap_or_default(),
        idle_seconds: 0,
        gated: false,
        time_zone: String::new(),
    })
}

/// Takes a value shown once. `Session::remove` marks the session changed even when
/// the key is absent, which made every page view save its session: a database write
/// per request, serialized on SQLite. This writes only when there was a value.
pub async fn take<T: serde::de::DeserializeOwned>(
    session: &Session,
    key: &str,
) -> Result<Option<T>, AppError> {
    if session.get_value(key).await?.is_none() {
        return Ok(None);
    }
    Ok(session.remove::<T>(key).await?)
}

/// Keeps a secret shown to the user across a redirect (a new API token, an
/// invitation link, a TOTP secret being enrolled) sealed with the key-encryption key:
/// the sessions table never holds it in clear. Bound to the key and to `user_id`, so a
/// sealed value copied into another session or under another key does not open.
pub async fn insert_sealed(
    session: &Session,
    key: &SecretKey,
    name: &str,
    user_id: i64,
    value: &str,
) -> Result<(), AppError> {
    let sealed = key.seal(value.as_bytes(), sealed_aad(name, user_id).as_bytes())?;
    session.insert(name, sealed).await?;
    Ok(())
}

/// A value kept by [`insert_sealed`], opened; `None` when absent or when it does not
/// open (another user's, or from before a key change: the caller makes a new one).
pub async fn get_sealed(
    session: &Session,
    key: &SecretKey,
    name: &str,
    user_id: i64,
) -> Result<Option<String>, AppError> {
    let Some(sealed) = session.get::<String>(name).await? else {
        return Ok(None);
    };
    Ok(key
        .open(&sealed, sealed_aad(name, user_id).as_bytes())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes.to_vec()).ok()))
}

/// Like [`get_sealed`], and removes it (values shown once).
pub async fn take_sealed(
    session: &Session,
    key: &SecretKey,
    name: &str,
    user_id: i64,
) -> Result<Option<String>, AppError> {
    let value = get_sealed(session, key, name, user_id).await?;
    take::<String>(session, name).await?;
    Ok(value)
}

fn sealed_aad(name: &str, user_id: i64) -> String {
    format!("session:{name}:{user_id}")
}

/// Sets the message shown once on the next page.
pub async fn flash(session: &Session, message: impl Into<String>) -> Result<(), AppError> {
    session.insert(KEY_FLASH, message.into()).await?;
    Ok(())
}

/// The frame for pages anyone may see (sign-in, invite).
impl<S> FromRequestParts<S> for Chrome
where
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let session = Session::from_request_parts(parts, state)
            .await
            .map_err(|(_, m)| AppError::Internal(anyhow::anyhow!("session layer missing: {m}")))?;
        chrome_for(parts, &session).await
    }
}

/// A signed-in user who has passed every gate. Extracting it refreshes the idle timer.
pub struct CurrentUser {
    pub user: User,
    pub org: Option<Org>,
    pub session: Session,
    pub chrome: Chrome,
}

impl CurrentUser {
    pub fn role(&self) -> Role {
        self.user.role
    }

    /// Whether this user may run organization `org_id`'s console.
    pub fn can_admin(&self, org_id: i64) -> bool {
        match self.user.role {
            Role::Operator => true,
            Role::OrgAdmin => self.user.org_id == Some(org_id),
            Role::Member => false,
        }
    }

    /// The audit actor for this user, from `ip`.
    pub fn actor(&self, ip: String) -> crate::audit::Actor {
        crate::audit::Actor::user(&self.user, ip)
    }

    pub fn require_operator(&self) -> Result<(), AppError> {
        if self.user.role == Role::Operator {
            Ok(())
        } else {
            Err(AppError::Forbidden(
                "Only a HISP operator can open this page.".into(),
            ))
        }
    }
}

/// Like [`CurrentUser`] but also admitted while a gate is open (the pages that close
/// the gates: forced password change, MFA enrolment, sign-out).
pub struct GatedUser(pub CurrentUser);

/// Why the visitor is sent to the sign-in page, with the page to come back to.
///
/// Only a page the user was looking at is a return address: for an htmx request
/// that is the page it was made from (`HX-Current-URL`), never the fragment it asked
/// for (the 15-second poll of a folder would otherwise become the page shown after
/// signing in); a script's background request (`fetch`, an upload) has none.
fn to_sign_in(parts: &Parts, reason: &str) -> Response {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let next = if header("hx-request").is_some() {
        header("hx-current-url")
            .and_then(|u| url::Url::parse(u).ok())
            .map(|u| match u.query() {
                Some(q) => format!("{}?{q}", u.path()),
                None => u.path().to_owned(),
            })
    } else if header("x-background").is_some()
        || header("x-upload").is_some()
        || header("sec-fetch-mode").is_some_and(|m| m != "navigate")
        || parts.method != axum::http::Method::GET
    {
        None
    } else {
        Some(
            parts
                .extensions
                .get::<OriginalUri>()
                .map(|u| u.0.to_string())
                .unwrap_or_else(|| parts.uri.to_string()),
        )
    };
    let mut target = format!("/login?reason={reason}");
    if let Some(next) = next.filter(|n| super::auth::safe_next(n) == *n && n != "/") {
        target.push_str("&next=");
        target.push_str(&url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>());
    }
    redirect(parts, &target)
}

/// A redirect that also works for htmx requests (which follow `HX-Redirect`).
pub fn redirect(parts: &Parts, target: &str) -> Response {
    if parts.headers.contains_key("hx-request") {
        let mut response = StatusCode::NO_CONTENT.into_response();
        if let Ok(v) = HeaderValue::from_str(target) {
            response.headers_mut().insert("hx-redirect", v);
        }
        response
    } else {
        Redirect::to(target).into_response()
    }
}

async fn load(
    parts: &mut Parts,
    state: &AppState,
    gated_ok: bool,
) -> Result<CurrentUser, Response> {
    let session = Session::from_request_parts(parts, state)
        .await
        .map_err(|e| e.into_response())?;
    let fail = |e: AppError| e.into_response();
    let uid: Option<i64> = session.get(KEY_USER).await.map_err(|e| fail(e.into()))?;
    let stage: Option<String> = session.get(KEY_STAGE).await.map_err(|e| fail(e.into()))?;
    let Some(uid) = uid else {
        return Err(to_sign_in(parts, "signin"));
    };
    if stage.as_deref() != Some("full") {
        return Err(redirect(parts, "/login/mfa"));
    }
    let found = users::get_with_org(&state.db, uid)
        .await
        .map_err(|e| fail(e.into()))?;
    let epoch: Option<i64> = session.get(KEY_EPOCH).await.map_err(|e| fail(e.into()))?;
    let (user, org) = match found {
        Some((u, org))
            if !u.disabled && Some(u.session_epoch) == epoch && u.password_hash.is_some() =>
        {
            (u, org)
        }
        _ => {
            session.flush().await.map_err(|e| fail(e.into()))?;
            return Err(to_sign_in(parts, "ended"));
        }
    };
    let now = state.clock.now();
    let idle_minutes = org
        .as_ref()
        .map(|o| o.idle_timeout_minutes)
        .unwrap_or(DEFAULT_IDLE_MINUTES);
    let created: i64 = session
        .get(KEY_CREATED)
        .await
        .map_err(|e| fail(e.into()))?
        .unwrap_or(0);
    let seen: i64 = session
        .get(KEY_SEEN)
        .await
        .map_err(|e| fail(e.into()))?
        .unwrap_or(0);
    if now - created > i64::from(state.config.session_lifetime_minutes) * 60 {
        session.flush().await.map_err(|e| fail(e.into()))?;
        return Err(to_sign_in(parts, "lifetime"));
    }
    if now - seen > idle_minutes * 60 {
        session.flush().await.map_err(|e| fail(e.into()))?;
        return Err(to_sign_in(parts, "idle"));
    }
    // Background polling does not keep a session alive; writes are saved only when
    // the timer moved noticeably, to spare the store a write per request.
    if !parts.headers.contains_key(BACKGROUND_HEADER) && now - seen >= 10 {
        session
            .insert(KEY_SEEN, now)
            .await
            .map_err(|e| fail(e.into()))?;
    }
    let provider_two_step: bool = session
        .get(KEY_PROVIDER_TWO_STEP)
        .await
        .map_err(|e| fail(e.into()))?
        .unwrap_or(false);
    let lacks_two_step = !provider_two_step
        && crate::accounts::lacks_required_two_step(&user, org.as_ref(), state.config.operator_mfa);
    let gated = user.must_change_password || lacks_two_step;
    if !gated_ok {
        if user.must_change_password {
            return Err(redirect(parts, "/account/password"));
        }
        if lacks_two_step {
            return Err(redirect(parts, "/account/mfa"));
        }
    }
    let mut chrome = chrome_for(parts, &session).await.map_err(fail)?;
    chrome.idle_seconds = idle_minutes * 60;
    chrome.gated = gated;
    chrome.time_zone = user.time_zone.clone();
    chrome.user = Some(NavUser {
        name: user.display_name.clone(),
        email: user.email.clone(),
        role: user.role,
        org_id: user.org_id,
        org_name: org.as_ref().map(|o| o.name.clone()).unwrap_or_default(),
    });
    Ok(CurrentUser {
        user,
        org,
        session,
        chrome,
    })
}

impl<S> FromRequestParts<S> for CurrentUser
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        load(parts, &AppState::from_ref(state), false).await
    }
}

impl<S> FromRequestParts<S> for GatedUser
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        load(parts, &AppState::from_ref(state), true)
            .await
            .map(GatedUser)
    }
}

/// Starts a fresh session for `user` after the password (and the TOTP code, when
/// `stage` is `full`). A new session id defeats fixation.
pub async fn begin(session: &Session, user: &User, stage: &str, now: i64) -> Result<(), AppError> {
    session.cycle_id().await?;
    let (csrf, _) = auth::new_token();
    session.insert(KEY_CSRF, csrf).await?;
    session.insert(KEY_USER, user.id).await?;
    session.insert(KEY_EPOCH, user.session_epoch).await?;
    session.insert(KEY_STAGE, stage).await?;
    session.insert(KEY_CREATED, now).await?;
    session.insert(KEY_SEEN, now).await?;
    Ok(())
}
