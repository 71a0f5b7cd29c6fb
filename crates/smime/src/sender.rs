//! Who sent a message, read once from its protected (signed) header block: the one
//! reading that binding, the AS 1.3 routing check, storage, the pages, the API,
//! replies and learned certificates all use.
//!
//! RFC 5322 §3.6 allows exactly one `From` and at most one `Sender`, and a `From`
//! naming several mailboxes needs a `Sender`. Direct needs less than the grammar
//! allows and must never let two readers disagree: a message whose first `From` says
//! one thing and whose last says another would be judged by one parser and shown by
//! another. So the header block is read strictly here, and then also by mail-parser
//! (what the pages and the store use); anything beyond one plain mailbox in one
//! `From`, or any disagreement between the two readings, is refused.

use crate::mime;

/// One mailbox: its address (as written, compared case-insensitively) and the
/// display name (empty when none was given).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mailbox {
    /// The addr-spec, `local@domain`.
    pub address: String,
    /// The display name, decoded (RFC 2047), or empty.
    pub name: String,
}

/// The originator fields of a message (RFC 5322 §3.6.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Originator {
    /// The single mailbox of the single `From` field.
    pub from: Mailbox,
    /// The `Sender` field's mailbox, when there is one.
    pub sender: Option<Mailbox>,
}

impl Originator {
    /// The addresses the SMTP envelope sender may match (AS 1.3 §2.4), lowercased.
    pub fn envelope_addresses(&self) -> Vec<String> {
        let mut out = vec![self.from.address.to_ascii_lowercase()];
        if let Some(s) = &self.sender {
            out.push(s.address.to_ascii_lowercase());
        }
        out
    }
}

/// Why the originator could not be read; each says so in words for the operator.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SenderError {
    /// No From field at all.
    #[error("the message has no From field")]
    NoFrom,
    /// More than one From field (RFC 5322 §3.6 allows one).
    #[error("the message has {0} From fields")]
    SeveralFrom(usize),
    /// More than one Sender field.
    #[error("the message has {0} Sender fields")]
    SeveralSender(usize),
    /// A From or Sender naming several mailboxes.
    #[error("the {0} field names more than one mailbox")]
    SeveralMailboxes(&'static str),
    /// A field that is not one plain mailbox.
    #[error("the {field} field cannot be read cleanly: {why}")]
    Unreadable {
        /// From or Sender.
        field: &'static str,
        /// What was wrong, in words.
        why: String,
    },
    /// mail-parser reads the field otherwise than this module does.
    #[error("two readings of the {0} field disagree")]
    Disagreement(&'static str),
}

/// Reads the originator from a header block (the bytes before the empty line; the
/// whole message may be passed too, the body is not read).
pub fn read_originator(message: &[u8]) -> Result<Originator, SenderError> {
    let (header, body) = mime::split(message);
    // Only the From and Sender fields are taken out, from the borrowed header.
    let named = |name: &str| -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        for (first, line) in mime::field_lines(header, name) {
            match out.last_mut() {
                Some(field) if !first => field.extend_from_slice(line),
                _ => out.push(line.to_vec()),
            }
        }
        out
    };
    let from = match named("From").as_slice() {
        [] => return Err(SenderError::NoFrom),
        [one] => mailbox(one, "From")?,
        many => return Err(SenderError::SeveralFrom(many.len())),
    };
    let sender = match named("Sender").as_slice() {
        [] => None,
        [one] => Some(mailbox(one, "Sender")?),
        many => return Err(SenderError::SeveralSender(many.len())),
    };
    let mut originator = Originator { from, sender };
    // The header block with the empty line that ends it, as it lies in the
    // message when it has one (no copy).
    let block = if header.len() < message.len() {
        std::borrow::Cow::Borrowed(&message[..message.len() - body.len()])
    } else {
        let mut block = header.to_vec();
        if !block.ends_with(b"\n") {
            block.extend_from_slice(b"\r\n");
        }
        block.extend_from_slice(b"\r\n");
        std::borrow::Cow::Owned(block)
    };
    agree_with_mail_parser(&block, &mut originator)?;
    Ok(originator)
}

/// The second reading: mail-parser (which the store and the pages use), over the
/// header block and the empty line that ends it, must find the
/// same single From address and the same Sender, or the message is refused. The
/// display names are taken from it (it decodes RFC 2047 words), and refused when
/// they hold an address once decoded.
fn agree_with_mail_parser(block: &[u8], o: &mut Originator) -> Result<(), SenderError> {
    let parsed = mail_parser::MessageParser::default()
        .parse_headers(block)
        .ok_or(SenderError::Disagreement("From"))?;
    let same = |field: &'static str,
                theirs: Option<&mail_parser::Address<'_>>,
                ours: Option<&mut Mailbox>|
     -> Result<(), SenderError> {
        let theirs: Vec<(&str, &str)> = theirs
            .map(|a| {
                a.iter()
                    .map(|m| (m.address().unwrap_or(""), m.name().unwrap_or("")))
                    .collect()
            })
            .unwrap_or_default();
        match (theirs.as_slice(), ours) {
            ([], None) => Ok(()),
            ([(address, name)], Some(m)) if address.eq_ignore_ascii_case(&m.address) => {
                if name.contains(['@', '<', '>']) {
                    return Err(SenderError::Unreadable {
                        field,
                        why: "the display name holds an encoded address".into(),
                    });
                }
                m.name = name.trim().to_owned();
                Ok(())
            }
            _ => Err(SenderError::Disagreement(field)),
        }
    };
    same("From", parsed.from(), Some(&mut o.from))?;
    same("Sender", parsed.sender(), o.sender.as_mut())
}

