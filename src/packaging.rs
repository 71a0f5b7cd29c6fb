//! Sending a message's documents as one XDM package (docs/clinical.md, "Sending a
//! package"): when the sender ticks the compose page's box (or asks through the API),
//! or when a recipient's directory entry says they want packages, the attachments go
//! out inside one ZIP written by `directmail_content::xdm::write_xdm`, with Direct's
//! minimal metadata: the sender as author, the recipients as intendedRecipient, the
//! patient of the message's patient block, and per document its title, type, SHA-1
//! hash and size.

use directmail_content::cda::{self, CdaLimits};
use directmail_content::context::Context;
use directmail_content::xdm::{self, Confidentiality, DocumentInput, Sender, XdmInput};
use rand::RngCore as _;

use crate::outbound::Attachment;
use crate::sensitivity::Law;

/// The file name of the package a message carries.
pub const FILE_NAME: &str = "documents-xdm.zip";
/// Its media type.
pub const CONTENT_TYPE: &str = "application/zip";

/// Packs `attachments` into one XDM package attachment.
///
/// A clinical document (CDA) is described by its own header: its title, its type
/// (the document's LOINC code) and its confidentiality; any other file by its name
/// and type. The patient comes from the message's Direct Context block when it names
/// one. Synchronous and CPU-bound (a CDA is parsed): call it on a blocking thread.
pub fn package(
    attachments: &[Attachment],
    context: Option<&Context>,
    sender: Sender,
    recipients: Vec<String>,
    law: Option<Law>,
    now: i64,
) -> Result<Attachment, xdm::WriteError> {
    let documents = attachments
        .iter()
        .map(|a| labelled(document(a), law))
        .collect();
    let mut seed = [0u8; 16];
    rand::rng().fill_bytes(&mut seed);
    let zip = xdm::write_xdm(&XdmInput {
        now,
        seed,
        sender,
        recipients,
        source_id: None,
        patient: context.and_then(xdm::Patient::from_context),
        content_type: None,
        documents,
    })?;
    Ok(Attachment {
        name: FILE_NAME.to_owned(),
        content_type: CONTENT_TYPE.to_owned(),
        data: zip,
    })
}

/// A sensitive record's document carries confidentiality R (V stays V) and the law's
/// DS4P labels as further confidentialityCode classifications.
fn labelled(mut document: DocumentInput<'_>, law: Option<Law>) -> DocumentInput<'_> {
    if let Some(law) = law {
        if document.confidentiality != Confidentiality::VeryRestricted {
            document.confidentiality = Confidentiality::Restricted;
        }
        document.security_labels = law
            .security_labels()
            .into_iter()
            .map(|label| xdm::Code {
                code: label.code,
                scheme: label.system,
                display: label.display,
            })
            .collect();
    }
    document
}

/// Labels every CDA document among `attachments` as a record of `law` (confidentiality
/// R, the DS4P markings section with `notice`, the law's security observations;
/// [`cda::mark_restricted`]). A CDA that cannot be labelled is named in the error, in a
/// sentence for the sender: sending it unlabelled would leave the label off a record
/// the sender marked. Synchronous and CPU-bound: call it on a blocking thread.
pub fn label_documents(attachments: &mut [Attachment], law: Law) -> Result<usize, String> {
    let labels = law.security_labels();
    let mut labelled = 0;
    for attachment in attachments.iter_mut() {
        if !cda::is_cda(&attachment.data) {
            continue;
        }
        match cda::mark_restricted(
            &attachment.data,
            &labels,
            law.notice().text,
            &CdaLimits::default(),
        ) {
            Ok(marked) => {
                attachment.data = marked;
                labelled += 1;
            }
            Err(e) => {
                return Err(format!(
                    "{} could not be labelled as a sensitive record ({e}); remove it or attach it as a PDF",
                    attachment.name
                ));
            }
        }
    }
    Ok(labelled)
}

/// One attachment as a package document.
fn document(attachment: &Attachment) -> DocumentInput<'_> {
    let base = DocumentInput {
        title: attachment.name.clone(),
        // the bare media type: metadata has no room for parameters such as charset
        mime_type: attachment
            .content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase(),
        bytes: &attachment.data,
        confidentiality: Confidentiality::Normal,
        creation_time: None,
        type_code: None,
        class_code: None,
        security_labels: Vec::new(),
    };
    if !cda::is_cda(&attachment.data) {
        return base;
    }
    let Ok(doc) = cda::parse_cda(&attachment.data, &CdaLimits::default()) else {
        // a document we cannot read goes in as the file it is
        return base;
    };
    let confidentiality = match doc.confidentiality.as_ref().map(|c| c.code.as_str()) {
        Some("R") => Confidentiality::Restricted,
        Some("V") => Confidentiality::VeryRestricted,
        _ => Confidentiality::Normal,
    };
    let type_code = doc.document_type.as_ref().and_then(|code| {
        Some(xdm::Code {
            code: code.code.clone(),
            scheme: code.system.clone()?,
            display: code.display_name.clone().unwrap_or_default(),
        })
    });
    DocumentInput {
        title: doc.title.clone().unwrap_or(base.title.clone()),
        mime_type: "text/xml".to_owned(),
        confidentiality,
        type_code,
        ..base
    }
}
