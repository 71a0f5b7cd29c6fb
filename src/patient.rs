//! The patient a message is about, read once when the message is filed and stored
//! with it (migration 0017): from its Direct Context block when it has one, else from
//! an XDM package's metadata, else from the first clinical document's recordTarget.
//! [`choose`] makes that choice, from what [`crate::filing::read`] took out of the
//! message in its one reading; nothing else reads a patient from a message.

use directmail_content::cda::{Document, Time};
use directmail_content::context::{self, Context};
use directmail_content::xdm::Package;
use mail_parser::{Message, MessagePart, MimeHeaders as _, PartType};

/// Where the patient was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Context,
    Xdm,
    Cda,
}

impl Source {
    /// The stored form (`messages.patient_source`).
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Context => "context",
            Source::Xdm => "xdm",
            Source::Cda => "cda",
        }
    }

    pub fn parse(s: &str) -> Option<Source> {
        Some(match s {
            "context" => Source::Context,
            "xdm" => Source::Xdm,
            "cda" => Source::Cda,
            _ => return None,
        })
    }

    /// For the banner: "from the Direct Context".
    pub fn words(self) -> &'static str {
        match self {
            Source::Context => "from the Direct Context",
            Source::Xdm => "from the XDM package",
            Source::Cda => "from the clinical document",
        }
    }
}

/// The patient a message is about, as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessagePatient {
    /// In reading order ("Anna Jones"); may be empty when only an identifier is known.
    pub name: String,
    /// The given (and middle) names and the family name, when the source tells them
    /// apart; to start a reply's patient block with.
    pub given: String,
    pub family: String,
    /// As shown: "12345 (1.2.840.114350)", or the identifier alone.
    pub id: String,
    /// `YYYY-MM-DD`, `YYYY-MM`, `YYYY`, or empty.
    pub birth_date: String,
    /// In words ("Female"), or empty.
    pub sex: String,
    pub source: Source,
}

/// Longest stored name or identifier, in characters.
const MAX_FIELD: usize = 200;

impl MessagePatient {
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: Option<String>,
        given: Option<String>,
        family: Option<String>,
        id: Option<String>,
        birth: Option<&str>,
        sex: Option<&str>,
        source: Source,
    ) -> Option<MessagePatient> {
        let clip = |s: Option<String>| -> String {
            s.map(|s| {
                s.split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(MAX_FIELD)
                    .collect()
            })
            .unwrap_or_default()
        };
        let patient = MessagePatient {
            name: clip(name),
            given: clip(given),
            family: clip(family),
            id: clip(id),
            birth_date: birth.map(normal_birth_date).unwrap_or_default(),
            sex: clip(sex.and_then(sex_words)),
            source,
        };
        (!patient.name.is_empty() || !patient.id.is_empty()).then_some(patient)
    }

    /// The birth date in words ("March 12, 1970").
    pub fn birth_date_words(&self) -> String {
        let digits: String = self
            .birth_date
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        Time::parse(&digits)
            .map(|t| t.readable)
            .unwrap_or_else(|| self.birth_date.clone())
    }

    /// The name, or the identifier when there is no name: what the list shows.
    pub fn label(&self) -> &str {
        if self.name.is_empty() {
            &self.id
        } else {
            &self.name
        }
    }
}

/// The patient a message is about, if it says: its Direct Context block, else
/// `from_packages` (the first of its XDM packages whose metadata names a patient, see
/// [`from_package`]), else the recordTarget of `first_cda` (its first CDA attachment,
/// when that could be read). A Direct Context block that cannot be read is ignored
/// (as if the message had none). Called by [`crate::filing::read`].
pub(crate) fn choose(
    message: &Message<'_>,
    from_packages: Option<MessagePatient>,
    first_cda: Option<&Document>,
) -> Option<MessagePatient> {
    from_context(message)
        .or(from_packages)
        .or_else(|| first_cda.and_then(from_cda))
}

/// "Expressing Context in Direct Messaging" v1.1: exactly one `X-Direct-Context`
/// header, naming a `text/plain` part by its Content-ID.
fn from_context(message: &Message<'_>) -> Option<MessagePatient> {
    context_of(message).map(|(_, patient)| patient)
}

/// The message's Direct Context part (`metadata.txt`) and the patient its block
/// names, when it names one. The message page shows that patient as the banner, so it
/// does not list the part among the attachments (a block that does not read stays a
/// file).
pub fn context_of<'a>(message: &'a Message<'a>) -> Option<(&'a MessagePart<'a>, MessagePatient)> {
    let (part, block) = context_block(message)?;
    Some((part, context_patient(&block)?))
}

