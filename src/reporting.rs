//! Public-health reporting over Direct: "Report to public health" sends the case
//! reports (eICR, LOINC 55751-2) a message carries to the agency of an operator's
//! reporting route (for eCR, APHL's AIMS address). The Reportability Response that
//! comes back finds the report's Sent copy by the eICR's identifier (the RR card,
//! `web::clinical::cda`), and threads to it by In-Reply-To when the agency sets it.
//!
//! The HIE opt-out list never stops this route: 740 ILCS 110 §9.6 excepts
//! public-health reporting, and reporting is required by law. A restricted record
//! still goes with its law's notice, and is recorded in the disclosures report.

use directmail_content::cda::{self, CdaLimits};
use mail_parser::{MessageParser, MimeHeaders as _};

use crate::db::Db;
use crate::outbound::{Attachment, Draft};
use crate::patient::FieldError;
use crate::store::inbound::StoredMessage;
use crate::store::mailboxes::Mailbox;
use crate::store::reporting::Route;

/// The clinical documents attached to `raw` whose type goes on `route`, as files to
/// send. CPU work (documents are parsed): call it off the async threads.
pub fn documents_for(raw: &[u8], route: &Route) -> Vec<Attachment> {
    let Some(message) = MessageParser::default().parse(raw) else {
        return Vec::new();
    };
    let limits = CdaLimits::default();
    message
        .attachments()
        .filter_map(|part| {
            let bytes = part.contents();
            if !cda::is_cda(bytes) {
                return None;
            }
            let document = directmail_content::parse_cda(bytes, &limits).ok()?;
            let code = document.document_type.as_ref()?.code.clone();
            route.carries(&code).then(|| Attachment {
                name: part.attachment_name().unwrap_or("eicr.xml").to_owned(),
                content_type: "application/xml".into(),
                data: bytes.to_vec(),
            })
        })
        .collect()
}

/// A reporting route as checked by [`check_route`].
pub struct CheckedRoute {
    pub jurisdiction: String,
    pub address: String,
    pub document_types: Vec<String>,
}

/// A route as typed (console or `directmail admin reporting add`), checked: the
/// jurisdiction trimmed, the address a Direct address in lower case, the document
/// types LOINC codes (`55751-2`). Each problem by field, one sentence each.
pub fn check_route(
    jurisdiction: &str,
    address: &str,
    document_types: &str,
) -> Result<CheckedRoute, Vec<FieldError>> {
    let mut errors = Vec::new();
    let jurisdiction = jurisdiction.trim();
    if jurisdiction.is_empty() {
        errors.push((
            "jurisdiction",
            "Name the jurisdiction (a state or local health department).".to_owned(),
        ));
    } else if jurisdiction.chars().count() > 100 || jurisdiction.chars().any(char::is_control) {
        errors.push((
            "jurisdiction",
            "The jurisdiction is a name of at most 100 characters on one line.".to_owned(),
        ));
    }
    let address = match crate::domain::Email::parse(address.trim()) {
        Ok(a) => a.as_str().to_owned(),
        Err(_) => {
            errors.push((
                "address",
                "Give the agency's Direct address, such as ecr@aims.example.org.".to_owned(),
            ));
            String::new()
        }
    };
    let types: Vec<String> = document_types
        .split([',', ' '])
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    let loinc = |t: &str| {
        t.split_once('-').is_some_and(|(n, c)| {
            (1..=7).contains(&n.len())
                && n.bytes().all(|b| b.is_ascii_digit())
                && c.len() == 1
                && c.bytes().all(|b| b.is_ascii_digit())
        })
    };
    if types.is_empty() || types.len() > 20 || !types.iter().all(|t| loinc(t)) {
        errors.push((
            "document_types",
            "List the document types as LOINC codes separated by commas, such as 55751-2 for an eICR.".to_owned(),
        ));
    }
    if errors.is_empty() {
        Ok(CheckedRoute {
            jurisdiction: jurisdiction.to_owned(),
            address,
            document_types: types,
        })
    } else {
        Err(errors)
    }
}

/// What a report sent.
pub struct Reported {
    pub outbound_id: i64,
    pub sent_message_id: Option<i64>,
    pub documents: usize,
}

/// Sends the documents of `message` that go on `route` from `mailbox`. `Ok(None)`
/// when the message carries none of the route's document types.
pub async fn report(
    db: &Db,
    mailbox: &Mailbox,
    sender_name: &str,
    message: &StoredMessage,
    route: &Route,
    now: i64,
) -> anyhow::Result<Option<Reported>> {
    let raw = message.raw.clone();
    let chosen = route.clone();
    let documents = tokio::task::spawn_blocking(move || documents_for(&raw, &chosen)).await?;
    if documents.is_empty() {
        return Ok(None);
    }
    let count = documents.len();
    let draft = Draft {
        to: vec![route.address.clone()],
        subject: "Electronic initial case report".into(),
        text: format!(
            "Public-health report for {} from {}: {} case report document(s) attached.",
            route.jurisdiction, mailbox.address, count
        ),
        attachments: documents,
        // a restricted record goes with its law's notice, as any disclosure of it
        sensitive: message
            .row
            .restriction
            .map(|law| crate::sensitivity::Outgoing::new(law, "")),
        ..Draft::default()
    };
    let outbound_id = crate::outbound::submit_draft(db, mailbox, sender_name, &draft, now).await?;
    let sent_message_id = crate::store::messages::sent_copy(db, outbound_id).await?;
    Ok(Some(Reported {
        outbound_id,
        sent_message_id,
        documents: count,
    }))
}
