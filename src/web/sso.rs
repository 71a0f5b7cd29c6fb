//! Single sign-on in the browser: "Sign in with <name>" on an organization's sign-in
//! link, the SMART EHR launch (`/launch`), the provider's callback, linking an
//! external account, and the console page where an organization's administrator
//! (or an operator) sets its providers up and links subjects to users.
//!
//! The session cookie is `SameSite=Strict`, so it does not come back with the
//! provider's redirect (a cross-site navigation). A sign-in under way is therefore
//! kept in the database under the SHA-256 of its `state`, bound to the browser that
//! started it by a separate `SameSite=Lax` cookie, and used once. After the callback
//! signs the user in, the browser is sent on by a page of ours (a same-site
//! navigation), which carries the new session cookie.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tower_sessions::Session;

use super::auth::{LoginPage, complete_sign_in, safe_next};
use super::session::{self, Chrome, CurrentUser, KEY_PROVIDER_TWO_STEP};
use super::{AppError, AppResult, AppState, ClientIp, FieldErrors};
use crate::audit::{self, Actor, Event};
use crate::auth;
use crate::domain::{DisplayName, Email, Role};
use crate::patient::DraftPatient;
use crate::sso::{self, Http, Refusal, SignedIn};
use crate::store::sso::{self as store, Kind, Provider};
use crate::store::users::{self, User};

/// The cookie that binds a sign-in under way to the browser that started it.
const BINDING_COOKIE: &str = "directmail_sso";
/// The session key of the patient an EHR launch named (a [`LaunchPatient`]).
pub const KEY_LAUNCH_PATIENT: &str = "launch_patient";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/sso/{provider}/start", post(start))
        .route("/sso/{provider}/link", post(start_link))
        .route("/sso/callback", get(callback))
        .route("/launch", get(launch))
        .route("/orgs/{org}/sso", get(console).post(add_provider))
        .route("/orgs/{org}/sso/{provider}/delete", post(remove_provider))
        .route("/orgs/{org}/sso/links", post(add_link))
        .route("/orgs/{org}/sso/links/delete", post(remove_link))
}

/// A "Sign in with …" button.
pub struct Button {
    pub id: i64,
    pub name: String,
}

/// The buttons of organization `org_id`'s sign-in link: its OpenID providers.
pub async fn buttons(state: &AppState, org_id: i64) -> AppResult<Vec<Button>> {
    providers(state, org_id, &[Kind::Oidc]).await
}

/// The "Link my … account" buttons of My account: the organization's OpenID
/// providers and EHRs (an EHR account is linked by signing in at the EHR once).
pub async fn link_buttons(state: &AppState, org_id: i64) -> AppResult<Vec<Button>> {
    providers(state, org_id, &[Kind::Oidc, Kind::Smart]).await
}

async fn providers(state: &AppState, org_id: i64, kinds: &[Kind]) -> AppResult<Vec<Button>> {
    Ok(store::of_org(&state.db, org_id)
        .await?
        .into_iter()
        .filter(|p| kinds.contains(&p.kind))
        .map(|p| Button {
            id: p.id,
            name: p.name,
        })
        .collect())
}

/// The patient an EHR launch named, kept in the session for the patient page's
/// banner and its "write about this patient" button.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LaunchPatient {
    pub patient: DraftPatient,
    /// The EHR asked the portal to show who the patient is (`need_patient_banner`).
    pub banner: bool,
}

impl LaunchPatient {
    /// The patient as messages store it: the identifier ("12345 (1.2.3)") when
    /// there is one, else the name.
    pub fn listed(&self) -> (String, String) {
        let p = &self.patient;
        match crate::patient::identifier_parts(&p.id) {
            (Some(oid), id) if !id.is_empty() => (format!("{id} ({oid})"), String::new()),
            (None, id) if !id.is_empty() => (id, String::new()),
            _ => (
                String::new(),
                format!("{} {}", p.given.trim(), p.family.trim())
                    .trim()
                    .to_owned(),
            ),
        }
    }

    /// "Messages about this patient" for this patient.
    pub fn page(&self) -> String {
        let (id, name) = self.listed();
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if id.is_empty() {
            query.append_pair("name", &name);
        } else {
            query.append_pair("id", &id);
        }
        format!("/mail/patient?{}", query.finish())
    }
}

fn http(state: &AppState) -> Http<'_> {
    Http {
        client: state.fetcher.client(),
        policy: state.fetcher.policy(),
    }
}

