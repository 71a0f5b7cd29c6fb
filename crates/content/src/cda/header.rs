//! The CDA header: who the document is about, who wrote it, for which encounter, what
//! kind of document it is and how confidential (CDA R2 §4.2; C-CDA R2.1 US Realm
//! Header, template 2.16.840.1.113883.10.20.22.1.1).

use roxmltree::Node;

use super::tree::{attr, child, children, is_null, path, text_of};

/// A coded value (CDA R2 data type CD/CE/CS): the code, its code system and the name the
/// sender gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    /// The code itself, such as the LOINC `57133-1`.
    pub code: String,
    /// The code system's OID, such as `2.16.840.1.113883.6.1` (LOINC).
    pub system: Option<String>,
    /// The sender's name for the code (`displayName`), or failing that the
    /// `originalText`.
    pub display_name: Option<String>,
}

impl Code {
    /// The display name, or the code when there is none.
    pub fn label(&self) -> &str {
        self.display_name.as_deref().unwrap_or(&self.code)
    }
}

/// An identifier (CDA R2 data type II): a namespace OID or UUID and an optional value
/// within it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceId {
    /// The namespace (an OID or UUID), or the whole identifier when there is no
    /// extension.
    pub root: Option<String>,
    /// The identifier within `root`, such as a medical record number.
    pub extension: Option<String>,
}

impl std::fmt::Display for InstanceId {
    /// `extension (root)`, or whichever of the two there is.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.extension, &self.root) {
            (Some(extension), Some(root)) => write!(f, "{extension} ({root})"),
            (Some(only), None) | (None, Some(only)) => f.write_str(only),
            (None, None) => Ok(()),
        }
    }
}

/// A point in time as the document gives it (CDA R2 data type TS,
/// `YYYYMMDDHHMMSS.UUUU±ZZZZ` with any precision), and the same in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Time {
    /// The value as written, such as `20240312143000-0500`.
    pub raw: String,
    /// For people: "March 12, 2024, 14:30 (UTC-05:00)", "March 2024", "2024"; the raw
    /// value when it is not a valid timestamp.
    pub readable: String,
}

impl Time {
    /// Reads a TS value; `None` for an empty one.
    pub fn parse(raw: &str) -> Option<Time> {
        let raw = raw.trim();
        if raw.is_empty() {
            return None;
        }
        Some(Time {
            raw: raw.to_owned(),
            readable: readable_time(raw).unwrap_or_else(|| raw.to_owned()),
        })
    }
}

/// A person's name (CDA R2 data type PN).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersonName {
    /// Titles before the name, such as "Dr.".
    pub prefix: Vec<String>,
    /// Given names, first name first.
    pub given: Vec<String>,
    /// Family names.
    pub family: Vec<String>,
    /// Suffixes, such as "Jr." or "MD".
    pub suffix: Vec<String>,
    /// The name as free text, when it has no parts.
    pub text: Option<String>,
}

impl PersonName {
    /// The given names, family names and suffixes in that order ("Maria Elena Lopez
    /// Jr."), or the free text of an unstructured name.
    pub fn display(&self) -> String {
        let parts: Vec<&str> = self
            .given
            .iter()
            .chain(&self.family)
            .chain(&self.suffix)
            .map(String::as_str)
            .collect();
        if parts.is_empty() {
            self.text.clone().unwrap_or_default()
        } else {
            parts.join(" ")
        }
    }

    /// Like [`display`](Self::display), with the prefixes first ("Dr. Adam Careful").
    pub fn with_prefix(&self) -> String {
        let name = self.display();
        if self.prefix.is_empty() || self.given.is_empty() && self.family.is_empty() {
            return name;
        }
        format!("{} {name}", self.prefix.join(" "))
    }
}

/// A postal address (CDA R2 data type AD).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Address {
    /// Street address lines.
    pub lines: Vec<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub postal_code: Option<String>,
    pub country: Option<String>,
}

impl Address {
    /// The address on one line: "1357 Amber Drive, Beaverton, OR 97867, US".
    pub fn one_line(&self) -> String {
        let mut parts: Vec<String> = self.lines.clone();
        parts.extend(self.city.clone());
        let region: Vec<&str> = [&self.state, &self.postal_code]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        if !region.is_empty() {
            parts.push(region.join(" "));
        }
        parts.extend(self.country.clone());
        parts.join(", ")
    }
}

