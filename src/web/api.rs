//! The REST API for EHRs (Integrated Direct) under `/api/v1`: per-user bearer tokens,
//! the same authorization (only the user's mailboxes) and audit as the pages, and
//! JSON errors with a code and a message. `/api/v1/openapi.json` describes it.

use axum::extract::{DefaultBodyLimit, FromRef, FromRequestParts, Multipart, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use mail_parser::{MessageParser, MimeHeaders as _};
use serde::Deserialize;
use serde_json::{Value, json};

use super::message::{Reading, Via, record_reading};
use super::{AppState, ClientIp};
use crate::audit::{self, Actor, Event};
use crate::auth;
use crate::clock::format_rfc3339;
use crate::domain::Email;
use crate::outbound::{Attachment, Draft};
use crate::sensitivity::Law;
use crate::store::inbound;
use crate::store::mailboxes::{self, Mailbox};
use crate::store::outbound as outbound_store;
use crate::store::tokens;
use crate::store::users::{self, User};

const PAGE: i64 = 50;

/// Every route, for the router and for the OpenAPI document's test.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/api/v1/messages"),
    ("get", "/api/v1/messages"),
    ("get", "/api/v1/messages/{id}"),
    ("get", "/api/v1/messages/{id}/attachments/{n}"),
    ("get", "/api/v1/openapi.json"),
    ("post", "/api/v1/webhooks"),
    ("get", "/api/v1/webhooks"),
    ("delete", "/api/v1/webhooks/{id}"),
];

pub fn routes(config: &crate::config::Config) -> Router<AppState> {
    // a message's worth of attachments (DIRECTMAIL_MAX_MESSAGE_MB), as on the page
    let limit = super::compose::message_limit(config) + super::compose::MULTIPART_OVERHEAD;
    Router::new()
        .route("/api/v1/messages", get(list).post(send))
        .route("/api/v1/messages/{id}", get(detail))
        .route("/api/v1/messages/{id}/attachments/{n}", get(attachment))
        .route("/api/v1/openapi.json", get(openapi))
        .layer(DefaultBodyLimit::max(limit))
}

/// A JSON error: `{"code": "...", "message": "..."}` with its status.
#[derive(Debug)]
pub struct ApiError(StatusCode, &'static str, String);

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError(status, code, message.into())
    }
    fn not_found() -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "No such message in your mailboxes.",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "code": self.1, "message": self.2 }))).into_response()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "api: database");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Something went wrong on our side; nothing was changed.",
        )
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        tracing::error!(error = format!("{e:#}"), "api");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Something went wrong on our side; nothing was changed.",
        )
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The user behind `Authorization: Bearer <token>`.
pub struct ApiUser {
    pub user: User,
    pub actor: Actor,
    /// The token presented (webhooks belong to it).
    pub token_id: i64,
}

impl<S> FromRequestParts<S> for ApiUser
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let unauthorized = || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Send a valid API token as `Authorization: Bearer <token>`; create one under My account.",
            )
        };
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() < 200)
            .ok_or_else(unauthorized)?;
        let now = state.clock.now();
        let (user_id, token_id) = match tokens::authenticate(
            &state.db,
            &auth::token_hash(token),
            now,
        )
        .await?
        {
            tokens::Check::Valid { user_id, token_id } => (user_id, token_id),
            tokens::Check::Expired => {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "token_expired",
                    "This API token has expired. Create a new one under My account → API tokens and give it to the system that uses it.",
                ));
            }
            tokens::Check::Refused => return Err(unauthorized()),
        };
        let (user, org) = users::get_with_org(&state.db, user_id)
            .await?
            .ok_or_else(unauthorized)?;
        if !user.is_active() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "account_disabled",
                "This account is disabled.",
            ));
        }
        if crate::accounts::lacks_required_two_step(&user, org.as_ref(), state.config.operator_mfa)
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "two_step_required",
                "The owner of this token must use two-step sign-in and has not set it up. Sign in to the portal and set it up; the token then works again.",
            ));
        }
        let ip = super::client_ip(parts, &state.config.trusted_proxies).to_string();
        Ok(ApiUser {
            actor: Actor::user(&user, ip),
            user,
            token_id,
        })
    }
}

