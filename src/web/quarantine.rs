//! The operator's view of received messages that were not delivered, with retry and
//! discard. Message content is never shown here: only envelope facts and the reason.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;

use super::session::{Chrome, CurrentUser};
use super::{AppError, AppResult, AppState, ClientIp, finish_action};
use crate::audit::Event;
use crate::clock::format_utc;
use crate::store::inbound::{self, InboundRow};

const PAGE: i64 = 50;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/quarantine", get(list))
        .route("/quarantine/{id}", get(detail))
        .route("/quarantine/{id}/retry", post(retry))
        .route("/quarantine/{id}/discard", post(discard))
}

pub struct Row {
    pub row: InboundRow,
    pub when: String,
    pub code: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "operator/quarantine.html")]
struct ListPage {
    chrome: Chrome,
    rows: Vec<Row>,
    next_before: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ListQuery {
    before: String,
}

async fn list(
    State(state): State<AppState>,
    current: CurrentUser,
    Query(q): Query<ListQuery>,
) -> AppResult<ListPage> {
    current.require_operator()?;
    let rows = inbound::list(
        &state.db,
        "quarantined",
        q.before.trim().parse().ok(),
        PAGE + 1,
    )
    .await?;
    let (rows, next_before) = super::paginate(rows, PAGE, |r| r.id.to_string());
    Ok(ListPage {
        chrome: current.chrome,
        rows: rows
            .into_iter()
            .map(|row| Row {
                when: format_utc(row.received_at),
                code: row.verdict.clone().unwrap_or_default(),
                row,
            })
            .collect(),
        next_before,
    })
}

#[derive(Template, WebTemplate)]
#[template(path = "operator/quarantined.html")]
struct DetailPage {
    chrome: Chrome,
    row: InboundRow,
    when: String,
    code: String,
    detail: String,
    steps: Vec<String>,
}

async fn detail(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<i64>,
) -> AppResult<DetailPage> {
    current.require_operator()?;
    let row = inbound::get(&state.db, id)
        .await?
        .ok_or(AppError::NotFound)?;
    Ok(DetailPage {
        chrome: current.chrome,
        when: format_utc(row.received_at),
        code: row.verdict.clone().unwrap_or_default(),
        detail: row.detail.clone().unwrap_or_default(),
        steps: row
            .steps
            .as_deref()
            .unwrap_or("")
            .lines()
            .map(str::to_owned)
            .collect(),
        row,
    })
}

async fn retry(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(id): Path<i64>,
) -> AppResult<Response> {
    current.require_operator()?;
    let mut tx = state.db.begin().await?;
    if !inbound::requeue(&mut tx, id).await? {
        return Err(AppError::NotFound);
    }
    let done = finish_action(
        tx,
        &state,
        &current,
        ip,
        Event::new("quarantine.retry", format!("inbound:{id}")),
        format!("Message {id} will be processed again now."),
        "/quarantine",
    )
    .await?;
    state.wake_processor.notify_one();
    Ok(done)
}

async fn discard(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(id): Path<i64>,
) -> AppResult<Response> {
    current.require_operator()?;
    let mut tx = state.db.begin().await?;
    if !inbound::discard(&mut tx, id).await? {
        return Err(AppError::NotFound);
    }
    finish_action(
        tx,
        &state,
        &current,
        ip,
        Event::new("quarantine.discard", format!("inbound:{id}")),
        format!("Message {id} was discarded; its content is erased."),
        "/quarantine",
    )
    .await
}
