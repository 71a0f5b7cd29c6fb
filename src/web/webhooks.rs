//! Webhooks for EHRs: registering, listing and deleting them through the API (by the
//! token that owns them), and the account page where their owner sees them with
//! their recent deliveries and sends a delivery again. What an event says and how it
//! is sent is decided in [`crate::webhooks`].

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::api::{ApiError, ApiUser};
use super::session::{self, Chrome, CurrentUser};
use super::{AppError, AppResult, AppState, ClientIp};
use crate::audit::{self, Event};
use crate::clock::{format_rfc3339, format_utc};
use crate::store::webhooks as store;
use crate::webhooks::{EVENTS, check_url, new_secret, resolves_to_allowed, secret_aad};

/// A registration is a URL in a small JSON object.
const BODY_LIMIT: usize = 8 * 1024;

/// Deliveries on one page of the account page.
const RECENT: i64 = 50;

pub fn routes() -> Router<AppState> {
    let api = Router::new()
        .route("/api/v1/webhooks", get(list).post(register))
        .route("/api/v1/webhooks/{id}", delete(remove))
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    Router::new()
        .route("/account/webhooks", get(page))
        .route("/account/webhooks/deliveries/{id}/replay", post(replay))
        .route("/account/webhooks/{id}/delete", post(remove_own))
        .merge(api)
}

fn described(hook: &store::Webhook) -> Value {
    json!({
        "id": hook.id,
        "url": hook.url,
        "events": EVENTS,
        "created_at": format_rfc3339(hook.created_at),
    })
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

async fn register(
    State(state): State<AppState>,
    api: ApiUser,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let example = r#"Send JSON such as {"url": "https://ehr.example.org/directmail/events"}."#;
    let body = match body {
        Ok(Json(body)) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("A registration is at most {BODY_LIMIT} bytes. {example}"),
            ));
        }
        Err(_) => return Err(bad("unreadable_request", example)),
    };
    let Some(fields) = body.as_object() else {
        return Err(bad("unreadable_request", example));
    };
    if let Some(other) = fields.keys().find(|k| k.as_str() != "url") {
        return Err(bad(
            "unknown_field",
            format!("The field {other} is not part of this API. {example}"),
        ));
    }
    let Some(text) = fields.get("url").and_then(Value::as_str) else {
        return Err(bad("invalid_url", example));
    };
    let policy = state.config.network_policy();
    let url = check_url(&policy, text).map_err(|m| bad("invalid_url", m))?;
    resolves_to_allowed(&policy, &url)
        .await
        .map_err(|m| bad("invalid_url", m))?;
    let secret = new_secret();
    let sealed = state
        .secret
        .seal(secret.as_bytes(), &secret_aad(api.token_id, url.as_str()))?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let Some(id) = store::create(
        &mut tx,
        api.token_id,
        api.user.id,
        url.as_str(),
        &sealed,
        now,
    )
    .await?
    else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_webhooks",
            format!(
                "A token can register at most {} webhooks; delete one first.",
                store::PER_TOKEN
            ),
        ));
    };
    audit::append(
        &mut tx,
        now,
        &api.actor,
        Event::new("webhook.create", format!("webhook:{id}")).detail(format!(
            "token:{}, {}",
            api.token_id,
            url.host_str().unwrap_or_default()
        )),
    )
    .await?;
    tx.commit().await?;
    let mut out = json!({
        "id": id,
        "url": url.as_str(),
        "events": EVENTS,
        "created_at": format_rfc3339(now),
    });
    out["secret"] = secret.into();
    Ok((StatusCode::CREATED, Json(out)))
}

async fn list(State(state): State<AppState>, api: ApiUser) -> Result<Json<Value>, ApiError> {
    let hooks = store::of_token(&state.db, api.token_id).await?;
    let hooks: Vec<Value> = hooks.iter().map(described).collect();
    Ok(Json(json!({ "webhooks": hooks })))
}