/// The user's mailbox with this address (or the first, when `None`).
async fn mailbox_of(state: &AppState, user: &User, address: Option<&str>) -> ApiResult<Mailbox> {
    let boxes = mailboxes::of_user(&state.db, user.id).await?;
    match address.map(|a| a.trim().to_ascii_lowercase()) {
        Some(a) => boxes.into_iter().find(|m| m.address == a).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_such_mailbox",
                format!("{a} is not one of your mailboxes."),
            )
        }),
        None => boxes.into_iter().next().ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "no_mailbox",
                "No mailbox is assigned to you yet.",
            )
        }),
    }
}

/// The `Idempotency-Key` header of a send: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &axum::http::HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(key.to_owned()))
        }
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
            "The Idempotency-Key header is 1 to 255 visible ASCII characters without spaces (a UUID, say); nothing was sent.",
        )),
    }
}

/// The answer to a send: the outbound message and its Sent copy (`replayed`: the
/// message an earlier request with the same Idempotency-Key queued).
async fn queued(state: &AppState, id: i64, replayed: bool) -> ApiResult<Response> {
    let sent: Option<i64> = sqlx::query_scalar("select id from messages where outbound_id = $1")
        .bind(id)
        .fetch_optional(&state.db.pool)
        .await?;
    let body = Json(json!({ "id": sent, "outbound_id": id, "status": "queued" }));
    let mut response = (StatusCode::ACCEPTED, body).into_response();
    if replayed {
        response.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

async fn send(
    State(state): State<AppState>,
    api: ApiUser,
    headers: axum::http::HeaderMap,
    mut form: Multipart,
) -> ApiResult<Response> {
    let bad = |code: &'static str, m: String| ApiError::new(StatusCode::BAD_REQUEST, code, m);
    let mut draft = Draft {
        idempotency_key: idempotency_key(&headers)?,
        ..Draft::default()
    };
    let mut from_mailbox: Option<String> = None;
    let limit = super::compose::message_limit(&state.config);
    let mut total = 0usize;
    let mut refused: Vec<String> = Vec::new();
    loop {
        let mut field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                let status = e.status();
                return Err(ApiError::new(
                    if status == StatusCode::PAYLOAD_TOO_LARGE {
                        status
                    } else {
                        StatusCode::BAD_REQUEST
                    },
                    "unreadable_request",
                    format!("The multipart body could not be read: {}", e.body_text()),
                ));
            }
        };
        let name = field.name().unwrap_or_default().to_owned();
        let file_name = field.file_name().map(str::to_owned);
        let declared = field.content_type().map(str::to_owned);
        let unreadable = |e: axum::extract::multipart::MultipartError| {
            bad(
                "unreadable_request",
                format!("The field {name} could not be read: {}", e.body_text()),
            )
        };
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "Attachments may add up to {} MB per message.",
                    state.config.max_message_mb
                ),
            )
        };
        let room = limit.saturating_sub(total);
        let Some(bytes) = super::compose::read_capped(&mut field, room)
            .await
            .map_err(unreadable)?
        else {
            return Err(too_large());
        };
        let text = || String::from_utf8_lossy(&bytes).trim().to_owned();
        match name.as_str() {
            "to" | "cc" => {
                let address = Email::parse(&text()).map_err(|e| bad("invalid_address", e.0))?;
                let list = if name == "to" {
                    &mut draft.to
                } else {
                    &mut draft.cc
                };
                list.push(address.as_str().to_owned());
            }
            "subject" => draft.subject = text(),
            "text" => draft.text = String::from_utf8_lossy(&bytes).into_owned(),
            "mailbox" => from_mailbox = Some(text()),
            "xdm" => {
                draft.as_xdm = match text().to_ascii_lowercase().as_str() {
                    "true" | "yes" | "1" => true,
                    "false" | "no" | "0" => false,
                    _ => {
                        return Err(bad(
                            "invalid_field",
                            "The field xdm is true or false.".into(),
                        ));
                    }
                }
            }
            "attachment" => {
                let name: String = file_name
                    .unwrap_or_else(|| "attachment".into())
                    .chars()
                    .filter(|c| !c.is_control() && *c != '/' && *c != '\\')
                    .collect();
                // the same checks and policy as the page: the type comes from the
                // content, never from what the client declared
                let policy = super::compose::policy(&state, room);
                match super::compose::check_file(&name, declared.as_deref(), bytes.clone(), &policy)
                    .await
                    .map_err(|_| {
                        ApiError::from(anyhow::anyhow!("the attachment check did not finish"))
                    })? {
                    Ok(content_type) => {
                        total += bytes.len();
                        draft.attachments.push(Attachment {
                            name,
                            content_type: content_type.to_owned(),
                            data: bytes.to_vec(),
                        });
                    }
                    Err(why) => refused.push(why),
                }
            }
            other => {
                return Err(bad(
                    "unknown_field",
                    format!("The field {other} is not part of this API."),
                ));
            }
        }
    }
    if !refused.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "attachment_refused",
            format!("Nothing was sent. {}", refused.join(" ")),
        ));
    }
    if draft.to.is_empty() {
        return Err(bad(
            "no_recipient",
            "Give at least one `to` address.".into(),
        ));
    }
    if draft.subject.chars().count() > 250 {
        return Err(bad(
            "subject_too_long",
            "The subject is at most 250 characters.".into(),
        ));
    }
    let mailbox = mailbox_of(&state, &api.user, from_mailbox.as_deref()).await?;
    // a repeat of a request whose answer was lost: the message it queued, once
    let earlier = async |key: &Option<String>| -> ApiResult<Option<i64>> {
        Ok(match key {
            Some(key) => outbound_store::by_idempotency_key(&state.db, mailbox.id, key).await?,
            None => None,
        })
    };
    if let Some(id) = earlier(&draft.idempotency_key).await? {
        return queued(&state, id, true).await;
    }
    let viewer = crate::store::directory::Viewer {
        user_id: api.user.id,
        org_id: api.user.org_id,
    };
    let recipients: Vec<String> = draft.to.iter().chain(&draft.cc).cloned().collect();
    draft.as_xdm |= !crate::store::directory::wanting_xdm(&state.db, &viewer, &recipients)
        .await?
        .is_empty();
    let now = state.clock.now();
    let submitted =
        crate::outbound::submit_draft(&state.db, &mailbox, &api.user.display_name, &draft, now)
            .await;
    let id = match submitted {
        Ok(id) => id,
        // the same key sent twice at once: the other request queued it
        Err(e) => match earlier(&draft.idempotency_key).await? {
            Some(id) => return queued(&state, id, true).await,
            None => return Err(e.into()),
        },
    };
    audit::record(
        &state.db,
        now,
        &api.actor,
        Event::new("message.send", format!("outbound:{id}")).detail("api"),
    )
    .await?;
    state.wake_sender.notify_one();
    queued(&state, id, false).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ListQuery {
    mailbox: Option<String>,
    folder: Option<String>,
    before: Option<i64>,
}

