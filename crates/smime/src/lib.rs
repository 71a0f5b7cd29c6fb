//! The Direct S/MIME engine: sign, encrypt, decrypt, verify and judge trust.
//!
//! Pure and synchronous: bytes and certificates in, bytes and verdicts out.
//! There is no I/O, no clock (time is always a parameter) and no async; callers
//! on an async runtime use `spawn_blocking`. Standards: Applicability Statement
//! for Secure Health Transport 1.3 (AS), RFC 5652 (CMS), RFC 8551 (S/MIME 4.0).

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::todo)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
#![warn(missing_docs)]
// The one exception, AWS-LC's C API for OAEP, says so where it is (crypto/oaep.rs).
#![deny(unsafe_code)]

mod alg;
mod ber;
mod bundle;
pub mod crl;
mod crypto;
mod error;
mod inbound;
mod keys;
mod mime;
mod outbound;
mod pkcs12;
pub mod pki;
mod sender;
mod verdict;

pub use bundle::{Bundle, BundleError, read_bundle};
pub use crypto::{PrivateKey, crypto_module};
pub use error::{ImportError, SealError};
pub use keys::{
    Binding, Identity, MIN_RSA_BITS, binds_address, check_import, check_key_matches,
    fingerprint_sha256, parse_certificates, parse_private_key, san_dns_names, san_rfc822_names,
};
pub use outbound::{
    ContentCipher, KeyTransport, OuterSubject, Recipient, SealOptions, envelope, seal, sign,
};
pub use pkcs12::parse_pkcs12;
pub use pki::{DevCa, PkiError};
pub use sender::{Mailbox, Originator, SenderError, is_addr_spec, read_originator};
pub use verdict::{ReasonCode, SignerDetails, TrustStore, Verdict, judge, validate_certificate};
pub use x509_cert::Certificate;
