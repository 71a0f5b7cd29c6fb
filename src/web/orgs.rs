//! The console: operators create organizations and give them domains; office managers
//! (and operators) run an organization's users, mailboxes and settings.
//!
//! Every route under `/orgs/{org}` checks `CurrentUser::can_admin(org)`; objects of
//! another organization answer 404, the same as objects that do not exist.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use axum_htmx::{HxHistoryRestoreRequest, HxRequest};
use serde::Deserialize;

use super::session::{self, Chrome, CurrentUser};
use super::{AppError, AppResult, AppState, ClientIp, FieldErrors, page_number};
use crate::accounts::{self, Refusal};
use crate::audit::{self, Event};
use crate::clock::format_utc;
use crate::domain::{DisplayName, DomainName, Email, OrgName, Role, parse_idle_timeout};
use crate::store::invites;
use crate::store::is_unique_violation;
use crate::store::mailboxes::{self, Mailbox, MailboxKind};
use crate::store::orgs::{self, Domain, Org};
use crate::store::users::{self, User};

/// Rows per page in the console's lists.
pub const PAGE_SIZE: i64 = 25;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/orgs", get(org_list).post(create_org))
        .route("/orgs/{org}", get(org_overview))
        .route("/orgs/{org}/domains", post(add_domain))
        .route("/orgs/{org}/users", get(user_list))
        .route(
            "/orgs/{org}/users/invite",
            get(invite_form).post(invite_user),
        )
        .route("/orgs/{org}/users/{user}", get(user_detail))
        .route("/orgs/{org}/users/{user}/role", post(change_role))
        .route("/orgs/{org}/users/{user}/disable", post(disable_user))
        .route("/orgs/{org}/users/{user}/enable", post(enable_user))
        .route(
            "/orgs/{org}/users/{user}/reset-password",
            post(reset_password),
        )
        .route("/orgs/{org}/users/{user}/reset-mfa", post(reset_mfa))
        .route("/orgs/{org}/users/{user}/unlock", post(unlock_user))
        .route("/orgs/{org}/users/{user}/mailboxes", post(assign_mailbox))
        .route(
            "/orgs/{org}/mailboxes",
            get(mailbox_list).post(create_mailbox),
        )
        .route("/orgs/{org}/mailboxes/{mailbox}/members", post(add_member))
        .route(
            "/orgs/{org}/mailboxes/{mailbox}/members/{user}/remove",
            post(remove_member),
        )
        .route(
            "/orgs/{org}/settings",
            get(settings_page).post(save_settings),
        )
}

/// The organization, if this user may run it; 404 otherwise.
pub(super) async fn admin_org(
    state: &AppState,
    current: &CurrentUser,
    org_id: i64,
) -> AppResult<Org> {
    if !current.can_admin(org_id) {
        return Err(match current.role() {
            Role::Member => AppError::Forbidden(
                "Only your organization's administrator can open this page.".into(),
            ),
            _ => AppError::NotFound,
        });
    }
    orgs::get(&state.db, org_id)
        .await?
        .ok_or(AppError::NotFound)
}

/// A user of this organization, or 404.
async fn org_user(state: &AppState, org: &Org, user_id: i64) -> AppResult<User> {
    match users::get(&state.db, user_id).await? {
        Some(u) if u.org_id == Some(org.id) => Ok(u),
        _ => Err(AppError::NotFound),
    }
}

/// A list row with its dates already formatted.
pub struct UserRow {
    pub user: User,
    pub last_login: String,
    pub status: String,
    /// Locked by failed sign-ins, until then.
    pub locked: bool,
}