async fn list(
    State(state): State<AppState>,
    api: ApiUser,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let mailbox = mailbox_of(&state, &api.user, q.mailbox.as_deref()).await?;
    let folder = q.folder.unwrap_or_else(|| "inbox".into());
    let mut rows = inbound::page(&state.db, mailbox.id, &folder, q.before, PAGE + 1).await?;
    let next = if rows.len() as i64 > PAGE {
        rows.truncate(PAGE as usize);
        rows.last().map(|r| r.id)
    } else {
        None
    };
    let items: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.id, "from": r.from_addr, "subject": r.listed_subject(),
                "restriction": r.restriction.map(Law::as_str),
                "received_at": format_rfc3339(r.received_at), "read": r.is_read,
                "trust": { "code": r.trust_code, "sentence": r.trust_sentence },
            })
        })
        .collect();
    Ok(Json(
        json!({ "mailbox": mailbox.address, "folder": folder, "messages": items, "next_before": next }),
    ))
}

/// The message, if it is in one of the user's mailboxes.
async fn own_message(state: &AppState, user: &User, id: i64) -> ApiResult<inbound::StoredMessage> {
    let message = inbound::message(&state.db, id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let allowed = mailboxes::of_user(&state.db, user.id)
        .await?
        .iter()
        .any(|m| m.id == message.row.mailbox_id);
    if allowed {
        Ok(message)
    } else {
        Err(ApiError::not_found())
    }
}

async fn detail(
    State(state): State<AppState>,
    api: ApiUser,
    Path(id): Path<i64>,
) -> ApiResult<Json<Value>> {
    let message = own_message(&state, &api.user, id).await?;
    let parsed = MessageParser::default().parse(&message.raw);
    let addresses = |a: Option<&mail_parser::Address<'_>>| -> Vec<String> {
        a.map(|a| {
            a.iter()
                .filter_map(|x| x.address())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
    };
    let (to, cc, text, attachments) = match &parsed {
        Some(p) => (
            addresses(p.to()),
            addresses(p.cc()),
            crate::filing::text_of(p),
            p.attachments()
                .enumerate()
                .map(|(n, a)| {
                    json!({
                        "index": n,
                        "name": a.attachment_name().unwrap_or("attachment"),
                        "content_type": super::message::content_type_of(a),
                        "size": a.contents().len(),
                    })
                })
                .collect::<Vec<_>>(),
        ),
        None => (Vec::new(), Vec::new(), String::new(), Vec::new()),
    };
    let delivery = match message.outbound_id {
        Some(oid) => outbound_store::statuses(&state.db, oid)
            .await?
            .into_iter()
            .map(|(r, s, d)| json!({ "recipient": r, "status": s, "detail": d }))
            .collect(),
        None => Vec::new(),
    };
    record_reading(&state, &api.actor, id, Reading::Message, Via::Api).await?;
    let r = &message.row;
    Ok(Json(json!({
        "id": r.id, "folder": message.folder, "from": r.from_addr, "to": to, "cc": cc,
        "subject": r.subject, "received_at": format_rfc3339(r.received_at),
        "restriction": r.restriction.map(Law::as_str),
        "text": text, "attachments": attachments,
        "trust": {
            "code": r.trust_code, "sentence": r.trust_sentence,
            "signer_subject": r.signer_subject, "signer_issuer": message.signer_issuer,
            "revocation": r.revocation,
        },
        "delivery": delivery,
    })))
}

async fn attachment(
    State(state): State<AppState>,
    api: ApiUser,
    ClientIp(_ip): ClientIp,
    Path((id, n)): Path<(i64, usize)>,
    Query(purpose): Query<super::purpose::PurposeForm>,
) -> ApiResult<Response> {
    let message = own_message(&state, &api.user, id).await?;
    // a restricted record's file is released for a stated purpose, audited with its
    // label, as in the webmail
    if let Some(law) = message.row.restriction {
        match purpose.stated() {
            Ok(stated) => {
                super::purpose::audit_access(
                    &state,
                    &api.actor,
                    id,
                    law,
                    &format!("download attachment {n} (API)"),
                    &stated,
                )
                .await?;
            }
            Err(why) => {
                return Err(ApiError::new(
                    StatusCode::PRECONDITION_REQUIRED,
                    "purpose_required",
                    format!(
                        "Message {id} is a restricted record ({}). {}Say why with purpose=treatment, payment, operations, consent, or other with purpose_other.",
                        law.words(),
                        if why.is_empty() {
                            String::new()
                        } else {
                            format!("{why} ")
                        }
                    ),
                ));
            }
        }
    }
    let parsed = MessageParser::default()
        .parse(&message.raw)
        .ok_or_else(ApiError::not_found)?;
    let part = parsed.attachments().nth(n).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_such_attachment",
            format!("Message {id} has no attachment {n}."),
        )
    })?;
    let name = super::message::header_filename(part.attachment_name().unwrap_or("attachment"));
    let content_type = super::message::content_type_of(part);
    record_reading(
        &state,
        &api.actor,
        id,
        Reading::AttachmentDownload(n),
        Via::Api,
    )
    .await?;
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        part.contents().to_vec(),
    )
        .into_response())
}

