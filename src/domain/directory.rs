//! Validated values of the provider directory: NPI, NUCC taxonomy codes, US states,
//! ZIP codes and phone numbers.

use std::fmt;

use super::{Invalid, invalid};

/// A National Provider Identifier: ten digits whose last is a Luhn check digit
/// computed over the prefix 80840 and the first nine digits (CMS, "Requirements for
/// Check Digit Algorithm for the NPI").
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Npi(String);

impl Npi {
    pub fn parse(input: &str) -> Result<Self, Invalid> {
        let digits = input.trim();
        if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(format!(
                "\u{201c}{digits}\u{201d} is not an NPI: an NPI is exactly 10 digits."
            )));
        }
        if !luhn_valid(&format!("80840{digits}")) {
            return Err(invalid(format!(
                "The NPI {digits} fails its check digit; check it for a typing mistake."
            )));
        }
        Ok(Npi(digits.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Npi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The Luhn (mod 10) check over a string of ASCII digits, check digit last.
fn luhn_valid(digits: &str) -> bool {
    let mut sum = 0u32;
    for (i, b) in digits.bytes().rev().enumerate() {
        let mut d = u32::from(b - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

/// A specialty: a NUCC Health Care Provider Taxonomy code (`207Q00000X`) and its name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Specialty {
    pub code: String,
    pub label: String,
}

impl Specialty {
    /// A code (ten characters: three digits, six letters or digits, then `X`) and an
    /// optional label.
    pub fn parse(code: &str, label: &str) -> Result<Self, Invalid> {
        let code = code.trim().to_ascii_uppercase();
        let b = code.as_bytes();
        let ok = b.len() == 10
            && b[..3].iter().all(u8::is_ascii_digit)
            && b[3..9].iter().all(u8::is_ascii_alphanumeric)
            && b[9] == b'X';
        if !ok {
            return Err(invalid(format!(
                "\u{201c}{code}\u{201d} is not a NUCC taxonomy code (ten characters ending in X, like 207Q00000X)."
            )));
        }
        let label = label.trim();
        if label.chars().count() > 200 || label.chars().any(char::is_control) {
            return Err(invalid(format!(
                "The name of specialty {code} is too long or holds control characters."
            )));
        }
        Ok(Specialty {
            code,
            label: label.to_owned(),
        })
    }

    /// `207Q00000X Family Medicine; 207RC0000X Cardiovascular Disease` (CSV form).
    pub fn parse_list(input: &str) -> Result<Vec<Self>, Invalid> {
        input
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|item| {
                let (code, label) = item.split_once(char::is_whitespace).unwrap_or((item, ""));
                Specialty::parse(code, label)
            })
            .collect()
    }

    /// The CSV form of a list, as `parse_list` reads it.
    pub fn format_list(list: &[Specialty]) -> String {
        list.iter()
            .map(|s| {
                if s.label.is_empty() {
                    s.code.clone()
                } else {
                    format!("{} {}", s.code, s.label)
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The label, or the code when there is none.
    pub fn shown(&self) -> &str {
        if self.label.is_empty() {
            &self.code
        } else {
            &self.label
        }
    }
}

/// USPS codes of the states, the District of Columbia, territories and military posts.
const US_STATES: &[&str] = &[
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "FL", "GA", "HI", "ID", "IL", "IN", "IA", "KS",
    "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM", "NY",
    "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA", "WV",
    "WI", "WY", "DC", "AS", "GU", "MP", "PR", "VI", "UM", "AA", "AE", "AP", "FM", "MH", "PW",
];

/// A two-letter USPS state code, uppercased; empty input is allowed (unknown).
pub fn parse_state(input: &str) -> Result<String, Invalid> {
    let s = input.trim().to_ascii_uppercase();
    if s.is_empty() || US_STATES.contains(&s.as_str()) {
        Ok(s)
    } else {
        Err(invalid(format!(
            "\u{201c}{}\u{201d} is not a US state: use its two-letter code, like IL.",
            input.trim()
        )))
    }
}

/// A ZIP code `12345` or ZIP+4 `12345-6789`; empty input is allowed.
pub fn parse_zip(input: &str) -> Result<String, Invalid> {
    let s = input.trim();
    let b = s.as_bytes();
    let digits = |r: &[u8]| r.iter().all(u8::is_ascii_digit);
    let ok = s.is_empty()
        || (b.len() == 5 && digits(b))
        || (b.len() == 9 && digits(b))
        || (b.len() == 10 && digits(&b[..5]) && b[5] == b'-' && digits(&b[6..]));
    if !ok {
        return Err(invalid(format!(
            "\u{201c}{s}\u{201d} is not a ZIP code: use 5 digits, or ZIP+4 like 60601-1234."
        )));
    }
    Ok(if b.len() == 9 {
        format!("{}-{}", &s[..5], &s[5..])
    } else {
        s.to_owned()
    })
}

/// A phone number as written (digits, spaces, `+ - ( ) .`, an `x` extension), with at
/// least 7 digits; empty input is allowed.
pub fn parse_phone(input: &str) -> Result<String, Invalid> {
    let s = input.trim();
    if s.is_empty() {
        return Ok(String::new());
    }
    let allowed = s
        .chars()
        .all(|c| c.is_ascii_digit() || " +-().xX".contains(c));
    let digits = s.chars().filter(char::is_ascii_digit).count();
    if !allowed || !(7..=20).contains(&digits) {
        return Err(invalid(format!(
            "\u{201c}{s}\u{201d} is not a phone number: use digits, like (312) 555-0100."
        )));
    }
    Ok(s.to_owned())
}

/// A free-text field of an entry (street line, city, organization): at most `max`
/// characters and no control characters.
pub fn parse_text(what: &str, input: &str, max: usize) -> Result<String, Invalid> {
    let s = input.trim();
    if s.chars().count() > max {
        return Err(invalid(format!(
            "The {what} is at most {max} characters long."
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(invalid(format!(
            "The {what} cannot contain control characters."
        )));
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npi_check_digit_follows_luhn_over_80840() {
        // the example in the CMS check-digit document
        assert_eq!(Npi::parse("1234567893").unwrap().as_str(), "1234567893");
        assert!(
            Npi::parse("1234567890")
                .unwrap_err()
                .0
                .contains("check digit")
        );
        assert!(Npi::parse("123456789").unwrap_err().0.contains("10 digits"));
        assert!(Npi::parse("12345678a3").is_err());
        // every single-digit change of a valid NPI is caught
        let valid = "1234567893";
        for i in 0..10 {
            for d in b'0'..=b'9' {
                let mut v = valid.as_bytes().to_vec();
                if v[i] == d {
                    continue;
                }
                v[i] = d;
                assert!(Npi::parse(std::str::from_utf8(&v).unwrap()).is_err());
            }
        }
    }

    #[test]
    fn specialties_are_nucc_codes_with_labels() {
        let list = Specialty::parse_list("207q00000x Family Medicine; 208D00000X").unwrap();
        assert_eq!(list[0].code, "207Q00000X");
        assert_eq!(list[0].label, "Family Medicine");
        assert_eq!(list[1].shown(), "208D00000X");
        assert_eq!(
            Specialty::format_list(&list),
            "207Q00000X Family Medicine; 208D00000X"
        );
        assert!(Specialty::parse_list("cardiology").is_err());
    }

    #[test]
    fn places_and_phones() {
        assert_eq!(parse_state(" il ").unwrap(), "IL");
        assert!(parse_state("Illinois").is_err());
        assert_eq!(parse_zip("606011234").unwrap(), "60601-1234");
        assert!(parse_zip("6060").is_err());
        assert!(parse_phone("(312) 555-0100 x12").is_ok());
        assert!(parse_phone("call me").is_err());
    }
}
