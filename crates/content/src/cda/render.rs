//! A whole document as HTML: a header summary for the clinician, the Reportability
//! Response card when there is one, then each section as a collapsible `<details>`.

use super::body::{Body, NonXmlContent, Section, saved_section_order};
use super::header::{Author, confidentiality_words};
use super::narrative::{RenderOptions, Stats, outside_link, render_narrative, write_link};
use super::rr::{Determination, ReportabilityResponse, priority_words};
use super::{Document, size};
use crate::render::escape_into;

/// Writes a parsed document as an HTML fragment (an `<article class="cda-document">`).
///
/// First a header: patient (name, identifiers, birth date, sex, address), authors and
/// their organizations, custodian, encounter, document type and date, confidentiality.
/// For a Reportability Response, a card with each condition, the determination in words,
/// the responsible agency and what the provider is asked to do. Then a note when parts
/// of the document were left out ([`Stats`]). Then each top-level section, in the order
/// [`saved_section_order`] gives for `opts.section_order`, as
/// `<section class="cda-section" data-loinc="…"><details open><summary>…`, with nested
/// sections inside their parent (`open` left out for the codes in `opts.collapsed`); the
/// caller can remember which codes a user collapses or moves.
///
/// A `nonXMLBody` is not rendered: the page says what kind of file it is, and the caller
/// shows [`Document::body`] with the viewer [`super::NonXmlBody::viewer`] names.
pub fn render_document(doc: &Document, opts: &RenderOptions) -> String {
    let mut out = String::with_capacity(4096);
    out.push_str("<article class=\"cda-document\"");
    if let Some(lang) = doc.language.as_deref().filter(|lang| is_token(lang, 35)) {
        attribute(&mut out, "lang", lang);
    }
    out.push('>');
    write_header(&mut out, doc);
    if let Some(rr) = &doc.reportability {
        write_reportability(&mut out, rr, opts);
    }
    write_stats(&mut out, &doc.stats());
    match &doc.body {
        Body::Structured(sections) => {
            for section in saved_section_order(sections, opts.section_order) {
                write_section(&mut out, section, opts);
            }
        }
        Body::NonXml(body) => {
            out.push_str("<p class=\"cda-nonxml\"");
            attribute(&mut out, "data-media-type", &body.media_type);
            out.push('>');
            let sentence = match &body.content {
                NonXmlContent::Data(bytes) => format!(
                    "The content of this document is a file ({}, {}). It is not shown as \
                     part of this page.",
                    body.media_type,
                    size(bytes.len())
                ),
                NonXmlContent::Reference(_) => "The content of this document is a file kept \
                    elsewhere, which was not retrieved."
                    .to_owned(),
                NonXmlContent::Compressed(_) => "The content of this document is a compressed \
                    file, which this viewer does not open."
                    .to_owned(),
                NonXmlContent::TooLarge => "The content of this document is a file too large \
                    for this viewer."
                    .to_owned(),
                NonXmlContent::Unreadable => "The content of this document is a file that \
                    could not be read (its encoding is damaged)."
                    .to_owned(),
            };
            escape_into(&mut out, &sentence);
            out.push_str("</p>");
        }
        Body::Empty => out
            .push_str("<p class=\"cda-empty\">This document has no content beyond its header.</p>"),
    }
    out.push_str("</article>");
    out
}

