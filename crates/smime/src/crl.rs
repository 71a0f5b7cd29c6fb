//! Certificate revocation lists (RFC 5280 §5): read, checked against the
//! certificate's issuer, and asked about one certificate.
//!
//! Version 1 and version 2 lists are both read (the version field is optional,
//! §5.1.2.1; `openssl ca -gencrl` without `crl_extensions` writes version 1).
//! A list that is read but cannot be used — unreadable, not signed by the
//! certificate's issuer, past its nextUpdate, or carrying a critical extension this
//! reader does not handle (delta CRLs, indirect or partitioned lists) — is an
//! [`Unusable`] answer, never "not revoked".

use der::{Decode as _, Encode as _, Reader as _, SliceReader, Tag};
use x509_cert::Certificate;
use x509_cert::crl::RevokedCert;
use x509_cert::ext::Extensions;
use x509_cert::ext::pkix::crl::dp::IssuingDistributionPoint;
use x509_cert::name::Name;
use x509_cert::time::Time;

use const_oid::ObjectIdentifier;

/// How far a list's thisUpdate may be ahead of our clock.
const CLOCK_SKEW: u64 = 300;

const CRL_NUMBER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.20");
const DELTA_CRL_INDICATOR: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.27");
const ISSUING_DISTRIBUTION_POINT: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.28");
const AUTHORITY_KEY_IDENTIFIER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.35");
const FRESHEST_CRL: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.46");
const REASON_CODE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.21");
const INVALIDITY_DATE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.24");

/// Why a list was reached but cannot answer, in words for the administrator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unusable(pub String);

/// A parsed CRL: what it says, and what its signature covers.
#[derive(Debug, Clone)]
pub struct Crl {
    issuer: Name,
    issuer_der: Vec<u8>,
    this_update: u64,
    next_update: Option<u64>,
    revoked: Vec<RevokedCert>,
    tbs: Vec<u8>,
    signature_algorithm: Vec<u8>,
    signature: Vec<u8>,
}

/// What a list says of one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Not on the list.
    Good,
    /// On the list since this time (Unix seconds).
    Revoked {
        /// revocationDate, Unix seconds.
        since: u64,
    },
}

impl Crl {
    /// Reads a DER CRL of version 1 or 2.
    pub fn from_der(der: &[u8]) -> Result<Crl, Unusable> {
        let bad = |e: der::Error| Unusable(format!("the revocation list could not be read ({e})"));
        let mut outer = SliceReader::new(der).map_err(bad)?;
        let (tbs, signature_algorithm, signature) = outer
            .sequence(|r| {
                let tbs = r.tlv_bytes()?.to_vec();
                let alg = r.tlv_bytes()?.to_vec();
                let sig = der::asn1::BitString::decode(r)?;
                Ok::<_, der::Error>((tbs, alg, sig))
            })
            .map_err(bad)?;
        outer.finish().map_err(bad)?;
        let signature = signature
            .as_bytes()
            .ok_or_else(|| Unusable("the revocation list's signature is not whole bytes".into()))?
            .to_vec();

        let mut r = SliceReader::new(&tbs).map_err(bad)?;
        let crl = r
            .sequence(|r| {
                if Tag::peek(r)? == Tag::Integer {
                    let version = u8::decode(r)?;
                    if version != 1 {
                        return Err(Tag::Integer.value_error().into());
                    }
                }
                let inner_alg = r.tlv_bytes()?.to_vec();
                let issuer_der = r.tlv_bytes()?.to_vec();
                let issuer = Name::from_der(&issuer_der)?;
                let this_update = Time::decode(r)?;
                let next_update = match Tag::peek(r) {
                    Ok(Tag::UtcTime | Tag::GeneralizedTime) => Some(Time::decode(r)?),
                    _ => None,
                };
                let revoked = match Tag::peek(r) {
                    Ok(Tag::Sequence) => Vec::<RevokedCert>::decode(r)?,
                    _ => Vec::new(),
                };
                let extensions = if r.is_finished() {
                    Extensions::new()
                } else {
                    r.context_specific::<Extensions>(der::TagNumber(0), der::TagMode::Explicit)?
                        .unwrap_or_default()
                };
                Ok::<_, der::Error>((
                    inner_alg,
                    issuer,
                    issuer_der,
                    this_update,
                    next_update,
                    revoked,
                    extensions,
                ))
            })
            .map_err(bad)?;
        r.finish().map_err(bad)?;
        let (inner_alg, issuer, issuer_der, this_update, next_update, revoked, extensions) = crl;
        if inner_alg != signature_algorithm {
            return Err(Unusable(
                "the revocation list names two different signature algorithms".into(),
            ));
        }
        check_list_extensions(&extensions)?;
        for entry in &revoked {
            for ext in entry.crl_entry_extensions.iter().flatten() {
                if ext.critical && ![REASON_CODE, INVALIDITY_DATE].contains(&ext.extn_id) {
                    // certificateIssuer (indirect lists) and anything unknown
                    return Err(Unusable(format!(
                        "a revoked entry carries the critical extension {}, which is not supported",
                        ext.extn_id
                    )));
                }
            }
        }
        Ok(Crl {
            issuer,
            issuer_der,
            this_update: unix(&this_update),
            next_update: next_update.as_ref().map(unix),
            revoked,
            tbs,
            signature_algorithm,
            signature,
        })
    }