impl UserRow {
    fn new(user: User, now: i64) -> Self {
        let locked = !user.disabled && user.password_hash.is_some() && user.locked_until > now;
        let status = if user.disabled {
            "Disabled".to_owned()
        } else if user.password_hash.is_none() {
            "Invited, not yet signed in".to_owned()
        } else if locked {
            format!(
                "Locked after failed sign-ins until {}",
                format_utc(user.locked_until)
            )
        } else {
            "Active".to_owned()
        };
        UserRow {
            locked,
            last_login: user
                .last_login_at
                .map(format_utc)
                .unwrap_or_else(|| "never".into()),
            status,
            user,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ListQuery {
    q: String,
    page: String,
}

// ---------- operator: organizations ----------

#[derive(Template, WebTemplate)]
#[template(path = "orgs/list.html")]
struct OrgListPage {
    chrome: Chrome,
    orgs: Vec<Org>,
    q: String,
    page: i64,
    has_next: bool,
    name: String,
    domain: String,
    errors: FieldErrors,
}

async fn org_list(
    State(state): State<AppState>,
    current: CurrentUser,
    Query(q): Query<ListQuery>,
) -> AppResult<OrgListPage> {
    current.require_operator()?;
    org_list_view(
        &state,
        current.chrome,
        q,
        String::new(),
        String::new(),
        FieldErrors::default(),
    )
    .await
}

async fn org_list_view(
    state: &AppState,
    chrome: Chrome,
    q: ListQuery,
    name: String,
    domain: String,
    errors: FieldErrors,
) -> AppResult<OrgListPage> {
    let page = page_number(Some(&q.page));
    let mut list = orgs::list(&state.db, &q.q, PAGE_SIZE + 1, (page - 1) * PAGE_SIZE).await?;
    let has_next = list.len() as i64 > PAGE_SIZE;
    list.truncate(PAGE_SIZE as usize);
    Ok(OrgListPage {
        chrome,
        orgs: list,
        q: q.q,
        page,
        has_next,
        name,
        domain,
        errors,
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CreateOrgForm {
    name: String,
    domain: String,
}

async fn create_org(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    form: Result<Form<CreateOrgForm>, FormRejection>,
) -> AppResult<Response> {
    current.require_operator()?;
    let mut errors = FieldErrors::default();
    let form = match form {
        Ok(Form(f)) => f,
        Err(rejection) => {
            let (status, message) = super::auth::unreadable(&rejection);
            errors.add("form", message);
            let page = org_list_view(
                &state,
                current.chrome.clone(),
                ListQuery::default(),
                String::new(),
                String::new(),
                errors,
            )
            .await?;
            return Ok((status, page).into_response());
        }
    };
    let name = errors.check("name", OrgName::parse(&form.name));
    let domain = if form.domain.trim().is_empty() {
        None
    } else {
        errors.check("domain", DomainName::parse(&form.domain))
    };
    if let Some(d) = &domain
        && let Some(taken) = orgs::domain_taken(&state.db, d).await?
    {
        errors.add("domain", taken);
    }
    if let Some(n) = &name
        && orgs::by_name(&state.db, n.as_str()).await?.is_some()
    {
        errors.add("name", "An organization with this name already exists.");
    }
    let Some(name) = name.filter(|_| errors.is_empty()) else {
        let page = org_list_view(
            &state,
            current.chrome.clone(),
            ListQuery::default(),
            form.name,
            form.domain,
            errors,
        )
        .await?;
        return Ok((StatusCode::BAD_REQUEST, page).into_response());
    };
    let now = state.clock.now();
    let actor = current.actor(ip);
    let created = async {
        let mut tx = state.db.begin().await?;
        let org = orgs::create(&mut tx, &name, now).await?;
        audit::append(
            &mut tx,
            now,
            &actor,
            Event::new("org.create", format!("org:{}", org.id))
                .detail(&org.name)
                .org(Some(org.id)),
        )
        .await?;
        if let Some(d) = &domain {
            if !orgs::claim_domain(&mut tx, org.id, d, now).await? {
                // another organization took it a moment ago; nothing is created
                return Ok(None);
            }
            audit::append(
                &mut tx,
                now,
                &actor,
                Event::new("domain.add", d.as_str()).org(Some(org.id)),
            )
            .await?;
        }
        tx.commit().await?;
        Ok::<_, sqlx::Error>(Some(org))
    }
    .await;
    let org = match created {
        Ok(Some(org)) => org,
        Err(e) if !is_unique_violation(&e) => return Err(e.into()),
        // another operator created the same name, or took the domain, a moment ago
        taken => {
            match (taken, &domain) {
                (Ok(None), Some(d)) => errors.add("domain", orgs::taken_sentence(d)),
                _ => errors.add(
                    "name",
                    "An organization with this name or domain already exists.",
                ),
            }
            let page = org_list_view(
                &state,
                current.chrome.clone(),
                ListQuery::default(),
                form.name,
                form.domain,
                errors,
            )
            .await?;
            return Ok((StatusCode::CONFLICT, page).into_response());
        }
    };
    session::flash(
        &current.session,
        format!("Organization \u{201c}{}\u{201d} created.", org.name),
    )
    .await?;
    Ok(Redirect::to(&format!("/orgs/{}", org.id)).into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "orgs/overview.html")]
struct OverviewPage {
    chrome: Chrome,
    org: Org,
    domains: Vec<Domain>,
    unassigned: Vec<Domain>,
    admins: Vec<User>,
    is_operator: bool,
    domain: String,
    errors: FieldErrors,
}

async fn org_overview(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(org_id): Path<i64>,
) -> AppResult<OverviewPage> {
    let org = admin_org(&state, &current, org_id).await?;
    overview_view(&state, current, org, String::new(), FieldErrors::default()).await
}

async fn overview_view(
    state: &AppState,
    current: CurrentUser,
    org: Org,
    domain: String,
    errors: FieldErrors,
) -> AppResult<OverviewPage> {
    let is_operator = current.role() == Role::Operator;
    Ok(OverviewPage {
        domains: orgs::domains_of(&state.db, org.id).await?,
        unassigned: if is_operator {
            orgs::unassigned_domains(&state.db).await?
        } else {
            Vec::new()
        },
        admins: users::admins_of(&state.db, org.id).await?,
        is_operator,
        chrome: current.chrome,
        org,
        domain,
        errors,
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct DomainForm {
    domain: String,
}

async fn add_domain(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(org_id): Path<i64>,
    form: Result<Form<DomainForm>, FormRejection>,
) -> AppResult<Response> {
    current.require_operator()?;
    let org = admin_org(&state, &current, org_id).await?;
    let mut errors = FieldErrors::default();
    let typed = match form {
        Ok(Form(f)) => f.domain,
        Err(rejection) => {
            let (status, message) = super::auth::unreadable(&rejection);
            errors.add("domain", message);
            return Ok((
                status,
                overview_view(&state, current, org, String::new(), errors).await?,
            )
                .into_response());
        }
    };
    let Some(name) = errors.check("domain", DomainName::parse(&typed)) else {
        return Ok((
            StatusCode::BAD_REQUEST,
            overview_view(&state, current, org, typed, errors).await?,
        )
            .into_response());
    };
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    if !orgs::claim_domain(&mut tx, org.id, &name, now).await? {
        drop(tx);
        errors.add("domain", orgs::taken_sentence(&name));
        return Ok((
            StatusCode::CONFLICT,
            overview_view(&state, current, org, typed, errors).await?,
        )
            .into_response());
    }
    audit::append(
        &mut tx,
        now,
        &current.actor(ip),
        Event::new("domain.add", name.as_str()).org(Some(org.id)),
    )
    .await?;
    tx.commit().await?;
    session::flash(&current.session, format!("Domain {name} added.")).await?;
    Ok(Redirect::to(&format!("/orgs/{}", org.id)).into_response())
}

// ---------- users ----------

#[derive(Template, WebTemplate)]
#[template(path = "orgs/users.html")]
struct UsersPage {
    chrome: Chrome,
    org: Org,
    rows: Vec<UserRow>,
    q: String,
    page: i64,
    has_next: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "orgs/users_partial.html")]
struct UsersPartial {
    org: Org,
    rows: Vec<UserRow>,
    q: String,
    page: i64,
    has_next: bool,
}

async fn user_list(
    State(state): State<AppState>,
    current: CurrentUser,
    HxRequest(htmx): HxRequest,
    HxHistoryRestoreRequest(restore): HxHistoryRestoreRequest,
    Path(org_id): Path<i64>,
    Query(q): Query<ListQuery>,
) -> AppResult<Response> {
    let org = admin_org(&state, &current, org_id).await?;
    let page = page_number(Some(&q.page));
    let now = state.clock.now();
    let mut list = users::list(
        &state.db,
        Some(org.id),
        &q.q,
        PAGE_SIZE + 1,
        (page - 1) * PAGE_SIZE,
    )
    .await?;
    let has_next = list.len() as i64 > PAGE_SIZE;
    list.truncate(PAGE_SIZE as usize);
    let rows = list.into_iter().map(|u| UserRow::new(u, now)).collect();
    // history restores also carry HX-Request but need the whole page
    Ok(if htmx && !restore {
        UsersPartial {
            org,
            rows,
            q: q.q,
            page,
            has_next,
        }
        .into_response()
    } else {
        UsersPage {
            chrome: current.chrome,
            org,
            rows,
            q: q.q,
            page,
            has_next,
        }
        .into_response()
    })
}

#[derive(Template, WebTemplate)]
#[template(path = "orgs/invite.html")]
struct InvitePage {
    chrome: Chrome,
    org: Org,
    email: String,
    name: String,
    role: String,
    errors: FieldErrors,
    /// After success: the link to hand to the invited person.
    link: String,
    invited: String,
    /// Whether the link can be e-mailed (an alert relay is configured), and whether
    /// the form asked for it.
    can_email: bool,
    email_link: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RoleQuery {
    role: String,
}

async fn invite_form(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(org_id): Path<i64>,
    Query(q): Query<RoleQuery>,
) -> AppResult<InvitePage> {
    let org = admin_org(&state, &current, org_id).await?;
    let (invited, link) = take_link(&state, &current, None).await?.unwrap_or_default();
    Ok(InvitePage {
        chrome: current.chrome,
        org,
        email: String::new(),
        name: String::new(),
        // "Invite an administrator" links here with ?role=org-admin
        role: if q.role == "org-admin" {
            q.role
        } else {
            "member".into()
        },
        errors: FieldErrors::default(),
        link,
        invited,
        can_email: state.config.alert_smtp_relay.is_some(),
        email_link: true,
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct InviteForm {
    email: String,
    name: String,
    role: String,
    /// "1": e-mail the link to the invited address through the alert relay.
    email_link: String,
}

/// The absolute link for a single-use token.
fn link_for(state: &AppState, token: &str) -> String {
    format!("{}/invite/{token}", state.public_base)
}

/// Roles an organization's console can hand out (operators are made with the CLI).
fn org_role(input: &str) -> Result<Role, crate::domain::Invalid> {
    match Role::parse(input)? {
        Role::Operator => Err(crate::domain::Invalid(
            "An organization's users are members or organization administrators.".into(),
        )),
        role => Ok(role),
    }
}

async fn invite_user(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(org_id): Path<i64>,
    form: Result<Form<InviteForm>, FormRejection>,
) -> AppResult<Response> {
    let org = admin_org(&state, &current, org_id).await?;
    let mut page = InvitePage {
        chrome: current.chrome.clone(),
        org: org.clone(),
        email: String::new(),
        name: String::new(),
        role: "member".into(),
        errors: FieldErrors::default(),
        link: String::new(),
        invited: String::new(),
        can_email: state.config.alert_smtp_relay.is_some(),
        email_link: true,
    };
    let form = match form {
        Ok(Form(f)) => f,
        Err(rejection) => {
            let (status, message) = super::auth::unreadable(&rejection);
            page.errors.add("form", message);
            return Ok((status, page).into_response());
        }
    };
    page.email = form.email.clone();
    page.name = form.name.clone();
    page.role = form.role.clone();
    page.email_link = form.email_link == "1";
    let email = page.errors.check("email", Email::parse(&form.email));
    let name = page.errors.check("name", DisplayName::parse(&form.name));
    let role = page.errors.check("role", org_role(&form.role));
    let (Some(email), Some(name), Some(role)) = (email, name, role) else {
        return Ok((StatusCode::BAD_REQUEST, page).into_response());
    };
    let now = state.clock.now();
    match accounts::invite(
        &state.db,
        &current.actor(ip.clone()),
        &org,
        &email,
        &name,
        role,
        now,
    )
    .await
    {
        Ok((user, token)) => {
            let link = link_for(&state, &token);
            if page.can_email && page.email_link {
                email_link(&state, &current, ip, &user, &link, now).await?;
                session::flash(
                    &current.session,
                    format!(
                        "Invitation created for {}; the link is on its way to that address (it works once, for 72 hours).",
                        user.email
                    ),
                )
                .await?;
            } else {
                // shown on the next page, once: a reload does not repeat the invitation
                show_link_once(&state, &current, &user.email, &link).await?;
            }
            Ok(Redirect::to(&format!("/orgs/{}/users/invite", org.id)).into_response())
        }
        Err(Refusal::Refused(message)) => {
            page.errors.add("email", message);
            Ok((StatusCode::CONFLICT, page).into_response())
        }
        Err(Refusal::Store(e)) => Err(e.into()),
    }
}

/// Queues the e-mail with an invitation or password link, and wakes the alert worker.
async fn email_link(
    state: &AppState,
    current: &CurrentUser,
    ip: String,
    user: &User,
    link: &str,
    now: i64,
) -> AppResult<()> {
    accounts::email_link(
        &state.db,
        &state.secret,
        &current.actor(ip),
        user,
        link,
        now,
    )
    .await?;
    state.wake_alerts.notify_one();
    Ok(())
}

/// Session keys of a single-use link waiting to be shown: for whom (in clear), and
/// the link itself (sealed: the sessions table never holds a usable link).
const KEY_SHOWN_LINK_FOR: &str = "shown_link_for";
const KEY_SHOWN_LINK: &str = "shown_link";

async fn show_link_once(
    state: &AppState,
    current: &CurrentUser,
    email: &str,
    link: &str,
) -> AppResult<()> {
    current.session.insert(KEY_SHOWN_LINK_FOR, email).await?;
    session::insert_sealed(
        &current.session,
        &state.secret,
        KEY_SHOWN_LINK,
        current.user.id,
        link,
    )
    .await
}

/// The link waiting for `email` (any, when `None`), removed as it is shown.
async fn take_link(
    state: &AppState,
    current: &CurrentUser,
    email: Option<&str>,
) -> AppResult<Option<(String, String)>> {
    let waiting: Option<String> = current.session.get(KEY_SHOWN_LINK_FOR).await?;
    match waiting {
        Some(who) if email.is_none_or(|e| e == who) => {
            session::take::<String>(&current.session, KEY_SHOWN_LINK_FOR).await?;
            let link = session::take_sealed(
                &current.session,
                &state.secret,
                KEY_SHOWN_LINK,
                current.user.id,
            )
            .await?;
            Ok(link.map(|link| (who, link)))
        }
        _ => Ok(None),
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "orgs/user.html")]
struct UserPage {
    chrome: Chrome,
    org: Org,
    row: UserRow,
    mailboxes: Vec<Mailbox>,
    org_mailboxes: Vec<Mailbox>,
    pending_invite: String,
    /// After a reset: the link to hand over, shown once.
    link: String,
    /// Whether a link can be e-mailed (an alert relay is configured).
    can_email: bool,
    is_self: bool,
    can_edit: bool,
}

async fn user_detail(
    State(state): State<AppState>,
    current: CurrentUser,
    Path((org_id, user_id)): Path<(i64, i64)>,
) -> AppResult<UserPage> {
    let org = admin_org(&state, &current, org_id).await?;
    let user = org_user(&state, &org, user_id).await?;
    let link = take_link(&state, &current, Some(&user.email))
        .await?
        .map(|(_, link)| link)
        .unwrap_or_default();
    user_view(&state, current, org, user, link).await
}

async fn user_view(
    state: &AppState,
    current: CurrentUser,
    org: Org,
    user: User,
    link: String,
) -> AppResult<UserPage> {
    let now = state.clock.now();
    Ok(UserPage {
        mailboxes: mailboxes::of_user(&state.db, user.id).await?,
        org_mailboxes: mailboxes::names_for_org(&state.db, org.id).await?,
        pending_invite: invites::pending_for(&state.db, user.id, now)
            .await?
            .map(format_utc)
            .unwrap_or_default(),
        can_email: state.config.alert_smtp_relay.is_some(),
        is_self: user.id == current.user.id,
        can_edit: user.id != current.user.id,
        row: UserRow::new(user, now),
        chrome: current.chrome,
        org,
        link,
    })
}

/// Loads the target of a user action, refusing actions on oneself.
async fn action_target(
    state: &AppState,
    current: &CurrentUser,
    org_id: i64,
    user_id: i64,
) -> AppResult<(Org, User)> {
    let org = admin_org(state, current, org_id).await?;
    let user = org_user(state, &org, user_id).await?;
    if user.id == current.user.id {
        return Err(AppError::Forbidden(
            "You cannot change your own role or access here; ask another administrator.".into(),
        ));
    }
    Ok((org, user))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RoleForm {
    role: String,
}

async fn change_role(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path((org_id, user_id)): Path<(i64, i64)>,
    form: Result<Form<RoleForm>, FormRejection>,
) -> AppResult<Response> {
    let form = super::form_or_400(form)?;
    let (org, user) = action_target(&state, &current, org_id, user_id).await?;
    let role = org_role(&form.role).map_err(|e| AppError::BadRequest(e.0))?;
    done(
        accounts::set_role(
            &state.db,
            &current.actor(ip),
            &user,
            role,
            state.clock.now(),
        )
        .await,
    )?;
    session::flash(
        &current.session,
        format!("{} is now: {}.", user.email, role.label()),
    )
    .await?;
    Ok(Redirect::to(&format!("/orgs/{}/users/{}", org.id, user.id)).into_response())
}

/// An operation's outcome on the request path: refusals are 400 with their sentence.
fn done<T>(outcome: accounts::Outcome<T>) -> AppResult<T> {
    outcome.map_err(|e| match e {
        Refusal::Refused(message) => AppError::BadRequest(message),
        Refusal::Store(e) => e.into(),
    })
}

async fn set_disabled(
    state: AppState,
    ip: String,
    current: CurrentUser,
    org_id: i64,
    user_id: i64,
    disabled: bool,
) -> AppResult<Response> {
    let (org, user) = action_target(&state, &current, org_id, user_id).await?;
    let now = state.clock.now();
    done(accounts::set_disabled(&state.db, &current.actor(ip), &user, disabled, now).await)?;
    let message = if disabled {
        format!("{} is disabled and was signed out everywhere.", user.email)
    } else {
        format!("{} can sign in again.", user.email)
    };
    session::flash(&current.session, message).await?;
    Ok(Redirect::to(&format!("/orgs/{}/users/{}", org.id, user.id)).into_response())
}

async fn disable_user(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path((org_id, user_id)): Path<(i64, i64)>,
) -> AppResult<Response> {
    set_disabled(state, ip, current, org_id, user_id, true).await
}

async fn enable_user(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path((org_id, user_id)): Path<(i64, i64)>,
) -> AppResult<Response> {
    set_disabled(state, ip, current, org_id, user_id, false).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct EmailLinkForm {
    /// "1": e-mail the link to the user's address through the alert relay.
    email_link: String,
}

/// Ends the old password at once and gives the administrator a single-use link for
/// the user to choose a new one. (Unused invites are re-issued the same way.)
async fn reset_password(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path((org_id, user_id)): Path<(i64, i64)>,
    form: Result<Form<EmailLinkForm>, FormRejection>,
) -> AppResult<Response> {
    let (org, user) = action_target(&state, &current, org_id, user_id).await?;
    let now = state.clock.now();
    let token =
        done(accounts::reset_password(&state.db, &current.actor(ip.clone()), &user, now).await)?;
    let link = link_for(&state, &token);
    let wanted = form.is_ok_and(|Form(f)| f.email_link == "1");
    if wanted && state.config.alert_smtp_relay.is_some() {
        email_link(&state, &current, ip, &user, &link, now).await?;
        session::flash(
            &current.session,
            format!(
                "The link is on its way to {} (it works once, for 72 hours).",
                user.email
            ),
        )
        .await?;
    } else {
        show_link_once(&state, &current, &user.email, &link).await?;
    }
    Ok(Redirect::to(&format!("/orgs/{}/users/{}", org.id, user.id)).into_response())
}

async fn unlock_user(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path((org_id, user_id)): Path<(i64, i64)>,
) -> AppResult<Response> {
    let (org, user) = action_target(&state, &current, org_id, user_id).await?;
    done(accounts::unlock(&state.db, &current.actor(ip), &user, state.clock.now()).await)?;
    session::flash(
        &current.session,
        format!("{} is unlocked and can sign in again now.", user.email),
    )
    .await?;
    Ok(Redirect::to(&format!("/orgs/{}/users/{}", org.id, user.id)).into_response())
}

async fn reset_mfa(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path((org_id, user_id)): Path<(i64, i64)>,
) -> AppResult<Response> {
    let (org, user) = action_target(&state, &current, org_id, user_id).await?;
    done(accounts::reset_mfa(&state.db, &current.actor(ip), &user, state.clock.now()).await)?;
    session::flash(
        &current.session,
        format!("Two-step sign-in was reset for {}; they will set it up again at their next sign-in if your organization requires it.", user.email),
    )
    .await?;
    Ok(Redirect::to(&format!("/orgs/{}/users/{}", org.id, user.id)).into_response())
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct AssignForm {
    mailbox: String,
}

async fn assign_mailbox(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path((org_id, user_id)): Path<(i64, i64)>,
    form: Result<Form<AssignForm>, FormRejection>,
) -> AppResult<Response> {
    let form = super::form_or_400(form)?;
    let org = admin_org(&state, &current, org_id).await?;
    let user = org_user(&state, &org, user_id).await?;
    let mailbox_id = form
        .mailbox
        .trim()
        .parse()
        .map_err(|_| AppError::BadRequest("Choose a mailbox from the list.".into()))?;
    let mailbox = org_mailbox(&state, &org, mailbox_id).await?;
    assign(&state, &current, ip, &mailbox, &user).await?;
    Ok(Redirect::to(&format!("/orgs/{}/users/{}", org.id, user.id)).into_response())
}

/// Assigns and says how it went on the next page.
async fn assign(
    state: &AppState,
    current: &CurrentUser,
    ip: String,
    mailbox: &Mailbox,
    user: &User,
) -> AppResult<()> {
    let now = state.clock.now();
    let message = match accounts::assign(&state.db, &current.actor(ip), mailbox, user, now).await {
        Ok(true) => format!("{} can now use {}.", user.email, mailbox.address),
        Ok(false) => format!("{} could already use {}.", user.email, mailbox.address),
        Err(Refusal::Refused(message)) => message,
        Err(Refusal::Store(e)) => return Err(e.into()),
    };
    session::flash(&current.session, message).await
}

// ---------- mailboxes ----------

async fn org_mailbox(state: &AppState, org: &Org, mailbox_id: i64) -> AppResult<Mailbox> {
    match mailboxes::get(&state.db, mailbox_id).await? {
        Some(m) if m.org_id == org.id => Ok(m),
        _ => Err(AppError::NotFound),
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "orgs/mailboxes.html")]
struct MailboxesPage {
    chrome: Chrome,
    org: Org,
    mailboxes: Vec<Mailbox>,
    domains: Vec<Domain>,
    q: String,
    page: i64,
    has_next: bool,
    local: String,
    domain: String,
    kind: String,
    name: String,
    owner: String,
    errors: FieldErrors,
    /// The organization's users who can be given a mailbox, as (e-mail, name); empty
    /// when there are more than a list can show (the fields then take an e-mail).
    users: Vec<(String, String)>,
}

async fn mailbox_list(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(org_id): Path<i64>,
    Query(q): Query<ListQuery>,
) -> AppResult<MailboxesPage> {
    let org = admin_org(&state, &current, org_id).await?;
    mailboxes_view(
        &state,
        current.chrome,
        org,
        q,
        MailboxForm::default(),
        FieldErrors::default(),
    )
    .await
}

/// The most users "Assign to" lists; a larger organization types an e-mail instead.
const ASSIGNABLE: i64 = 500;

async fn mailboxes_view(
    state: &AppState,
    chrome: Chrome,
    org: Org,
    q: ListQuery,
    form: MailboxForm,
    errors: FieldErrors,
) -> AppResult<MailboxesPage> {
    let page = page_number(Some(&q.page));
    let mut list = mailboxes::list_for_org(
        &state.db,
        org.id,
        &q.q,
        PAGE_SIZE + 1,
        (page - 1) * PAGE_SIZE,
    )
    .await?;
    let has_next = list.len() as i64 > PAGE_SIZE;
    list.truncate(PAGE_SIZE as usize);
    let mut people = users::list(&state.db, Some(org.id), "", ASSIGNABLE + 1, 0).await?;
    if people.len() as i64 > ASSIGNABLE {
        people.clear();
    }
    Ok(MailboxesPage {
        users: people
            .into_iter()
            .filter(|u| !u.disabled)
            .map(|u| (u.email, u.display_name))
            .collect(),
        chrome,
        domains: orgs::domains_of(&state.db, org.id).await?,
        org,
        mailboxes: list,
        q: q.q,
        page,
        has_next,
        local: form.local,
        domain: form.domain,
        kind: if form.kind.is_empty() {
            "personal".into()
        } else {
            form.kind
        },
        name: form.name,
        owner: form.owner,
        errors,
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct MailboxForm {
    local: String,
    domain: String,
    kind: String,
    name: String,
    /// E-mail of a user of the organization to assign right away (optional).
    owner: String,
}

async fn create_mailbox(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(org_id): Path<i64>,
    form: Result<Form<MailboxForm>, FormRejection>,
) -> AppResult<Response> {
    let org = admin_org(&state, &current, org_id).await?;
    let mut errors = FieldErrors::default();
    let form = match form {
        Ok(Form(f)) => f,
        Err(rejection) => {
            let (status, message) = super::auth::unreadable(&rejection);
            errors.add("form", message);
            let page = mailboxes_view(
                &state,
                current.chrome.clone(),
                org,
                ListQuery::default(),
                MailboxForm::default(),
                errors,
            )
            .await?;
            return Ok((status, page).into_response());
        }
    };
    let domains = orgs::domains_of(&state.db, org.id).await?;
    let domain = domains
        .iter()
        .find(|d| d.name == form.domain.trim().to_ascii_lowercase());
    if domain.is_none() {
        errors.add(
            "domain",
            if domains.is_empty() {
                "This organization has no Direct domain yet; ask your HISP operator to add one."
            } else {
                "Choose one of your organization's domains."
            },
        );
    }
    let address = domain.and_then(|d| {
        errors.check(
            "local",
            Email::parse(&format!("{}@{}", form.local.trim(), d.name)),
        )
    });
    let kind = MailboxKind::parse(&form.kind);
    if kind.is_none() {
        errors.add("kind", "Choose personal or shared.");
    }
    let name = errors.check("name", DisplayName::parse(&form.name));
    let owner = if form.owner.trim().is_empty() {
        None
    } else {
        match users::by_email(&state.db, &form.owner).await? {
            Some(u) if u.org_id == Some(org.id) => Some(u),
            _ => {
                errors.add(
                    "owner",
                    "No user of this organization has that e-mail address.",
                );
                None
            }
        }
    };
    if let Some(a) = &address
        && mailboxes::by_address(&state.db, a.as_str())
            .await?
            .is_some()
    {
        errors.add("local", format!("The mailbox {a} already exists."));
    }
    let (Some(domain), Some(address), Some(kind), Some(name), true) =
        (domain, address, kind, name, errors.is_empty())
    else {
        let page = mailboxes_view(
            &state,
            current.chrome.clone(),
            org,
            ListQuery::default(),
            form,
            errors,
        )
        .await?;
        return Ok((StatusCode::BAD_REQUEST, page).into_response());
    };
    let now = state.clock.now();
    let actor = current.actor(ip);
    let mut tx = state.db.begin().await?;
    let mailbox =
        match mailboxes::create(&mut tx, org.id, domain.id, &address, kind, &name, now).await {
            Ok(m) => m,
            Err(e) if is_unique_violation(&e) => {
                errors.add("local", format!("The mailbox {address} already exists."));
                let page = mailboxes_view(
                    &state,
                    current.chrome.clone(),
                    org,
                    ListQuery::default(),
                    form,
                    errors,
                )
                .await?;
                return Ok((StatusCode::CONFLICT, page).into_response());
            }
            Err(e) => return Err(e.into()),
        };
    audit::append(
        &mut tx,
        now,
        &actor,
        Event::new("mailbox.create", &mailbox.address)
            .detail(kind.as_str())
            .org(Some(org.id)),
    )
    .await?;
    if let Some(owner) = &owner {
        mailboxes::assign(&mut tx, mailbox.id, owner.id).await?;
        audit::append(
            &mut tx,
            now,
            &actor,
            Event::new("mailbox.assign", &mailbox.address)
                .detail(&owner.email)
                .org(Some(org.id)),
        )
        .await?;
    }
    tx.commit().await?;
    session::flash(
        &current.session,
        format!("Mailbox {} created.", mailbox.address),
    )
    .await?;
    Ok(Redirect::to(&format!("/orgs/{}/mailboxes", org.id)).into_response())
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct BackForm {
    /// `user` to return to the user's page instead of the mailbox list.
    back: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct MemberForm {
    email: String,
}

async fn add_member(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path((org_id, mailbox_id)): Path<(i64, i64)>,
    form: Result<Form<MemberForm>, FormRejection>,
) -> AppResult<Response> {
    let form = super::form_or_400(form)?;
    let org = admin_org(&state, &current, org_id).await?;
    let mailbox = org_mailbox(&state, &org, mailbox_id).await?;
    match users::by_email(&state.db, &form.email).await? {
        Some(user) if user.org_id == Some(org.id) => {
            assign(&state, &current, ip, &mailbox, &user).await?;
        }
        _ => {
            session::flash(
                &current.session,
                format!(
                    "No user of {} has the address \u{201c}{}\u{201d}; nothing changed.",
                    org.name,
                    form.email.trim()
                ),
            )
            .await?;
        }
    }
    Ok(Redirect::to(&format!("/orgs/{}/mailboxes", org.id)).into_response())
}

async fn remove_member(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path((org_id, mailbox_id, user_id)): Path<(i64, i64, i64)>,
    form: Result<Form<BackForm>, FormRejection>,
) -> AppResult<Response> {
    let org = admin_org(&state, &current, org_id).await?;
    let mailbox = org_mailbox(&state, &org, mailbox_id).await?;
    let user = org_user(&state, &org, user_id).await?;
    let now = state.clock.now();
    done(accounts::unassign(&state.db, &current.actor(ip), &mailbox, &user, now).await)?;
    session::flash(
        &current.session,
        format!("{} no longer uses {}.", user.email, mailbox.address),
    )
    .await?;
    let back = form.map(|Form(f)| f.back).unwrap_or_default();
    let target = if back == "user" {
        format!("/orgs/{}/users/{}", org.id, user.id)
    } else {
        format!("/orgs/{}/mailboxes", org.id)
    };
    Ok(Redirect::to(&target).into_response())
}

// ---------- settings ----------

#[derive(Template, WebTemplate)]
#[template(path = "orgs/settings.html")]
struct SettingsPage {
    chrome: Chrome,
    org: Org,
    idle: String,
    require_mfa: bool,
    /// Whether new-mail alerts may name the sender's organization.
    alerts_name_sender: bool,
    errors: FieldErrors,
}

async fn settings_page(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(org_id): Path<i64>,
) -> AppResult<SettingsPage> {
    let org = admin_org(&state, &current, org_id).await?;
    Ok(SettingsPage {
        chrome: current.chrome,
        idle: org.idle_timeout_minutes.to_string(),
        require_mfa: org.require_mfa,
        alerts_name_sender: crate::store::alerts::names_sender(&state.db, org.id).await?,
        org,
        errors: FieldErrors::default(),
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct SettingsForm {
    idle: String,
    require_mfa: String,
    alerts_name_sender: String,
}

async fn save_settings(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(org_id): Path<i64>,
    form: Result<Form<SettingsForm>, FormRejection>,
) -> AppResult<Response> {
    let org = admin_org(&state, &current, org_id).await?;
    let mut page = SettingsPage {
        chrome: current.chrome.clone(),
        idle: org.idle_timeout_minutes.to_string(),
        require_mfa: org.require_mfa,
        alerts_name_sender: crate::store::alerts::names_sender(&state.db, org.id).await?,
        org: org.clone(),
        errors: FieldErrors::default(),
    };
    let form = match form {
        Ok(Form(f)) => f,
        Err(rejection) => {
            let (status, message) = super::auth::unreadable(&rejection);
            page.errors.add("form", message);
            return Ok((status, page).into_response());
        }
    };
    page.idle = form.idle.clone();
    page.require_mfa = !form.require_mfa.is_empty();
    let was_naming = page.alerts_name_sender;
    page.alerts_name_sender = !form.alerts_name_sender.is_empty();
    let Some(idle) = page.errors.check("idle", parse_idle_timeout(&form.idle)) else {
        return Ok((StatusCode::BAD_REQUEST, page).into_response());
    };
    let now = state.clock.now();
    done(
        accounts::update_settings(
            &state.db,
            &current.actor(ip.clone()),
            &org,
            idle,
            page.require_mfa,
            now,
        )
        .await,
    )?;
    if page.alerts_name_sender != was_naming {
        done(
            accounts::set_alert_policy(
                &state.db,
                &current.actor(ip),
                &org,
                page.alerts_name_sender,
                now,
            )
            .await,
        )?;
    }
    session::flash(&current.session, "Settings saved.").await?;
    Ok(Redirect::to(&format!("/orgs/{}/settings", org.id)).into_response())
}
