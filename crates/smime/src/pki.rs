//! A built-in development PKI (issue 3, "Keys, certificates, anchors"): a
//! self-signed root CA that issues domain-bound and address-bound Direct
//! certificates, for evaluation and tests. Clearly labelled as not for
//! production in every subject it writes.
//!
//! Pure like the rest of the crate: no I/O, time is a parameter. Keys come from
//! the operating system random number generator. Persisting the CA is the
//! caller's job, through [`DevCa::to_pem`] and [`DevCa::from_pem`].

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use const_oid::db::rfc5280::ID_KP_EMAIL_PROTECTION;
use der::asn1::BitString;
use der::asn1::Ia5String;
use der::pem::LineEnding;
use der::referenced::OwnedToRef;
use der::{DecodePem, EncodePem};
use spki::{
    AlgorithmIdentifierOwned, DynSignatureAlgorithmIdentifier, EncodePublicKey,
    SubjectPublicKeyInfoOwned, SubjectPublicKeyInfoRef,
};
use thiserror::Error;
use x509_cert::Certificate;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder, CertificateBuilder};
use x509_cert::certificate::TbsCertificate;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::ext::{Extension, ToExtension};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};

use crate::crypto::{self, PrivateKey};
use crate::error::ImportError;
use crate::keys::{self, Identity};

/// Modulus size of every key the development PKI makes. AS 1.3 §1.4 requires
/// at least 2048; 2048 keeps key generation (and the test suite) quick.
pub const DEV_RSA_BITS: usize = 2048;

/// The organisation written into every development certificate, so that nobody
/// mistakes one for a production certificate.
pub const DEV_ORGANIZATION: &str = "directmail development CA \u{2014} not for production";

/// Lifetime of the development root: ten years.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Lifetime of an issued certificate: about two years (730 days).
const LEAF_LIFETIME: Duration = Duration::from_secs(730 * 24 * 3600);
/// notBefore is set this far before `now`, so that a peer whose clock is a little
/// behind still accepts a certificate issued a moment ago.
const BACKDATE: Duration = Duration::from_secs(3600);

/// Why the development PKI could not make or load a certificate.
#[derive(Debug, Error)]
pub enum PkiError {
    /// RSA key generation failed (normally: the system random number generator).
    #[error("could not generate an RSA key: {0}")]
    KeyGeneration(String),
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// The name given is not usable in a certificate (empty, or not ASCII for a
    /// dNSName/rfc822Name, or not an address).
    #[error("{0:?} cannot be put in a certificate: {1}")]
    BadName(String, &'static str),
    /// Building or signing the certificate failed.
    #[error("could not build the certificate: {0}")]
    Certificate(String),
    /// The persisted CA could not be read back.
    #[error("the development CA could not be loaded: {0}")]
    Load(#[from] ImportError),
    /// The persisted certificate is not a development CA certificate.
    #[error("the certificate is not a CA certificate that can sign certificates")]
    NotACa,
}

impl From<x509_cert::builder::Error> for PkiError {
    fn from(e: x509_cert::builder::Error) -> Self {
        PkiError::Certificate(e.to_string())
    }
}

impl From<der::Error> for PkiError {
    fn from(e: der::Error) -> Self {
        PkiError::Certificate(e.to_string())
    }
}

impl From<spki::Error> for PkiError {
    fn from(e: spki::Error) -> Self {
        PkiError::Certificate(e.to_string())
    }
}

/// A development certificate authority: a self-signed RSA root that issues
/// Direct certificates. Not for production (its subject says so).
#[derive(Clone)]
pub struct DevCa {
    key: PrivateKey,
    certificate: Certificate,
}

impl std::fmt::Debug for DevCa {
    // The CA key never appears in a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa")
            .field(
                "subject",
                &self.certificate.tbs_certificate().subject().to_string(),
            )
            .field("key", &"<redacted>")
            .finish()
    }
}

impl DevCa {
    /// Make a new root: RSA-2048, SHA-256 with RSA, basicConstraints CA (critical),
    /// keyUsage keyCertSign + cRLSign (critical), valid from an hour before `now`
    /// for ten years. `name` becomes the common name; the organisation is
    /// [`DEV_ORGANIZATION`].
    pub fn generate(name: &str, now: SystemTime) -> Result<DevCa, PkiError> {
        let key = generate_key()?;
        let subject = dev_name(name)?;
        let spki = public_key_info(&key)?;
        let profile = Profile {
            subject: subject.clone(),
            issuer: subject,
            kind: Kind::Root,
            issuer_key_id: None,
        };
        let builder =
            CertificateBuilder::new(profile, random_serial()?, validity(now, CA_LIFETIME)?, spki)?;
        let certificate = sign_certificate(builder, &key)?;
        Ok(DevCa { key, certificate })
    }