async fn remove(
    State(state): State<AppState>,
    api: ApiUser,
    id: Result<Path<i64>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let missing = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "This token has no such webhook.",
        )
    };
    let Ok(Path(id)) = id else {
        return Err(missing());
    };
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    if !store::delete(&mut tx, api.user.id, Some(api.token_id), id).await? {
        return Err(missing());
    }
    audit::append(
        &mut tx,
        now,
        &api.actor,
        Event::new("webhook.delete", format!("webhook:{id}"))
            .detail(format!("token:{}", api.token_id)),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

pub struct HookView {
    pub id: i64,
    pub url: String,
    pub token_name: String,
    pub created: String,
}

pub struct DeliveryView {
    pub id: i64,
    pub webhook_id: i64,
    pub event: String,
    pub message_id: String,
    pub occurred: String,
    /// In words: "Delivered", "Waiting to retry at …", "Given up", …
    pub state: String,
    pub attempts: i64,
    pub last_error: String,
    /// Delivered or given up: can be sent again.
    pub replayable: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "account/webhooks.html")]
struct WebhooksPage {
    chrome: Chrome,
    hooks: Vec<HookView>,
    deliveries: Vec<DeliveryView>,
    /// The id to page on from ("Older"); empty on the last page.
    next_before: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PageQuery {
    before: String,
}

async fn page(
    State(state): State<AppState>,
    current: CurrentUser,
    Query(q): Query<PageQuery>,
) -> AppResult<WebhooksPage> {
    let user_id = current.user.id;
    let hooks = store::of_user(&state.db, user_id)
        .await?
        .into_iter()
        .map(|h| HookView {
            id: h.id,
            url: h.url,
            token_name: h.token_name,
            created: format_utc(h.created_at),
        })
        .collect();
    let recent =
        store::recent(&state.db, user_id, q.before.trim().parse().ok(), RECENT + 1).await?;
    let (recent, next_before) = super::paginate(recent, RECENT, |d| d.id.to_string());
    let deliveries = recent
        .into_iter()
        .map(|d| DeliveryView {
            id: d.id,
            webhook_id: d.webhook_id,
            event: match d.event_type.as_str() {
                "message.status" => format!("Delivery status: {}", d.status),
                _ => "New message".to_owned(),
            },
            message_id: d.message_id.map(|m| m.to_string()).unwrap_or_default(),
            occurred: format_utc(d.occurred_at),
            state: match d.state.as_str() {
                "delivered" => "Delivered".to_owned(),
                "failed" => "Given up".to_owned(),
                "sending" => "Being sent".to_owned(),
                _ if d.attempts == 0 => "Waiting to be sent".to_owned(),
                _ => format!("Waiting to retry at {}", format_utc(d.next_attempt_at)),
            },
            replayable: matches!(d.state.as_str(), "delivered" | "failed"),
            attempts: d.attempts,
            last_error: d.last_error,
        })
        .collect();
    Ok(WebhooksPage {
        chrome: current.chrome,
        hooks,
        deliveries,
        next_before,
    })
}

/// Deletes one of the user's webhooks (also one whose token no longer works, which
/// the EHR can no longer delete through the API).
async fn remove_own(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(id): Path<i64>,
) -> AppResult<Response> {
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    if !store::delete(&mut tx, current.user.id, None, id).await? {
        return Err(AppError::NotFound);
    }
    audit::append(
        &mut tx,
        now,
        &current.actor(ip),
        Event::new("webhook.delete", format!("webhook:{id}")).detail("account page"),
    )
    .await?;
    tx.commit().await?;
    session::flash(
        &current.session,
        format!("Webhook {id} was deleted; it gets no more events."),
    )
    .await?;
    Ok(Redirect::to("/account/webhooks").into_response())
}

/// Sends one of the user's deliveries again (the same event, with its id).
async fn replay(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(id): Path<i64>,
) -> AppResult<Response> {
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    if !store::replay(&mut tx, current.user.id, id, now).await? {
        drop(tx);
        // another user's delivery is reported as missing, as other objects are
        return match store::owner_of_delivery(&state.db, id).await? {
            Some(owner) if owner == current.user.id => {
                session::flash(
                    &current.session,
                    format!("Event {id} is already waiting to be sent."),
                )
                .await?;
                Ok(Redirect::to("/account/webhooks").into_response())
            }
            _ => Err(AppError::NotFound),
        };
    }
    audit::append(
        &mut tx,
        now,
        &current.actor(ip),
        Event::new("webhook.replay", format!("webhook delivery:{id}")),
    )
    .await?;
    tx.commit().await?;
    state.wake_webhooks.notify_one();
    session::flash(&current.session, format!("Event {id} will be sent again.")).await?;
    Ok(Redirect::to("/account/webhooks").into_response())
}
