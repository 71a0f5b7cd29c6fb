//! Requesting records over Direct: what a request asks for, which purposes need the
//! patient's authorization, the readable text and the Direct Context block it goes
//! out with, and the reminder. A request is an ordinary Direct message whose Context
//! says `type: request/records` ("Expressing Context in Direct Messaging" v1.1: a
//! `category/action` type; the guide leaves the list of types open). The list of
//! requests is in [`crate::store::requests`]; the pages in `web::requests`.

use directmail_content::context::Context;

use crate::db::Db;
use crate::outbound::{Attachment, Draft};
use crate::patient::{DraftPatient, FieldError, PURPOSES};
use crate::store::mailboxes::Mailbox;
use crate::store::requests::{self as store, NewRequest, RequestRow};

/// The Direct Context `type` of a records request.
pub const CONTEXT_TYPE: &str = "request/records";

/// What may be asked for: the key written in the list, and its words.
pub const NEEDS: [(&str, &str); 5] = [
    ("summary", "Summary of care"),
    ("notes", "Clinical notes"),
    ("results", "Results"),
    ("imaging", "Imaging report"),
    ("all", "All records"),
];

/// How soon the records are needed.
pub const URGENCIES: [(&str, &str); 2] = [("routine", "Routine"), ("urgent", "Urgent")];

/// The largest authorization file accepted, in bytes: a form posted without scripts
/// carries its CSRF token inside the multipart body, which the CSRF layer reads whole
/// up to 1 MB (`web::middleware::UPLOAD_LIMIT`); this leaves room for the other
/// fields. A signed page scanned at 150 dpi is well under it.
pub const MAX_AUTHORIZATION_BYTES: usize = 900 * 1024;

/// The longest note accepted, in characters.
pub const MAX_NOTE: usize = 2000;

/// Whether the patient's signed authorization must go with the request. HIPAA lets a
/// provider disclose for treatment, payment and health-care operations without one
/// (45 CFR 164.506; an emergency is treatment), but research needs the patient's
/// authorization (45 CFR 164.508; a waiver by an IRB is not something this form can
/// check), and substance-use-disorder treatment records need the patient's written
/// consent whatever the purpose (42 CFR part 2, §2.31).
pub fn needs_authorization(purpose: &str, part2: bool) -> bool {
    purpose == "research" || part2
}

fn words_of(list: &[(&'static str, &'static str)], key: &str) -> &'static str {
    list.iter()
        .find(|(k, _)| *k == key)
        .map(|(_, w)| *w)
        .unwrap_or("")
}

/// A request as typed in the form.
#[derive(Debug, Clone, Default)]
pub struct RequestInput {
    pub to: String,
    pub patient: DraftPatient,
    /// Keys of [`NEEDS`].
    pub needed: Vec<String>,
    /// `YYYY-MM-DD` or empty.
    pub date_from: String,
    pub date_to: String,
    /// A key of [`URGENCIES`].
    pub urgency: String,
    /// The records asked for include substance-use-disorder treatment records.
    pub part2: bool,
    pub note: String,
    /// The patient's authorization (a checked PDF).
    pub authorization: Option<Attachment>,
}