    /// Issue a domain-bound certificate (subjectAltName dNSName = `domain`,
    /// AS 1.3 §1.4) with a fresh RSA-2048 key.
    pub fn issue_domain(&self, domain: &str, now: SystemTime) -> Result<Identity, PkiError> {
        let domain = domain.trim().trim_end_matches('.');
        if domain.is_empty() || domain.contains('@') || domain.contains('*') {
            // AS 1.3: no wildcard dNSName.
            return Err(PkiError::BadName(
                domain.to_string(),
                "expected a domain name without wildcard",
            ));
        }
        let ia5 = ia5(domain)?;
        self.issue(domain, GeneralName::DnsName(ia5), now)
    }

    /// Issue an address-bound certificate (subjectAltName rfc822Name = `address`,
    /// AS 1.3 §1.4) with a fresh RSA-2048 key.
    pub fn issue_address(&self, address: &str, now: SystemTime) -> Result<Identity, PkiError> {
        let address = address.trim();
        match address.split_once('@') {
            Some((local, domain)) if !local.is_empty() && !domain.is_empty() => {}
            _ => {
                return Err(PkiError::BadName(
                    address.to_string(),
                    "expected a Direct address local@domain",
                ));
            }
        }
        let ia5 = ia5(address)?;
        self.issue(address, GeneralName::Rfc822Name(ia5), now)
    }

    fn issue(&self, cn: &str, san: GeneralName, now: SystemTime) -> Result<Identity, PkiError> {
        let key = generate_key()?;
        let subject = dev_name(cn)?;
        let issuer_spki = self.certificate.tbs_certificate().subject_public_key_info();
        let issuer_key_id = SubjectKeyIdentifier::try_from(issuer_spki.owned_to_ref())?;
        let profile = Profile {
            subject,
            issuer: self.certificate.tbs_certificate().subject().clone(),
            kind: Kind::Leaf(san),
            issuer_key_id: Some(issuer_key_id),
        };
        let builder = CertificateBuilder::new(
            profile,
            random_serial()?,
            validity(now, LEAF_LIFETIME)?,
            public_key_info(&key)?,
        )?;
        let certificate = sign_certificate(builder, &self.key)?;
        // The root is the receiver's anchor, so the chain sent along is empty.
        Ok(Identity::new(key, certificate, Vec::new())?)
    }

    /// The root certificate: the trust anchor to configure for development domains.
    pub fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    /// The root certificate and its private key as PEM (`CERTIFICATE` and PKCS#8
    /// `PRIVATE KEY`, unencrypted), for the caller to persist (encrypted at rest).
    /// The key text is zeroed on drop.
    pub fn to_pem(&self) -> Result<(String, zeroize::Zeroizing<String>), PkiError> {
        let cert = self.certificate.to_pem(LineEnding::LF)?;
        let der = self.key.to_pkcs8_der();
        let key = der::pem::encode_string("PRIVATE KEY", LineEnding::LF, &der)
            .map_err(|e| PkiError::Certificate(e.to_string()))?;
        Ok((cert, zeroize::Zeroizing::new(key)))
    }

