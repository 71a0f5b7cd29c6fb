//! Drafts: messages being written, saved on the server as the user types, with their
//! attachments, so nothing is lost to a closed tab or a session timeout.

use sqlx::{AnyConnection, Row as _};

use crate::db::Db;
use crate::patient::DraftPatient;
use crate::sensitivity::Law;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Draft {
    pub id: i64,
    pub mailbox_id: i64,
    pub user_id: i64,
    /// Addresses as typed, comma separated.
    pub to: String,
    pub cc: String,
    pub subject: String,
    pub body: String,
    pub in_reply_to: Option<String>,
    pub refs: Option<String>,
    pub updated_at: i64,
    /// The patient block, as typed.
    pub patient: DraftPatient,
    /// "Send the attachments as an XDM package", as ticked.
    pub as_xdm: bool,
    /// The "Sensitive" choice and what goes with it.
    pub sensitive: Sensitive,
}

impl Draft {
    /// A new message not yet stored (id 0): the compose page before anything is typed.
    pub fn blank(mailbox_id: i64, user_id: i64) -> Draft {
        Draft {
            id: 0,
            mailbox_id,
            user_id,
            to: String::new(),
            cc: String::new(),
            subject: String::new(),
            body: String::new(),
            in_reply_to: None,
            refs: None,
            updated_at: 0,
            patient: DraftPatient::default(),
            as_xdm: false,
            sensitive: Sensitive::default(),
        }
    }
}

/// The compose page's "Sensitive" section, as chosen and typed (checked when the draft
/// is sent: `web::compose`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Sensitive {
    /// `None`: not a sensitive record.
    pub law: Option<Law>,
    /// Part 2: the draft's attachment that is the patient's consent.
    pub consent_attachment_id: Option<i64>,
    /// Part 2: the consent's scope, described.
    pub consent_scope: String,
    /// Part 2: the exception (`sensitivity::PART2_EXCEPTIONS`) under which it goes
    /// without consent, and why.
    pub no_consent_basis: String,
    pub no_consent_reason: String,
    /// The Illinois exception chosen for a patient who opted out
    /// (`sensitivity::OPT_OUT_EXCEPTIONS`), or "".
    pub opt_out_exception: String,
}

/// An attachment's description (its bytes are read only to send or download).
#[derive(Debug, Clone, serde::Serialize)]
pub struct AttachmentMeta {
    pub id: i64,
    pub name: String,
    pub content_type: String,
    pub size: i64,
}

impl AttachmentMeta {
    /// Its type in words: "PDF document", "PNG image".
    pub fn kind(&self) -> &str {
        let bare = self
            .content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim();
        match bare {
            "application/pdf" => "PDF document",
            "text/xml" | "application/xml" => "XML document",
            "text/plain" => "Text file",
            "image/png" => "PNG image",
            "image/jpeg" => "JPEG image",
            "image/gif" => "GIF image",
            "application/zip" => "ZIP archive",
            "application/msword"
            | "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => {
                "Word document"
            }
            _ => &self.content_type,
        }
    }
}

/// What a new draft starts with (empty for "new message", filled for a reply).
#[derive(Debug, Clone, Default)]
pub struct Start {
    pub to: String,
    pub cc: String,
    pub subject: String,
    pub body: String,
    pub in_reply_to: Option<String>,
    pub refs: Option<String>,
    /// A reply's patient: the one the message replied to is about.
    pub patient: DraftPatient,
    /// A reply to or forward of a restricted record starts restricted.
    pub law: Option<Law>,
}

pub async fn create(
    conn: &mut AnyConnection,
    mailbox_id: i64,
    user_id: i64,
    start: &Start,
    now: i64,
) -> sqlx::Result<i64> {
    let id: i64 = sqlx::query_scalar(
        "insert into drafts (mailbox_id, user_id, to_addrs, cc_addrs, subject, body, in_reply_to, refs, created_at, updated_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) returning id",
    )
    .bind(mailbox_id)
    .bind(user_id)
    .bind(&start.to)
    .bind(&start.cc)
    .bind(&start.subject)
    .bind(&start.body)
    .bind(start.in_reply_to.as_deref())
    .bind(start.refs.as_deref())
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    save_patient(conn, id, &start.patient).await?;
    if start.law.is_some() {
        let sensitive = Sensitive {
            law: start.law,
            ..Sensitive::default()
        };
        save_sensitive(conn, id, &sensitive).await?;
    }
    Ok(id)
}

