//! TEMPORARY stand-in while the real crate is written (not to be committed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Pdf,
    Xml,
    Image,
    Text,
    Word,
}
impl Kind {
    pub fn from_name(s: &str) -> Result<Kind, String> {
        match s {
            "pdf" => Ok(Kind::Pdf),
            "xml" => Ok(Kind::Xml),
            "image" => Ok(Kind::Image),
            "text" => Ok(Kind::Text),
            "word" => Ok(Kind::Word),
            o => Err(format!("unknown {o}")),
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Kind::Pdf => "PDF",
            Kind::Xml => "XML",
            Kind::Image => "images",
            Kind::Text => "plain text",
            Kind::Word => "Word",
        }
    }
}
pub struct Policy {
    pub max_total_bytes: usize,
    pub allowed: Vec<Kind>,
}
pub struct Accepted {
    pub kind: Kind,
    pub content_type: &'static str,
}
#[derive(Debug)]
pub struct Rejection(pub String);
impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
pub fn check_attachment(
    name: &str,
    _d: Option<&str>,
    bytes: &[u8],
    p: &Policy,
) -> Result<Accepted, Rejection> {
    if bytes.len() > p.max_total_bytes {
        return Err(Rejection(format!("“{name}” is too large")));
    }
    if bytes.starts_with(b"%PDF-") {
        Ok(Accepted {
            kind: Kind::Pdf,
            content_type: "application/pdf",
        })
    } else {
        Err(Rejection(format!("“{name}” is not a PDF")))
    }
}
pub struct Sanitized {
    pub html: String,
    pub blocked_images: usize,
    pub removed_forms: usize,
}
pub fn sanitize_html(h: &str) -> Sanitized {
    Sanitized {
        html: h.replace('<', "&lt;"),
        blocked_images: 0,
        removed_forms: 0,
    }
}
pub fn linkify_text(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
