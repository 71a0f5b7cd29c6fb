//! Validated values at the edge: handlers turn form fields into these first, and
//! nothing deeper re-validates.

use std::fmt;

pub mod directory;
mod password;

pub use directory::{Npi, Specialty};
pub use password::{NewPassword, PasswordProblem};

/// Why a field was refused, in words for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn invalid(msg: impl Into<String>) -> Invalid {
    Invalid(msg.into())
}

/// A DNS domain name, lowercased, e.g. `direct.lakeside-clinic.org`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DomainName(String);

impl DomainName {
    pub fn parse(input: &str) -> Result<Self, Invalid> {
        let name = input.trim().trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() {
            return Err(invalid(
                "Enter a domain name, like direct.example-clinic.org.",
            ));
        }
        if name.len() > 253 {
            return Err(invalid("A domain name is at most 253 characters long."));
        }
        let labels: Vec<&str> = name.split('.').collect();
        if labels.len() < 2 {
            return Err(invalid(
                "A Direct domain needs at least two labels, like direct.example.org.",
            ));
        }
        for label in &labels {
            let ok_chars = label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if label.is_empty()
                || label.len() > 63
                || !ok_chars
                || label.starts_with('-')
                || label.ends_with('-')
            {
                return Err(invalid(format!(
                    "\u{201c}{}\u{201d} is not a valid domain name: use letters, digits and hyphens between dots.",
                    input.trim()
                )));
            }
        }
        Ok(DomainName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An e-mail or Direct address `local@domain`, with the domain lowercased.
///
/// Applicability Statement §1.4: local parts compare case-insensitively, so the whole
/// address is stored lowercased.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email {
    address: String,
    at: usize,
}

impl Email {
    pub fn parse(input: &str) -> Result<Self, Invalid> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(invalid("Enter an e-mail address, like dr.lee@example.org."));
        }
        if trimmed.len() > 254 {
            return Err(invalid("An e-mail address is at most 254 characters long."));
        }
        let bad = || {
            invalid(format!(
                "\u{201c}{trimmed}\u{201d} is not a valid address: it should look like name@example.org."
            ))
        };
        let (local, domain) = trimmed.rsplit_once('@').ok_or_else(bad)?;
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b));
        if !local_ok {
            return Err(bad());
        }
        let domain = DomainName::parse(domain).map_err(|_| bad())?;
        let address = format!("{}@{}", local.to_ascii_lowercase(), domain.as_str());
        Ok(Email {
            at: local.len(),
            address,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.address
    }

    pub fn local_part(&self) -> &str {
        &self.address[..self.at]
    }

    pub fn domain(&self) -> &str {
        &self.address[self.at + 1..]
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.address)
    }
}

/// A person's name as shown in lists and messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(input: &str) -> Result<Self, Invalid> {
        let name = input.trim();
        if name.is_empty() {
            return Err(invalid("Enter a name."));
        }
        if name.chars().count() > 120 {
            return Err(invalid("A name is at most 120 characters long."));
        }
        if name.chars().any(char::is_control) {
            return Err(invalid("A name cannot contain control characters."));
        }
        Ok(DisplayName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An organization's name, e.g. "Lakeside Family Practice".
pub type OrgName = DisplayName;

/// What a user may do; see the roles table in PRODUCT.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Role {
    /// Reads and sends from the mailboxes assigned to them.
    Member,
    /// The office manager: runs the users and mailboxes of one organization.
    OrgAdmin,
    /// Runs the HISP: organizations, domains, certificates, queues.
    Operator,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Member, Role::OrgAdmin, Role::Operator];

    pub fn parse(input: &str) -> Result<Self, Invalid> {
        match input.trim() {
            "member" => Ok(Role::Member),
            "org-admin" => Ok(Role::OrgAdmin),
            "operator" => Ok(Role::Operator),
            other => Err(invalid(format!(
                "\u{201c}{other}\u{201d} is not a role: choose member, org-admin or operator."
            ))),
        }
    }

    /// The stored and command-line form.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::OrgAdmin => "org-admin",
            Role::Operator => "operator",
        }
    }

    /// The form shown on pages.
    pub fn label(self) -> &'static str {
        match self {
            Role::Member => "Member",
            Role::OrgAdmin => "Organization administrator",
            Role::Operator => "HISP operator",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Minutes of inactivity before a session ends: 1 to 60 (WCAG 2.2.1 warning before).
pub fn parse_idle_timeout(input: &str) -> Result<i64, Invalid> {
    match input.trim().parse::<i64>() {
        Ok(n) if (1..=60).contains(&n) => Ok(n),
        _ => Err(invalid(
            "The idle timeout is a whole number of minutes from 1 to 60.",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_lowercased_and_split() {
        let e = Email::parse("  Dr.Lee@Direct.Lakeside.ORG ").unwrap();
        assert_eq!(e.as_str(), "dr.lee@direct.lakeside.org");
        assert_eq!(e.local_part(), "dr.lee");
        assert_eq!(e.domain(), "direct.lakeside.org");
    }

    #[test]
    fn malformed_addresses_are_refused_with_a_reason() {
        for bad in [
            "",
            "no-at-sign",
            "@example.org",
            "a@",
            "a@localhost",
            "a..b@example.org",
            "a b@example.org",
            "a@exa mple.org",
            "a@-bad.org",
            "<script>@x.org",
        ] {
            let err = Email::parse(bad).unwrap_err();
            assert!(!err.0.is_empty(), "{bad}");
        }
        let long = format!("{}@example.org", "a".repeat(300));
        assert!(Email::parse(&long).unwrap_err().0.contains("254"));
    }

    #[test]
    fn roles_round_trip() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()).unwrap(), role);
        }
        assert!(Role::parse("root").is_err());
    }

    #[test]
    fn idle_timeout_is_one_to_sixty_minutes() {
        assert_eq!(parse_idle_timeout("15").unwrap(), 15);
        for bad in ["0", "61", "-1", "abc", ""] {
            assert!(parse_idle_timeout(bad).is_err());
        }
    }
}