fn redirect_uri(state: &AppState) -> String {
    format!("{}/sso/callback", state.public_base.trim_end_matches('/'))
}

fn secret_aad(org_id: i64, kind: Kind, issuer: &str) -> String {
    format!("sso-client-secret:{org_id}:{}:{issuer}", kind.as_str())
}

fn pending_aad(state_hash: &str) -> String {
    format!("sso-pending:{state_hash}")
}

/// How the audit log names a sign-in through `provider`.
fn method(provider: &Provider) -> String {
    match provider.kind {
        Kind::Oidc => format!("OpenID Connect ({})", provider.name),
        Kind::Smart => format!("SMART EHR launch ({})", provider.name),
    }
}

/// A refused single sign-on, shown on the sign-in page (with the organization's
/// buttons, to start again) and audited without flooding the log.
async fn refused(
    state: &AppState,
    chrome: Chrome,
    ip: &str,
    provider: Option<&Provider>,
    status: StatusCode,
    why: Refusal,
) -> AppResult<Response> {
    let actor = Actor {
        user_id: None,
        label: "(single sign-on)".into(),
        org_id: provider.map(|p| p.org_id),
        ip: ip.to_owned(),
    };
    let now = state.clock.now();
    match provider {
        // an answer to a sign-in that was started here: audited, and counted against
        // the address like a wrong password (enough of them pause it)
        Some(p) => {
            let actor = Actor {
                label: method(p),
                ..actor.clone()
            };
            super::auth::record_failed_sign_in(state, None, &actor, &why.0).await?;
        }
        // anyone can send these: counted per address, as paused sign-ins are
        None => {
            crate::accounts::record_refusal(
                &state.db,
                &actor,
                Event::new("signin.fail", "single sign-on").detail(why.0.clone()),
                now,
                i64::from(state.config.lockout_minutes) * 60,
            )
            .await?;
        }
    }
    let sso = match provider {
        Some(p) => buttons(state, p.org_id).await?,
        None => Vec::new(),
    };
    Ok((
        status,
        LoginPage {
            chrome,
            email: String::new(),
            next: String::new(),
            notice: String::new(),
            error: why.0,
            sso,
        },
    )
        .into_response())
}

/// Sends the browser to the provider: reads its metadata and keys, keeps the
/// sign-in (sealed nonce and PKCE verifier) and binds it to this browser.
///
/// After a form (the sign-in and link buttons) the way on is a page of ours, not a
/// redirect: the pages' `form-action 'self'` stops a form's redirect to another site.
async fn begin_flow(
    state: &AppState,
    provider: &Provider,
    launch: &str,
    next: &str,
    link_user_id: Option<i64>,
    from_form: bool,
) -> Result<Response, AppError> {
    let secret = open_client_secret(state, provider)?;
    let ready = match sso::prepare(&http(state), provider, secret, &redirect_uri(state)).await {
        Ok(r) => r,
        Err(why) => return Err(AppError::BadRequest(why.0)),
    };
    let authorization = ready.authorize(launch);
    let state_hash = auth::token_hash(&authorization.state);
    let (binding, binding_hash) = auth::new_token();
    let sealed = state.secret.seal(
        &serde_json::to_vec(&authorization.secrets).map_err(anyhow::Error::from)?,
        pending_aad(&state_hash).as_bytes(),
    )?;
    let mut tx = state.db.begin().await?;
    store::start(
        &mut tx,
        &state_hash,
        &store::Pending {
            provider_id: provider.id,
            binding_hash,
            secrets: sealed,
            next: safe_next(next),
            link_user_id,
            created_at: state.clock.now(),
        },
    )
    .await?;
    tx.commit().await?;
    let mut response = if from_form {
        ContinuePage {
            next: authorization.url.to_string(),
            title: format!("Going to {}", provider.name),
            message: String::new(),
        }
        .into_response()
    } else {
        Redirect::to(authorization.url.as_str()).into_response()
    };
    let secure = if state.config.served_over_https() {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{BINDING_COOKIE}={binding}; Path=/sso/; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
        store::PENDING_SECONDS
    );
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(anyhow::Error::from)?,
    );
    Ok(response)
}