/// The message's Direct Context part and its block, when it has one that reads (its
/// `type` and `id` are what a records request and its answer are known by).
pub fn context_block<'a>(message: &'a Message<'a>) -> Option<(&'a MessagePart<'a>, Context)> {
    let part = context_part(message)?;
    match context::parse_context(part.contents()) {
        Ok(block) => Some((part, block)),
        Err(why) => {
            tracing::info!(%why, "Direct Context block ignored");
            None
        }
    }
}

/// Exactly one `X-Direct-Context` header naming a `text/plain` part by its Content-ID.
fn context_part<'a>(message: &'a Message<'a>) -> Option<&'a MessagePart<'a>> {
    let mut named = message
        .root_part()
        .headers
        .iter()
        .filter(|h| h.name.as_str().eq_ignore_ascii_case("X-Direct-Context"));
    let header = named.next()?;
    if named.next().is_some() {
        return None;
    }
    let wanted = header
        .value
        .as_text()?
        .trim()
        .trim_matches(['<', '>'])
        .trim();
    if wanted.is_empty() {
        return None;
    }
    let part = message.parts.iter().find(|p| {
        p.content_id()
            .is_some_and(|id| id.trim().trim_matches(['<', '>']).trim() == wanted)
    })?;
    let is_plain = part.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("text")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("plain"))
    });
    if !is_plain || matches!(part.body, PartType::Multipart(_) | PartType::Message(_)) {
        return None;
    }
    Some(part)
}

fn context_patient(block: &Context) -> Option<MessagePatient> {
    let patient = block.patient.clone().unwrap_or_default();
    let id = block.patient_identifier().map(|(oid, id)| match oid {
        Some(oid) => format!("{id} ({oid})"),
        None => id.to_owned(),
    });
    let given: Vec<&str> = [&patient.given_name, &patient.middle_name]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
    MessagePatient::new(
        patient.name(),
        (!given.is_empty()).then(|| given.join(" ")),
        patient.surname.clone(),
        id,
        patient.date_of_birth.as_deref(),
        patient.gender.as_deref(),
        Source::Context,
    )
}

/// The patient of a package: that of its first submission set that names one.
pub(crate) fn from_package(package: &Package) -> Option<MessagePatient> {
    package.submission_sets.iter().find_map(|set| {
        let p = set.patient.as_ref()?;
        MessagePatient::new(
            p.name(),
            p.given_names.clone(),
            p.family_name.clone(),
            p.id.as_deref().and_then(cx_display),
            p.birth_date.as_deref(),
            p.sex.as_deref(),
            Source::Xdm,
        )
    })
}

fn from_cda(document: &Document) -> Option<MessagePatient> {
    let p = document.patient.as_ref()?;
    let joined = |words: Option<&Vec<String>>| words.map(|w| w.join(" "));
    MessagePatient::new(
        p.name
            .as_ref()
            .map(|n| n.display())
            .filter(|n| !n.is_empty()),
        joined(p.name.as_ref().map(|n| &n.given)),
        joined(p.name.as_ref().map(|n| &n.family)),
        p.ids
            .first()
            .map(ToString::to_string)
            .filter(|s| !s.is_empty()),
        p.birth_time.as_ref().map(|t| t.raw.as_str()),
        p.sex().as_deref(),
        Source::Cda,
    )
}

/// An HL7 CX identifier (`12345^^^&1.2.840.114350&ISO`) as "12345 (1.2.840.114350)":
/// the identifier and who assigned it.
pub fn cx_display(cx: &str) -> Option<String> {
    let mut parts = cx.split('^');
    let id = parts.next()?.trim();
    if id.is_empty() {
        return None;
    }
    let authority = parts
        .nth(2)
        .and_then(|hd| hd.split('&').find(|s| !s.trim().is_empty() && *s != "ISO"))
        .map(str::trim);
    Some(match authority {
        Some(authority) => format!("{id} ({authority})"),
        None => id.to_owned(),
    })
}

