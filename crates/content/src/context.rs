//! The Direct Context block ("Implementation Guide for Expressing Context in Direct
//! Messaging", Direct Project, v1.1): a message carries the header
//! `X-Direct-Context: <content-id>` naming a `text/plain` part (`metadata.txt`) of
//! `name: value` lines about the exchange: `version`, `id`, `patient-id` (`oid:id`),
//! `type` (`category/action`), `purpose`, `patient` (`givenName=…; surname=…;
//! dateOfBirth=…; gender=…; postalCode=…`) and `encapsulation`.
//!
//! [`parse_context`] reads such a block, bounded: it is sender input, and a block
//! that is too large, has too many lines, a value too long, a repeated name or a line
//! that is not `name: value` is refused with one sentence ([`ContextError`]); names
//! it does not know are skipped. [`build_context`] writes one.
//!
//! Where we were unsure of the guide (read through the Direct Project's .NET
//! implementation, `Health.Direct.Context`): the exact form of `dateOfBirth` (read
//! here as `YYYY-MM-DD` or `YYYYMMDD`, written as `YYYY-MM-DD`) and the values of
//! `gender` (kept as written; we write `F`, `M`, `O` or `U`).

/// The largest block read, in bytes.
pub const MAX_BYTES: usize = 8 * 1024;
/// The most lines read (blank lines included).
pub const MAX_LINES: usize = 64;
/// The longest value read, in bytes.
pub const MAX_VALUE: usize = 256;

/// The patient parameters of the `patient` line (guide §3.6).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContextPatient {
    pub given_name: Option<String>,
    pub middle_name: Option<String>,
    pub surname: Option<String>,
    /// As written; see the module's note.
    pub date_of_birth: Option<String>,
    /// As written; see the module's note.
    pub gender: Option<String>,
    pub postal_code: Option<String>,
}

impl ContextPatient {
    /// The name in reading order ("Anna Maria Jones"), when there is one.
    pub fn name(&self) -> Option<String> {
        let words: Vec<&str> = [&self.given_name, &self.middle_name, &self.surname]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        (!words.is_empty()).then(|| words.join(" "))
    }

    fn is_empty(&self) -> bool {
        *self == ContextPatient::default()
    }
}

/// A Direct Context block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    pub version: Option<String>,
    pub id: Option<String>,
    /// `oid:id`: the patient's identifier and who assigned it.
    pub patient_id: Option<String>,
    /// `category/action`, such as `referral/order`.
    pub kind: Option<String>,
    /// treatment, payment, operations, emergency or research.
    pub purpose: Option<String>,
    pub patient: Option<ContextPatient>,
    pub encapsulation: Option<String>,
}

impl Context {
    /// The patient identifier split into (assigning authority, identifier); an
    /// identifier without `oid:` has no authority.
    pub fn patient_identifier(&self) -> Option<(Option<&str>, &str)> {
        let value = self.patient_id.as_deref()?;
        Some(match value.rsplit_once(':') {
            Some((oid, id)) if !id.trim().is_empty() && !oid.trim().is_empty() => {
                (Some(oid.trim()), id.trim())
            }
            _ => (None, value.trim()),
        })
    }
}

/// Why a Direct Context block was refused (or could not be written). Displays as one
/// sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextError {
    TooLarge,
    TooManyLines,
    NotText,
    LineNotPair(usize),
    ValueTooLong(String),
    Repeated(String),
    /// Only when writing: a value holds a line break, or a patient value a `;`.
    Unwritable(String),
}

impl std::fmt::Display for ContextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ContextError::TooLarge => write!(
                f,
                "The Direct Context block is larger than {MAX_BYTES} bytes; it was not read."
            ),
            ContextError::TooManyLines => write!(
                f,
                "The Direct Context block has more than {MAX_LINES} lines; it was not read."
            ),
            ContextError::NotText => {
                f.write_str("The Direct Context block is not UTF-8 text; it was not read.")
            }
            ContextError::LineNotPair(n) => write!(
                f,
                "Line {n} of the Direct Context block is not a \"name: value\" pair; it was not read."
            ),
            ContextError::ValueTooLong(name) => write!(
                f,
                "The Direct Context value \"{name}\" is longer than {MAX_VALUE} bytes; the block was not read."
            ),
            ContextError::Repeated(name) => write!(
                f,
                "The Direct Context block gives \"{name}\" twice; it was not read."
            ),
            ContextError::Unwritable(name) => write!(
                f,
                "The Direct Context value \"{name}\" holds a line break or a semicolon, which the block cannot carry."
            ),
        }
    }
}

