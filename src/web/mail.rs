//! The mailbox pages: a switcher between the user's mailboxes, folders (Inbox,
//! Drafts, Sent, Archive, Trash and those users create) with unread counts, the
//! message list (newest first, keyset paged, polled for new mail), actions on one or
//! many messages with undo, and search. Only mailboxes assigned to the user.

use std::collections::HashMap;

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, Query, RawForm, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use sqlx::AnyConnection;

use super::session::{Chrome, CurrentUser, flash};
use super::{AppError, AppResult, AppState, ClientIp};
use crate::audit::{self, Event};
use crate::clock::format_utc;
use crate::directory;
use crate::store::drafts;
use crate::store::inbound::{self, MessageRow};
use crate::store::mailboxes::{self, Mailbox, MailboxKind};
use crate::store::messages::{self as store, Before, SYSTEM_FOLDERS, Search};

pub const PAGE: i64 = 50;
const KEY_UNDO: &str = "mail.undo";

pub fn routes(config: &crate::config::Config) -> Router<AppState> {
    Router::new()
        .route("/mail", get(first_mailbox))
        .route("/mail/{mailbox}/search", get(search))
        .route("/mail/{mailbox}/act", post(act))
        .route("/mail/{mailbox}/undo", post(undo))
        .route("/mail/{mailbox}/folders", post(create_folder))
        .route(
            "/mail/{mailbox}/folders/{folder}/delete",
            post(delete_folder),
        )
        .route("/mail/{mailbox}/trash/empty", post(empty_trash))
        .route("/mail/{mailbox}/{folder}", get(folder))
        .route("/mail/{mailbox}/{folder}/new", get(new_rows))
        .merge(super::message::routes())
        .merge(super::clinical::routes())
        .merge(super::compose::routes(config))
        .merge(super::requests::routes())
}

/// One of the user's mailboxes, or 404.
pub async fn own_mailbox(state: &AppState, current: &CurrentUser, id: i64) -> AppResult<Mailbox> {
    mailboxes::of_user(&state.db, current.user.id)
        .await?
        .into_iter()
        .find(|m| m.id == id)
        .ok_or(AppError::NotFound)
}

async fn first_mailbox(State(state): State<AppState>, current: CurrentUser) -> AppResult<Response> {
    let boxes = mailboxes::of_user(&state.db, current.user.id).await?;
    Ok(match boxes.first() {
        Some(m) => Redirect::to(&format!("/mail/{}/inbox", m.id)).into_response(),
        None => Redirect::to("/").into_response(),
    })
}

/// The trust badge in words (never colour alone).
pub fn badge(row: &MessageRow) -> String {
    match row.trust_code.as_str() {
        "trusted" if row.test_anchor => "Trusted, test certificate".into(),
        "trusted" => "Trusted".into(),
        "sent" => "Sent by you".into(),
        "notice" => "Notice".into(),
        "retrieved" => "Retrieved (FHIR)".into(),
        other => format!("Not trusted ({})", other.replace('_', " ")),
    }
}

/// A row of the message list.
pub struct Row {
    pub row: MessageRow,
    /// The sender's name, or their address.
    pub who: String,
    /// The sender as the From header gives them: "Name <address>" (a tooltip).
    pub who_detail: String,
    pub when: String,
    /// The same time in ISO 8601, for the browser to show in its time zone.
    pub iso: String,
    pub badge: String,
    /// On Sent: "All 3 delivered", "Failed for 1 of 3" (`messages::outcome`).
    pub delivery: String,
    /// The folder it is in, in words: shown in search results, which span folders.
    pub folder: String,
}

/// A folder in the sidebar.
pub struct FolderLink {
    pub key: String,
    pub label: String,
    pub unread: i64,
    pub custom: bool,
}

/// A mailbox in the switcher, with its Inbox's unread count.
pub struct MailboxLink {
    pub mailbox: Mailbox,
    pub unread: i64,
}

/// What every mailbox page shows around its content.
pub struct Frame {
    pub mailbox: Mailbox,
    pub mailboxes: Vec<MailboxLink>,
    pub folders: Vec<FolderLink>,
    pub shared: bool,
}

impl Frame {
    /// Counts one message of `folder` as read: the page that has just opened it was
    /// framed before it was marked.
    pub fn count_read(&mut self, folder: &str) {
        let open = self.mailbox.id;
        let folders = self.folders.iter_mut().filter(|f| f.key == folder);
        let inbox = self
            .mailboxes
            .iter_mut()
            .filter(|m| folder == "inbox" && m.mailbox.id == open);
        for n in folders
            .map(|f| &mut f.unread)
            .chain(inbox.map(|m| &mut m.unread))
        {
            *n = (*n - 1).max(0);
        }
    }