/// The patient (`recordTarget/patientRole`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patient {
    /// The patient's legal name (`use="L"`), or the first one given.
    pub name: Option<PersonName>,
    /// Identifiers such as medical record numbers (`patientRole/id`).
    pub ids: Vec<InstanceId>,
    pub birth_time: Option<Time>,
    /// `administrativeGenderCode`; see [`Patient::sex`].
    pub gender: Option<Code>,
    pub address: Option<Address>,
}

impl Patient {
    /// The administrative sex in words: "Female", "Male", "Undifferentiated", or the
    /// sender's name for another code.
    pub fn sex(&self) -> Option<String> {
        let gender = self.gender.as_ref()?;
        // HL7 AdministrativeGender, 2.16.840.1.113883.5.1.
        Some(
            match gender.code.as_str() {
                "F" => "Female",
                "M" => "Male",
                "UN" => "Undifferentiated",
                _ => gender.label(),
            }
            .to_owned(),
        )
    }
}

/// An author of the document (`author/assignedAuthor`): a person or a device, and the
/// organization they write for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Author {
    pub time: Option<Time>,
    pub person: Option<PersonName>,
    /// The software that wrote the document, when the author is a device.
    pub device: Option<String>,
    pub organization: Option<String>,
}

/// The encounter the document belongs to (`componentOf/encompassingEncounter`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encounter {
    /// The kind of encounter, such as "Office visit".
    pub code: Option<Code>,
    pub start: Option<Time>,
    pub end: Option<Time>,
    /// The place: the facility's location name, or its organization.
    pub location: Option<String>,
    /// The clinician responsible (`responsibleParty/assignedEntity`).
    pub responsible: Option<PersonName>,
    /// The responsible clinician's organization.
    pub responsible_organization: Option<String>,
}

/// The header fields of a `ClinicalDocument`, read by [`super::parse_cda`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Header {
    pub id: Option<InstanceId>,
    pub template_ids: Vec<String>,
    pub document_type: Option<Code>,
    pub title: Option<String>,
    pub effective_time: Option<Time>,
    pub confidentiality: Option<Code>,
    pub language: Option<String>,
    pub patient: Option<Patient>,
    pub authors: Vec<Author>,
    pub custodian: Option<String>,
    pub encounter: Option<Encounter>,
}

pub(super) fn read_header(root: Node) -> Header {
    Header {
        id: child(root, "id").and_then(instance_id),
        template_ids: children(root, "templateId")
            .filter_map(|id| attr(id, "root"))
            .map(str::to_owned)
            .collect(),
        document_type: child(root, "code").and_then(code),
        title: child(root, "title").and_then(text_of),
        effective_time: child(root, "effectiveTime").and_then(time),
        confidentiality: child(root, "confidentialityCode").and_then(code),
        language: child(root, "languageCode")
            .and_then(|language| attr(language, "code"))
            .map(str::to_owned),
        patient: path(root, &["recordTarget", "patientRole"]).map(patient),
        authors: children(root, "author").map(author).collect(),
        custodian: path(
            root,
            &[
                "custodian",
                "assignedCustodian",
                "representedCustodianOrganization",
                "name",
            ],
        )
        .and_then(text_of),
        encounter: path(root, &["componentOf", "encompassingEncounter"]).map(encounter),
    }
}

/// A coded element, unless it has no code.
pub(super) fn code(node: Node) -> Option<Code> {
    let code = attr(node, "code")?;
    Some(Code {
        code: code.to_owned(),
        system: attr(node, "codeSystem").map(str::to_owned),
        display_name: attr(node, "displayName")
            .map(str::to_owned)
            .or_else(|| child(node, "originalText").and_then(text_of)),
    })
}

pub(super) fn instance_id(node: Node) -> Option<InstanceId> {
    let root = attr(node, "root").map(str::to_owned);
    let extension = attr(node, "extension").map(str::to_owned);
    (!is_null(node) && (root.is_some() || extension.is_some()))
        .then_some(InstanceId { root, extension })
}