impl std::error::Error for ContextError {}

/// Reads a Direct Context block (the bytes of its `metadata.txt` part).
pub fn parse_context(bytes: &[u8]) -> Result<Context, ContextError> {
    if bytes.len() > MAX_BYTES {
        return Err(ContextError::TooLarge);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| ContextError::NotText)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Context::default();
    let mut seen: Vec<String> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if n >= MAX_LINES {
            return Err(ContextError::TooManyLines);
        }
        if line.trim().is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(ContextError::LineNotPair(n + 1));
        };
        let name = name.trim().to_ascii_lowercase();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(ContextError::LineNotPair(n + 1));
        }
        let value = value.trim();
        if value.len() > MAX_VALUE {
            return Err(ContextError::ValueTooLong(name));
        }
        if seen.contains(&name) {
            return Err(ContextError::Repeated(name));
        }
        seen.push(name.clone());
        let owned = (!value.is_empty()).then(|| value.to_owned());
        match name.as_str() {
            "version" => out.version = owned,
            "id" => out.id = owned,
            "patient-id" => out.patient_id = owned,
            "type" => out.kind = owned,
            "purpose" => out.purpose = owned,
            "encapsulation" => out.encapsulation = owned,
            "patient" => {
                let patient = parse_patient(value)?;
                out.patient = (!patient.is_empty()).then_some(patient);
            }
            // a later version's names, or a sender's own: not ours to read
            _ => {}
        }
    }
    Ok(out)
}

/// `givenName=Anna; surname=Jones; …`: unknown parameters are skipped.
fn parse_patient(value: &str) -> Result<ContextPatient, ContextError> {
    let mut patient = ContextPatient::default();
    let mut seen: Vec<String> = Vec::new();
    for item in value.split(';') {
        let Some((name, v)) = item.split_once('=') else {
            continue;
        };
        let name = name.trim().to_owned();
        if seen.contains(&name) {
            return Err(ContextError::Repeated(format!("patient {name}")));
        }
        seen.push(name.clone());
        let v = v.trim();
        let v = (!v.is_empty()).then(|| v.to_owned());
        match name.as_str() {
            "givenName" => patient.given_name = v,
            "middleName" => patient.middle_name = v,
            "surname" => patient.surname = v,
            "dateOfBirth" => patient.date_of_birth = v,
            "gender" => patient.gender = v,
            "postalCode" => patient.postal_code = v,
            _ => {}
        }
    }
    Ok(patient)
}