    /// The label of one of this mailbox's folders, or 404.
    pub fn folder_label(&self, key: &str) -> AppResult<String> {
        self.folders
            .iter()
            .find(|f| f.key == key)
            .map(|f| f.label.clone())
            .ok_or(AppError::NotFound)
    }
}

/// The sidebar around one of the user's mailboxes, or 404 when it is not theirs.
pub async fn frame(state: &AppState, current: &CurrentUser, mailbox_id: i64) -> AppResult<Frame> {
    frame_on(&mut *state.db.pool.acquire().await?, current, mailbox_id).await
}

/// [`frame`] on a connection the page holds for its other reads too. (A page holding
/// one must not ask the pool for another before it lets it go: pages waiting for a
/// second connection while holding the first could take them all.)
pub async fn frame_on(
    conn: &mut AnyConnection,
    current: &CurrentUser,
    mailbox_id: i64,
) -> AppResult<Frame> {
    let boxes = mailboxes::of_user(&mut *conn, current.user.id).await?;
    let mailbox = boxes
        .iter()
        .find(|m| m.id == mailbox_id)
        .cloned()
        .ok_or(AppError::NotFound)?;
    let counts = store::sidebar(&mut *conn, current.user.id, mailbox.id).await?;
    let unread = |m: i64, folder: &str| {
        counts
            .unread
            .get(&(m, folder.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    let mailboxes = boxes
        .into_iter()
        .map(|m| MailboxLink {
            unread: unread(m.id, "inbox"),
            mailbox: m,
        })
        .collect();
    let mut folders: Vec<FolderLink> = SYSTEM_FOLDERS
        .iter()
        .map(|(k, l)| FolderLink {
            key: (*k).to_owned(),
            label: (*l).to_owned(),
            unread: if *k == "drafts" {
                counts.drafts
            } else {
                unread(mailbox.id, k)
            },
            custom: false,
        })
        .collect();
    for (key, label) in &counts.folders {
        folders.push(FolderLink {
            unread: unread(mailbox.id, key),
            key: key.clone(),
            label: label.clone(),
            custom: true,
        });
    }
    Ok(Frame {
        shared: mailbox.kind == MailboxKind::Shared,
        mailbox,
        mailboxes,
        folders,
    })
}

/// List rows with names, dates, badges and (for Sent) delivery summaries. The
/// sender's name is the shared directory's when it knows the address, else the one
/// in the From header, else the address.
pub async fn rows(state: &AppState, list: Vec<MessageRow>) -> AppResult<Vec<Row>> {
    let outbound: Vec<i64> = list.iter().filter_map(|r| r.outbound_id).collect();
    let summaries = store::delivery_summaries(&state.db, &outbound).await?;
    let senders: Vec<&str> = list.iter().map(|r| r.from_addr.as_str()).collect();
    let names = directory::names_for(&state.db, &senders).await?;
    Ok(list
        .into_iter()
        .map(|row| Row {
            who: match names.get(&row.from_addr.to_ascii_lowercase()) {
                Some(name) => name.clone(),
                None if row.from_name.is_empty() => row.from_addr.clone(),
                None => row.from_name.clone(),
            },
            who_detail: if row.from_name.is_empty() {
                row.from_addr.clone()
            } else {
                format!("{} <{}>", row.from_name, row.from_addr)
            },
            when: format_utc(row.received_at),
            iso: crate::clock::format_rfc3339(row.received_at),
            badge: badge(&row),
            delivery: row
                .outbound_id
                .and_then(|id| summaries.get(&id).cloned())
                .unwrap_or_default(),
            folder: String::new(),
            row,
        })
        .collect())
}

#[derive(Template, WebTemplate)]
#[template(path = "mail/folder.html")]
struct FolderPage {
    chrome: Chrome,
    frame: Frame,
    folder: String,
    folder_label: String,
    rows: Vec<Row>,
    /// Drafts, when the folder is Drafts: (id, recipients, subject, when).
    drafts: Vec<(i64, String, String, String)>,
    next_before: String,
    /// The newest id on the first page, for polling; empty on later pages.
    newest: String,
    search: Search,
    searching: bool,
    undo: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct PageQuery {
    before: String,
}

/// The last action to undo, shown where it happened: on the folder its messages were
/// in (or the search results they were picked from), not on every page of the mailbox.
async fn undo_label(current: &CurrentUser, mailbox_id: i64, folder: &str) -> AppResult<String> {
    Ok(current
        .session
        .get::<Undo>(KEY_UNDO)
        .await?
        .filter(|u| u.mailbox_id == mailbox_id)
        .filter(|u| folder == "search" || u.before.iter().any(|b| b.folder == folder))
        .map(|u| u.label)
        .unwrap_or_default())
}

async fn folder(
    State(state): State<AppState>,
    current: CurrentUser,
    Path((mailbox_id, folder)): Path<(i64, String)>,
    Query(q): Query<PageQuery>,
) -> AppResult<FolderPage> {
    let mut conn = state.db.pool.acquire().await?;
    let frame = frame_on(&mut conn, &current, mailbox_id).await?;
    let label = frame.folder_label(&folder)?;
    let mailbox = &frame.mailbox;
    let (rows, drafts_out, next_before, newest) = if folder == "drafts" {
        drop(conn);
        let before = q
            .before
            .split_once('.')
            .and_then(|(t, id)| Some((t.parse::<i64>().ok()?, id.parse::<i64>().ok()?)));
        let list = drafts::list(&state.db, mailbox.id, current.user.id, before, PAGE + 1).await?;
        let (list, next) = super::paginate(list, PAGE, |d| format!("{}.{}", d.updated_at, d.id));
        let out = list
            .into_iter()
            .map(|d| {
                let to = [d.to.as_str(), d.cc.as_str()]
                    .into_iter()
                    .filter(|s| !s.trim().is_empty())
                    .collect::<Vec<_>>()
                    .join(", ");
                (d.id, to, d.subject, format_utc(d.updated_at))
            })
            .collect();
        (Vec::new(), out, next, String::new())
    } else {
        let before = q.before.trim().parse().ok();
        let list = inbound::page(&mut *conn, mailbox.id, &folder, before, PAGE + 1).await?;
        drop(conn);
        let (list, next) = super::paginate(list, PAGE, |r| r.id.to_string());
        let newest = match before {
            None => list.first().map(|r| r.id).unwrap_or(0).to_string(),
            Some(_) => String::new(),
        };
        (rows(&state, list).await?, Vec::new(), next, newest)
    };
    Ok(FolderPage {
        undo: undo_label(&current, mailbox_id, &folder).await?,
        frame,
        chrome: current.chrome,
        folder,
        folder_label: label,
        rows,
        drafts: drafts_out,
        next_before,
        newest,
        search: Search::default(),
        searching: false,
    })
}

#[derive(Template, WebTemplate)]
#[template(path = "mail/new_rows.html")]
struct NewRows {
    mailbox_id: i64,
    folder: String,
    rows: Vec<Row>,
    /// Always false: polling brings new rows to a folder, never to search results.
    searching: bool,
    newest: i64,
    /// (folder key, unread) for every folder, swapped into the sidebar.
    unread: Vec<(String, i64)>,
}

#[derive(Deserialize)]
struct After {
    after: i64,
}

/// Messages newer than `after` on a folder's first page (polled by htmx), with the
/// sidebar's unread counts.
async fn new_rows(
    State(state): State<AppState>,
    current: CurrentUser,
    Path((mailbox_id, folder)): Path<(i64, String)>,
    Query(q): Query<After>,
) -> AppResult<NewRows> {
    let frame = frame(&state, &current, mailbox_id).await?;
    frame.folder_label(&folder)?;
    let list = store::newer(&state.db, mailbox_id, &folder, q.after, PAGE).await?;
    let newest = list.first().map(|r| r.id).unwrap_or(q.after);
    Ok(NewRows {
        mailbox_id,
        folder,
        rows: rows(&state, list).await?,
        searching: false,
        newest,
        unread: frame
            .folders
            .into_iter()
            .map(|f| (f.key, f.unread))
            .collect(),
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SearchQuery {
    #[serde(flatten)]
    search: Search,
    page: String,
}

async fn search(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(mailbox_id): Path<i64>,
    Query(q): Query<SearchQuery>,
) -> AppResult<FolderPage> {
    let frame = frame(&state, &current, mailbox_id).await?;
    let mut s = q.search;
    if !s.folder.is_empty() && frame.folder_label(&s.folder).is_err() {
        s.folder.clear();
    }
    let (list, next) = if s.is_empty() {
        (Vec::new(), String::new())
    } else {
        let list = store::search(
            &state.db,
            mailbox_id,
            &s,
            q.page.trim().parse().ok(),
            PAGE + 1,
        )
        .await?;
        super::paginate(list, PAGE, |r| r.id.to_string())
    };
    let mut rows = rows(&state, list).await?;
    for r in &mut rows {
        r.folder = frame
            .folders
            .iter()
            .find(|f| f.key == r.row.folder)
            .map(|f| f.label.clone())
            .unwrap_or_else(|| r.row.folder.clone());
    }
    Ok(FolderPage {
        undo: undo_label(&current, mailbox_id, "search").await?,
        frame,
        chrome: current.chrome,
        folder: "search".into(),
        folder_label: "Search".into(),
        rows,
        drafts: Vec::new(),
        next_before: next,
        newest: String::new(),
        search: s,
        searching: true,
    })
}

/// The last action on a mailbox's messages, to undo.
#[derive(serde::Serialize, Deserialize)]
struct Undo {
    mailbox_id: i64,
    label: String,
    before: Vec<Before>,
}

/// The `id` fields and the others of a list form (repeated keys, so not `Form`).
struct ListForm {
    ids: Vec<i64>,
    fields: HashMap<String, String>,
}

impl ListForm {
    fn parse(raw: &[u8]) -> ListForm {
        let mut ids = Vec::new();
        let mut fields = HashMap::new();
        for (k, v) in url::form_urlencoded::parse(raw) {
            if k == "id" {
                if let Ok(id) = v.parse() {
                    ids.push(id);
                }
            } else {
                fields.insert(k.into_owned(), v.into_owned());
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ListForm { ids, fields }
    }

    fn get(&self, key: &str) -> &str {
        self.fields.get(key).map(String::as_str).unwrap_or_default()
    }

    /// Where to go back to: the page the form was on, if it is a mail page.
    fn back(&self, mailbox_id: i64) -> String {
        let back = super::auth::safe_next(self.get("back"));
        if back.starts_with("/mail/") {
            back
        } else {
            format!("/mail/{mailbox_id}/inbox")
        }
    }
}

fn messages_word(n: u64) -> String {
    if n == 1 {
        "1 message".into()
    } else {
        format!("{n} messages")
    }
}

/// Applies one action to the selected messages: read, unread, archive, trash,
/// move (to `folder`), or delete for good (from Trash only).
pub async fn apply_action(
    state: &AppState,
    current: &CurrentUser,
    ip: String,
    mailbox: &Mailbox,
    ids: &[i64],
    action: &str,
    target: &str,
) -> AppResult<String> {
    if ids.is_empty() {
        return Ok("Select one or more messages first.".into());
    }
    let target_label = match action {
        "archive" => "Archive".to_owned(),
        "trash" => "Trash".to_owned(),
        "move" => match store::folder_label(&state.db, mailbox.id, target).await? {
            Some(l) if !matches!(target, "drafts" | "sent") => l,
            _ => return Ok("Choose a folder to move the messages to.".into()),
        },
        "read" | "unread" | "delete" => String::new(),
        _ => return Err(AppError::BadRequest("That action is not known.".into())),
    };
    let now = state.clock.now();
    let _turn = state.db.write_turn().await;
    let mut tx = state.db.begin().await?;
    let before = store::places(&mut tx, mailbox.id, ids).await?;
    let ids: Vec<i64> = before.iter().map(|b| b.id).collect();
    let (n, label, undoable) = match action {
        "read" | "unread" => {
            let n = store::set_read(&mut tx, mailbox.id, &ids, action == "read").await?;
            (n, format!("{} marked {action}.", messages_word(n)), true)
        }
        "delete" => {
            let in_trash: Vec<i64> = before
                .iter()
                .filter(|b| b.folder == "trash")
                .map(|b| b.id)
                .collect();
            let n = store::delete(&mut tx, mailbox.id, &in_trash).await?;
            (n, format!("{} deleted for good.", messages_word(n)), false)
        }
        _ => {
            let key = match action {
                "archive" => "archive",
                "trash" => "trash",
                _ => target,
            };
            let n = store::move_to(&mut tx, mailbox.id, &ids, key, now).await?;
            for id in &ids {
                store::record_activity(
                    &mut tx,
                    *id,
                    current.user.id,
                    &current.user.display_name,
                    "move",
                    now,
                )
                .await?;
            }
            (
                n,
                format!("{} moved to {target_label}.", messages_word(n)),
                true,
            )
        }
    };
    audit::append(
        &mut tx,
        now,
        &current.actor(ip),
        Event::new(
            &format!("message.{action}"),
            format!("mailbox:{}", mailbox.id),
        )
        .detail(
            ids.iter()
                .map(|i| format!("message:{i}"))
                .collect::<Vec<_>>()
                .join(" "),
        ),
    )
    .await?;
    tx.commit().await?;
    if undoable && n > 0 {
        current
            .session
            .insert(
                KEY_UNDO,
                Undo {
                    mailbox_id: mailbox.id,
                    label: label.clone(),
                    before,
                },
            )
            .await?;
    } else {
        current.session.remove::<Undo>(KEY_UNDO).await?;
    }
    Ok(label)
}

async fn act(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    chrome: Chrome,
    Path(mailbox_id): Path<i64>,
    RawForm(raw): RawForm,
) -> AppResult<Response> {
    let mailbox = own_mailbox(&state, &current, mailbox_id).await?;
    let form = ListForm::parse(&raw);
    if form.get("action") == "delete" && form.get("confirmed") != "yes" {
        let in_trash = {
            let mut conn = state.db.pool.acquire().await?;
            store::places(&mut conn, mailbox.id, &form.ids)
                .await?
                .into_iter()
                .filter(|p| p.folder == "trash")
                .count()
        };
        if in_trash > 0 {
            let mut fields: Vec<(String, String)> = form
                .ids
                .iter()
                .map(|id| ("id".to_owned(), id.to_string()))
                .collect();
            fields.push(("action".into(), "delete".into()));
            fields.push(("back".into(), form.back(mailbox.id)));
            return Ok(ConfirmPage::deletion(
                chrome,
                &mailbox,
                in_trash as u64,
                format!("/mail/{}/act", mailbox.id),
                fields,
                form.back(mailbox.id),
            )
            .into_response());
        }
    }
    let message = apply_action(
        &state,
        &current,
        ip,
        &mailbox,
        &form.ids,
        form.get("action"),
        form.get("folder"),
    )
    .await?;
    flash(&current.session, message).await?;
    Ok(Redirect::to(&form.back(mailbox.id)).into_response())
}

async fn undo(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(mailbox_id): Path<i64>,
    RawForm(raw): RawForm,
) -> AppResult<Response> {
    let mailbox = own_mailbox(&state, &current, mailbox_id).await?;
    let form = ListForm::parse(&raw);
    let message = match current.session.remove::<Undo>(KEY_UNDO).await? {
        Some(mut u) if u.mailbox_id == mailbox.id => {
            // a folder deleted since sent its messages to the Inbox; so does undo,
            // rather than into a folder no page lists any more
            for b in &mut u.before {
                if store::folder_label(&state.db, mailbox.id, &b.folder)
                    .await?
                    .is_none()
                {
                    b.folder = "inbox".into();
                }
            }
            let _turn = state.db.write_turn().await;
            let mut tx = state.db.begin().await?;
            let n = store::restore(&mut tx, mailbox.id, &u.before).await?;
            audit::append(
                &mut tx,
                state.clock.now(),
                &current.actor(ip),
                Event::new("message.undo", format!("mailbox:{}", mailbox.id)).detail(&u.label),
            )
            .await?;
            tx.commit().await?;
            format!("Undone: {} back as they were.", messages_word(n))
        }
        _ => "There is nothing to undo.".into(),
    };
    flash(&current.session, message).await?;
    Ok(Redirect::to(&form.back(mailbox.id)).into_response())
}

#[derive(Deserialize)]
struct FolderForm {
    name: String,
}

async fn create_folder(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(mailbox_id): Path<i64>,
    axum::Form(form): axum::Form<FolderForm>,
) -> AppResult<Response> {
    let mailbox = own_mailbox(&state, &current, mailbox_id).await?;
    let name = form.name.trim();
    let taken = SYSTEM_FOLDERS
        .iter()
        .any(|(k, l)| k.eq_ignore_ascii_case(name) || l.eq_ignore_ascii_case(name));
    if name.is_empty() || name.chars().count() > 60 || name.chars().any(char::is_control) {
        flash(&current.session, "A folder name needs 1 to 60 characters.").await?;
        return Ok(Redirect::to(&format!("/mail/{}/inbox", mailbox.id)).into_response());
    }
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let made = if taken {
        None
    } else {
        store::create_folder(&mut tx, mailbox.id, name, now).await?
    };
    let Some(key) = made else {
        flash(
            &current.session,
            format!("There is already a folder called “{name}” in this mailbox."),
        )
        .await?;
        return Ok(Redirect::to(&format!("/mail/{}/inbox", mailbox.id)).into_response());
    };
    audit::append(
        &mut tx,
        now,
        &current.actor(ip),
        Event::new("folder.create", format!("mailbox:{}", mailbox.id)).detail(name),
    )
    .await?;
    tx.commit().await?;
    flash(&current.session, format!("Folder “{name}” created.")).await?;
    Ok(Redirect::to(&format!("/mail/{}/{key}", mailbox.id)).into_response())
}

async fn delete_folder(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path((mailbox_id, folder)): Path<(i64, String)>,
) -> AppResult<Response> {
    let mailbox = own_mailbox(&state, &current, mailbox_id).await?;
    let name = store::folder_label(&state.db, mailbox.id, &folder)
        .await?
        .ok_or(AppError::NotFound)?;
    let mut tx = state.db.begin().await?;
    let moved = store::delete_folder(&mut tx, mailbox.id, &folder)
        .await?
        .ok_or(AppError::NotFound)?;
    audit::append(
        &mut tx,
        state.clock.now(),
        &current.actor(ip),
        Event::new("folder.delete", format!("mailbox:{}", mailbox.id)).detail(&name),
    )
    .await?;
    tx.commit().await?;
    let text = if moved == 0 {
        format!("Folder “{name}” deleted.")
    } else {
        format!(
            "Folder “{name}” deleted; its {} went back to the Inbox.",
            messages_word(moved)
        )
    };
    flash(&current.session, text).await?;
    Ok(Redirect::to(&format!("/mail/{}/inbox", mailbox.id)).into_response())
}

/// "Delete for good" and "Empty Trash now" cannot be undone: before either acts, this
/// page says how many messages of which mailbox go (and, for a shared mailbox, that
/// its other members lose them too) and posts the same form again, confirmed.
#[derive(Template, WebTemplate)]
#[template(path = "mail/confirm.html")]
struct ConfirmPage {
    chrome: Chrome,
    title: String,
    question: String,
    action: String,
    fields: Vec<(String, String)>,
    button: String,
    back: String,
}

impl ConfirmPage {
    fn deletion(
        chrome: Chrome,
        mailbox: &Mailbox,
        n: u64,
        action: String,
        fields: Vec<(String, String)>,
        back: String,
    ) -> ConfirmPage {
        let shared = if mailbox.kind == MailboxKind::Shared {
            " Everyone who shares this mailbox loses them too."
        } else {
            ""
        };
        ConfirmPage {
            chrome,
            title: format!("Delete {} for good?", messages_word(n)),
            question: format!(
                "{} in the Trash of {} will be deleted for good. They cannot be brought back.{shared}",
                messages_word(n),
                mailbox.address
            ),
            action,
            fields,
            button: format!("Delete {} for good", messages_word(n)),
            back,
        }
    }
}

#[derive(Deserialize)]
struct EmptyTrashForm {
    #[serde(default)]
    confirmed: String,
}

async fn empty_trash(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    chrome: Chrome,
    Path(mailbox_id): Path<i64>,
    axum::Form(form): axum::Form<EmptyTrashForm>,
) -> AppResult<Response> {
    let mailbox = own_mailbox(&state, &current, mailbox_id).await?;
    if form.confirmed != "yes" {
        let n = store::count_in(&state.db, mailbox.id, "trash").await?;
        let back = format!("/mail/{}/trash", mailbox.id);
        if n == 0 {
            flash(&current.session, "Trash is already empty.".to_owned()).await?;
            return Ok(Redirect::to(&back).into_response());
        }
        return Ok(ConfirmPage::deletion(
            chrome,
            &mailbox,
            n,
            format!("/mail/{}/trash/empty", mailbox.id),
            Vec::new(),
            back,
        )
        .into_response());
    }
    let _turn = state.db.write_turn().await;
    let mut tx = state.db.begin().await?;
    let n = store::empty_trash(&mut tx, mailbox.id).await?;
    audit::append(
        &mut tx,
        state.clock.now(),
        &current.actor(ip),
        Event::new("trash.empty", format!("mailbox:{}", mailbox.id)).detail(format!("{n}")),
    )
    .await?;
    tx.commit().await?;
    current.session.remove::<Undo>(KEY_UNDO).await?;
    flash(
        &current.session,
        format!("Trash emptied: {} deleted for good.", messages_word(n)),
    )
    .await?;
    Ok(Redirect::to(&format!("/mail/{}/trash", mailbox.id)).into_response())
}