async fn openapi() -> Json<Value> {
    Json(openapi_document())
}

/// The OpenAPI 3.1 description of every route in [`ROUTES`].
pub fn openapi_document() -> Value {
    let error = json!({ "$ref": "#/components/schemas/Error" });
    let errors = json!({
        "400": { "description": "Bad input", "content": { "application/json": { "schema": error } } },
        "401": { "description": "No valid token (`unauthorized`), or an expired one (`token_expired`)", "content": { "application/json": { "schema": error } } },
        "404": { "description": "Not in your mailboxes", "content": { "application/json": { "schema": error } } },
    });
    json!({
        "openapi": "3.1.0",
        "info": { "title": "directmail API", "version": "1", "description": "Send and read Direct messages for EHRs (Integrated Direct). Authenticate with `Authorization: Bearer <token>`; tokens are created under My account or with `directmail admin token create`." },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": { "type": "object", "required": ["code", "message"], "properties": { "code": { "type": "string" }, "message": { "type": "string" } } },
                "Webhook": { "type": "object", "required": ["id", "url", "events", "created_at"], "properties": {
                    "id": { "type": "integer" }, "url": { "type": "string" },
                    "events": { "type": "array", "items": { "type": "string", "enum": ["message.received", "message.status"] } },
                    "created_at": { "type": "string", "format": "date-time" }
                } },
                "Event": { "type": "object", "required": ["id", "type", "occurred_at", "mailbox", "message_id"], "description": "Ids and a status only: no subject, no correspondent's or patient's address, no text, no file name. Read the message with GET /api/v1/messages/{message_id}", "properties": {
                    "id": { "type": "string", "description": "`evt_<n>`; the same on retries and replays: deduplicate on it" },
                    "type": { "type": "string", "enum": ["message.received", "message.status"] },
                    "occurred_at": { "type": "string", "format": "date-time" },
                    "mailbox": { "type": "string", "description": "Your mailbox the event is about" },
                    "message_id": { "type": ["integer", "null"], "description": "The message in that mailbox (the Inbox copy, or the Sent copy)" },
                    "outbound_id": { "type": "integer", "description": "message.status: the `outbound_id` POST /api/v1/messages returned" },
                    "status": { "type": "string", "enum": ["sent", "processed", "dispatched", "failed"], "description": "message.status: the new status of one recipient" }
                } }
            }
        },
        "security": [{ "bearer": [] }],
        "paths": {
            "/api/v1/messages": {
                "post": {
                    "summary": "Send a message (signed and encrypted per recipient domain)",
                    "parameters": [
                        { "name": "Idempotency-Key", "in": "header", "required": false, "schema": { "type": "string", "minLength": 1, "maxLength": 255 }, "description": "A key of yours for this message (a UUID): a repeat of the request with the same key, from the same mailbox, sends nothing more and answers with the message first queued (header `Idempotent-Replayed: true`). Send one, and repeat a request whose answer was lost with it" }
                    ],
                    "requestBody": { "content": { "multipart/form-data": { "schema": { "type": "object", "required": ["to"], "properties": {
                        "to": { "type": "array", "items": { "type": "string", "format": "email" } },
                        "cc": { "type": "array", "items": { "type": "string", "format": "email" } },
                        "subject": { "type": "string" }, "text": { "type": "string" },
                        "mailbox": { "type": "string", "format": "email", "description": "Send from this mailbox of yours (default: your first)" },
                        "attachment": { "type": "array", "items": { "type": "string", "format": "binary" } }
                    } } } } },
                    "responses": { "202": { "description": "Queued (or queued earlier under the same Idempotency-Key); `id` is the Sent copy" }, "400": errors["400"], "401": errors["401"], "413": { "description": "Too large" } }
                },
                "get": {
                    "summary": "List a folder of one of your mailboxes, newest first",
                    "parameters": [
                        { "name": "mailbox", "in": "query", "schema": { "type": "string" } },
                        { "name": "folder", "in": "query", "schema": { "type": "string", "default": "inbox" } },
                        { "name": "before", "in": "query", "schema": { "type": "integer" }, "description": "next_before of the previous page" }
                    ],
                    "responses": { "200": { "description": "A page of messages" }, "401": errors["401"], "404": errors["404"] }
                }
            },
            "/api/v1/messages/{id}": {
                "get": {
                    "summary": "Headers, text, attachments, trust verdict and per-recipient delivery status",
                    "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "integer" } }],
                    "responses": { "200": { "description": "The message" }, "401": errors["401"], "404": errors["404"] }
                }
            },
            "/api/v1/messages/{id}/attachments/{n}": {
                "get": {
                    "summary": "One attachment's content",
                    "parameters": [
                        { "name": "id", "in": "path", "required": true, "schema": { "type": "integer" } },
                        { "name": "n", "in": "path", "required": true, "schema": { "type": "integer" } },
                        { "name": "purpose", "in": "query", "required": false, "description": "Required for a restricted record (the message's `restriction` is set): treatment, payment, operations, consent or other; audited with the record's label", "schema": { "type": "string", "enum": ["treatment", "payment", "operations", "consent", "other"] } },
                        { "name": "purpose_other", "in": "query", "required": false, "description": "The purpose in your words, with purpose=other (at most 200 characters)", "schema": { "type": "string" } }
                    ],
                    "responses": { "200": { "description": "The file" }, "401": errors["401"], "404": errors["404"], "428": { "description": "A restricted record: say why (`purpose_required`)", "content": { "application/json": { "schema": error } } } }
                }
            },
            "/api/v1/webhooks": {
                "post": {
                    "summary": "Register an HTTPS URL to receive signed events for this token: new messages in your mailboxes and delivery-status changes of messages you sent (ids and a status, never content). The secret is shown only in this answer; see docs/integration.md, \"Webhooks\", for verifying the signature",
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["url"], "additionalProperties": false, "properties": {
                        "url": { "type": "string", "format": "uri", "maxLength": 2000, "description": "https:// only; no user name or password, no #fragment; a public address unless the portal's operator allows the network. Redirects are never followed" }
                    } } } } },
                    "responses": {
                        "201": { "description": "Registered", "content": { "application/json": { "schema": { "allOf": [{ "$ref": "#/components/schemas/Webhook" }, { "type": "object", "required": ["secret"], "properties": { "secret": { "type": "string", "description": "The HMAC-SHA256 key (`whsec_…`), shown only now" } } }] } } } },
                        "400": errors["400"], "401": errors["401"],
                        "409": { "description": "The token has 5 webhooks already (`too_many_webhooks`)", "content": { "application/json": { "schema": error } } },
                        "413": { "description": "Too large" }
                    },
                    "callbacks": { "event": { "{$request.body#/url}": { "post": {
                        "summary": "An event, signed: `Directmail-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of \"<t>.<body>\">`; also `Directmail-Event` and `Directmail-Event-Id`",
                        "requestBody": { "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Event" } } } },
                        "responses": { "2XX": { "description": "Taken; any other answer (or none within the timeout) is retried with backoff" } }
                    } } } }
                },
                "get": {
                    "summary": "This token's webhooks",
                    "responses": { "200": { "description": "`{\"webhooks\": [Webhook]}`" }, "401": errors["401"] }
                }
            },
            "/api/v1/webhooks/{id}": {
                "delete": {
                    "summary": "Delete one of this token's webhooks (and its pending events)",
                    "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "integer" } }],
                    "responses": { "204": { "description": "Deleted" }, "401": errors["401"], "404": errors["404"] }
                }
            },
            "/api/v1/openapi.json": {
                "get": { "summary": "This document", "security": [], "responses": { "200": { "description": "OpenAPI 3.1" } } }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_described_in_the_openapi_document() {
        let doc = openapi_document();
        for (method, path) in ROUTES {
            assert!(
                doc["paths"][path][method].is_object(),
                "{method} {path} is not described"
            );
        }
        let described: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum();
        assert_eq!(
            described,
            ROUTES.len(),
            "the document describes routes the router does not have"
        );
    }
}