impl RequestInput {
    /// Each problem with what was typed, by field, one sentence each (the patient
    /// block's rules are the compose page's: [`DraftPatient::to_context`]); or the
    /// Context block to send.
    pub fn check(&self, now: i64) -> Result<Context, Vec<FieldError>> {
        let mut errors: Vec<FieldError> = Vec::new();
        let to = self.to.trim();
        if to.is_empty() {
            errors.push((
                "to",
                "Give the Direct address of the practice that has the records.".into(),
            ));
        } else if crate::domain::Email::parse(to).is_err() || to.contains([',', ';', ' ']) {
            errors.push((
                "to",
                "Write one Direct address, such as records@direct.example.org.".into(),
            ));
        }
        let context = match self.patient.to_context(now) {
            Ok(Some(context)) => Some(context),
            Ok(None) => {
                errors.push((
                    "patient_family",
                    "Name the patient: their family name or an identifier at least.".into(),
                ));
                None
            }
            Err(mut field_errors) => {
                errors.append(&mut field_errors);
                None
            }
        };
        if self.needed.is_empty() {
            errors.push(("needed", "Tick what is needed (one or more).".into()));
        } else if self
            .needed
            .iter()
            .any(|n| !NEEDS.iter().any(|(k, _)| k == n))
        {
            errors.push(("needed", "Choose what is needed from the list.".into()));
        }
        let date = |field: &'static str, value: &str, errors: &mut Vec<FieldError>| {
            let value = value.trim();
            if value.is_empty() {
                return None;
            }
            match crate::clock::parse_date(value) {
                Some(t) => Some(t),
                None => {
                    errors.push((
                        field,
                        "This is not a real date; write it as YYYY-MM-DD.".into(),
                    ));
                    None
                }
            }
        };
        let from = date("date_from", &self.date_from, &mut errors);
        let until = date("date_to", &self.date_to, &mut errors);
        if let (Some(from), Some(until)) = (from, until)
            && from > until
        {
            errors.push((
                "date_to",
                "The end of the date range is before its start.".into(),
            ));
        }
        if !URGENCIES.iter().any(|(k, _)| *k == self.urgency) {
            errors.push(("urgency", "Choose how urgent the request is.".into()));
        }
        if self.note.chars().count() > MAX_NOTE {
            errors.push((
                "note",
                format!("The note is longer than {MAX_NOTE} characters."),
            ));
        }
        if needs_authorization(&self.patient.purpose, self.part2) && self.authorization.is_none() {
            errors.push((
                "authorization",
                if self.part2 {
                    "Substance-use-disorder records need the patient's written consent: attach it as a PDF."
                } else {
                    "Records for research need the patient's signed authorization: attach it as a PDF."
                }
                .into(),
            ));
        }
        match context {
            Some(context) if errors.is_empty() => Ok(Context {
                kind: Some(CONTEXT_TYPE.into()),
                ..context
            }),
            _ => Err(errors),
        }
    }

    /// The needed items in words: "Summary of care, Results".
    pub fn needed_words(&self) -> String {
        self.needed
            .iter()
            .map(|n| words_of(&NEEDS, n))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The patient in words: "Ana Lopez, born 1970-03-12, identifier 1.2.3:12345".
    pub fn patient_words(&self) -> String {
        let p = &self.patient;
        let name = format!("{} {}", p.given.trim(), p.family.trim());
        let mut parts = vec![name.trim().to_owned()];
        if !p.birth_date.trim().is_empty() {
            parts.push(format!("born {}", p.birth_date.trim()));
        }
        if !p.id.trim().is_empty() {
            parts.push(format!("identifier {}", p.id.trim()));
        }
        parts.retain(|s| !s.is_empty());
        parts.join(", ")
    }

    fn dates_words(&self) -> String {
        match (self.date_from.trim(), self.date_to.trim()) {
            ("", "") => "Any date".into(),
            (from, "") => format!("From {from}"),
            ("", until) => format!("Until {until}"),
            (from, until) => format!("From {from} to {until}"),
        }
    }

    fn urgent(&self) -> bool {
        self.urgency == "urgent"
    }

    /// The subject: no patient in it (the outer subject may travel in the clear).
    pub fn subject(&self) -> String {
        if self.urgent() {
            "Urgent: request for records".into()
        } else {
            "Request for records".into()
        }
    }

    /// The readable body.
    pub fn text(&self, sender: &str) -> String {
        let mut lines = vec![
            "Request for records".to_owned(),
            String::new(),
            format!("Patient: {}", self.patient_words()),
            format!("Records needed: {}", self.needed_words()),
            format!("Dates: {}", self.dates_words()),
            format!("Purpose: {}", words_of(&PURPOSES, &self.patient.purpose)),
            format!("Urgency: {}", words_of(&URGENCIES, &self.urgency)),
        ];
        if self.part2 {
            lines.push(
                "The records asked for include substance-use-disorder treatment records (42 CFR part 2)."
                    .into(),
            );
        }
        if self.authorization.is_some() {
            lines.push("The patient's signed authorization is attached.".into());
        }
        if !self.note.trim().is_empty() {
            lines.push(String::new());
            lines.push(format!("Note: {}", self.note.trim()));
        }
        lines.push(String::new());
        lines.push(format!(
            "Please reply to this message with the documents attached. Sent by {sender} with a Direct Context block (type {CONTEXT_TYPE})."
        ));
        lines.join("\n")
    }
}