/// Saves the "send as an XDM package" box.
pub async fn save_as_xdm(conn: &mut AnyConnection, id: i64, as_xdm: bool) -> sqlx::Result<()> {
    sqlx::query("update drafts set as_xdm = $1 where id = $2")
        .bind(i64::from(as_xdm))
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Saves the "Sensitive" section as chosen and typed.
pub async fn save_sensitive(
    conn: &mut AnyConnection,
    id: i64,
    sensitive: &Sensitive,
) -> sqlx::Result<()> {
    sqlx::query(
        "update drafts set sensitivity = $1, consent_attachment_id = $2, consent_scope = $3,
                no_consent_basis = $4, no_consent_reason = $5, opt_out_exception = $6
          where id = $7",
    )
    .bind(sensitive.law.map(Law::as_str).unwrap_or_default())
    .bind(sensitive.consent_attachment_id)
    .bind(&sensitive.consent_scope)
    .bind(&sensitive.no_consent_basis)
    .bind(&sensitive.no_consent_reason)
    .bind(&sensitive.opt_out_exception)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Saves the patient block as typed (it is checked when the draft is sent).
pub async fn save_patient(
    conn: &mut AnyConnection,
    id: i64,
    patient: &DraftPatient,
) -> sqlx::Result<()> {
    sqlx::query(
        "update drafts set patient_given = $1, patient_family = $2, patient_birth_date = $3,
                patient_sex = $4, patient_id = $5, patient_purpose = $6 where id = $7",
    )
    .bind(&patient.given)
    .bind(&patient.family)
    .bind(&patient.birth_date)
    .bind(&patient.sex)
    .bind(&patient.id)
    .bind(&patient.purpose)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

const COLUMNS: &str =
    "id, mailbox_id, user_id, to_addrs, cc_addrs, subject, body, in_reply_to, refs, updated_at,
     patient_given, patient_family, patient_birth_date, patient_sex, patient_id, patient_purpose,
     as_xdm, sensitivity, consent_attachment_id, consent_scope, no_consent_basis,
     no_consent_reason, opt_out_exception";

fn from_row(r: &sqlx::any::AnyRow) -> sqlx::Result<Draft> {
    Ok(Draft {
        id: r.try_get("id")?,
        mailbox_id: r.try_get("mailbox_id")?,
        user_id: r.try_get("user_id")?,
        to: r.try_get("to_addrs")?,
        cc: r.try_get("cc_addrs")?,
        subject: r.try_get("subject")?,
        body: r.try_get("body")?,
        in_reply_to: r.try_get("in_reply_to")?,
        refs: r.try_get("refs")?,
        updated_at: r.try_get("updated_at")?,
        patient: DraftPatient {
            given: r.try_get("patient_given")?,
            family: r.try_get("patient_family")?,
            birth_date: r.try_get("patient_birth_date")?,
            sex: r.try_get("patient_sex")?,
            id: r.try_get("patient_id")?,
            purpose: r.try_get("patient_purpose")?,
        },
        as_xdm: super::flag(r.try_get("as_xdm")?),
        sensitive: Sensitive {
            law: Law::parse(r.try_get::<String, _>("sensitivity")?.as_str()),
            consent_attachment_id: r.try_get("consent_attachment_id")?,
            consent_scope: r.try_get("consent_scope")?,
            no_consent_basis: r.try_get("no_consent_basis")?,
            no_consent_reason: r.try_get("no_consent_reason")?,
            opt_out_exception: r.try_get("opt_out_exception")?,
        },
    })
}

pub async fn get(db: &Db, id: i64) -> sqlx::Result<Option<Draft>> {
    let sql = format!("select {COLUMNS} from drafts where id = $1");
    let row = sqlx::query(&sql).bind(id).fetch_optional(&db.pool).await?;
    row.as_ref().map(from_row).transpose()
}

/// A draft something was written in (or attached to): "New message" opened and
/// left empty is not listed or counted as a draft.
pub const WRITTEN: &str = "(drafts.to_addrs <> '' or drafts.cc_addrs <> '' or drafts.subject <> ''
     or drafts.body <> '' or exists (select 1 from draft_attachments a where a.draft_id = drafts.id))";

/// A mailbox's drafts, the most recently changed first, keyset paged by
/// `(updated_at, id)` below `before`.
pub async fn list(
    db: &Db,
    mailbox_id: i64,
    user_id: i64,
    before: Option<(i64, i64)>,
    limit: i64,
) -> sqlx::Result<Vec<Draft>> {
    let (t, id) = before.unwrap_or((i64::MAX, i64::MAX));
    let sql = format!(
        "select {COLUMNS} from drafts where mailbox_id = $1 and user_id = $2 and {WRITTEN}
           and (updated_at < $3 or (updated_at = $3 and id < $4))
         order by updated_at desc, id desc limit $5"
    );
    let rows = sqlx::query(&sql)
        .bind(mailbox_id)
        .bind(user_id)
        .bind(t)
        .bind(id)
        .bind(limit)
        .fetch_all(&db.pool)
        .await?;
    rows.iter().map(from_row).collect()
}

/// Saves what the user typed.
pub async fn save(
    conn: &mut AnyConnection,
    id: i64,
    to: &str,
    cc: &str,
    subject: &str,
    body: &str,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "update drafts set to_addrs = $1, cc_addrs = $2, subject = $3, body = $4, updated_at = $5 where id = $6",
    )
    .bind(to)
    .bind(cc)
    .bind(subject)
    .bind(body)
    .bind(now)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn delete(conn: &mut AnyConnection, id: i64) -> sqlx::Result<()> {
    sqlx::query("delete from draft_attachments where draft_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("delete from drafts where id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn attachments(db: &Db, draft_id: i64) -> sqlx::Result<Vec<AttachmentMeta>> {
    let rows = sqlx::query(
        "select id, name, content_type, size from draft_attachments where draft_id = $1 order by id",
    )
    .bind(draft_id)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(AttachmentMeta {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                content_type: r.try_get("content_type")?,
                size: r.try_get("size")?,
            })
        })
        .collect()
}

/// The attachments with their bytes, to send.
pub async fn attachment_data(
    db: &Db,
    draft_id: i64,
) -> sqlx::Result<Vec<crate::outbound::Attachment>> {
    let rows = sqlx::query(
        "select name, content_type, data from draft_attachments where draft_id = $1 order by id",
    )
    .bind(draft_id)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(crate::outbound::Attachment {
                name: r.try_get("name")?,
                content_type: r.try_get("content_type")?,
                data: r.try_get("data")?,
            })
        })
        .collect()
}