/// An administrative sex code (HL7 v2 table 0001, HL7 v3 AdministrativeGender, or a
/// word) in words; other values are kept as the sender wrote them.
pub fn sex_words(code: &str) -> Option<String> {
    let code = code.trim();
    if code.is_empty() {
        return None;
    }
    Some(
        match code.to_ascii_lowercase().as_str() {
            "f" | "female" => "Female",
            "m" | "male" => "Male",
            "u" | "unknown" => "Unknown",
            "o" | "other" => "Other",
            "a" => "Ambiguous",
            "n" => "Not applicable",
            "un" | "undifferentiated" => "Undifferentiated",
            _ => code,
        }
        .to_owned(),
    )
}

/// A birth date as `YYYY-MM-DD` (or `YYYY-MM`, `YYYY`) from `1970-03-12`, `19700312`
/// or an HL7 timestamp; empty when it is not one.
pub fn normal_birth_date(raw: &str) -> String {
    let digits: String = raw
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .filter(char::is_ascii_digit)
        .take(8)
        .collect();
    let n = |r: std::ops::Range<usize>| digits.get(r).and_then(|s| s.parse::<u32>().ok());
    match digits.len() {
        8 if matches!(n(4..6), Some(1..=12)) && matches!(n(6..8), Some(1..=31)) => {
            format!("{}-{}-{}", &digits[..4], &digits[4..6], &digits[6..8])
        }
        6 if matches!(n(4..6), Some(1..=12)) => format!("{}-{}", &digits[..4], &digits[4..6]),
        4 => digits,
        _ => String::new(),
    }
}

/// The purposes of use a Direct Context may give (guide §3.5), with their labels.
pub const PURPOSES: [(&str, &str); 5] = [
    ("treatment", "Treatment"),
    ("payment", "Payment"),
    ("operations", "Operations"),
    ("emergency", "Emergency"),
    ("research", "Research"),
];

/// The sexes the compose form offers: the code written, and its label.
pub const SEXES: [(&str, &str); 4] = [
    ("F", "Female"),
    ("M", "Male"),
    ("O", "Other"),
    ("U", "Unknown"),
];

/// Longest name part or identifier the compose form accepts, in characters.
pub const MAX_TYPED: usize = 100;

/// A typed name part or identifier (`label`: "The given name"), trimmed: at most
/// [`MAX_TYPED`] characters, and nothing a Direct Context line cannot carry. The rule
/// of the compose page's patient block, also used by the HIE opt-out list.
pub fn check_typed(label: &str, value: &str) -> Result<(), String> {
    let value = value.trim();
    if value.chars().count() > MAX_TYPED {
        Err(format!("{label} is longer than {MAX_TYPED} characters."))
    } else if value.contains([';', '=']) || value.chars().any(char::is_control) {
        Err(format!(
            "{label} cannot hold a semicolon, an equals sign or a line break."
        ))
    } else {
        Ok(())
    }
}

/// A typed birth date: a real `YYYY-MM-DD` date, not after `now` (Unix seconds).
pub fn check_birth_date(value: &str, now: i64) -> Result<(), String> {
    match crate::clock::parse_date(value.trim()) {
        None => Err("The birth date is not a real date; write it as YYYY-MM-DD.".into()),
        Some(t) if t > now => Err("The birth date is in the future.".into()),
        Some(_) => Ok(()),
    }
}

/// A typed identifier split as a Direct Context's `patient-id` is (`oid:id`): the
/// assigning authority, when there is one, and the identifier.
pub fn identifier_parts(value: &str) -> (Option<String>, String) {
    let block = Context {
        patient_id: Some(value.trim().to_owned()),
        ..Context::default()
    };
    match block.patient_identifier() {
        Some((authority, id)) => (authority.map(str::to_owned), id.to_owned()),
        None => (None, String::new()),
    }
}

/// The patient block of a draft, as typed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct DraftPatient {
    pub given: String,
    pub family: String,
    /// `YYYY-MM-DD`, as the date input sends it.
    pub birth_date: String,
    /// One of [`SEXES`]' codes, or empty.
    pub sex: String,
    /// `oid:id`, or the identifier alone.
    pub id: String,
    /// One of [`PURPOSES`]' keys.
    pub purpose: String,
}

impl Default for DraftPatient {
    fn default() -> DraftPatient {
        DraftPatient {
            given: String::new(),
            family: String::new(),
            birth_date: String::new(),
            sex: String::new(),
            id: String::new(),
            purpose: "treatment".into(),
        }
    }
}