/// A TS in `@value`, or the start of an interval (`low`), or its centre.
pub(super) fn time(node: Node) -> Option<Time> {
    attr(node, "value")
        .or_else(|| child(node, "low").and_then(|low| attr(low, "value")))
        .or_else(|| child(node, "center").and_then(|center| attr(center, "value")))
        .and_then(Time::parse)
}

/// The name to show from a list of `name` children: the legal one (`use` containing
/// `L`), or the first.
fn person_name<'a, 'input: 'a>(
    names: impl Iterator<Item = Node<'a, 'input>>,
) -> Option<PersonName> {
    let names: Vec<Node> = names.filter(|name| !is_null(*name)).collect();
    let chosen = names
        .iter()
        .find(|name| {
            attr(**name, "use").is_some_and(|uses| uses.split_whitespace().any(|u| u == "L"))
        })
        .or(names.first())?;
    let parts = |part: &'static str| -> Vec<String> {
        children(*chosen, part)
            .filter(|node| !is_null(*node))
            .filter_map(text_of)
            .collect()
    };
    let name = PersonName {
        prefix: parts("prefix"),
        given: parts("given"),
        family: parts("family"),
        suffix: parts("suffix"),
        text: None,
    };
    if name.given.is_empty() && name.family.is_empty() {
        let text = text_of(*chosen)?;
        return Some(PersonName {
            text: Some(text),
            ..PersonName::default()
        });
    }
    Some(name)
}

fn address(node: Node) -> Option<Address> {
    if is_null(node) {
        return None;
    }
    let part = |name: &'static str| child(node, name).and_then(text_of);
    let address = Address {
        lines: children(node, "streetAddressLine")
            .filter_map(text_of)
            .collect(),
        city: part("city"),
        state: part("state"),
        postal_code: part("postalCode"),
        country: part("country"),
    };
    (address != Address::default()).then_some(address)
}

fn patient(role: Node) -> Patient {
    let person = child(role, "patient");
    Patient {
        name: person.and_then(|person| person_name(children(person, "name"))),
        ids: children(role, "id").filter_map(instance_id).collect(),
        birth_time: person
            .and_then(|person| child(person, "birthTime"))
            .and_then(time),
        gender: person
            .and_then(|person| child(person, "administrativeGenderCode"))
            .and_then(code),
        address: child(role, "addr").and_then(address),
    }
}

fn author(node: Node) -> Author {
    let assigned = child(node, "assignedAuthor");
    Author {
        time: child(node, "time").and_then(time),
        person: assigned
            .and_then(|a| child(a, "assignedPerson"))
            .and_then(|person| person_name(children(person, "name"))),
        device: assigned
            .and_then(|a| child(a, "assignedAuthoringDevice"))
            .and_then(|device| {
                child(device, "softwareName")
                    .or_else(|| child(device, "manufacturerModelName"))
                    .and_then(text_of)
            }),
        organization: assigned
            .and_then(|a| path(a, &["representedOrganization", "name"]))
            .and_then(text_of),
    }
}

fn encounter(node: Node) -> Encounter {
    let effective = child(node, "effectiveTime");
    let facility = path(node, &["location", "healthCareFacility"]);
    let responsible = path(node, &["responsibleParty", "assignedEntity"]);
    Encounter {
        code: child(node, "code").and_then(code),
        start: effective.and_then(time),
        end: effective
            .and_then(|e| child(e, "high"))
            .and_then(|high| attr(high, "value"))
            .and_then(Time::parse),
        location: facility.and_then(|f| {
            path(f, &["location", "name"])
                .or_else(|| path(f, &["serviceProviderOrganization", "name"]))
                .and_then(text_of)
        }),
        responsible: responsible
            .and_then(|r| child(r, "assignedPerson"))
            .and_then(|person| person_name(children(person, "name"))),
        responsible_organization: responsible
            .and_then(|r| path(r, &["representedOrganization", "name"]))
            .and_then(text_of),
    }
}