fn write_header(out: &mut String, doc: &Document) {
    out.push_str("<header class=\"cda-header\"><h2 class=\"cda-title\">");
    escape_into(out, doc.display_title());
    out.push_str("</h2><dl class=\"cda-summary\">");
    if let Some(patient) = &doc.patient {
        if let Some(name) = &patient.name {
            row(out, "Patient", &name.with_prefix());
        }
        let ids: Vec<String> = patient
            .ids
            .iter()
            .take(3)
            .map(ToString::to_string)
            .collect();
        if !ids.is_empty() {
            row(out, "Patient ID", &ids.join("; "));
        }
        if let Some(birth) = &patient.birth_time {
            row(out, "Birth date", &birth.readable);
        }
        if let Some(sex) = patient.sex() {
            row(out, "Sex", &sex);
        }
        if let Some(address) = &patient.address {
            row(out, "Address", &address.one_line());
        }
    }
    let authors: Vec<String> = doc.authors.iter().filter_map(author).collect();
    if !authors.is_empty() {
        row(out, "Author", &authors.join("; "));
    }
    if let Some(custodian) = &doc.custodian {
        row(out, "Custodian", custodian);
    }
    if let Some(encounter) = &doc.encounter {
        let mut parts: Vec<String> = encounter
            .code
            .iter()
            .map(|c| c.label().to_owned())
            .collect();
        match (&encounter.start, &encounter.end) {
            (Some(start), Some(end)) if start.raw != end.raw => {
                parts.push(format!("{} to {}", start.readable, end.readable));
            }
            (Some(time), _) | (None, Some(time)) => parts.push(time.readable.clone()),
            (None, None) => {}
        }
        parts.extend(encounter.location.clone());
        if !parts.is_empty() {
            row(out, "Encounter", &parts.join(", "));
        }
        let responsible: Vec<String> = encounter
            .responsible
            .iter()
            .map(|name| name.with_prefix())
            .chain(encounter.responsible_organization.clone())
            .collect();
        if !responsible.is_empty() {
            row(out, "Responsible clinician", &responsible.join(", "));
        }
    }
    if let Some(kind) = &doc.document_type {
        let label = match &kind.display_name {
            Some(name) => format!("{name} ({})", kind.code),
            None => kind.code.clone(),
        };
        row(out, "Document type", &label);
    }
    if let Some(time) = &doc.effective_time {
        row(out, "Date", &time.readable);
    }
    if let Some(confidentiality) = &doc.confidentiality {
        let words = confidentiality_words(&confidentiality.code).unwrap_or(confidentiality.label());
        row(out, "Confidentiality", words);
    }
    out.push_str("</dl></header>");
}

fn author(author: &Author) -> Option<String> {
    let who = author
        .person
        .as_ref()
        .map(|name| name.with_prefix())
        .or_else(|| author.device.clone());
    let parts: Vec<String> = who.into_iter().chain(author.organization.clone()).collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn row(out: &mut String, term: &str, value: &str) {
    out.push_str("<div><dt>");
    escape_into(out, term);
    out.push_str("</dt><dd>");
    escape_into(out, value);
    out.push_str("</dd></div>");
}

fn write_reportability(out: &mut String, rr: &ReportabilityResponse, opts: &RenderOptions) {
    out.push_str(
        "<aside class=\"cda-rr\" aria-label=\"Reportability response\">\
         <h3 class=\"cda-rr-title\">Reportability response",
    );
    if let Some(strongest) = rr.strongest() {
        out.push_str(": ");
        escape_into(out, strongest.words());
    }
    out.push_str("</h3>");
    if let Some(priority) = &rr.priority {
        out.push_str("<p class=\"cda-rr-priority\">Priority: ");
        escape_into(out, priority_words(priority));
        out.push_str("</p>");
    }
    if rr.conditions.is_empty() {
        out.push_str("<p>The response names no conditions.</p>");
    }
    out.push_str("<ul class=\"cda-rr-conditions\">");
    for condition in &rr.conditions {
        out.push_str("<li class=\"cda-rr-condition\"><span class=\"cda-rr-condition-name\">");
        match &condition.condition {
            Some(code) => escape_into(out, code.label()),
            None => out.push_str("Unnamed condition"),
        }
        out.push_str("</span><ul>");
        for place in &condition.jurisdictions {
            let (class, words) = match &place.determination {
                Some(determination) => (determination_class(determination), determination.words()),
                None => ("cda-rr-other", "No determination given"),
            };
            out.push_str("<li class=\"cda-rr-determination ");
            out.push_str(class);
            out.push_str("\"><strong>");
            escape_into(out, words);
            out.push_str("</strong>");
            let mut sentence = String::new();
            if let Some(agency) = &place
                .responsible_agency
                .as_ref()
                .or(place.routing_entity.as_ref())
            {
                sentence.push_str(&format!(" — {}", agency.name));
                if !agency.contact.is_empty() {
                    sentence.push_str(&format!(" ({})", agency.contact.join(", ")));
                }
            }
            if let Some(relevance) = &place.location_relevance {
                sentence.push_str(&format!("; concerning: {}", relevance.label()));
            }
            if let Some(timeframe) = &place.timeframe {
                sentence.push_str(&format!("; report within {timeframe}"));
            }
            if let Some(reason) = &place.reason {
                sentence.push_str(&format!("; reason: {reason}"));
            }
            escape_into(out, &sentence);
            if !place.actions.is_empty() {
                out.push_str("<ul class=\"cda-rr-actions\">");
                for action in &place.actions {
                    out.push_str("<li>");
                    if let Some(priority) = &action.priority {
                        escape_into(out, priority_words(priority));
                        out.push_str(": ");
                    }
                    // A URL that is not a web address is not shown at all.
                    let url = action.url.as_deref().and_then(outside_link);
                    let text = action
                        .description
                        .as_deref()
                        .or(action.kind.as_ref().map(|kind| kind.label()))
                        .or(url.as_deref())
                        .unwrap_or("See the agency's instructions");
                    match &url {
                        Some(url) => write_link(out, url, text, opts),
                        None => escape_into(out, text),
                    }
                    out.push_str("</li>");
                }
                out.push_str("</ul>");
            }
            out.push_str("</li>");
        }
        out.push_str("</ul></li>");
    }
    out.push_str("</ul>");
    if let Some(eicr) = &rr.eicr_id {
        out.push_str("<p class=\"cda-rr-eicr\">In answer to case report ");
        escape_into(out, &eicr.to_string());
        out.push_str(".</p>");
    }
    out.push_str("</aside>");
}

fn determination_class(determination: &Determination) -> &'static str {
    match determination {
        Determination::Reportable => "cda-rr-reportable",
        Determination::MayBeReportable => "cda-rr-may-be-reportable",
        Determination::NotReportable => "cda-rr-not-reportable",
        Determination::NoRuleMet => "cda-rr-no-rule-met",
        Determination::Other(_) => "cda-rr-other",
    }
}