/// A field of the patient block and why it was refused.
pub type FieldError = (&'static str, String);

impl DraftPatient {
    /// What was typed in the patient form field `name` (`mail/patient_fields.html`:
    /// `patient_given`, `patient_family`, `patient_birth_date`, `patient_id`).
    pub fn field(&self, name: &str) -> &str {
        match name {
            "patient_given" => &self.given,
            "patient_family" => &self.family,
            "patient_birth_date" => &self.birth_date,
            "patient_id" => &self.id,
            _ => "",
        }
    }

    /// Whether the user wrote anything about a patient (the purpose alone is not).
    pub fn is_empty(&self) -> bool {
        [
            &self.given,
            &self.family,
            &self.birth_date,
            &self.sex,
            &self.id,
        ]
        .iter()
        .all(|f| f.trim().is_empty())
    }

    /// The block to send (its `id` is the message's, set when it is built), `None`
    /// when there is no patient; or each field's problem (field name, sentence). `now` is the current time, in Unix seconds.
    pub fn to_context(&self, now: i64) -> Result<Option<Context>, Vec<FieldError>> {
        if self.is_empty() {
            return Ok(None);
        }
        let mut errors: Vec<FieldError> = Vec::new();
        for (field, value, label) in [
            ("patient_given", &self.given, "The given name"),
            ("patient_family", &self.family, "The family name"),
            ("patient_id", &self.id, "The identifier"),
        ] {
            if let Err(message) = check_typed(label, value) {
                errors.push((field, message));
            }
        }
        if self.family.trim().is_empty() && self.id.trim().is_empty() {
            errors.push((
                "patient_family",
                "Give the patient's family name or identifier, or clear the patient fields.".into(),
            ));
        }
        let birth = self.birth_date.trim();
        if !birth.is_empty()
            && let Err(message) = check_birth_date(birth, now)
        {
            errors.push(("patient_birth_date", message));
        }
        if !self.sex.is_empty() && !SEXES.iter().any(|(code, _)| *code == self.sex) {
            errors.push(("patient_sex", "Choose the sex from the list.".into()));
        }
        if !PURPOSES.iter().any(|(key, _)| *key == self.purpose) {
            errors.push((
                "patient_purpose",
                "Choose the purpose from the list.".into(),
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let some = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
        let patient = context::ContextPatient {
            given_name: some(&self.given),
            surname: some(&self.family),
            date_of_birth: some(birth),
            gender: some(&self.sex),
            ..context::ContextPatient::default()
        };
        Ok(Some(Context {
            version: Some("1.1".into()),
            patient_id: some(&self.id),
            purpose: Some(self.purpose.clone()),
            patient: Some(patient),
            ..Context::default()
        }))
    }

    /// A reply's patient block: the patient of the message replied to.
    pub fn of(patient: &MessagePatient) -> DraftPatient {
        let (given, family) = if patient.given.is_empty() && patient.family.is_empty() {
            match patient.name.rsplit_once(' ') {
                Some((given, family)) => (given.to_owned(), family.to_owned()),
                None => (String::new(), patient.name.clone()),
            }
        } else {
            (patient.given.clone(), patient.family.clone())
        };
        // "12345 (1.2.840.114350)" is written "1.2.840.114350:12345" in a context
        let id = match patient
            .id
            .strip_suffix(')')
            .and_then(|s| s.rsplit_once(" ("))
        {
            Some((id, oid)) => format!("{oid}:{id}"),
            None => patient.id.clone(),
        };
        DraftPatient {
            given,
            family,
            birth_date: if patient.birth_date.len() == 10 {
                patient.birth_date.clone()
            } else {
                String::new()
            },
            sex: SEXES
                .iter()
                .find(|(_, label)| *label == patient.sex)
                .map(|(code, _)| (*code).to_owned())
                .unwrap_or_default(),
            id,
            purpose: "treatment".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn birth_dates_and_sexes_are_read_in_their_usual_forms() {
        assert_eq!(normal_birth_date("1970-03-12"), "1970-03-12");
        assert_eq!(normal_birth_date("19700312"), "1970-03-12");
        assert_eq!(normal_birth_date("197003121015-0500"), "1970-03-12");
        assert_eq!(normal_birth_date("1970"), "1970");
        assert_eq!(normal_birth_date("1970-13-01"), "");
        assert_eq!(normal_birth_date("soon"), "");
        assert_eq!(sex_words("F").as_deref(), Some("Female"));
        assert_eq!(sex_words("male").as_deref(), Some("Male"));
        assert_eq!(sex_words(" "), None);
        assert_eq!(
            cx_display("12345^^^&1.2.840.114350&ISO").as_deref(),
            Some("12345 (1.2.840.114350)")
        );
    }
}
