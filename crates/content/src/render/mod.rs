//! Rendering message bodies: sanitised HTML, linked plain text, and plain text for the
//! message list and the search index.

mod html;
mod text;

pub use html::{Sanitized, html_to_text, sanitize_html, sanitize_html_report};
pub(crate) use text::escape_into;
pub use text::{linkify_text, snippet};
