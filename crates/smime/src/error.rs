//! Errors that callers branch on: building a Direct message and importing keys.
//!
//! Inbound problems are not errors but verdicts (see [`crate::Verdict`]): a message
//! that fails to decrypt or verify is an expected outcome, reported with a reason.

use thiserror::Error;

/// A structural problem in inbound data; becomes [`crate::ReasonCode::Malformed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed(pub &'static str);

/// Why an outbound message could not be built.
#[derive(Debug, Error)]
pub enum SealError {
    /// The message given to seal is not a usable RFC 5322 message.
    #[error("the message to send is not a valid RFC 5322 message: {0}")]
    BadMessage(&'static str),
    /// A recipient (or the sender) certificate cannot be used for encryption.
    #[error("the certificate for {subject} cannot be used to encrypt: {reason}")]
    UnusableRecipient {
        /// Subject of the offending certificate.
        subject: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// There is no recipient to encrypt to.
    #[error("there is no recipient certificate to encrypt to")]
    NoRecipients,
    /// The signing key could not sign (wrong size, mismatched certificate, ...).
    #[error("the signing key could not sign: {0}")]
    Signing(String),
    /// The operating system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// Content encryption or key transport failed.
    #[error("could not encrypt the message: {0}")]
    Encryption(String),
    /// An ASN.1 encoding step failed.
    #[error("could not encode the CMS structure: {0}")]
    Encoding(String),
}

impl From<der::Error> for SealError {
    fn from(e: der::Error) -> Self {
        SealError::Encoding(e.to_string())
    }
}

impl From<cms::builder::Error> for SealError {
    fn from(e: cms::builder::Error) -> Self {
        SealError::Encoding(e.to_string())
    }
}

/// Why a key or certificate could not be imported.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ImportError {
    /// No certificate could be read from the input (PEM or DER).
    #[error("no certificate could be read from the file (expected PEM or DER X.509)")]
    NoCertificate,
    /// No private key could be read from the input.
    #[error(
        "no private key could be read from the file (expected PKCS#8 or PKCS#1 RSA, PEM or DER, unencrypted)"
    )]
    NoPrivateKey,
    /// The key is not an RSA key.
    #[error("the certificate's key is not RSA; Direct requires RSA keys")]
    NotRsa,
    /// The RSA key is shorter than the Direct minimum.
    #[error("the RSA key has {0} bits; Direct requires at least 2048")]
    KeyTooShort(usize),
    /// The private key does not belong to the certificate.
    #[error("the private key does not match the certificate")]
    KeyMismatch,
    /// The certificate's subjectAltName does not name the address or domain.
    #[error(
        "the certificate is not bound to {0}: its subjectAltName must carry that address (rfc822Name) or domain (dNSName)"
    )]
    NotBound(String),
    /// The PKCS#12 password is wrong (the file did not decrypt).
    #[error("the PKCS#12 password is wrong")]
    WrongPassword,
    /// The PKCS#12 file uses legacy RC2/3DES encryption.
    #[error(
        "the PKCS#12 file uses legacy encryption (RC2/3DES); export it again with AES (for example `openssl pkcs12 -export` without `-legacy`)"
    )]
    Pkcs12Legacy,
    /// The PKCS#12 file could not be read.
    #[error("the PKCS#12 file could not be read: {0}")]
    Pkcs12(&'static str),
    /// The certificate is outside its validity period at the given time.
    #[error(
        "the certificate is not valid at this time (valid from {not_before} to {not_after}, UNIX seconds)"
    )]
    NotValidNow {
        /// Start of validity, UNIX seconds.
        not_before: u64,
        /// End of validity, UNIX seconds.
        not_after: u64,
    },
}
