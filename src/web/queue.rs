//! The operator's view of the delivery queue: what is waiting (and when it is tried
//! next, with the last error), what failed and why; retry and discard. Message
//! content and subjects are not shown here.

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
use crate::store::alerts::TroubleRow as AlertTrouble;
use crate::store::outbound::{self, QueueRow};

const PAGE: i64 = 50;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/queue", get(list))
        .route("/queue/{id}/retry", post(retry))
        .route("/queue/{id}/discard", post(discard))
}

pub struct Row {
    pub row: QueueRow,
    pub next: String,
    pub updated: String,
    /// When it was queued, and when it was last tried ("" before the first attempt).
    pub queued: String,
    pub last_attempt: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "operator/queue.html")]
struct QueuePage {
    chrome: Chrome,
    state: String,
    rows: Vec<Row>,
    next_before: String,
    /// Alert e-mails (`crate::alerts`) that failed at least once: (row, kind in
    /// words, next attempt or when given up).
    alerts: Vec<(AlertTrouble, &'static str, String)>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct QueueQuery {
    state: String,
    before: String,
}

async fn list(
    State(state): State<AppState>,
    current: CurrentUser,
    Query(q): Query<QueueQuery>,
) -> AppResult<QueuePage> {
    current.require_operator()?;
    let filter = match q.state.as_str() {
        "failed" => "failed",
        "sent" => "sent",
        _ => "pending",
    };
    let rows = outbound::queue(&state.db, filter, q.before.trim().parse().ok(), PAGE + 1).await?;
    let (rows, next_before) = super::paginate(rows, PAGE, |r| r.id.to_string());
    let alerts = crate::store::alerts::troubles(&state.db, PAGE)
        .await?
        .into_iter()
        .map(|t| {
            let when = if t.state != "failed" {
                format_utc(t.next_attempt_at)
            } else {
                format_utc(t.updated_at)
            };
            let kind = crate::alerts::Kind::label(&t.kind);
            (t, kind, when)
        })
        .collect();
    Ok(QueuePage {
        alerts,
        chrome: current.chrome,
        state: filter.to_owned(),
        rows: rows
            .into_iter()
            .map(|row| Row {
                next: if row.state == "queued" {
                    format_utc(row.next_attempt_at)
                } else {
                    String::new()
                },
                updated: format_utc(row.updated_at),
                queued: format_utc(row.created_at),
                last_attempt: if row.attempts > 0 {
                    format_utc(row.updated_at)
                } else {
                    String::new()
                },
                row,
            })
            .collect(),
        next_before,
    })
}

async fn retry(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(id): Path<i64>,
) -> AppResult<Response> {
    current.require_operator()?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    if !outbound::retry_now(&mut tx, id, now).await? {
        return Err(AppError::NotFound);
    }
    let done = finish_action(
        tx,
        &state,
        &current,
        ip,
        Event::new("queue.retry", format!("queue:{id}")),
        format!("Queue entry {id} will be tried again now."),
        "/queue",
    )
    .await?;
    state.wake_sender.notify_one();
    Ok(done)
}

async fn discard(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(id): Path<i64>,
) -> AppResult<Response> {
    current.require_operator()?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    if !outbound::discard(&mut tx, id, now).await? {
        return Err(AppError::NotFound);
    }
    finish_action(
        tx,
        &state,
        &current,
        ip,
        Event::new("queue.discard", format!("queue:{id}")),
        format!("Queue entry {id} was discarded; its senders were told."),
        "/queue",
    )
    .await
}