    /// The list's issuer name.
    pub fn issuer(&self) -> &Name {
        &self.issuer
    }

    /// nextUpdate, Unix seconds, when the list gives one.
    pub fn next_update(&self) -> Option<u64> {
        self.next_update
    }

    /// Whether this list was issued under the name that issued `cert`.
    pub fn names_issuer_of(&self, cert: &Certificate) -> bool {
        cert.tbs_certificate()
            .issuer()
            .to_der()
            .is_ok_and(|d| d == self.issuer_der)
    }

    /// The status of `cert`, whose issuer is `issuer`, at `now` (Unix seconds): the
    /// list must name that issuer, carry its valid signature and be current.
    pub fn status(
        &self,
        cert: &Certificate,
        issuer: &Certificate,
        now: u64,
    ) -> Result<Status, Unusable> {
        if !self.names_issuer_of(cert) {
            return Err(Unusable(format!(
                "the revocation list was issued by {}, not by the certificate's issuer {}",
                self.issuer,
                cert.tbs_certificate().issuer()
            )));
        }
        self.check_signature(issuer)?;
        if self.this_update > now + CLOCK_SKEW {
            return Err(Unusable(
                "the revocation list's thisUpdate is in the future".into(),
            ));
        }
        if let Some(next) = self.next_update
            && next < now
        {
            return Err(Unusable(format!(
                "the revocation list is out of date (its nextUpdate passed {} s ago)",
                now - next
            )));
        }
        let serial = cert.tbs_certificate().serial_number().as_bytes();
        Ok(self
            .revoked
            .iter()
            .find(|e| e.serial_number.as_bytes() == serial)
            .map_or(Status::Good, |e| Status::Revoked {
                since: unix(&e.revocation_date),
            }))
    }

    fn check_signature(&self, issuer: &Certificate) -> Result<(), Unusable> {
        let spki = issuer.tbs_certificate().subject_public_key_info();
        let key_alg = spki
            .algorithm
            .to_der()
            .map_err(|e| Unusable(format!("the issuer's key could not be read ({e})")))?;
        let key_alg = value_of(&key_alg)?;
        let sig_alg = value_of(&self.signature_algorithm)?;
        let key = spki.subject_public_key.raw_bytes();
        let alg = webpki::ALL_VERIFICATION_ALGS
            .iter()
            .find(|a| {
                a.public_key_alg_id().as_ref() == key_alg
                    && a.signature_alg_id().as_ref() == sig_alg
            })
            .ok_or_else(|| {
                Unusable(
                    "the revocation list is signed with an algorithm that is not accepted (or one the issuer's key cannot make)"
                        .into(),
                )
            })?;
        alg.verify_signature(key, &self.tbs, &self.signature)
            .map_err(|_| {
                Unusable(format!(
                    "the revocation list is not signed by the certificate's issuer ({})",
                    issuer.tbs_certificate().subject()
                ))
            })
    }
}

fn check_list_extensions(extensions: &Extensions) -> Result<(), Unusable> {
    for ext in extensions {
        if ext.extn_id == DELTA_CRL_INDICATOR {
            return Err(Unusable("delta revocation lists are not supported".into()));
        }
        if ext.extn_id == ISSUING_DISTRIBUTION_POINT {
            let idp =
                IssuingDistributionPoint::from_der(ext.extn_value.as_bytes()).map_err(|e| {
                    Unusable(format!(
                        "the issuingDistributionPoint could not be read ({e})"
                    ))
                })?;
            if idp.indirect_crl
                || idp.only_some_reasons.is_some()
                || idp.only_contains_attribute_certs
            {
                return Err(Unusable(
                    "partitioned or indirect revocation lists are not supported".into(),
                ));
            }
            continue;
        }
        if ext.critical
            && ![CRL_NUMBER, AUTHORITY_KEY_IDENTIFIER, FRESHEST_CRL].contains(&ext.extn_id)
        {
            return Err(Unusable(format!(
                "the revocation list carries the critical extension {}, which is not supported",
                ext.extn_id
            )));
        }
    }
    Ok(())
}

/// The value octets of one DER TLV (an AlgorithmIdentifier without its SEQUENCE header).
fn value_of(tlv: &[u8]) -> Result<&[u8], Unusable> {
    let mut r = SliceReader::new(tlv)
        .map_err(|e| Unusable(format!("an algorithm identifier could not be read ({e})")))?;
    let header = der::Header::decode(&mut r)
        .map_err(|e| Unusable(format!("an algorithm identifier could not be read ({e})")))?;
    let start = tlv.len() - usize::try_from(header.length()).unwrap_or(0);
    Ok(&tlv[start.min(tlv.len())..])
}

fn unix(t: &Time) -> u64 {
    t.to_unix_duration().as_secs()
}