/// One mailbox (RFC 5322 §3.4 `mailbox`), strictly: `addr-spec` or
/// `display-name <addr-spec>`. Refused: comments, groups, several mailboxes, a route,
/// a quoted local part, and a display name that holds an address (in clear or in an
/// encoded word, RFC 2047), so that what a reader sees is the address that was bound.
fn mailbox(raw_field: &[u8], field: &'static str) -> Result<Mailbox, SenderError> {
    let unreadable = |why: &str| SenderError::Unreadable {
        field,
        why: why.to_owned(),
    };
    let raw = std::str::from_utf8(raw_field).map_err(|_| unreadable("it is not UTF-8"))?;
    let value = raw
        .split_once(':')
        .map(|(_, v)| v)
        .ok_or_else(|| unreadable("it has no value"))?;
    // unfold (RFC 5322 §2.2.3)
    let value: String = value.replace("\r\n", "").replace('\n', "");
    let value = value.trim();
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(unreadable("it holds control characters"));
    }
    let mut quoted = false;
    let mut escaped = false;
    let mut open: Option<usize> = None;
    let mut close: Option<usize> = None;
    for (i, c) in value.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            _ if quoted => {}
            '(' | ')' => return Err(unreadable("it holds a comment")),
            ',' => return Err(SenderError::SeveralMailboxes(field)),
            ':' | ';' => return Err(unreadable("it holds a group or a route")),
            '<' if open.is_none() => open = Some(i),
            '>' if open.is_some() && close.is_none() => close = Some(i),
            '<' | '>' => return Err(unreadable("it holds more than one angle address")),
            _ => {}
        }
    }
    if quoted {
        return Err(unreadable("a quoted string is not closed"));
    }
    let (name, address) = match (open, close) {
        (Some(a), Some(b)) => {
            if !value[b + 1..].trim().is_empty() {
                return Err(unreadable("text follows the address"));
            }
            (display_name(&value[..a], field)?, value[a + 1..b].trim())
        }
        (None, None) => (String::new(), value),
        _ => return Err(unreadable("an angle bracket is not closed")),
    };
    if !is_addr_spec(address) {
        return Err(unreadable(
            "the address is not a plain local@domain address",
        ));
    }
    Ok(Mailbox {
        address: address.to_owned(),
        name,
    })
}

/// The display name without its quotes. Refused when it holds an address, or an
/// encoded word in a charset whose bytes cannot be checked for one.
fn display_name(phrase: &str, field: &'static str) -> Result<String, SenderError> {
    let unreadable = |why: &str| SenderError::Unreadable {
        field,
        why: why.to_owned(),
    };
    let phrase = phrase.trim();
    if phrase.contains('@') || phrase.contains('<') || phrase.contains('>') {
        return Err(unreadable("the display name holds an address"));
    }
    let mut rest = phrase;
    while let Some(start) = rest.find("=?") {
        let word = &rest[start + 2..];
        let parts: Vec<&str> = word.splitn(4, '?').collect();
        let [charset, encoding, text, tail] = parts.as_slice() else {
            break;
        };
        if !tail.starts_with('=') {
            break;
        }
        let charset = charset
            .split('*')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        // charsets where '@' and '<' can only be the ASCII bytes
        let ascii_safe = charset == "us-ascii"
            || charset == "utf-8"
            || charset.starts_with("iso-8859-")
            || charset.starts_with("windows-125");
        if !ascii_safe {
            return Err(unreadable(
                "the display name is encoded in an unsupported charset",
            ));
        }
        let bytes = match encoding.to_ascii_lowercase().as_str() {
            "b" => mime::base64_decode(text.as_bytes())
                .ok_or_else(|| unreadable("an encoded word is not valid base64"))?,
            "q" => q_decode(text),
            _ => return Err(unreadable("an encoded word has an unknown encoding")),
        };
        if bytes.iter().any(|b| matches!(b, b'@' | b'<' | b'>' | b',')) {
            return Err(unreadable("the display name holds an encoded address"));
        }
        rest = &tail[1..];
    }
    let unquoted = phrase
        .strip_prefix('"')
        .and_then(|p| p.strip_suffix('"'))
        .map(|p| p.replace("\\\"", "\"").replace("\\\\", "\\"))
        .unwrap_or_else(|| phrase.to_owned());
    Ok(unquoted.trim().to_owned())
}