/// Writes a Direct Context block, lines ending in CRLF. Refuses a value that the
/// block cannot carry (a line break, or a `;` or `=` in a patient parameter) or that
/// is longer than [`MAX_VALUE`].
pub fn build_context(context: &Context) -> Result<String, ContextError> {
    let mut out = String::new();
    let mut line = |name: &str, value: &Option<String>| -> Result<(), ContextError> {
        if let Some(value) = value {
            if value.contains(['\r', '\n']) {
                return Err(ContextError::Unwritable(name.to_owned()));
            }
            if value.len() > MAX_VALUE {
                return Err(ContextError::ValueTooLong(name.to_owned()));
            }
            out.push_str(&format!("{name}: {}\r\n", value.trim()));
        }
        Ok(())
    };
    line("version", &context.version)?;
    line("id", &context.id)?;
    line("patient-id", &context.patient_id)?;
    line("type", &context.kind)?;
    line("purpose", &context.purpose)?;
    if let Some(p) = &context.patient {
        let mut items = Vec::new();
        for (name, value) in [
            ("givenName", &p.given_name),
            ("middleName", &p.middle_name),
            ("surname", &p.surname),
            ("dateOfBirth", &p.date_of_birth),
            ("gender", &p.gender),
            ("postalCode", &p.postal_code),
        ] {
            if let Some(v) = value {
                if v.contains([';', '=', '\r', '\n']) {
                    return Err(ContextError::Unwritable(format!("patient {name}")));
                }
                items.push(format!("{name}={}", v.trim()));
            }
        }
        if !items.is_empty() {
            line("patient", &Some(items.join("; ")))?;
        }
    }
    line("encapsulation", &context.encapsulation)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "version: 1.1\r\nid: 2ff6eaec83894520bbb872e9b8d3f1b0\r\npatient-id: 2.16.840.1.113883.19.999999:123456\r\ntype: referral/order\r\npurpose: treatment\r\npatient: givenName=John; surname=Doe; middleName=Jacob; dateOfBirth=1961-12-31; gender=M; postalCode=12345\r\n";

    #[test]
    fn a_block_from_the_guide_is_read() {
        let c = parse_context(SAMPLE.as_bytes()).unwrap();
        assert_eq!(c.version.as_deref(), Some("1.1"));
        assert_eq!(c.kind.as_deref(), Some("referral/order"));
        assert_eq!(c.purpose.as_deref(), Some("treatment"));
        assert_eq!(
            c.patient_identifier(),
            Some((Some("2.16.840.1.113883.19.999999"), "123456"))
        );
        let p = c.patient.unwrap();
        assert_eq!(p.name().as_deref(), Some("John Jacob Doe"));
        assert_eq!(p.date_of_birth.as_deref(), Some("1961-12-31"));
        assert_eq!(p.gender.as_deref(), Some("M"));
        assert_eq!(p.postal_code.as_deref(), Some("12345"));
    }

    #[test]
    fn names_are_read_in_any_case_and_unknown_ones_skipped() {
        let c = parse_context(b"Version: 1.1\nX-Custom: whatever\n\nPatient-ID: 777\n").unwrap();
        assert_eq!(c.version.as_deref(), Some("1.1"));
        assert_eq!(c.patient_identifier(), Some((None, "777")));
        assert_eq!(c.patient, None);
    }

    #[test]
    fn what_it_writes_it_reads_back() {
        let c = parse_context(SAMPLE.as_bytes()).unwrap();
        let written = build_context(&c).unwrap();
        assert_eq!(parse_context(written.as_bytes()).unwrap(), c);
    }

    #[test]
    fn hostile_blocks_are_refused_with_one_sentence() {
        let many = "x: y\n".repeat(10_000);
        assert_eq!(parse_context(many.as_bytes()), Err(ContextError::TooLarge));
        let lines = "\n".repeat(MAX_LINES + 1);
        assert_eq!(
            parse_context(lines.as_bytes()),
            Err(ContextError::TooManyLines)
        );
        let huge = format!("patient-id: {}\n", "9".repeat(MAX_VALUE + 1));
        assert_eq!(
            parse_context(huge.as_bytes()),
            Err(ContextError::ValueTooLong("patient-id".into()))
        );
        assert_eq!(
            parse_context(b"purpose: treatment\npurpose: research\n"),
            Err(ContextError::Repeated("purpose".into()))
        );
        assert_eq!(
            parse_context(b"patient: surname=Doe; surname=Roe\n"),
            Err(ContextError::Repeated("patient surname".into()))
        );
        assert_eq!(
            parse_context(b"version: 1.1\nno pair here\n"),
            Err(ContextError::LineNotPair(2))
        );
        assert_eq!(parse_context(b"id: \xff\n"), Err(ContextError::NotText));
        for e in [
            ContextError::TooLarge,
            ContextError::LineNotPair(2),
            ContextError::Repeated("id".into()),
        ] {
            let s = e.to_string();
            assert!(s.ends_with('.') && s.matches(". ").count() == 0, "{s}");
        }
    }

    #[test]
    fn values_the_block_cannot_carry_are_not_written() {
        let c = Context {
            patient: Some(ContextPatient {
                surname: Some("Doe; gender=F".into()),
                ..ContextPatient::default()
            }),
            ..Context::default()
        };
        assert_eq!(
            build_context(&c),
            Err(ContextError::Unwritable("patient surname".into()))
        );
        let c = Context {
            purpose: Some("treatment\r\nX: y".into()),
            ..Context::default()
        };
        assert!(build_context(&c).is_err());
    }
}