    /// Load a CA saved with [`DevCa::to_pem`]. The key must match the certificate,
    /// and the certificate must be a CA allowed to sign certificates.
    pub fn from_pem(certificate_pem: &str, key_pem: &str) -> Result<DevCa, PkiError> {
        let certificate = Certificate::from_pem(certificate_pem.trim().as_bytes())
            .map_err(|_| ImportError::NoCertificate)?;
        let key = keys::parse_private_key(key_pem.as_bytes())?;
        keys::check_key_matches(&key, &certificate)?;
        let tbs = certificate.tbs_certificate();
        let is_ca = matches!(tbs.get_extension::<BasicConstraints>(), Ok(Some((_, bc))) if bc.ca);
        let signs =
            matches!(tbs.get_extension::<KeyUsage>(), Ok(Some((_, ku))) if ku.key_cert_sign());
        if !is_ca || !signs {
            return Err(PkiError::NotACa);
        }
        Ok(DevCa { key, certificate })
    }
}

fn generate_key() -> Result<PrivateKey, PkiError> {
    PrivateKey::generate(DEV_RSA_BITS).map_err(PkiError::KeyGeneration)
}

fn public_key_info(key: &PrivateKey) -> Result<SubjectPublicKeyInfoOwned, PkiError> {
    let der = key.public_key_spki_der().map_err(PkiError::KeyGeneration)?;
    Ok(SubjectPublicKeyInfoOwned::try_from(der.as_slice())?)
}

/// Sign a certificate with sha256WithRSAEncryption (RFC 4055 §5) on AWS-LC: the
/// builder gives the TBSCertificate's DER, AWS-LC signs it, the builder
/// assembles the certificate.
fn sign_certificate<P: BuilderProfile>(
    mut builder: CertificateBuilder<P>,
    key: &PrivateKey,
) -> Result<Certificate, PkiError> {
    let signer = CertSigner {
        spki: public_key_info(key)?,
    };
    let tbs = builder.finalize(&signer)?;
    let signature = key
        .sign_pkcs1v15_sha256(&tbs)
        .map_err(PkiError::Certificate)?;
    Ok(builder.assemble(BitString::from_bytes(&signature)?, &signer)?)
}

/// What the certificate builder asks of a signer besides the signature itself:
/// the issuer's public key and the signature algorithm.
struct CertSigner {
    spki: SubjectPublicKeyInfoOwned,
}

impl signature::Keypair for CertSigner {
    type VerifyingKey = IssuerKey;

    fn verifying_key(&self) -> IssuerKey {
        IssuerKey(self.spki.clone())
    }
}

impl DynSignatureAlgorithmIdentifier for CertSigner {
    fn signature_algorithm_identifier(&self) -> spki::Result<AlgorithmIdentifierOwned> {
        Ok(AlgorithmIdentifierOwned {
            oid: crate::alg::SHA256_WITH_RSA,
            parameters: Some(der::asn1::Any::from(der::asn1::Null)),
        })
    }
}

#[derive(Clone)]
struct IssuerKey(SubjectPublicKeyInfoOwned);

impl EncodePublicKey for IssuerKey {
    fn to_public_key_der(&self) -> spki::Result<der::Document> {
        Ok(der::Document::encode_msg(&self.0)?)
    }
}

/// `CN=<cn>,O=directmail development CA — not for production` (RFC 4514 order).
fn dev_name(cn: &str) -> Result<Name, PkiError> {
    let cn = cn.trim();
    if cn.is_empty() {
        return Err(PkiError::BadName(String::new(), "the name is empty"));
    }
    let escaped = escape_rfc4514(cn);
    Name::from_str(&format!("CN={escaped},O={DEV_ORGANIZATION}"))
        .map_err(|_| PkiError::BadName(cn.to_string(), "not usable as a common name"))
}

/// RFC 4514 §2.4: escape the characters that are special in a string
/// representation of a distinguished name.
fn escape_rfc4514(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && (c == '#' || c == ' '));
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn ia5(value: &str) -> Result<Ia5String, PkiError> {
    // RFC 5280 §4.2.1.6: dNSName and rfc822Name are IA5String (ASCII); an
    // internationalised name must be given in its ASCII (A-label) form.
    Ia5String::new(value)
        .map_err(|_| PkiError::BadName(value.to_string(), "must be ASCII (IA5String)"))
}

/// A positive 16-byte random serial (RFC 5280 §4.1.2.2: at most 20 octets;
/// CA/B Forum practice: at least 64 random bits).
fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    crypto::fill_random(&mut bytes).map_err(|()| PkiError::Random)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::new(&bytes)?)
}