fn open_client_secret(state: &AppState, provider: &Provider) -> AppResult<Option<String>> {
    if provider.client_secret.is_empty() {
        return Ok(None);
    }
    let bytes = state
        .secret
        .open(
            &provider.client_secret,
            secret_aad(provider.org_id, provider.kind, &provider.issuer).as_bytes(),
        )
        .map_err(|e| AppError::Internal(e.context("the client secret does not open")))?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Why sign-in from `ip` is paused (too many failed sign-ins from it), if it is: no
/// sign-in starts from there, so nobody can make the portal call a provider at will.
async fn paused(state: &AppState, ip: &str) -> AppResult<Option<Refusal>> {
    let until = crate::store::throttle::blocked_until(&state.db, ip, state.clock.now()).await?;
    Ok(until.map(|t| {
        Refusal(format!(
            "Too many failed sign-ins came from your network. Sign-in from it is paused until {}.",
            crate::clock::format_utc(t)
        ))
    }))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StartForm {
    next: String,
}

/// "Sign in with <name>".
async fn start(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    chrome: Chrome,
    Path(provider_id): Path<i64>,
    form: Result<axum::Form<StartForm>, FormRejection>,
) -> AppResult<Response> {
    let form = super::form_or_400(form)?;
    let provider = store::get(&state.db, provider_id)
        .await?
        .filter(|p| p.kind == Kind::Oidc)
        .ok_or(AppError::NotFound)?;
    go(&state, chrome, &ip, &provider, "", &form.next).await
}

/// Starts a sign-in (or an EHR launch) unless the address is paused; a provider that
/// cannot be used is refused on the sign-in page with the reason.
async fn go(
    state: &AppState,
    chrome: Chrome,
    ip: &str,
    provider: &Provider,
    launch: &str,
    next: &str,
) -> AppResult<Response> {
    if let Some(why) = paused(state, ip).await? {
        let status = StatusCode::TOO_MANY_REQUESTS;
        return refused(state, chrome, ip, None, status, why).await;
    }
    // the EHR's launch is a navigation (a redirect is fine); the button is a form
    let from_form = launch.is_empty();
    match begin_flow(state, provider, launch, next, None, from_form).await {
        Err(AppError::BadRequest(why)) => {
            let status = StatusCode::BAD_GATEWAY;
            refused(state, chrome, ip, Some(provider), status, Refusal(why)).await
        }
        other => other,
    }
}

/// "Link my <name> account", for a signed-in user of the provider's organization.
async fn start_link(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(provider_id): Path<i64>,
) -> AppResult<Response> {
    let provider = store::get(&state.db, provider_id)
        .await?
        .filter(|p| Some(p.org_id) == current.user.org_id)
        .ok_or(AppError::NotFound)?;
    let user = Some(current.user.id);
    match begin_flow(&state, &provider, "", "/account", user, true).await {
        // a provider that cannot be used: why, and the way back to My account
        Err(AppError::BadRequest(why)) => Ok((
            StatusCode::BAD_GATEWAY,
            ContinuePage {
                next: String::new(),
                title: "Not linked".into(),
                message: why,
            },
        )
            .into_response()),
        other => other,
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LaunchQuery {
    iss: String,
    launch: String,
}

/// SMART App Launch, EHR launch: the EHR opens `/launch?iss=<FHIR base>&launch=…`.
async fn launch(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    chrome: Chrome,
    Query(q): Query<LaunchQuery>,
) -> AppResult<Response> {
    let iss = q.iss.trim().trim_end_matches('/');
    if iss.is_empty() || q.launch.is_empty() || iss.len() > 1000 || q.launch.len() > 2000 {
        let why = Refusal(
            "This launch did not come with the EHR's address (iss) and launch context, so the portal cannot open it. Open the portal again from the EHR.".into(),
        );
        return refused(&state, chrome, &ip, None, StatusCode::BAD_REQUEST, why).await;
    }
    let Some(provider) = store::by_issuer(&state.db, Kind::Smart, iss).await? else {
        let why = Refusal(format!(
            "The EHR at {iss} is not registered with this portal, so the launch was refused. Ask your organization's administrator to add it under Single sign-on."
        ));
        return refused(&state, chrome, &ip, None, StatusCode::BAD_REQUEST, why).await;
    };
    go(&state, chrome, &ip, &provider, &q.launch, "/").await
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CallbackQuery {
    code: String,
    state: String,
    error: String,
}

/// The page that carries the browser on after the callback (see the module's
/// comment); `message` is shown when nothing follows.
#[derive(Template, WebTemplate)]
#[template(path = "auth/sso_continue.html")]
struct ContinuePage {
    /// Where to go; "" to stay.
    next: String,
    title: String,
    message: String,
}

fn binding_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == BINDING_COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// The provider sends the browser back here with `code` and `state`.
async fn callback(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    chrome: Chrome,
    session: Session,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> AppResult<Response> {
    let now = state.clock.now();
    let stranger = Refusal(
        "This sign-in was not started in this browser, was already finished, or took too long. Start again from your organization's sign-in page or the EHR.".into(),
    );
    if q.state.is_empty() || q.state.len() > 200 || q.code.len() > 2000 {
        return refused(&state, chrome, &ip, None, StatusCode::BAD_REQUEST, stranger).await;
    }
    let state_hash = auth::token_hash(&q.state);
    let mut tx = state.db.begin().await?;
    let pending = store::take(&mut tx, &state_hash).await?;
    tx.commit().await?;
    let Some(pending) = pending else {
        return refused(&state, chrome, &ip, None, StatusCode::BAD_REQUEST, stranger).await;
    };
    let provider = store::get(&state.db, pending.provider_id).await?;
    let Some(provider) = provider else {
        return refused(&state, chrome, &ip, None, StatusCode::BAD_REQUEST, stranger).await;
    };
    let bound = binding_cookie(&headers)
        .is_some_and(|b| auth::token_hash(&b).as_bytes() == pending.binding_hash.as_bytes());
    let fail = |status, why: Refusal| (status, why);
    type Launched = Option<Result<LaunchPatient, String>>;
    let outcome: Result<(SignedIn, Launched), (StatusCode, Refusal)> = async {
        if !bound || now - pending.created_at > store::PENDING_SECONDS {
            return Err(fail(StatusCode::BAD_REQUEST, stranger.clone()));
        }
        if !q.error.is_empty() || q.code.is_empty() {
            let code: String = q
                .error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(60)
                .collect();
            return Err(fail(
                StatusCode::UNAUTHORIZED,
                Refusal(format!(
                    "{} did not sign you in ({}).",
                    provider.name,
                    if code.is_empty() { "no code" } else { &code }
                )),
            ));
        }
        let secrets: sso::Secrets = state
            .secret
            .open(&pending.secrets, pending_aad(&state_hash).as_bytes())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| fail(StatusCode::BAD_REQUEST, stranger.clone()))?;
        let secret = open_client_secret(&state, &provider)
            .map_err(|_| fail(StatusCode::INTERNAL_SERVER_ERROR, Refusal("The single sign-on settings cannot be read. Ask your administrator to enter the client secret again.".into())))?;
        let h = http(&state);
        let ready = sso::prepare(&h, &provider, secret, &redirect_uri(&state))
            .await
            .map_err(|w| fail(StatusCode::BAD_GATEWAY, w))?;
        let signed = ready
            .finish(&h, &q.code, &secrets, now)
            .await
            .map_err(|w| fail(StatusCode::UNAUTHORIZED, w))?;
        // the launch's patient, read from the EHR's FHIR server with the access token
        let launched = match (&signed.launch.patient, provider.kind) {
            (Some(id), Kind::Smart) => Some(
                sso::read_patient(&h, ready.fhir_base(), id, &signed.access_token)
                    .await
                    .map(|patient| LaunchPatient {
                        patient,
                        banner: signed.launch.need_patient_banner.unwrap_or(true),
                    })
                    .map_err(|w| w.0),
            ),
            _ => None,
        };
        Ok((signed, launched))
    }
    .await;
    let (signed, launched) = match outcome {
        Ok(s) => s,
        Err((status, why)) => {
            return refused(&state, chrome, &ip, Some(&provider), status, why).await;
        }
    };
    if let Some(user_id) = pending.link_user_id {
        return link_own(&state, &ip, &provider, user_id, &signed).await;
    }
    let user = match find_user(&state, &ip, &provider, &signed).await? {
        Ok(u) => u,
        Err((status, why)) => {
            return refused(&state, chrome, &ip, Some(&provider), status, why).await;
        }
    };
    sign_in(
        &state,
        &session,
        &ip,
        (&provider, &user),
        &signed,
        launched,
        &pending.next,
    )
    .await
}

/// The linked user, or one made for this sign-in when the organization allows it.
async fn find_user(
    state: &AppState,
    ip: &str,
    provider: &Provider,
    signed: &SignedIn,
) -> AppResult<Result<User, (StatusCode, Refusal)>> {
    let now = state.clock.now();
    if let Some(id) = store::linked_user(&state.db, provider.id, &signed.subject).await? {
        let user = users::get(&state.db, id)
            .await?
            .filter(|u| u.org_id == Some(provider.org_id));
        return Ok(match user {
            Some(u) if u.disabled => Err((
                StatusCode::FORBIDDEN,
                Refusal("This account is disabled. Ask your organization's administrator to re-enable it.".into()),
            )),
            Some(u) if u.locked_until > now => Err((
                StatusCode::TOO_MANY_REQUESTS,
                Refusal(format!(
                    "Signing in to this account is locked after failed sign-ins until {}. Wait until then, or ask your administrator.",
                    crate::clock::format_utc(u.locked_until)
                )),
            )),
            Some(u) => Ok(u),
            None => Err((StatusCode::FORBIDDEN, Refusal("Your account is linked to a user of another organization. Ask your administrator.".into()))),
        });
    }
    let unlinked = Refusal(format!(
        "Your {} account is not linked to an account on this portal. Sign in with your e-mail address and password, then link it from My account, or ask your organization's administrator to link it.",
        provider.name
    ));
    if !provider.create_accounts {
        return Ok(Err((StatusCode::FORBIDDEN, unlinked)));
    }
    // Only a verified address makes an account, and never one that exists: an
    // existing account is linked by its owner (or an administrator), not taken over
    let email = signed.email.as_deref().and_then(|e| Email::parse(e).ok());
    let Some(email) = email else {
        return Ok(Err((StatusCode::FORBIDDEN, unlinked)));
    };
    if users::by_email(&state.db, email.as_str()).await?.is_some() {
        return Ok(Err((StatusCode::FORBIDDEN, unlinked)));
    }
    let name = email
        .as_str()
        .split('@')
        .next()
        .unwrap_or("user")
        .to_owned();
    let name = DisplayName::parse(&name)
        .or_else(|_| DisplayName::parse("New user"))
        .map_err(|e| AppError::Internal(anyhow::anyhow!("{e}")))?;
    // no one knows this password: the account signs in through its provider (an
    // administrator's reset link gives it one)
    let hash = super::hash_password(auth::new_token().0).await?;
    let mut tx = state.db.begin().await?;
    let user = users::create(
        &mut tx,
        users::NewUser {
            org_id: Some(provider.org_id),
            email: &email,
            display_name: &name,
            role: Role::Member,
            password_hash: Some(hash),
            must_change_password: false,
        },
        now,
    )
    .await?;
    store::link(&mut tx, provider.id, &signed.subject, user.id, now).await?;
    let actor = Actor::user(&user, ip.to_owned());
    audit::append(
        &mut tx,
        now,
        &actor,
        Event::new("user.create", email.as_str())
            .detail(format!("at first sign-in, {}", method(provider))),
    )
    .await?;
    audit::append(
        &mut tx,
        now,
        &actor,
        Event::new("sso.link", email.as_str()).detail(method(provider)),
    )
    .await?;
    tx.commit().await?;
    Ok(Ok(user))
}

/// Signs `user` in: fully when the provider says two steps were taken (or none is
/// owed), else on to our TOTP step when the user has one.
async fn sign_in(
    state: &AppState,
    session: &Session,
    ip: &str,
    (provider, user): (&Provider, &User),
    signed: &SignedIn,
    launched: Option<Result<LaunchPatient, String>>,
    next: &str,
) -> AppResult<Response> {
    let now = state.clock.now();
    let actor = Actor::user(user, ip.to_owned());
    let two_step = signed.two_step(provider);
    let mut how = method(provider);
    if let Some(who) = signed.fhir_user.as_deref().filter(|w| w.len() <= 200) {
        // the EHR's name for the clinician (Practitioner/…), not the patient
        how.push_str(&format!(", fhirUser {who}"));
    }
    if two_step {
        how.push_str(", two-step by the provider");
    }
    let mut next = safe_next(next);
    let mut notice = String::new();
    let launched = match launched {
        Some(Ok(p)) => {
            next = p.page();
            Some(p)
        }
        Some(Err(why)) => {
            notice = why;
            None
        }
        None => None,
    };
    if !two_step && user.totp_enabled {
        session::begin(session, user, "mfa", now).await?;
        session.insert("next", &next).await?;
        session.insert(super::auth::KEY_METHOD, &how).await?;
        audit::record(
            &state.db,
            now,
            &actor,
            Event::new("signin.sso", &user.email).detail(format!("{how}; TOTP owed")),
        )
        .await?;
        next = "/login/mfa".into();
    } else {
        complete_sign_in(state, session, user, &actor, &how).await?;
        if two_step {
            session.insert(KEY_PROVIDER_TWO_STEP, true).await?;
        }
    }
    if let Some(p) = &launched {
        session.insert(KEY_LAUNCH_PATIENT, p).await?;
    }
    if !notice.is_empty() {
        session::flash(
            session,
            format!("Signed in, but the patient could not be opened: {notice}"),
        )
        .await?;
    }
    Ok(ContinuePage {
        next,
        title: "Signing you in".into(),
        message: String::new(),
    }
    .into_response())
}

/// A signed-in user linked their external account.
async fn link_own(
    state: &AppState,
    ip: &str,
    provider: &Provider,
    user_id: i64,
    signed: &SignedIn,
) -> AppResult<Response> {
    let now = state.clock.now();
    let Some(user) = users::get(&state.db, user_id)
        .await?
        .filter(|u| u.org_id == Some(provider.org_id) && !u.disabled)
    else {
        return Err(AppError::NotFound);
    };
    let mut tx = state.db.begin().await?;
    let linked = store::link(&mut tx, provider.id, &signed.subject, user.id, now).await?;
    let (title, message) = if linked {
        audit::append(
            &mut tx,
            now,
            &Actor::user(&user, ip.to_owned()),
            Event::new("sso.link", &user.email).detail(method(provider)),
        )
        .await?;
        (
            "Account linked",
            format!(
                "Your {} account is now linked: you can sign in with it from your organization's sign-in page.",
                provider.name
            ),
        )
    } else {
        (
            "Not linked",
            format!(
                "That {} account is already linked to a portal account, so it was not linked again. Ask your administrator if it should be yours.",
                provider.name
            ),
        )
    };
    tx.commit().await?;
    Ok((
        if linked {
            StatusCode::OK
        } else {
            StatusCode::CONFLICT
        },
        ContinuePage {
            next: String::new(),
            title: title.into(),
            message,
        },
    )
        .into_response())
}

// ---------- the console ----------

pub struct ProviderRow {
    pub id: i64,
    pub kind: &'static str,
    pub name: String,
    pub issuer: String,
    pub client_id: String,
    pub has_secret: bool,
    pub two_step: String,
    pub create_accounts: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "orgs/sso.html")]
struct ConsolePage {
    chrome: Chrome,
    org: crate::store::orgs::Org,
    providers: Vec<ProviderRow>,
    links: Vec<store::LinkRow>,
    /// The organization's sign-in link, and the portal's redirect and launch URLs.
    sign_in_link: String,
    redirect_uri: String,
    launch_url: String,
    form: ProviderForm,
    link_form: LinkForm,
    errors: FieldErrors,
}

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
struct ProviderForm {
    kind: String,
    name: String,
    issuer: String,
    client_id: String,
    client_secret: String,
    two_step_values: String,
    create_accounts: String,
}

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
struct LinkForm {
    provider: String,
    subject: String,
    email: String,
}

async fn console_view(
    state: &AppState,
    chrome: Chrome,
    org: crate::store::orgs::Org,
) -> AppResult<ConsolePage> {
    let base = state.public_base.trim_end_matches('/');
    let providers = store::of_org(&state.db, org.id)
        .await?
        .into_iter()
        .map(|p| ProviderRow {
            id: p.id,
            kind: p.kind.words(),
            has_secret: !p.client_secret.is_empty(),
            two_step: p.two_step_values.join(" "),
            name: p.name,
            issuer: p.issuer,
            client_id: p.client_id,
            create_accounts: p.create_accounts,
        })
        .collect();
    Ok(ConsolePage {
        links: store::links_of_org(&state.db, org.id).await?,
        sign_in_link: format!("{base}/login/org/{}", org.id),
        redirect_uri: format!("{base}/sso/callback"),
        launch_url: format!("{base}/launch"),
        chrome,
        org,
        providers,
        form: ProviderForm {
            kind: "oidc".into(),
            ..ProviderForm::default()
        },
        link_form: LinkForm::default(),
        errors: FieldErrors::default(),
    })
}

async fn console(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(org_id): Path<i64>,
) -> AppResult<ConsolePage> {
    let org = super::orgs::admin_org(&state, &current, org_id).await?;
    console_view(&state, current.chrome, org).await
}

/// The console again, saying beside `field` that its form could not be read.
fn unreadable(mut page: ConsolePage, field: &'static str, rejection: &FormRejection) -> Response {
    let (status, message) = super::auth::unreadable(rejection);
    page.errors.add(field, message);
    (status, page).into_response()
}

/// One printable line of at most `max` characters.
fn line(value: &str, what: &str, max: usize) -> Result<String, String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(format!("Enter the {what}."));
    }
    if v.chars().count() > max || v.chars().any(char::is_control) {
        return Err(format!(
            "The {what} must be one line of at most {max} characters."
        ));
    }
    Ok(v.to_owned())
}

/// An https URL with a host and no query or fragment, without a trailing slash.
fn issuer_url(value: &str, kind: Kind) -> Result<String, String> {
    let what = match kind {
        Kind::Oidc => "issuer URL",
        Kind::Smart => "FHIR server URL (iss)",
    };
    let v = line(value, what, 500)?;
    let url = url::Url::parse(&v).map_err(|_| format!("The {what} is not a valid URL."))?;
    if url.scheme() != "https" || url.host().is_none() {
        return Err(format!("The {what} must be an https:// address."));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(format!(
            "The {what} cannot have a query, a fragment or a user name."
        ));
    }
    Ok(v.trim_end_matches('/').to_owned())
}

async fn add_provider(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(org_id): Path<i64>,
    form: Result<axum::Form<ProviderForm>, FormRejection>,
) -> AppResult<Response> {
    let org = super::orgs::admin_org(&state, &current, org_id).await?;
    let mut page = console_view(&state, current.chrome.clone(), org.clone()).await?;
    let form = match form {
        Ok(axum::Form(f)) => f,
        Err(rejection) => return Ok(unreadable(page, "form", &rejection)),
    };
    page.form = ProviderForm {
        client_secret: String::new(),
        ..form.clone()
    };
    let errors = &mut page.errors;
    let kind = errors.check(
        "kind",
        Kind::parse(&form.kind).ok_or("Choose what kind of provider this is."),
    );
    let name = errors.check("name", line(&form.name, "name to show", 80));
    let issuer = kind.and_then(|k| errors.check("issuer", issuer_url(&form.issuer, k)));
    let client_id = errors.check("client_id", line(&form.client_id, "client id", 200));
    let secret = form.client_secret.trim();
    if secret.len() > 500 || secret.chars().any(char::is_control) {
        errors.add(
            "client_secret",
            "The client secret must be one line of at most 500 characters.",
        );
    }
    let values: Vec<&str> = form
        .two_step_values
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|v| !v.is_empty())
        .collect();
    if form.two_step_values.len() > 500 || values.iter().any(|v| v.chars().any(char::is_control)) {
        errors.add(
            "two_step_values",
            "List at most 500 characters of amr or acr values, separated by spaces.",
        );
    }
    // the page comes back with what was typed, except the secret (never shown again)
    let refuse = |mut page: ConsolePage, status: StatusCode| {
        if !secret.is_empty() {
            page.errors.add(
                "client_secret",
                "The client secret is not shown again: enter it again.",
            );
        }
        Ok((status, page).into_response())
    };
    let (Some(kind), Some(name), Some(issuer), Some(client_id)) = (kind, name, issuer, client_id)
    else {
        return refuse(page, StatusCode::BAD_REQUEST);
    };
    if !page.errors.is_empty() {
        return refuse(page, StatusCode::BAD_REQUEST);
    }
    let taken = match kind {
        // a launch's iss must name one registration
        Kind::Smart => store::by_issuer(&state.db, kind, &issuer).await?.is_some(),
        Kind::Oidc => store::of_org(&state.db, org.id)
            .await?
            .iter()
            .any(|p| p.kind == kind && p.issuer == issuer),
    };
    if taken {
        page.errors.add(
            "issuer",
            match kind {
                Kind::Smart => "This EHR is already set up (here or for another organization): a launch must name one organization.",
                Kind::Oidc => "This issuer is already set up for your organization.",
            },
        );
        return refuse(page, StatusCode::CONFLICT);
    }
    let sealed = if secret.is_empty() {
        String::new()
    } else {
        state.secret.seal(
            secret.as_bytes(),
            secret_aad(org.id, kind, &issuer).as_bytes(),
        )?
    };
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    store::create(
        &mut tx,
        &store::NewProvider {
            org_id: org.id,
            kind,
            name: &name,
            issuer: &issuer,
            client_id: &client_id,
            sealed_secret: &sealed,
            two_step_values: &values.join(" "),
            create_accounts: !form.create_accounts.is_empty(),
        },
        now,
    )
    .await?;
    audit::append(
        &mut tx,
        now,
        &current.actor(ip),
        Event::new("sso.provider-add", &name).detail(format!(
            "{} at {issuer}, client {client_id}{}",
            kind.words(),
            if form.create_accounts.is_empty() {
                ""
            } else {
                ", makes accounts at first sign-in"
            }
        )),
    )
    .await?;
    tx.commit().await?;
    session::flash(&current.session, format!("{name} was added.")).await?;
    Ok(Redirect::to(&format!("/orgs/{}/sso", org.id)).into_response())
}

/// A provider of this organization, or 404.
async fn org_provider(state: &AppState, org_id: i64, id: i64) -> AppResult<Provider> {
    store::get(&state.db, id)
        .await?
        .filter(|p| p.org_id == org_id)
        .ok_or(AppError::NotFound)
}

async fn remove_provider(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path((org_id, provider_id)): Path<(i64, i64)>,
) -> AppResult<Response> {
    let org = super::orgs::admin_org(&state, &current, org_id).await?;
    let provider = org_provider(&state, org.id, provider_id).await?;
    let mut tx = state.db.begin().await?;
    store::delete(&mut tx, provider.id).await?;
    super::finish_action(
        tx,
        &state,
        &current,
        ip,
        Event::new("sso.provider-remove", &provider.name).detail(provider.issuer.clone()),
        format!(
            "{} was removed, with its links; its users sign in with their passwords.",
            provider.name
        ),
        &format!("/orgs/{}/sso", org.id),
    )
    .await
}

async fn add_link(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(org_id): Path<i64>,
    form: Result<axum::Form<LinkForm>, FormRejection>,
) -> AppResult<Response> {
    let org = super::orgs::admin_org(&state, &current, org_id).await?;
    let mut page = console_view(&state, current.chrome.clone(), org.clone()).await?;
    let form = match form {
        Ok(axum::Form(f)) => f,
        Err(rejection) => return Ok(unreadable(page, "link", &rejection)),
    };
    page.link_form = form.clone();
    let provider = match form.provider.parse::<i64>() {
        Ok(id) => Some(org_provider(&state, org.id, id).await?),
        Err(_) => {
            page.errors
                .add("link_provider", "Choose the provider the account is at.");
            None
        }
    };
    let errors = &mut page.errors;
    let subject = errors.check(
        "link_subject",
        line(&form.subject, "subject (the provider's user id)", 255),
    );
    let email = form.email.trim().to_ascii_lowercase();
    let user = users::by_email(&state.db, &email)
        .await?
        .filter(|u| u.org_id == Some(org.id));
    if email.is_empty() {
        errors.add("link_email", "Enter the user's e-mail address.");
    } else if user.is_none() {
        errors.add(
            "link_email",
            "No user of this organization has that e-mail address.",
        );
    }
    let (Some(provider), Some(subject), Some(user)) = (provider, subject, user) else {
        return Ok((StatusCode::BAD_REQUEST, page).into_response());
    };
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    if !store::link(&mut tx, provider.id, &subject, user.id, now).await? {
        page.errors.add(
            "link_subject",
            format!(
                "That {} subject is already linked. Remove its link first to link it to someone else.",
                provider.name
            ),
        );
        return Ok((StatusCode::CONFLICT, page).into_response());
    }
    super::finish_action(
        tx,
        &state,
        &current,
        ip,
        Event::new("sso.link", &user.email)
            .detail(format!("{}, subject {subject}", method(&provider))),
        format!(
            "{} is now linked to {subject} at {}.",
            user.email, provider.name
        ),
        &format!("/orgs/{}/sso", org.id),
    )
    .await
}

async fn remove_link(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(org_id): Path<i64>,
    form: Result<axum::Form<LinkForm>, FormRejection>,
) -> AppResult<Response> {
    let org = super::orgs::admin_org(&state, &current, org_id).await?;
    let form = super::form_or_400(form)?;
    let id = form
        .provider
        .parse::<i64>()
        .map_err(|_| AppError::NotFound)?;
    let provider = org_provider(&state, org.id, id).await?;
    let mut tx = state.db.begin().await?;
    if !store::unlink(&mut tx, provider.id, &form.subject).await? {
        return Err(AppError::NotFound);
    }
    super::finish_action(
        tx,
        &state,
        &current,
        ip,
        Event::new("sso.unlink", &form.subject).detail(method(&provider)),
        "The link was removed.".into(),
        &format!("/orgs/{}/sso", org.id),
    )
    .await
}
