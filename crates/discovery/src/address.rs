//! Direct addresses as discovery sees them: the parts, and the DNS owner names
//! where their certificates are published.

use hickory_resolver::proto::rr::Name;

/// Why a string is not an address discovery can look up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AddressError(String);

impl AddressError {
    pub(crate) fn new(reason: String) -> Self {
        AddressError(reason)
    }
}

/// A Direct address split into its parts, lower-cased (DIRECT.md: local parts compare
/// case-insensitively; domain names are case-insensitive anyway).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recipient {
    pub(crate) address: String,
    pub(crate) local: String,
    pub(crate) domain: String,
}

impl Recipient {
    pub(crate) fn parse(input: &str) -> Result<Self, AddressError> {
        let input = input.trim();
        // the last `@` splits: a quoted local part may itself contain one
        let Some((local, domain)) = input.rsplit_once('@') else {
            return Err(AddressError(format!(
                "{input:?} is not a mail address (no @)"
            )));
        };
        if local.is_empty() {
            return Err(AddressError(format!("{input:?} has an empty local part")));
        }
        // RFC 5321 §4.5.3.1.1
        if local.len() > 64 {
            return Err(AddressError(format!(
                "the local part of {input:?} is longer than 64 octets"
            )));
        }
        if local.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(AddressError(format!(
                "the local part of {input:?} contains spaces or control characters"
            )));
        }
        let domain = parse_domain(domain)?;
        let local = local.to_lowercase();
        Ok(Recipient {
            address: format!("{local}@{domain}"),
            local,
            domain,
        })
    }

    /// The owner name of the address-bound CERT record (RFC 4398 §3, AS §5.3): the
    /// local part becomes one DNS label, so a dot inside it stays inside that label
    /// (written `john\.doe.example.org.` in a zone file) rather than splitting it.
    /// `None` when the local part cannot be one label (longer than 63 octets).
    pub(crate) fn address_owner(&self) -> Option<Name> {
        let domain = domain_name(&self.domain).ok()?;
        let mut labels: Vec<&[u8]> = vec![self.local.as_bytes()];
        labels.extend(domain.iter());
        Name::from_labels(labels).ok()
    }

    /// The owner name of the domain-bound CERT record.
    pub(crate) fn domain_owner(&self) -> Option<Name> {
        domain_name(&self.domain).ok()
    }
}

/// A domain name checked for host-name syntax (letters, digits, hyphens; RFC 1123),
/// lower-cased and without a trailing dot.
pub(crate) fn parse_domain(input: &str) -> Result<String, AddressError> {
    let domain = input.trim().trim_end_matches('.').to_ascii_lowercase();
    if domain.is_empty() {
        return Err(AddressError(format!("{input:?} has no domain")));
    }
    if domain.len() > 253 {
        return Err(AddressError(format!("the domain {domain:?} is too long")));
    }
    for label in domain.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(AddressError(format!(
                "{domain:?} is not a domain name (internationalized names must be given in their xn-- form)"
            )));
        }
    }
    if domain.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(AddressError(format!(
            "{domain:?} is an IP address, not a domain name"
        )));
    }
    Ok(domain)
}

/// The fully qualified DNS name of a domain already checked by [`parse_domain`].
pub(crate) fn domain_name(domain: &str) -> Result<Name, AddressError> {
    Name::from_ascii(format!("{domain}."))
        .map_err(|e| AddressError(format!("{domain:?} is not a DNS name: {e}")))
}

/// An owner given as an address (`bob@example.org`) or a domain (`example.org`):
/// the DNS name its CERT record lives at.
pub(crate) fn owner_name(owner: &str) -> Result<Name, AddressError> {
    if owner.contains('@') {
        let r = Recipient::parse(owner)?;
        r.address_owner().ok_or_else(|| {
            AddressError(format!(
                "the local part of {owner:?} is longer than one DNS label (63 octets)"
            ))
        })
    } else {
        domain_name(&parse_domain(owner)?)
    }
}

/// A DNS name written as in a zone file (RFC 1035 §5.1): special characters inside a
/// label are escaped, so a dot in a local part reads `\.`.
pub(crate) fn zone_file_name(name: &Name) -> String {
    let mut out = String::new();
    for label in name.iter() {
        for &b in label {
            match b {
                b'.' | b'\\' | b'"' | b'(' | b')' | b';' | b'@' | b'$' => {
                    out.push('\\');
                    out.push(b as char);
                }
                0x21..=0x7e => out.push(b as char),
                _ => out.push_str(&format!("\\{b:03}")),
            }
        }
        out.push('.');
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_lower_cased_and_split_at_the_last_at() {
        let r = Recipient::parse(" Bob.Smith@Direct.Example.ORG ").unwrap();
        assert_eq!(r.address, "bob.smith@direct.example.org");
        assert_eq!(r.local, "bob.smith");
        assert_eq!(r.domain, "direct.example.org");
        let q = Recipient::parse("\"a@b\"@example.org").unwrap();
        assert_eq!(q.domain, "example.org");
        assert_eq!(q.local, "\"a@b\"");
    }

    #[test]
    fn malformed_addresses_are_refused_with_a_reason() {
        for bad in [
            "nobody",
            "@example.org",
            "bob@",
            "bob@exa mple.org",
            "bob@-x.org",
            "bob@127.0.0.1",
            "bo b@example.org",
            "bob\n@example.org",
        ] {
            assert!(Recipient::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let long = format!("{}@example.org", "a".repeat(65));
        assert!(Recipient::parse(&long).is_err());
    }

    #[test]
    fn a_dot_in_the_local_part_stays_inside_one_label() {
        let r = Recipient::parse("john.doe@example.org").unwrap();
        let name = r.address_owner().unwrap();
        assert_eq!(name.num_labels(), 3);
        assert_eq!(name.iter().next(), Some(&b"john.doe"[..]));
        assert_eq!(zone_file_name(&name), "john\\.doe.example.org.");
        assert_eq!(zone_file_name(&r.domain_owner().unwrap()), "example.org.");
    }

    #[test]
    fn a_local_part_longer_than_a_label_has_no_owner_name() {
        let r = Recipient::parse(&format!("{}@example.org", "a".repeat(64))).unwrap();
        assert!(r.address_owner().is_none());
        assert!(owner_name(&r.address).is_err());
    }

    #[test]
    fn owners_can_be_given_as_an_address_or_a_domain() {
        assert_eq!(
            zone_file_name(&owner_name("Bob@Example.org").unwrap()),
            "bob.example.org."
        );
        assert_eq!(
            zone_file_name(&owner_name("example.org.").unwrap()),
            "example.org."
        );
    }
}