fn write_stats(out: &mut String, stats: &Stats) {
    if stats.is_clean() {
        return;
    }
    let plural = |count: usize, one: &str, many: &str| {
        format!("{count} {}", if count == 1 { one } else { many })
    };
    let mut parts = Vec::new();
    if stats.dropped_elements > 0 {
        parts.push(plural(
            stats.dropped_elements,
            "element that clinical documents may not contain (such as a script or a web page part)",
            "elements that clinical documents may not contain (such as scripts or web page parts)",
        ));
    }
    if stats.dropped_attributes > 0 {
        parts.push(plural(
            stats.dropped_attributes,
            "attribute (such as a script hook or style)",
            "attributes (such as script hooks or styles)",
        ));
    }
    if stats.unlinked > 0 {
        parts.push(plural(
            stats.unlinked,
            "link that was not a web address, shown as text",
            "links that were not web addresses, shown as text",
        ));
    }
    if stats.images_not_shown > 0 {
        parts.push(plural(
            stats.images_not_shown,
            "image that is not a picture embedded in the document",
            "images that are not pictures embedded in the document",
        ));
    }
    out.push_str("<p class=\"cda-left-out\" role=\"note\">");
    escape_into(
        out,
        &format!(
            "Parts of this document were left out or shown as plain text for safety: {}.",
            parts.join("; ")
        ),
    );
    out.push_str("</p>");
}

fn write_section(out: &mut String, section: &Section, opts: &RenderOptions) {
    out.push_str("<section class=\"cda-section\"");
    if let Some(loinc) = section.loinc().filter(|code| is_token(code, 32)) {
        attribute(out, "data-loinc", loinc);
    }
    let restricted = section
        .confidentiality
        .as_ref()
        .filter(|code| is_token(&code.code, 8));
    if let Some(code) = restricted {
        attribute(out, "data-confidentiality", &code.code);
    }
    if let Some(lang) = section
        .language
        .as_deref()
        .filter(|lang| is_token(lang, 35))
    {
        attribute(out, "lang", lang);
    }
    let collapsed = section
        .loinc()
        .is_some_and(|code| opts.collapsed.iter().any(|c| c == code));
    out.push_str(if collapsed {
        "><details><summary><span class=\"cda-section-title\">"
    } else {
        "><details open><summary><span class=\"cda-section-title\">"
    });
    escape_into(out, section.display_title());
    out.push_str("</span>");
    if let Some(code) = restricted.filter(|code| code.code != "N") {
        out.push_str(" <span class=\"cda-confidentiality\">");
        escape_into(
            out,
            confidentiality_words(&code.code).unwrap_or(code.label()),
        );
        out.push_str("</span>");
    }
    out.push_str("</summary>");
    if section.narrative.is_empty() {
        if section.sections.is_empty() {
            out.push_str("<p class=\"cda-empty\">This section has no text.</p>");
        }
    } else {
        out.push_str("<div class=\"cda-narrative\">");
        out.push_str(&render_narrative(&section.narrative, opts).0);
        out.push_str("</div>");
    }
    // At most MAX_SECTION_NESTING levels deep: deeper sections were read flat.
    for nested in &section.sections {
        write_section(out, nested, opts);
    }
    out.push_str("</details></section>");
}

/// Letters, digits, `.` and `-`, at most `max` of them: values we place in attributes
/// that scripts read.
fn is_token(value: &str, max: usize) -> bool {
    !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
}

fn attribute(out: &mut String, name: &str, value: &str) {
    out.push(' ');
    out.push_str(name);
    out.push_str("=\"");
    escape_into(out, value);
    out.push('"');
}