/// One attachment's bytes: `(name, content type, data)`.
pub async fn attachment(
    db: &Db,
    draft_id: i64,
    id: i64,
) -> sqlx::Result<Option<(String, String, Vec<u8>)>> {
    let row = sqlx::query(
        "select name, content_type, data from draft_attachments where draft_id = $1 and id = $2",
    )
    .bind(draft_id)
    .bind(id)
    .fetch_optional(&db.pool)
    .await?;
    row.map(|r| {
        Ok((
            r.try_get("name")?,
            r.try_get("content_type")?,
            r.try_get("data")?,
        ))
    })
    .transpose()
}

/// Adds an attachment to a draft.
pub async fn add_attachment(
    conn: &mut AnyConnection,
    draft_id: i64,
    name: &str,
    content_type: &str,
    data: &[u8],
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "insert into draft_attachments (draft_id, name, content_type, size, data) values ($1, $2, $3, $4, $5)
         returning id",
    )
    .bind(draft_id)
    .bind(name)
    .bind(content_type)
    .bind(data.len() as i64)
    .bind(data.to_vec())
    .fetch_one(conn)
    .await
}

/// Total bytes attached to a draft.
pub async fn attached_bytes(conn: &mut AnyConnection, draft_id: i64) -> sqlx::Result<i64> {
    let n: Option<i64> = sqlx::query_scalar(
        "select cast(coalesce(sum(size), 0) as bigint) from draft_attachments where draft_id = $1",
    )
    .bind(draft_id)
    .fetch_one(conn)
    .await?;
    Ok(n.unwrap_or(0))
}

pub async fn remove_attachment(
    conn: &mut AnyConnection,
    draft_id: i64,
    id: i64,
) -> sqlx::Result<bool> {
    let done = sqlx::query("delete from draft_attachments where draft_id = $1 and id = $2")
        .bind(draft_id)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Copies attachments (of a forwarded or resent message) into a draft.
pub async fn copy_attachments(
    conn: &mut AnyConnection,
    draft_id: i64,
    files: &[crate::outbound::Attachment],
) -> sqlx::Result<()> {
    for f in files {
        add_attachment(conn, draft_id, &f.name, &f.content_type, &f.data).await?;
    }
    Ok(())
}