fn validity(now: SystemTime, lifetime: Duration) -> Result<Validity, PkiError> {
    let start = now.checked_sub(BACKDATE).unwrap_or(now);
    let end = now.checked_add(lifetime).unwrap_or(now);
    Ok(Validity::new(Time::try_from(start)?, Time::try_from(end)?))
}

enum Kind {
    Root,
    Leaf(GeneralName),
}

/// The certificate profile of the development PKI (RFC 5280 §4.2 extensions).
struct Profile {
    subject: Name,
    issuer: Name,
    kind: Kind,
    issuer_key_id: Option<SubjectKeyIdentifier>,
}

impl BuilderProfile for Profile {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        spk: SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: SubjectPublicKeyInfoRef<'_>,
        tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        let mut ext: Vec<Extension> = Vec::new();
        let ski = SubjectKeyIdentifier::try_from(spk)?;
        // RFC 5280 §4.2.1.1: authorityKeyIdentifier = the issuer's subjectKeyIdentifier
        // (its own for a self-signed root).
        let aki_id = match &self.issuer_key_id {
            Some(id) => id.0.clone(),
            None => ski.0.clone(),
        };
        ext.push(
            AuthorityKeyIdentifier {
                key_identifier: Some(aki_id),
                ..Default::default()
            }
            .to_extension(tbs.subject(), &ext)?,
        );
        // RFC 5280 §4.2.1.2.
        ext.push(ski.to_extension(tbs.subject(), &ext)?);
        match &self.kind {
            Kind::Root => {
                // RFC 5280 §4.2.1.9: critical in a CA certificate.
                ext.push(
                    (
                        true,
                        &BasicConstraints {
                            ca: true,
                            path_len_constraint: None,
                        },
                    )
                        .to_extension(tbs.subject(), &ext)?,
                );
                // RFC 5280 §4.2.1.3.
                ext.push(
                    KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign)
                        .to_extension(tbs.subject(), &ext)?,
                );
            }
            Kind::Leaf(san) => {
                ext.push(
                    (
                        true,
                        &BasicConstraints {
                            ca: false,
                            path_len_constraint: None,
                        },
                    )
                        .to_extension(tbs.subject(), &ext)?,
                );
                // AS 1.3 §1.4 / RFC 8550 §4.4.2: signing and key transport.
                ext.push(
                    KeyUsage(KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment)
                        .to_extension(tbs.subject(), &ext)?,
                );
                // RFC 5280 §4.2.1.12: id-kp-emailProtection.
                ext.push(
                    ExtendedKeyUsage(vec![ID_KP_EMAIL_PROTECTION])
                        .to_extension(tbs.subject(), &ext)?,
                );
                // AS 1.3 §1.4: the binding lives in subjectAltName only. The subject
                // is not empty, so the extension is not critical (RFC 5280 §4.2.1.6).
                ext.push(SubjectAltName(vec![san.clone()]).to_extension(tbs.subject(), &ext)?);
            }
        }
        Ok(ext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4514_specials_are_escaped() {
        assert_eq!(escape_rfc4514("a,b=c"), "a\\,b\\=c");
        assert_eq!(escape_rfc4514("#x"), "\\#x");
    }

    #[test]
    fn bad_names_are_refused_before_key_generation() {
        assert!(matches!(dev_name("  "), Err(PkiError::BadName(..))));
        assert!(matches!(
            ia5("caf\u{e9}.example"),
            Err(PkiError::BadName(..))
        ));
    }
}
