//! Keys and certificates: parsing PEM/DER input, the checks run on import, and
//! the facts about a certificate that Direct cares about (binding, key size).

use std::fmt;
use std::time::{Duration, SystemTime};

use der::{Decode, Encode};
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

use crate::alg;
use crate::crypto::{PrivateKey, PublicKey};
use crate::error::ImportError;

/// Applicability Statement 1.3 §1.4 (and DirectTrust CP): RSA keys of at least 2048 bits.
pub const MIN_RSA_BITS: usize = 2048;

/// A private key with its certificate and the chain up to (not necessarily
/// including) the anchor: what signs outbound mail and decrypts inbound mail.
#[derive(Clone)]
pub struct Identity {
    key: PrivateKey,
    certificate: Certificate,
    chain: Vec<Certificate>,
}

impl fmt::Debug for Identity {
    // A key never appears in a log: only the certificate subject is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field(
                "subject",
                &self.certificate.tbs_certificate().subject().to_string(),
            )
            .field("chain_len", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Identity {
    /// Pair a key with its certificate, checking that they match and that the
    /// key is RSA of at least 2048 bits. `chain` is the issuing chain, sent along
    /// with signatures so that receivers can build the path.
    pub fn new(
        key: PrivateKey,
        certificate: Certificate,
        chain: Vec<Certificate>,
    ) -> Result<Self, ImportError> {
        check_key_matches(&key, &certificate)?;
        Ok(Identity {
            key,
            certificate,
            chain,
        })
    }

    /// Read the certificate (and any chain certificates after it) and the key from
    /// PEM or DER. The first certificate is the one the key belongs to.
    pub fn from_pem_or_der(certificates: &[u8], key: &[u8]) -> Result<Self, ImportError> {
        let mut certs = parse_certificates(certificates)?;
        let key = parse_private_key(key)?;
        let certificate = certs.remove(0);
        Identity::new(key, certificate, certs)
    }

    /// Read a PKCS#12 file (PBES2/AES, as OpenSSL 3 writes by default). The
    /// certificate matching the key becomes the end-entity certificate, the
    /// others its chain.
    pub fn from_pkcs12(input: &[u8], password: &str) -> Result<Self, ImportError> {
        let (key, certs) = crate::pkcs12::parse_pkcs12(input, password)?;
        let position = certs
            .iter()
            .position(|c| check_key_matches(&key, c) != Err(ImportError::KeyMismatch))
            .ok_or(ImportError::KeyMismatch)?;
        let mut certs = certs;
        let certificate = certs.remove(position);
        Identity::new(key, certificate, certs)
    }

    /// The private key as unencrypted PKCS#8 DER, for the caller to encrypt at
    /// rest. The buffer is zeroed on drop.
    pub fn private_key_pkcs8_der(&self) -> Result<zeroize::Zeroizing<Vec<u8>>, ImportError> {
        Ok(self.key.to_pkcs8_der())
    }

    /// The end-entity certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    /// The issuing chain sent with signatures.
    pub fn chain(&self) -> &[Certificate] {
        &self.chain
    }

    pub(crate) fn key(&self) -> &PrivateKey {
        &self.key
    }
}

/// How an imported certificate must be bound (Applicability Statement 1.3 §1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding<'a> {
    /// Address-bound: subjectAltName rfc822Name equals this address.
    Address(&'a str),
    /// Domain-bound: subjectAltName dNSName equals this domain.
    Domain(&'a str),
}

/// Read one or more certificates: PEM (any number of `CERTIFICATE` blocks), a
/// single DER certificate, or a certs-only PKCS#7 bundle (`.p7b`, DER or PEM).
/// The result is never empty.
pub fn parse_certificates(input: &[u8]) -> Result<Vec<Certificate>, ImportError> {
    let trimmed = trim_ascii(input);
    if trimmed.starts_with(b"-----BEGIN") {
        if let Ok(certs) = Certificate::load_pem_chain(trimmed)
            && !certs.is_empty()
        {
            return Ok(certs);
        }
        if let Ok((label, der)) = pem_rfc7468_decode(trimmed)
            && (label == "PKCS7" || label == "CMS")
        {
            return certs_from_p7b(&der);
        }
        return Err(ImportError::NoCertificate);
    }
    // DER is binary: its last bytes may look like whitespace, so never trim it.
    if let Ok(cert) = Certificate::from_der(input) {
        return Ok(vec![cert]);
    }
    certs_from_p7b(input)
}

fn pem_rfc7468_decode(input: &[u8]) -> Result<(String, Vec<u8>), ImportError> {
    let (label, der) = der::pem::decode_vec(input).map_err(|_| ImportError::NoCertificate)?;
    Ok((label.to_string(), der))
}

fn certs_from_p7b(der_bytes: &[u8]) -> Result<Vec<Certificate>, ImportError> {
    let certs = read_signed_data(der_bytes)
        .map(|sd| signed_data_certificates(&sd))
        .unwrap_or_default();
    if certs.is_empty() {
        Err(ImportError::NoCertificate)
    } else {
        Ok(certs)
    }
}

/// A CMS ContentInfo holding a SignedData (DER or BER), decoded; `None` otherwise.
pub(crate) fn read_signed_data(der_bytes: &[u8]) -> Option<cms::signed_data::SignedData> {
    let ci = cms::content_info::ContentInfo::from_ber(der_bytes).ok()?;
    if ci.content_type != alg::ID_SIGNED_DATA {
        return None;
    }
    ci.content.decode_as_encoding(der::EncodingRules::Ber).ok()
}

/// The X.509 certificates a SignedData carries (attribute certificates are skipped).
pub(crate) fn signed_data_certificates(sd: &cms::signed_data::SignedData) -> Vec<Certificate> {
    sd.certificates
        .as_ref()
        .map(|set| {
            set.0
                .iter()
                .filter_map(|c| match c {
                    cms::cert::CertificateChoices::Certificate(c) => Some(c.clone()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Read an unencrypted RSA private key: PKCS#8 (`PRIVATE KEY`) or PKCS#1
/// (`RSA PRIVATE KEY`), PEM or DER. The containers are read with RustCrypto's
/// `pkcs8`/`pkcs1`; the key goes to AWS-LC.
pub fn parse_private_key(input: &[u8]) -> Result<PrivateKey, ImportError> {
    let trimmed = trim_ascii(input);
    if trimmed.starts_with(b"-----BEGIN") {
        let (label, der) = der::pem::decode_vec(trimmed).map_err(|_| ImportError::NoPrivateKey)?;
        let der = zeroize::Zeroizing::new(der);
        return match label {
            "PRIVATE KEY" => PrivateKey::from_pkcs8_der(&der),
            "RSA PRIVATE KEY" => PrivateKey::from_pkcs1_der(&der),
            _ => Err(ImportError::NoPrivateKey),
        }
        .map_err(|_| ImportError::NoPrivateKey);
    }
    // DER is binary: its last bytes may look like whitespace, so never trim it.
    PrivateKey::from_pkcs8_der(input)
        .or_else(|_| PrivateKey::from_pkcs1_der(input))
        .map_err(|_| ImportError::NoPrivateKey)
}

/// The RSA public key of a certificate.
pub(crate) fn rsa_public_key(cert: &Certificate) -> Result<PublicKey, ImportError> {
    PublicKey::from_certificate(cert)
}

/// Check that `key` is the private half of `cert`'s RSA key and is long enough.
pub fn check_key_matches(key: &PrivateKey, cert: &Certificate) -> Result<(), ImportError> {
    let public = rsa_public_key(cert)?;
    let bits = public.bits();
    if bits < MIN_RSA_BITS {
        return Err(ImportError::KeyTooShort(bits));
    }
    if !key.matches(&public) {
        return Err(ImportError::KeyMismatch);
    }
    Ok(())
}

/// All checks run when an administrator imports a key and certificate: key
/// matches, RSA ≥ 2048, the subjectAltName binds the address or domain, and the
/// certificate is valid at `now`.
pub fn check_import(
    key: &PrivateKey,
    cert: &Certificate,
    binding: Binding<'_>,
    now: SystemTime,
) -> Result<(), ImportError> {
    check_key_matches(key, cert)?;
    let bound = match binding {
        Binding::Address(a) => san_rfc822_names(cert).iter().any(|n| address_eq(n, a)),
        Binding::Domain(d) => san_dns_names(cert).iter().any(|n| domain_eq(n, d)),
    };
    if !bound {
        let what = match binding {
            Binding::Address(a) | Binding::Domain(a) => a.to_string(),
        };
        return Err(ImportError::NotBound(what));
    }
    let (not_before, not_after) = validity_unix(cert);
    let now = unix_seconds(now);
    if now < not_before || now > not_after {
        return Err(ImportError::NotValidNow {
            not_before,
            not_after,
        });
    }
    Ok(())
}

/// Whether the certificate binds the Direct address `address`: a subjectAltName
/// rfc822Name equal to it, else a dNSName equal to its domain.
pub fn binds_address(cert: &Certificate, address: &str) -> bool {
    // AS 1.3 §1.4: binding by subjectAltName only; an e-mail attribute in the
    // subject DN does not count.
    if san_rfc822_names(cert)
        .iter()
        .any(|n| address_eq(n, address))
    {
        return true;
    }
    match address.rsplit_once('@') {
        Some((_, domain)) => san_dns_names(cert).iter().any(|n| domain_eq(n, domain)),
        None => false,
    }
}

/// The subjectAltName rfc822Name entries.
pub fn san_rfc822_names(cert: &Certificate) -> Vec<String> {
    san_entries(cert, |g| match g {
        GeneralName::Rfc822Name(s) => Some(s.as_str().to_string()),
        _ => None,
    })
}

/// The subjectAltName dNSName entries.
pub fn san_dns_names(cert: &Certificate) -> Vec<String> {
    san_entries(cert, |g| match g {
        GeneralName::DnsName(s) => Some(s.as_str().to_string()),
        _ => None,
    })
}

fn san_entries(cert: &Certificate, pick: impl Fn(&GeneralName) -> Option<String>) -> Vec<String> {
    match cert.tbs_certificate().get_extension::<SubjectAltName>() {
        Ok(Some((_, san))) => san.0.iter().filter_map(pick).collect(),
        _ => Vec::new(),
    }
}

/// Direct addresses compare case-insensitively, local part included (DIRECT.md).
pub(crate) fn address_eq(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

fn domain_eq(a: &str, b: &str) -> bool {
    // AS 1.3: no wildcard dNSName binds.
    !a.contains('*')
        && a.trim()
            .trim_end_matches('.')
            .eq_ignore_ascii_case(b.trim().trim_end_matches('.'))
}

/// notBefore and notAfter as UNIX seconds.
pub(crate) fn validity_unix(cert: &Certificate) -> (u64, u64) {
    let v = cert.tbs_certificate().validity();
    (
        v.not_before.to_unix_duration().as_secs(),
        v.not_after.to_unix_duration().as_secs(),
    )
}

pub(crate) fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// SHA-256 fingerprint of a certificate's DER, as colon-separated hex.
pub fn fingerprint_sha256(cert: &Certificate) -> String {
    let der = cert.to_der().unwrap_or_default();
    alg::sha256(&der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn trim_ascii(input: &[u8]) -> &[u8] {
    input.trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_input_ending_in_a_whitespace_byte_is_not_trimmed() {
        // A DER SEQUENCE whose last content byte is 0x20: trimming would break it.
        assert!(parse_private_key(&[0x30, 0x03, 0x02, 0x01, 0x20]).is_err());
        assert_eq!(trim_ascii(b"  -----BEGIN x\n"), b"-----BEGIN x");
    }
}
