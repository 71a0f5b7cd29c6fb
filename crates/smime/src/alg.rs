//! Algorithm identifiers this engine knows, and which of them Direct allows.
//!
//! OIDs are spelled out here (rather than imported from `const-oid`'s database)
//! so that the list of what is accepted can be read in one place.

use der::asn1::ObjectIdentifier as Oid;

// RFC 5652 §14 content types.
pub(crate) const ID_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.1");
pub(crate) const ID_SIGNED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.2");
pub(crate) const ID_ENVELOPED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.3");
// RFC 5083 §1.
pub(crate) const ID_AUTH_ENVELOPED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.1.23");

// RFC 5652 §11 attributes.
pub(crate) const ID_CONTENT_TYPE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.3");
pub(crate) const ID_MESSAGE_DIGEST: Oid = Oid::new_unwrap("1.2.840.113549.1.9.4");
pub(crate) const ID_SIGNING_TIME: Oid = Oid::new_unwrap("1.2.840.113549.1.9.5");

// Digests (RFC 5754; MD5 and SHA-1 only to refuse them by name).
pub(crate) const ID_MD5: Oid = Oid::new_unwrap("1.2.840.113549.2.5");
pub(crate) const ID_SHA1: Oid = Oid::new_unwrap("1.3.14.3.2.26");
pub(crate) const ID_SHA224: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.4");
pub(crate) const ID_SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
pub(crate) const ID_SHA384: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.2");
pub(crate) const ID_SHA512: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.3");

// RSA (RFC 8017 appendix C; RFC 4055).
pub(crate) const RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
pub(crate) const ID_RSAES_OAEP: Oid = Oid::new_unwrap("1.2.840.113549.1.1.7");
pub(crate) const ID_MGF1: Oid = Oid::new_unwrap("1.2.840.113549.1.1.8");
pub(crate) const ID_RSASSA_PSS: Oid = Oid::new_unwrap("1.2.840.113549.1.1.10");
pub(crate) const MD5_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.4");
pub(crate) const SHA1_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.5");
pub(crate) const SHA256_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
pub(crate) const SHA384_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.12");
pub(crate) const SHA512_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.13");
pub(crate) const SHA224_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.14");

// ECDSA (RFC 5758), recognised only to refuse it with a clear reason.
pub(crate) const ID_EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
pub(crate) const ECDSA_WITH_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
pub(crate) const ECDSA_WITH_SHA384: Oid = Oid::new_unwrap("1.2.840.10045.4.3.3");
pub(crate) const ECDSA_WITH_SHA512: Oid = Oid::new_unwrap("1.2.840.10045.4.3.4");

// Content encryption (RFC 3565, RFC 5084).
pub(crate) const AES128_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.2");
pub(crate) const AES192_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.22");
pub(crate) const AES256_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.42");
pub(crate) const AES128_GCM: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.6");
pub(crate) const AES192_GCM: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.26");
pub(crate) const AES256_GCM: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.46");

// X.509 extensions and key purposes.
pub(crate) const ID_KP_EMAIL_PROTECTION: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x04];

/// A message digest algorithm seen in a SignerInfo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DigestAlg {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
    /// MD5 or SHA-1: recognised so that the refusal can say why.
    Weak(&'static str),
}

impl DigestAlg {
    pub(crate) fn from_oid(oid: &Oid) -> Option<Self> {
        Some(match *oid {
            ID_SHA224 => DigestAlg::Sha224,
            ID_SHA256 => DigestAlg::Sha256,
            ID_SHA384 => DigestAlg::Sha384,
            ID_SHA512 => DigestAlg::Sha512,
            ID_SHA1 => DigestAlg::Weak("SHA-1"),
            ID_MD5 => DigestAlg::Weak("MD5"),
            _ => return None,
        })
    }

    /// Hash `parts` in order (AWS-LC). Weak digests return `None`: they are never computed.
    pub(crate) fn hash(self, parts: &[&[u8]]) -> Option<Vec<u8>> {
        crate::crypto::hash(self, parts)
    }
}

/// SHA-256 of `data`, for fingerprints.
pub(crate) fn sha256(data: &[u8]) -> Vec<u8> {
    crate::crypto::hash(DigestAlg::Sha256, &[data]).unwrap_or_default()
}