/// RFC 2047 §4.2 "Q" decoding, bytes only.
fn q_decode(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'_' => out.push(b' '),
            b'=' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'='),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// `local@domain` with a dot-atom local part (RFC 5322 §3.4.1, no quoted local part,
/// no obsolete forms) and a domain of letters, digits and hyphens (no literal).
pub fn is_addr_spec(address: &str) -> bool {
    let Some((local, domain)) = address.split_once('@') else {
        return false;
    };
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    let dot_atom = |s: &str, ok: &dyn Fn(char) -> bool| {
        !s.is_empty()
            && s.split('.')
                .all(|part| !part.is_empty() && part.chars().all(ok))
    };
    dot_atom(local, &atext)
        && dot_atom(domain, &|c: char| c.is_ascii_alphanumeric() || c == '-')
        && domain.contains('.')
        && local.len() <= 64
        && domain.len() <= 253
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(header: &str) -> Result<Originator, SenderError> {
        read_originator(format!("{header}\r\n\r\nbody\r\n").as_bytes())
    }

    #[test]
    fn one_plain_mailbox_is_read_with_its_name() {
        let o = read("From: \"Lee, Dr\" <Dr.Lee@direct.example.org>\r\nTo: a@b.org").unwrap();
        assert_eq!(o.from.address, "Dr.Lee@direct.example.org");
        assert_eq!(o.from.name, "Lee, Dr");
        assert_eq!(o.envelope_addresses(), vec!["dr.lee@direct.example.org"]);
        let o = read("From: dr.lee@direct.example.org\r\nSender: desk@direct.example.org").unwrap();
        assert_eq!(o.from.name, "");
        assert_eq!(o.sender.unwrap().address, "desk@direct.example.org");
        let o = read("From: =?utf-8?q?Dr=2E_Ana_Ru=C3=ADz?= <ana@direct.example.org>").unwrap();
        assert_eq!(o.from.name, "Dr. Ana Ruíz");
    }

    #[test]
    fn a_folded_from_is_one_field() {
        let o = read("From: Dr Lee\r\n <dr.lee@direct.example.org>").unwrap();
        assert_eq!(o.from.address, "dr.lee@direct.example.org");
    }

    #[test]
    fn every_ambiguous_originator_is_refused() {
        let cases = [
            ("To: a@b.org", SenderError::NoFrom),
            (
                "From: evil@attacker.example\r\nFrom: dr.lee@direct.example.org",
                SenderError::SeveralFrom(2),
            ),
            (
                "from: evil@attacker.example\r\nFROM: dr.lee@direct.example.org",
                SenderError::SeveralFrom(2),
            ),
            (
                "From: a@direct.example.org\r\nSender: a@x.org\r\nSender: b@y.org",
                SenderError::SeveralSender(2),
            ),
            (
                "From: evil@attacker.example, dr.lee@direct.example.org",
                SenderError::SeveralMailboxes("From"),
            ),
        ];
        for (header, want) in cases {
            assert_eq!(read(header).unwrap_err(), want, "{header}");
        }
        for header in [
            "From: evil@attacker.example (dr.lee@direct.example.org)",
            "From: dr.lee@direct.example.org <evil@attacker.example>",
            "From: \"dr.lee@direct.example.org\" <evil@attacker.example>",
            "From: =?utf-8?q?dr.lee=40direct.example.org?= <evil@attacker.example>",
            "From: =?utf-8?b?ZHIubGVlQGRpcmVjdC5leGFtcGxlLm9yZw==?= <evil@attacker.example>",
            "From: =?utf-7?q?dr.lee+AEA-direct.example.org?= <evil@attacker.example>",
            "From: friends: evil@attacker.example, dr.lee@direct.example.org;",
            "From: undisclosed-recipients:;",
            "From: <@relay.example:evil@attacker.example>",
            "From: \"evil\"@attacker.example",
            "From: <evil@attacker.example> <dr.lee@direct.example.org>",
            "From: <evil@attacker.example> dr.lee@direct.example.org",
            "From: evil@[127.0.0.1]",
            "From: not an address",
            "From: evil@attacker.example\r\nSender: x@y.org (z@w.org)",
        ] {
            assert!(
                matches!(
                    read(header),
                    Err(SenderError::Unreadable { .. } | SenderError::SeveralMailboxes(_))
                ),
                "{header}: {:?}",
                read(header)
            );
        }
    }

    #[test]
    fn q_decoding_reads_hex_and_underscores() {
        assert_eq!(q_decode("a_b=40c=3"), b"a b@c=3");
        assert_eq!(q_decode("=41"), b"A");
    }

    #[test]
    fn addr_specs_are_plain() {
        assert!(is_addr_spec("dr.lee@direct.example.org"));
        assert!(!is_addr_spec("dr..lee@direct.example.org"));
        assert!(!is_addr_spec("dr lee@direct.example.org"));
        assert!(!is_addr_spec("dr.lee@localhost"));
        assert!(!is_addr_spec("a@b@c.org"));
    }
}