/// The confidentiality code in words (HL7 Confidentiality, 2.16.840.1.113883.5.25;
/// C-CDA binds value set 2.16.840.1.113883.1.11.16926: N, R, V).
pub fn confidentiality_words(code: &str) -> Option<&'static str> {
    Some(match code {
        "N" => "Normal",
        "R" => "Restricted",
        "V" => "Very restricted",
        "L" => "Low",
        "M" => "Moderate",
        "U" => "Unrestricted",
        _ => return None,
    })
}

/// A TS value in words, or `None` when it is not a valid timestamp.
fn readable_time(raw: &str) -> Option<String> {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    // Split off a time zone: "+hhmm" or "-hhmm" after the digits.
    let (digits, zone) = match raw.find(['+', '-']) {
        Some(at) => (&raw[..at], Some(&raw[at..])),
        None => (raw, None),
    };
    // Fractions of a second are not shown.
    let digits = digits.split('.').next().unwrap_or_default();
    if digits.len() < 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u32> { digits.get(range)?.parse().ok() };
    let year = number(0..4)?;
    let mut out = year.to_string();
    if digits.len() >= 6 {
        let month = number(4..6)?;
        let month_name = MONTHS.get(usize::try_from(month).ok()?.checked_sub(1)?)?;
        out = format!("{month_name} {year}");
        if digits.len() >= 8 {
            let day = number(6..8)?;
            if !(1..=31).contains(&day) {
                return None;
            }
            out = format!("{month_name} {day}, {year}");
        }
    }
    if digits.len() >= 10 {
        let hour = number(8..10)?;
        let minute = if digits.len() >= 12 {
            number(10..12)?
        } else {
            0
        };
        if hour > 23 || minute > 59 {
            return None;
        }
        out.push_str(&format!(", {hour:02}:{minute:02}"));
    }
    if let Some(zone) = zone {
        let (sign, rest) = zone.split_at(1);
        if rest.len() != 4 || !rest.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if digits.len() >= 10 {
            out.push_str(&format!(" (UTC{sign}{}:{})", &rest[..2], &rest[2..]));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_read_at_their_precision() {
        let readable = |raw: &str| Time::parse(raw).map(|time| time.readable);
        assert_eq!(readable("2024").as_deref(), Some("2024"));
        assert_eq!(readable("202403").as_deref(), Some("March 2024"));
        assert_eq!(readable("20240312").as_deref(), Some("March 12, 2024"));
        assert_eq!(
            readable("20240312143015.123-0500").as_deref(),
            Some("March 12, 2024, 14:30 (UTC-05:00)")
        );
        assert_eq!(
            readable("202403121430+0100").as_deref(),
            Some("March 12, 2024, 14:30 (UTC+01:00)")
        );
        // Not a timestamp: shown as written.
        assert_eq!(readable("2024-03-12").as_deref(), Some("2024-03-12"));
        assert_eq!(readable("20241312").as_deref(), Some("20241312"));
        assert_eq!(readable("  "), None);
    }

    #[test]
    fn names_prefer_the_legal_name_and_fall_back_to_free_text() {
        let xml = r#"<patient xmlns="urn:hl7-org:v3">
            <name use="P"><given>Peggy</given><family>Jones</family></name>
            <name use="L"><prefix>Mrs.</prefix><given>Margaret</given><given>Ann</given>
              <family>Jones</family><suffix>Jr.</suffix></name></patient>"#;
        let doc = roxmltree::Document::parse(xml).unwrap();
        let name = person_name(children(doc.root_element(), "name")).unwrap();
        assert_eq!(name.display(), "Margaret Ann Jones Jr.");
        assert_eq!(name.with_prefix(), "Mrs. Margaret Ann Jones Jr.");

        let xml = r#"<p xmlns="urn:hl7-org:v3"><name> Dr.  Who </name></p>"#;
        let doc = roxmltree::Document::parse(xml).unwrap();
        let name = person_name(children(doc.root_element(), "name")).unwrap();
        assert_eq!(name.display(), "Dr. Who");
    }

    #[test]
    fn identifiers_show_the_extension_before_the_namespace() {
        let id = InstanceId {
            root: Some("2.16.840.1.113883.19.5".into()),
            extension: Some("998991".into()),
        };
        assert_eq!(id.to_string(), "998991 (2.16.840.1.113883.19.5)");
    }
}
