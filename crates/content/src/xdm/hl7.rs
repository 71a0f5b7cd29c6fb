//! The HL7 v2 data types XDS metadata carries in slot values (ITI TF-3 §4.2.3.1.7):
//! XCN (a person), XON (an organization), XTN (a telecom address), XPN (a patient's
//! name), and the escape sequences that keep the delimiters `|^~\&` out of text (HL7 v2.5
//! §2.7).

/// Escapes text for one HL7 v2 component: the delimiters become `\F\ \S\ \R\ \E\ \T\`.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '|' => out.push_str("\\F\\"),
            '^' => out.push_str("\\S\\"),
            '~' => out.push_str("\\R\\"),
            '\\' => out.push_str("\\E\\"),
            '&' => out.push_str("\\T\\"),
            _ => out.push(c),
        }
    }
    out
}

/// Undoes [`escape`]. Other escape sequences (highlighting, hexadecimal) are kept as
/// written.
pub(super) fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('\\') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let replacement = match after.get(..2) {
            Some("F\\") => Some('|'),
            Some("S\\") => Some('^'),
            Some("R\\") => Some('~'),
            Some("E\\") => Some('\\'),
            Some("T\\") => Some('&'),
            _ => None,
        };
        match replacement {
            Some(c) => {
                out.push(c);
                rest = &after[2..];
            }
            None => {
                out.push('\\');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The components of a value (split on `^`), each unescaped and with only its first
/// subcomponent (before `&`): enough for names, which is all that is read here.
fn components(value: &str) -> Vec<String> {
    value
        .split('^')
        .map(|component| unescape(component.split('&').next().unwrap_or_default()))
        .collect()
}

/// The first repetition of a field (before `~`).
fn first_repetition(value: &str) -> &str {
    value.split('~').next().unwrap_or_default()
}

fn component(parts: &[String], index: usize) -> Option<&str> {
    parts
        .get(index)
        .map(|part| part.trim())
        .filter(|part| !part.is_empty())
}

/// Words joined by single spaces, skipping the missing ones; `None` when none is left.
fn join(words: &[Option<&str>]) -> Option<String> {
    let words: Vec<&str> = words.iter().flatten().copied().collect();
    (!words.is_empty()).then(|| words.join(" "))
}

/// A person as XCN (`id^family^given^middle^suffix^prefix`), as a reader would write
/// the name: "Dr Jane Q Smith Jr". Falls back to the identifier when there is no name.
pub(super) fn person_from_xcn(value: &str) -> Option<String> {
    let parts = components(first_repetition(value));
    join(&[
        component(&parts, 5),
        component(&parts, 2),
        component(&parts, 3),
        component(&parts, 1),
        component(&parts, 4),
    ])
    .or_else(|| component(&parts, 0).map(str::to_owned))
}

/// An organization as XON: its name, the first component.
pub(super) fn organization_from_xon(value: &str) -> Option<String> {
    let parts = components(first_repetition(value));
    component(&parts, 0).map(str::to_owned)
}

/// The address in an XTN: the e-mail address when the use is `Internet`
/// (`^^Internet^address`), otherwise the telephone number in the first component.
pub(super) fn address_from_xtn(value: &str) -> Option<String> {
    let parts = components(first_repetition(value));
    if parts
        .get(2)
        .is_some_and(|kind| kind.trim().eq_ignore_ascii_case("Internet"))
    {
        return component(&parts, 3).map(str::to_owned);
    }
    component(&parts, 0).map(str::to_owned)
}

/// A patient's name as XPN (`family^given^middle^suffix^prefix`): family name, and the
/// given and middle names together.
pub(super) fn name_from_xpn(value: &str) -> (Option<String>, Option<String>) {
    let parts = components(first_repetition(value));
    let family = component(&parts, 0).map(str::to_owned);
    let given = join(&[component(&parts, 1), component(&parts, 2)]);
    (family, given)
}

/// The three parts of an intendedRecipient value, `XON|XCN|XTN` (ITI TF-3 §4.2.3.3.6).
pub(super) fn split_recipient(value: &str) -> (&str, &str, &str) {
    let mut fields = value.splitn(3, '|');
    let organization = fields.next().unwrap_or_default();
    let person = fields.next().unwrap_or_default();
    let telecom = fields.next().unwrap_or_default();
    (organization, person, telecom)
}

/// Whether `value` is an OID: arcs of digits separated by dots, no leading zeros, at
/// most 64 characters (ITI TF-3 §4.2.3.1.5).
pub(super) fn is_oid(value: &str) -> bool {
    value.len() <= 64
        && value.split('.').count() >= 2
        && value.split('.').all(|arc| {
            !arc.is_empty()
                && arc.bytes().all(|b| b.is_ascii_digit())
                && (arc == "0" || !arc.starts_with('0'))
        })
}

/// Whether `value` is a patient identifier as XDS requires: CX with only the ID and the
/// assigning authority, `id^^^&OID&ISO` (ITI TF-3 §4.2.3.1.7, Table 4.2.3.1.7-2).
pub(super) fn is_patient_cx(value: &str) -> bool {
    let Some((id, authority)) = value.split_once("^^^") else {
        return false;
    };
    let Some(oid) = authority
        .strip_prefix('&')
        .and_then(|rest| rest.strip_suffix("&ISO"))
    else {
        return false;
    };
    !id.is_empty() && !id.contains(['^', '&', '|', '~']) && is_oid(oid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips_every_delimiter() {
        let text = r"a|b^c~d\e&f \X0D\ plain";
        assert_eq!(unescape(&escape(text)), text);
        assert_eq!(escape("A&B"), r"A\T\B");
    }

    #[test]
    fn names_read_the_way_a_person_writes_them() {
        assert_eq!(
            person_from_xcn("123^Smith^Jane^Q^Jr^Dr").as_deref(),
            Some("Dr Jane Q Smith Jr")
        );
        assert_eq!(person_from_xcn("^Smith").as_deref(), Some("Smith"));
        assert_eq!(person_from_xcn("987^^^").as_deref(), Some("987"));
        assert_eq!(
            organization_from_xon("Good Health Clinic^^^^^&1.2.3&ISO^^^^45").as_deref(),
            Some("Good Health Clinic")
        );
        assert_eq!(
            address_from_xtn("^^Internet^a@direct.example.org").as_deref(),
            Some("a@direct.example.org")
        );
        assert_eq!(
            name_from_xpn("DOE^JOHN^Q^^"),
            (Some("DOE".to_owned()), Some("JOHN Q".to_owned()))
        );
    }

    #[test]
    fn patient_identifiers_need_an_assigning_authority() {
        assert!(is_patient_cx("MRN-1^^^&1.2.840.1&ISO"));
        assert!(!is_patient_cx("MRN-1"));
        assert!(!is_patient_cx("MRN-1^^^&1.2.x&ISO"));
        assert!(!is_patient_cx("^^^&1.2.3&ISO"));
        assert!(is_oid("2.25.1234"));
        assert!(!is_oid("2.05"));
        assert!(!is_oid("2"));
    }
}