/// What sending a request made.
pub struct Sent {
    pub request_id: i64,
    pub outbound_id: i64,
    pub sent_message_id: Option<i64>,
}

/// The Message-ID of a Sent copy.
async fn message_key(db: &Db, sent_message_id: Option<i64>) -> anyhow::Result<String> {
    let key: Option<String> = match sent_message_id {
        Some(id) => sqlx::query_scalar("select message_id from messages where id = $1")
            .bind(id)
            .fetch_optional(&db.pool)
            .await?
            .flatten(),
        None => None,
    };
    key.ok_or_else(|| anyhow::anyhow!("the Sent copy of a records request has no Message-ID"))
}

/// Sends a checked request (`context` from [`RequestInput::check`]) from `mailbox`
/// and records it, open.
pub async fn send(
    db: &Db,
    mailbox: &Mailbox,
    user: &crate::store::users::User,
    input: &RequestInput,
    context: Context,
    now: i64,
) -> anyhow::Result<Sent> {
    let to = crate::domain::Email::parse(input.to.trim())
        .map_err(|e| anyhow::anyhow!(e.0))?
        .as_str()
        .to_owned();
    let draft = Draft {
        to: vec![to.clone()],
        subject: input.subject(),
        text: input.text(&format!("{} <{}>", user.display_name, mailbox.address)),
        attachments: input.authorization.iter().cloned().collect(),
        context: Some(context),
        ..Draft::default()
    };
    let outbound_id =
        crate::outbound::submit_draft(db, mailbox, &user.display_name, &draft, now).await?;
    let sent_message_id = crate::store::messages::sent_copy(db, outbound_id).await?;
    let key = message_key(db, sent_message_id).await?;
    let mut tx = db.begin().await?;
    let request_id = store::insert(
        &mut tx,
        NewRequest {
            mailbox_id: mailbox.id,
            user_id: user.id,
            outbound_id,
            sent_message_id,
            message_key: &key,
            recipient: &to,
            patient: &input.patient_words(),
            needed: &input.needed.join(","),
            date_from: input.date_from.trim(),
            date_to: input.date_to.trim(),
            purpose: &input.patient.purpose,
            urgency: &input.urgency,
        },
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(Sent {
        request_id,
        outbound_id,
        sent_message_id,
    })
}

/// Sends a reminder of an open request: a reply to it (In-Reply-To and References
/// name it) with the same Direct Context type, id and patient, so the other practice
/// sees it as the same request. Returns the outbound id.
pub async fn remind(
    db: &Db,
    mailbox: &Mailbox,
    sender_name: &str,
    request: &RequestRow,
    now: i64,
) -> anyhow::Result<i64> {
    // the request's own block, from its Sent copy (only its type and id if that is gone)
    let original = match request.sent_message_id {
        Some(id) => crate::store::inbound::message(db, id).await?,
        None => None,
    };
    let block = original.and_then(|m| {
        let parsed = mail_parser::MessageParser::default().parse(&m.raw)?;
        crate::patient::context_block(&parsed).map(|(_, block)| block)
    });
    let context = Context {
        version: Some("1.1".into()),
        id: Some(request.message_key.clone()),
        kind: Some(CONTEXT_TYPE.into()),
        ..block.unwrap_or_default()
    };
    let sent = crate::clock::format_utc(request.created_at);
    let needed: Vec<&str> = request
        .needed
        .split(',')
        .map(|n| words_of(&NEEDS, n))
        .collect();
    let draft = Draft {
        to: vec![request.recipient.clone()],
        subject: "Reminder: request for records".into(),
        text: format!(
            "Reminder of our request for records sent {sent}, not answered yet.\n\nPatient: {}\nRecords needed: {}\n\nPlease reply to the request with the documents attached.",
            request.patient,
            needed.join(", ")
        ),
        in_reply_to: Some(format!("<{}>", request.message_key)),
        references: Some(format!("<{}>", request.message_key)),
        context: Some(context),
        ..Draft::default()
    };
    crate::outbound::submit_draft(db, mailbox, sender_name, &draft, now).await
}

/// When a draft replies (In-Reply-To `parent`) to a records request received in
/// `mailbox_id`, the request's Direct Context id, which the reply carries.
pub async fn answered_context(
    db: &Db,
    mailbox_id: i64,
    parent: Option<&str>,
) -> sqlx::Result<Option<String>> {
    let Some(parent) = parent.map(|p| p.trim().trim_matches(['<', '>'])) else {
        return Ok(None);
    };
    let found: Option<String> = sqlx::query_scalar(
        "select context_id from messages
         where mailbox_id = $1 and message_id = $2 and context_type = $3 and context_id <> ''
         order by id limit 1",
    )
    .bind(mailbox_id)
    .bind(parent)
    .bind(CONTEXT_TYPE)
    .fetch_optional(&db.pool)
    .await?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> RequestInput {
        RequestInput {
            to: "records@direct.hillside.test".into(),
            patient: DraftPatient {
                given: "Ana".into(),
                family: "Lopez".into(),
                birth_date: "1970-03-12".into(),
                id: "1.2.3:12345".into(),
                ..DraftPatient::default()
            },
            needed: vec!["summary".into(), "results".into()],
            urgency: "routine".into(),
            ..RequestInput::default()
        }
    }

    #[test]
    fn a_complete_request_reads_as_text_and_carries_its_type() {
        let context = input().check(2_000_000_000).unwrap();
        assert_eq!(context.kind.as_deref(), Some("request/records"));
        assert_eq!(context.purpose.as_deref(), Some("treatment"));
        let text = input().text("Dr. Ana Ruiz");
        assert!(text.contains("Patient: Ana Lopez, born 1970-03-12, identifier 1.2.3:12345"));
        assert!(text.contains("Records needed: Summary of care, Results"));
        assert!(text.contains("Dates: Any date"));
        assert!(!input().subject().contains("Lopez"));
    }

    #[test]
    fn research_and_part2_records_need_the_authorization() {
        assert!(!needs_authorization("treatment", false));
        assert!(!needs_authorization("emergency", false));
        assert!(needs_authorization("research", false));
        assert!(needs_authorization("treatment", true));
        let mut research = input();
        research.patient.purpose = "research".into();
        let errors = research.check(2_000_000_000).unwrap_err();
        assert!(errors.iter().any(|(f, _)| *f == "authorization"));
    }

    #[test]
    fn each_mistake_is_named_by_its_field() {
        let mut bad = input();
        bad.to = "not an address".into();
        bad.needed = vec!["everything".into()];
        bad.date_from = "2025-02-30".into();
        bad.urgency = "yesterday".into();
        let fields: Vec<&str> = bad
            .check(2_000_000_000)
            .unwrap_err()
            .iter()
            .map(|(f, _)| *f)
            .collect();
        assert_eq!(fields, vec!["to", "needed", "date_from", "urgency"]);
        let mut backwards = input();
        backwards.date_from = "2025-06-01".into();
        backwards.date_to = "2025-01-01".into();
        assert_eq!(backwards.check(2_000_000_000).unwrap_err()[0].0, "date_to");
    }
}
