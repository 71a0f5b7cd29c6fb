//! What a discovered certificate must satisfy before it is used: the checks this
//! crate makes itself (it parses, it binds to what was asked for, it is within its
//! validity period) and the trust check the caller supplies ([`Validator`]).

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use der::Decode;
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

/// A boxed future, as [`Validator::check`] returns (the trait stays object-safe and its
/// futures `Send`, so a lookup can run inside any tokio task).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The trust check supplied by the caller: chain to a trust anchor, revocation (CRL),
/// intermediates from AIA, policy. Called only for certificates that already parse,
/// bind to the address or its domain, and are within their validity period.
pub trait Validator: Send + Sync {
    /// `Ok(())` if mail for `address` may be encrypted to `cert_der` at `now`;
    /// otherwise why not, in plain words, with its [`RejectKind`].
    fn check<'a>(
        &'a self,
        cert_der: &'a [u8],
        address: &'a str,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<(), Rejection>>;
}

/// A [`Validator`] made from a plain synchronous function; handy where the trust
/// check needs no network (and in tests).
pub struct FnValidator<F>(pub F);

impl<F> Validator for FnValidator<F>
where
    F: Fn(&[u8], &str, SystemTime) -> Result<(), Rejection> + Send + Sync,
{
    fn check<'a>(
        &'a self,
        cert_der: &'a [u8],
        address: &'a str,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<(), Rejection>> {
        let verdict = (self.0)(cert_der, address, now);
        Box::pin(async move { verdict })
    }
}

/// What kind of problem a rejected certificate has. Only [`RejectKind::Expired`] and
/// [`RejectKind::Revoked`] on an address-bound certificate stop discovery (AS §5: the
/// domain-bound certificate must then not be used instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectKind {
    /// Past its notAfter.
    Expired,
    /// Revoked by its issuer.
    Revoked,
    /// Anything else: unparseable, not bound to the address, not yet valid, untrusted,
    /// unsuitable key or algorithm.
    Other,
}

/// Why one certificate was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The kind, which decides whether discovery stops.
    pub kind: RejectKind,
    /// A plain-words reason for the operator ("expired on 2025-01-01").
    pub reason: String,
}

impl Rejection {
    /// The certificate is past its notAfter.
    pub fn expired(reason: impl Into<String>) -> Self {
        Rejection {
            kind: RejectKind::Expired,
            reason: reason.into(),
        }
    }
    /// The certificate is revoked.
    pub fn revoked(reason: impl Into<String>) -> Self {
        Rejection {
            kind: RejectKind::Revoked,
            reason: reason.into(),
        }
    }
    /// Any other reason (untrusted, wrong key usage, …).
    pub fn other(reason: impl Into<String>) -> Self {
        Rejection {
            kind: RejectKind::Other,
            reason: reason.into(),
        }
    }
}

/// Whether a certificate is looked for as bound to the address or to its domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Binding {
    /// subjectAltName rfc822Name = the address.
    AddressBound,
    /// subjectAltName dNSName = the domain.
    DomainBound,
}

/// The checks this crate makes itself, in order: the bytes are an X.509 certificate;
/// its subjectAltName binds it to the address (rfc822Name) for an address-bound
/// lookup or to the domain (dNSName, no wildcard) for a domain-bound one; `now` is
/// within its validity period. Returns the notAfter as a date for the step log.
pub(crate) fn local_checks(
    der: &[u8],
    binding: Binding,
    address: &str,
    domain: &str,
    now: SystemTime,
) -> Result<String, Rejection> {
    let cert = Certificate::from_der(der)
        .map_err(|e| Rejection::other(format!("not an X.509 certificate ({e})")))?;
    let (emails, dns_names) = san_names(&cert);
    // Applicability Statement 1.3 §1.4: binding by subjectAltName only; an e-mail
    // attribute in the subject DN does not bind.
    let bound = match binding {
        Binding::AddressBound => emails.iter().any(|e| e.eq_ignore_ascii_case(address)),
        Binding::DomainBound => dns_names
            .iter()
            .any(|d| !d.contains('*') && d.trim_end_matches('.').eq_ignore_ascii_case(domain)),
    };
    if !bound {
        let wanted = match binding {
            Binding::AddressBound => address,
            Binding::DomainBound => domain,
        };
        let mut names: Vec<String> = emails.iter().map(|e| format!("email {e}")).collect();
        names.extend(dns_names.iter().map(|d| format!("DNS {d}")));
        let names = if names.is_empty() {
            "no subjectAltName".to_owned()
        } else {
            format!("it names {}", names.join(", "))
        };
        return Err(Rejection::other(format!("not bound to {wanted} ({names})")));
    }
    let validity = cert.tbs_certificate().validity();
    let now_s = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    if now_s < validity.not_before.to_unix_duration() {
        return Err(Rejection::other(format!(
            "not valid before {}",
            date(validity.not_before.to_unix_duration())
        )));
    }
    if now_s > validity.not_after.to_unix_duration() {
        return Err(Rejection::expired(format!(
            "expired on {}",
            date(validity.not_after.to_unix_duration())
        )));
    }
    Ok(date(validity.not_after.to_unix_duration()))
}

/// The subjectAltName rfc822Name and dNSName entries.
fn san_names(cert: &Certificate) -> (Vec<String>, Vec<String>) {
    let mut emails = Vec::new();
    let mut dns = Vec::new();
    if let Ok(Some((_, san))) = cert.tbs_certificate().get_extension::<SubjectAltName>() {
        for name in san.0 {
            match name {
                GeneralName::Rfc822Name(s) => emails.push(s.as_str().to_owned()),
                GeneralName::DnsName(s) => dns.push(s.as_str().to_owned()),
                _ => {}
            }
        }
    }
    (emails, dns)
}

/// A UNIX time as `YYYY-MM-DD` (UTC).
pub(crate) fn date(since_epoch: Duration) -> String {
    // days since 1970-01-01 to a civil date (Howard Hinnant's algorithm)
    let days = (since_epoch.as_secs() / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let doe = days.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil_utc_dates() {
        assert_eq!(date(Duration::ZERO), "1970-01-01");
        assert_eq!(date(Duration::from_secs(1_735_689_599)), "2024-12-31");
        assert_eq!(date(Duration::from_secs(1_735_689_600)), "2025-01-01");
        assert_eq!(date(Duration::from_secs(951_782_400)), "2000-02-29");
    }

    #[test]
    fn garbage_is_rejected_as_not_a_certificate() {
        let r = local_checks(
            b"not a certificate",
            Binding::AddressBound,
            "a@b.org",
            "b.org",
            SystemTime::now(),
        )
        .unwrap_err();
        assert_eq!(r.kind, RejectKind::Other);
        assert!(
            r.reason.starts_with("not an X.509 certificate"),
            "{}",
            r.reason
        );
    }
}
