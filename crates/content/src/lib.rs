//! Content checks for the directmail webmail: pure functions, no I/O.
//!
//! - [`check_attachment`] decides what an uploaded file really is from its bytes (never
//!   from its name or the browser's declared type), refuses what the operator's
//!   [`Policy`] does not allow, and refuses PDFs that are encrypted or carry JavaScript,
//!   launch actions or embedded files. A [`Rejection`] displays as one plain sentence
//!   for the person who attached the file.
//! - [`sanitize_html`] / [`sanitize_html_report`] make an HTML body safe to show;
//!   [`linkify_text`] renders a plain-text body; [`snippet`] and [`html_to_text`] give
//!   text for the message list and the search index.
//! - [`xdm`] reads and writes XDM packages (IHE ITI-32 as profiled for Direct): bounded,
//!   with each document checked against the fingerprint its sender recorded.
//! - [`cda`]: clinical documents (CDA R2, C-CDA) parsed with [`parse_cda`] and rendered
//!   as our own HTML with [`render_document`]; labelled as restricted (DS4P) with
//!   [`cda::mark_restricted`].
//! - [`context`]: the Direct Context block (`X-Direct-Context`), read and written.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::todo)]
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::todo)
)]

mod attachment;
pub mod cda;
pub mod context;
mod render;
pub mod xdm;

pub use attachment::{
    Accepted, Kind, Policy, Rejection, UnknownKind, check_attachment, inline_refusal, inline_type,
    kind_from_str, parse_kinds,
};
pub use cda::{CdaError, CdaLimits, parse_cda, render_document, render_narrative};
pub use render::{
    Sanitized, html_to_text, linkify_text, sanitize_html, sanitize_html_report, snippet,
};
