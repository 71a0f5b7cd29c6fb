//! Trust bundles: the anchors a trust community publishes as a certs-only CMS
//! SignedData (a "degenerate" PKCS#7, `.p7b`), optionally wrapped in a signed CMS
//! SignedData whose signer the relying party knows out of band (Direct Project
//! "Implementation Guide for Direct Project Trust Bundle Distribution" §3).
//!
//! Pure like the rest of the crate: bytes in, certificates or a refusal out.

use der::Encode as _;
use thiserror::Error;
use x509_cert::Certificate;

use crate::{inbound, keys};

/// What a bundle holds once read (and, for a signed one, verified).
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The anchors, in the bundle's order, each once.
    pub anchors: Vec<Certificate>,
    /// The certificate whose signature over the bundle verified (a signed wrapper),
    /// or `None` for a certs-only bundle.
    pub signed_by: Option<Certificate>,
}

/// Why a bundle was refused; the text is a sentence fragment for the operator.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum BundleError {
    /// Not a CMS SignedData in DER, BER or PEM.
    #[error("this is not a trust bundle (expected a PKCS#7/CMS SignedData, .p7b, DER or PEM)")]
    NotABundle,
    /// A well-formed bundle without a single certificate.
    #[error("the bundle holds no certificate")]
    Empty,
    /// A signer is configured but the bundle carries no signature.
    #[error("the bundle is not signed, but a signer is configured for it, so it cannot be trusted")]
    Unsigned,
    /// The signature verifies, but with another certificate than the configured one.
    #[error("the bundle is signed by {0}, not by the configured signer")]
    WrongSigner(String),
    /// The signature does not verify (tampered content, unknown signer, weak digest).
    #[error("the bundle's signature does not verify: {0}")]
    BadSignature(String),
}

/// Read a trust bundle: a certs-only SignedData, or a signed SignedData whose
/// content is one. With `signer`, only a bundle signed by exactly that certificate
/// is accepted (found by issuer and serial or key identifier even when the bundle
/// does not carry it); without, a signed wrapper must still verify with the
/// certificate it carries.
pub fn read_bundle(input: &[u8], signer: Option<&Certificate>) -> Result<Bundle, BundleError> {
    let der = unpem(input)?;
    if let Some(certs) = certs_only(&der)? {
        if signer.is_some() {
            return Err(BundleError::Unsigned);
        }
        return Ok(Bundle {
            anchors: distinct(certs)?,
            signed_by: None,
        });
    }
    let known: Vec<Certificate> = signer.into_iter().cloned().collect();
    let verified = inbound::verify_signed_data_with(&der, None, &known)
        .map_err(|f| BundleError::BadSignature(f.detail))?;
    let good: Vec<&Certificate> = verified
        .signers
        .iter()
        .filter(|s| s.outcome.is_ok())
        .filter_map(|s| verified.signer_certificate(s, &known))
        .collect();
    let signed_by = match signer {
        Some(wanted) => {
            let wanted = wanted.to_der().map_err(|_| BundleError::NotABundle)?;
            match good.iter().find(|c| c.to_der().is_ok_and(|d| d == wanted)) {
                Some(c) => (*c).clone(),
                None => {
                    return Err(match good.first() {
                        Some(other) => {
                            BundleError::WrongSigner(other.tbs_certificate().subject().to_string())
                        }
                        None => bad_signature(&verified),
                    });
                }
            }
        }
        None => match good.first() {
            Some(c) => (*c).clone(),
            None => return Err(bad_signature(&verified)),
        },
    };
    // The signed content is itself a certs-only bundle (one level of wrapping).
    let inner = unpem(&verified.content)?;
    let certs = certs_only(&inner)?.ok_or(BundleError::NotABundle)?;
    Ok(Bundle {
        anchors: distinct(certs)?,
        signed_by: Some(signed_by),
    })
}

fn bad_signature(verified: &inbound::Verified) -> BundleError {
    let detail = verified
        .signers
        .iter()
        .find_map(|s| s.outcome.as_ref().err())
        .map(|f| f.detail.clone())
        .unwrap_or_else(|| "no signer".into());
    BundleError::BadSignature(detail)
}

/// PEM (`PKCS7` or `CMS`) decoded to DER; anything else as it is.
fn unpem(input: &[u8]) -> Result<Vec<u8>, BundleError> {
    let trimmed = input.trim_ascii();
    if !trimmed.starts_with(b"-----BEGIN") {
        // DER is binary: never trim it
        return Ok(input.to_vec());
    }
    match der::pem::decode_vec(trimmed) {
        Ok((label, der)) if label == "PKCS7" || label == "CMS" => Ok(der),
        _ => Err(BundleError::NotABundle),
    }
}

/// The certificates of a SignedData without signers, `None` when it has signers.
fn certs_only(der_bytes: &[u8]) -> Result<Option<Vec<Certificate>>, BundleError> {
    let sd = keys::read_signed_data(der_bytes).ok_or(BundleError::NotABundle)?;
    if !sd.signer_infos.0.is_empty() {
        return Ok(None);
    }
    Ok(Some(keys::signed_data_certificates(&sd)))
}

/// Each certificate once (by its DER); refuses an empty set.
fn distinct(certs: Vec<Certificate>) -> Result<Vec<Certificate>, BundleError> {
    let mut seen = std::collections::HashSet::new();
    let out: Vec<Certificate> = certs
        .into_iter()
        .filter(|c| seen.insert(c.to_der().unwrap_or_default()))
        .collect();
    if out.is_empty() {
        Err(BundleError::Empty)
    } else {
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_other_pem_are_not_bundles() {
        assert_eq!(
            read_bundle(b"hello", None).unwrap_err(),
            BundleError::NotABundle
        );
        assert_eq!(
            read_bundle(
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                None
            )
            .unwrap_err(),
            BundleError::NotABundle
        );
        assert_eq!(read_bundle(b"", None).unwrap_err(), BundleError::NotABundle);
    }
}
