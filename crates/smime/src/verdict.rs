//! The trust verdict on an inbound Direct message (AS 1.3 §2 inbound rules,
//! DIRECT.md "Inbound"): decrypt, verify, and decide whether one signer is
//! bound to the sender, valid now, not revoked and chains to a configured anchor.

use std::time::SystemTime;

use der::{Decode as _, Encode};
use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::{EndEntityCert, KeyUsage};
use x509_cert::Certificate;
use x509_cert::ext::pkix::KeyUsage as X509KeyUsage;

use crate::alg;
use crate::crl::{self, Crl};
use crate::inbound::{self, Failure};
use crate::keys::{self, Identity};
use crate::mime;
use crate::sender::{Originator, SenderError, read_originator};

/// Why a message was or was not trusted. Every code maps to one plain sentence
/// ([`ReasonCode::sentence`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReasonCode {
    /// Decrypted, signed, bound, valid and chaining to an anchor.
    Trusted,
    /// The signed header block names its sender ambiguously: several From or Sender
    /// fields, several mailboxes, or an address in a comment, group or encoded word.
    AmbiguousSender,
    /// No signer chains to an anchor configured for the receiving domain.
    UntrustedAnchor,
    /// The signer certificate (or one in its chain) has expired.
    SignerExpired,
    /// The signer certificate is not valid yet.
    SignerNotYetValid,
    /// The signer certificate has been revoked (per the CRLs supplied).
    SignerRevoked,
    /// The signer's revocation status could not be learned (its CRL could not be
    /// fetched) and the receiving domain requires it. Set by the caller, which
    /// fetches CRLs; never by [`judge`].
    RevocationUnknown,
    /// A CRL of the signer's path was reached but cannot be used: unreadable, not
    /// signed by the certificate's issuer, out of date, or of a kind not supported.
    /// Refused whatever the domain's soft-fail setting.
    RevocationListUnusable,
    /// No signer certificate names the From address (or its domain) in subjectAltName.
    SenderNotBound,
    /// MD5/SHA-1 digest or an RSA key shorter than 2048 bits.
    WeakAlgorithm,
    /// An algorithm this engine does not implement (ECDSA, 3DES, key agreement...).
    UnsupportedAlgorithm,
    /// The signature does not verify with the signer's key.
    BadSignature,
    /// The content does not match the digest the sender signed.
    ContentTampered,
    /// The message is not encrypted.
    NotEncrypted,
    /// The (decrypted) message carries no signature.
    NotSigned,
    /// The message is not encrypted for any of our certificates.
    NoKeyForRecipient,
    /// It is addressed to our certificate but does not decrypt.
    DecryptionFailed,
    /// The signer certificate's key usage or extended key usage forbids signing mail.
    KeyUsageNotAllowed,
    /// The signature does not include the signer's certificate.
    SignerCertificateMissing,
    /// The message or its CMS structures are damaged or truncated.
    Malformed,
}

impl ReasonCode {
    /// Every code, for exhaustive listings (admin filters, tests).
    pub const ALL: [ReasonCode; 20] = [
        ReasonCode::Trusted,
        ReasonCode::AmbiguousSender,
        ReasonCode::UntrustedAnchor,
        ReasonCode::SignerExpired,
        ReasonCode::SignerNotYetValid,
        ReasonCode::SignerRevoked,
        ReasonCode::RevocationUnknown,
        ReasonCode::RevocationListUnusable,
        ReasonCode::SenderNotBound,
        ReasonCode::WeakAlgorithm,
        ReasonCode::UnsupportedAlgorithm,
        ReasonCode::BadSignature,
        ReasonCode::ContentTampered,
        ReasonCode::NotEncrypted,
        ReasonCode::NotSigned,
        ReasonCode::NoKeyForRecipient,
        ReasonCode::DecryptionFailed,
        ReasonCode::KeyUsageNotAllowed,
        ReasonCode::SignerCertificateMissing,
        ReasonCode::Malformed,
    ];

    /// A stable snake_case name, for storing in a database or a log field.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::Trusted => "trusted",
            ReasonCode::AmbiguousSender => "ambiguous_sender",
            ReasonCode::UntrustedAnchor => "untrusted_anchor",
            ReasonCode::SignerExpired => "signer_expired",
            ReasonCode::SignerNotYetValid => "signer_not_yet_valid",
            ReasonCode::SignerRevoked => "signer_revoked",
            ReasonCode::RevocationUnknown => "revocation_unknown",
            ReasonCode::RevocationListUnusable => "revocation_list_unusable",
            ReasonCode::SenderNotBound => "sender_not_bound",
            ReasonCode::WeakAlgorithm => "weak_algorithm",
            ReasonCode::UnsupportedAlgorithm => "unsupported_algorithm",
            ReasonCode::BadSignature => "bad_signature",
            ReasonCode::ContentTampered => "content_tampered",
            ReasonCode::NotEncrypted => "not_encrypted",
            ReasonCode::NotSigned => "not_signed",
            ReasonCode::NoKeyForRecipient => "no_key_for_recipient",
            ReasonCode::DecryptionFailed => "decryption_failed",
            ReasonCode::KeyUsageNotAllowed => "key_usage_not_allowed",
            ReasonCode::SignerCertificateMissing => "signer_certificate_missing",
            ReasonCode::Malformed => "malformed",
        }
    }

    /// The inverse of [`ReasonCode::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        ReasonCode::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// A sentence a practice manager understands: what happened and what to do.
    pub fn sentence(self) -> &'static str {
        match self {
            ReasonCode::Trusted => {
                "The message was decrypted and its sender's signature is valid and trusted."
            }
            ReasonCode::AmbiguousSender => {
                "The message names its sender in a way that can be read more than one way (several From or Sender lines, several addresses, or an address hidden in a comment or encoded text), so who sent it cannot be confirmed and it was not accepted."
            }
            ReasonCode::UntrustedAnchor => {
                "The sender's certificate does not chain to a trust anchor configured for your domain; ask your administrator to add their trust bundle."
            }
            ReasonCode::SignerExpired => {
                "The sender's certificate has expired; ask the sender to have their provider renew it."
            }
            ReasonCode::SignerNotYetValid => {
                "The sender's certificate is not valid yet; check this server's clock or ask the sender to use their current certificate."
            }
            ReasonCode::SignerRevoked => {
                "The sender's certificate has been revoked by its issuer; do not trust this message and contact the sender by another channel."
            }
            ReasonCode::RevocationUnknown => {
                "Whether the sender's certificate was revoked could not be checked (its revocation list could not be fetched), and your domain requires that check; try again later or ask your administrator."
            }
            ReasonCode::RevocationListUnusable => {
                "The sender's certificate authority published a revocation list that could not be used (unreadable, out of date, or not signed by that authority), so whether the certificate was revoked is unknown; do not trust this message and ask your administrator."
            }
            ReasonCode::SenderNotBound => {
                "The signature belongs to a certificate that is not issued to the sender's address or domain, so the sender cannot be confirmed."
            }
            ReasonCode::WeakAlgorithm => {
                "The sender used outdated cryptography (SHA-1, MD5 or a short key) that Direct no longer accepts; ask the sender to update their system."
            }
            ReasonCode::UnsupportedAlgorithm => {
                "The sender used a kind of encryption or signature this system does not support; ask the sender to use RSA with SHA-256 and AES."
            }
            ReasonCode::BadSignature => {
                "The sender's signature is not valid; the message may have been forged or damaged."
            }
            ReasonCode::ContentTampered => {
                "The message was changed after the sender signed it; do not trust its contents."
            }
            ReasonCode::NotEncrypted => {
                "The message was not encrypted, so it was not accepted as a Direct message."
            }
            ReasonCode::NotSigned => {
                "The message was not signed by its sender, so its origin cannot be confirmed."
            }
            ReasonCode::NoKeyForRecipient => {
                "The message was not encrypted for any certificate this system holds; the sender may be using an old or wrong certificate for you."
            }
            ReasonCode::DecryptionFailed => {
                "The message is addressed to this system's certificate but could not be decrypted; it may be damaged."
            }
            ReasonCode::KeyUsageNotAllowed => {
                "The sender's certificate is not allowed to sign e-mail; ask the sender to have their provider issue a proper Direct certificate."
            }
            ReasonCode::SignerCertificateMissing => {
                "The signature does not include the sender's certificate, so it cannot be checked."
            }
            ReasonCode::Malformed => {
                "The message is damaged or not a valid secure message and could not be read."
            }
        }
    }
}

impl std::fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Details of the signer for the message details view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignerDetails {
    /// Subject DN (RFC 4514).
    pub subject: String,
    /// Issuer DN (RFC 4514).
    pub issuer: String,
    /// Serial number, hex.
    pub serial: String,
    /// Subject DN of the trust anchor the chain ended at, when it chained.
    pub anchor: Option<String>,
    /// Start of validity, UNIX seconds.
    pub not_before: u64,
    /// End of validity, UNIX seconds.
    pub not_after: u64,
    /// SHA-256 fingerprint of the certificate.
    pub fingerprint_sha256: String,
    /// subjectAltName rfc822Name and dNSName entries.
    pub bound_names: Vec<String>,
}

/// The outcome of [`judge`].
#[derive(Clone, Debug)]
pub struct Verdict {
    /// What was decided.
    pub code: ReasonCode,
    /// Technical detail for administrators (never shown as the user sentence).
    pub detail: String,
    /// The signer that was trusted, or the one that failed the furthest check.
    pub signer: Option<SignerDetails>,
    /// The From address the binding was checked against.
    pub from: Option<String>,
    /// The originator read from the signed header block ([`read_originator`]): the
    /// one reading of who sent the message, for routing, storage and display.
    pub originator: Option<Originator>,
    /// The decrypted, unwrapped RFC 5322 message, whenever decryption worked
    /// (also for untrusted messages, for quarantine and the admin view).
    pub message: Option<Vec<u8>>,
    /// Every certificate the message's SignedData carried (signers and chains), so
    /// the caller can fetch their CRLs and missing issuers (AIA) and judge again.
    pub certificates: Vec<Certificate>,
}

impl Verdict {
    /// Whether the message may be delivered.
    pub fn is_trusted(&self) -> bool {
        self.code == ReasonCode::Trusted
    }

    /// The plain-language sentence for [`Verdict::code`].
    pub fn sentence(&self) -> &'static str {
        self.code.sentence()
    }

    fn fail(f: Failure) -> Self {
        Verdict {
            code: f.code,
            detail: f.detail,
            signer: None,
            from: None,
            originator: None,
            message: None,
            certificates: Vec::new(),
        }
    }
}

/// What the receiving domain trusts. Fetching CRLs and AIA intermediates is the
/// caller's job; this crate only reads what it is given.
#[derive(Clone, Debug, Default)]
pub struct TrustStore {
    /// Trust anchors configured for the receiving domain.
    pub anchors: Vec<Certificate>,
    /// Extra intermediates (from the store or fetched via AIA); those carried in
    /// the message are used as well.
    pub intermediates: Vec<Certificate>,
    /// DER CRLs for the signer's issuers. A certificate whose issuer has no CRL
    /// here is treated as not revoked (the caller decides fail-open/closed).
    pub crls: Vec<Vec<u8>>,
}

impl TrustStore {
    /// A store with these anchors and nothing else.
    pub fn with_anchors(anchors: Vec<Certificate>) -> Self {
        TrustStore {
            anchors,
            ..TrustStore::default()
        }
    }
}

/// Decrypt, verify and judge an inbound Direct message (`message` is the whole
/// RFC 5322 message as received). `keys` are this domain's or address's
/// decryption identities; `now` is the time validity is checked at.
///
/// Never panics on any input; damaged input yields [`ReasonCode::Malformed`].
pub fn judge(message: &[u8], keys: &[Identity], trust: &TrustStore, now: SystemTime) -> Verdict {
    let (outer_header, outer_body) = mime::split(message);
    // Header fields are read where they lie, one at a time, never all parsed.
    let outer_ct = mime::content_type(outer_header);
    let outer_from = mime::first_value(outer_header, "From").and_then(|v| mime::first_address(&v));

    let is_pkcs7 = matches!(
        outer_ct.mime.as_str(),
        "application/pkcs7-mime" | "application/x-pkcs7-mime"
    );
    let smime_type = outer_ct.param("smime-type").map(str::to_ascii_lowercase);
    if !is_pkcs7 || matches!(smime_type.as_deref(), Some("signed-data" | "certs-only")) {
        return Verdict {
            from: outer_from,
            ..Verdict::fail(Failure::new(
                ReasonCode::NotEncrypted,
                format!("outer Content-Type is {}", outer_ct.mime),
            ))
        };
    }
    let Some(der) = decode_body(outer_header, outer_body) else {
        return Verdict::fail(Failure::new(
            ReasonCode::Malformed,
            "the encrypted part is not valid base64",
        ));
    };
    drop((outer_ct, smime_type));
    // Decrypted in place: the DER's buffer becomes the plaintext's.
    let decrypted = inbound::decrypt(der, keys);
    let plain = match decrypted {
        Ok(p) => p,
        Err(f) => {
            return Verdict {
                from: outer_from,
                ..Verdict::fail(f)
            };
        }
    };

    // The decrypted entity: multipart/signed (RFC 8551 §3.5.3) or opaque
    // application/pkcs7-mime; smime-type=signed-data (§3.5.2).
    let (h, body) = mime::split(&plain);
    let ct = mime::content_type(h);
    let verified = match ct.mime.as_str() {
        "multipart/signed" => {
            // RFC 8551 §3.5.3: only a CMS signature protocol is ours to check.
            let protocol = ct.param("protocol").map(str::to_ascii_lowercase);
            if !matches!(
                protocol.as_deref(),
                Some("application/pkcs7-signature" | "application/x-pkcs7-signature")
            ) {
                return Verdict {
                    from: outer_from,
                    message: Some(plain.clone()),
                    ..Verdict::fail(Failure::new(
                        ReasonCode::NotSigned,
                        "multipart/signed with a protocol other than S/MIME",
                    ))
                };
            }
            let Some(boundary) = ct.param("boundary") else {
                return Verdict::fail(Failure::new(
                    ReasonCode::Malformed,
                    "multipart/signed without boundary",
                ));
            };
            let parts = match mime::multipart_parts(body, boundary) {
                Some(p) if p.len() == 2 => p,
                _ => {
                    return Verdict::fail(Failure::new(
                        ReasonCode::Malformed,
                        "multipart/signed must have exactly two parts",
                    ));
                }
            };
            let (sh, sbody) = mime::split(parts[1]);
            let Some(p7s) = decode_body(sh, sbody) else {
                return Verdict::fail(Failure::new(
                    ReasonCode::Malformed,
                    "signature part is not valid base64",
                ));
            };
            inbound::verify_signed_data(&p7s, Some(parts[0]))
        }
        "application/pkcs7-mime" | "application/x-pkcs7-mime" => {
            let Some(p7m) = decode_body(h, body) else {
                return Verdict::fail(Failure::new(
                    ReasonCode::Malformed,
                    "signed part is not valid base64",
                ));
            };
            inbound::verify_signed_data(&p7m, None)
        }
        _ => {
            return Verdict {
                from: outer_from,
                message: Some(plain.clone()),
                ..Verdict::fail(Failure::new(
                    ReasonCode::NotSigned,
                    format!("decrypted content is {}", ct.mime),
                ))
            };
        }
    };
    drop(ct);
    let verified = match verified {
        Ok(v) => v,
        Err(f) => return Verdict::fail(f),
    };

    // The message the user sees is what the signature covers, never the unprotected
    // outer headers: the message/rfc822 wrapped inside (AS 1.3 requires wrapping), or
    // a signed entity that carries its own RFC 5322 header (as `openssl cms -sign` of
    // a whole message gives).
    let inbound::Verified {
        content,
        certificates,
        signers,
    } = verified;
    let (signed_h, signed_body) = mime::split(&content);
    let inner: &[u8] = if mime::content_type(signed_h).mime == "message/rfc822" {
        signed_body
    } else if mime::field_lines(signed_h, "From").next().is_some() {
        &content
    } else {
        return Verdict {
            from: outer_from,
            message: Some(plain.clone()),
            ..Verdict::fail(Failure::new(
                ReasonCode::SenderNotBound,
                "the signed content carries no header (the message is not wrapped as AS 1.3 requires), so its sender and subject are not covered by the signature",
            ))
        };
    };
    // The inner message is most often a slice of the decrypted buffer: keep it
    // there (moved to the front) rather than copying a large message once more.
    let inner = match offset_in(&plain, inner) {
        Some(start) => {
            let end = start + inner.len();
            drop(content);
            let mut buf = plain;
            buf.truncate(end);
            buf.drain(..start);
            // The room the DER took beyond the message is given back (the
            // allocator shrinks a block where it lies): the sender check and
            // path validation that follow get it.
            buf.shrink_to_fit();
            buf
        }
        None => inner.to_vec(),
    };
    let verified = inbound::Verified {
        content: std::borrow::Cow::Borrowed(&[]),
        certificates,
        signers,
    };
    // One reading of the sender, strict, checked against mail-parser's.
    let originator = match read_originator(&inner) {
        Ok(o) => o,
        Err(SenderError::NoFrom) => {
            return Verdict {
                message: Some(inner),
                ..Verdict::fail(Failure::new(
                    ReasonCode::SenderNotBound,
                    "the message has no From address",
                ))
            };
        }
        Err(e) => {
            return Verdict {
                message: Some(inner),
                ..Verdict::fail(Failure::new(ReasonCode::AmbiguousSender, e.to_string()))
            };
        }
    };
    let from = originator.from.address.clone();

    let mut verdict = judge_signers(&verified, Some(&from), trust, now);
    if verdict.code == ReasonCode::Trusted
        && let Some(o) = &outer_from
        && !keys::address_eq(o, &from)
    {
        verdict.code = ReasonCode::SenderNotBound;
        verdict.detail = format!("the outer From {o} differs from the signed From {from}");
    }
    verdict.from = Some(from);
    verdict.originator = Some(originator);
    verdict.message = Some(inner);
    verdict.certificates = verified.certificates;
    verdict
}

/// Where `inner` starts in `outer`, if it is a slice of it.
fn offset_in(outer: &[u8], inner: &[u8]) -> Option<usize> {
    let start = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
    (start + inner.len() <= outer.len()).then_some(start)
}

fn decode_body(header: &[u8], body: &[u8]) -> Option<Vec<u8>> {
    let cte = mime::first_value(header, "Content-Transfer-Encoding")
        .map(|v| v.to_ascii_lowercase())
        .unwrap_or_default();
    if cte == "binary" || cte == "8bit" || cte == "7bit" {
        // Some senders send DER as binary; the BER reader will judge it.
        if body.first() == Some(&0x30) {
            return Some(body.to_vec());
        }
    }
    mime::base64_decode(body)
}

/// Pick a good signer; if none, report the failure of the signer that got furthest.
fn judge_signers(
    verified: &inbound::Verified,
    from: Option<&str>,
    trust: &TrustStore,
    now: SystemTime,
) -> Verdict {
    let mut best: Option<(usize, Verdict)> = None;
    for s in &verified.signers {
        let (stage, v) = match (&s.outcome, verified.signer_certificate(s, &[])) {
            (Err(f), cert) => (
                0,
                Verdict {
                    code: f.code,
                    detail: f.detail.clone(),
                    signer: cert.map(|c| details(c, None)),
                    from: None,
                    originator: None,
                    message: None,
                    certificates: Vec::new(),
                },
            ),
            (Ok(()), None) => (
                0,
                Verdict::fail(Failure::new(
                    ReasonCode::SignerCertificateMissing,
                    "no certificate",
                )),
            ),
            (Ok(()), Some(cert)) => {
                judge_certificate(cert, &verified.certificates, from, trust, now)
            }
        };
        // AS 1.3 §2 / DIRECT.md: extra signers that fail are ignored if one good signer exists.
        if v.code == ReasonCode::Trusted {
            return v;
        }
        if best.as_ref().is_none_or(|(b, _)| stage > *b) {
            best = Some((stage, v));
        }
    }
    best.map(|(_, v)| v)
        .unwrap_or_else(|| Verdict::fail(Failure::new(ReasonCode::NotSigned, "no signer")))
}

/// Trust checks on a signer whose signature verified. Returns how far it got
/// (for choosing which failure to report) and the verdict.
fn judge_certificate(
    cert: &Certificate,
    message_certs: &[Certificate],
    from: Option<&str>,
    trust: &TrustStore,
    now: SystemTime,
) -> (usize, Verdict) {
    let fail = |stage: usize, code: ReasonCode, detail: String, anchor: Option<String>| {
        (
            stage,
            Verdict {
                code,
                detail,
                signer: Some(details(cert, anchor)),
                from: None,
                originator: None,
                message: None,
                certificates: Vec::new(),
            },
        )
    };
    // AS 1.3 §1.4: RSA keys of at least 2048 bits.
    match inbound::rsa_bits(cert) {
        Some(bits) if bits >= keys::MIN_RSA_BITS => {}
        Some(bits) => {
            return fail(
                1,
                ReasonCode::WeakAlgorithm,
                format!("the signer's RSA key has {bits} bits"),
                None,
            );
        }
        None => {
            return fail(
                1,
                ReasonCode::UnsupportedAlgorithm,
                "the signer's key is not RSA".into(),
                None,
            );
        }
    }
    let (not_before, not_after) = keys::validity_unix(cert);
    let now_s = keys::unix_seconds(now);
    if now_s < not_before {
        return fail(
            2,
            ReasonCode::SignerNotYetValid,
            format!("valid from {not_before}, now {now_s}"),
            None,
        );
    }
    if now_s > not_after {
        return fail(
            2,
            ReasonCode::SignerExpired,
            format!("expired at {not_after}, now {now_s}"),
            None,
        );
    }
    // RFC 8550 §4.4.2: when keyUsage is present, digitalSignature or
    // nonRepudiation must be set for a signing certificate.
    if let Ok(Some((_, ku))) = cert.tbs_certificate().get_extension::<X509KeyUsage>()
        && !ku.digital_signature()
        && !ku.non_repudiation()
    {
        return fail(
            3,
            ReasonCode::KeyUsageNotAllowed,
            "keyUsage lacks digitalSignature".into(),
            None,
        );
    }
    let anchor = match chain(cert, message_certs, trust, now) {
        Ok(a) => a,
        Err((code, detail)) => return fail(4, code, detail, None),
    };
    // AS 1.3 §1.4: binding by subjectAltName only (rfc822Name, else dNSName of the domain).
    let Some(from) = from else {
        return fail(
            5,
            ReasonCode::SenderNotBound,
            "the message has no From address".into(),
            Some(anchor),
        );
    };
    if !keys::binds_address(cert, from) {
        return fail(
            5,
            ReasonCode::SenderNotBound,
            format!("no subjectAltName of the signer names {from} or its domain"),
            Some(anchor),
        );
    }
    (
        6,
        Verdict {
            code: ReasonCode::Trusted,
            detail: format!("signed by a certificate bound to {from}"),
            signer: Some(details(cert, Some(anchor))),
            from: None,
            originator: None,
            message: None,
            certificates: Vec::new(),
        },
    )
}

/// Path validation with rustls-webpki (EKU emailProtection when present, time
/// and CRLs from the caller). Returns the anchor's subject.
fn chain(
    cert: &Certificate,
    message_certs: &[Certificate],
    trust: &TrustStore,
    now: SystemTime,
) -> Result<String, (ReasonCode, String)> {
    let der = |c: &Certificate| {
        c.to_der()
            .map_err(|e| (ReasonCode::Malformed, e.to_string()))
    };
    let ee_der = CertificateDer::from(der(cert)?);
    let ee = EndEntityCert::try_from(&ee_der)
        .map_err(|e| (ReasonCode::Malformed, format!("signer certificate: {e:?}")))?;
    let anchor_ders: Vec<Vec<u8>> = trust.anchors.iter().map(der).collect::<Result<_, _>>()?;
    let mut anchors = Vec::new();
    let mut anchor_certs = Vec::new();
    for (c, d) in trust.anchors.iter().zip(&anchor_ders) {
        let cd = CertificateDer::from(d.as_slice());
        if let Ok(a) = webpki::anchor_from_trusted_cert(&cd) {
            anchors.push(a.to_owned());
            anchor_certs.push(c);
        }
    }
    let mut intermediates: Vec<CertificateDer<'static>> = Vec::new();
    for c in message_certs.iter().chain(&trust.intermediates) {
        if c != cert {
            intermediates.push(CertificateDer::from(der(c)?));
        }
    }
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(keys::unix_seconds(now)));
    let path = ee
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            time,
            KeyUsage::required_if_present(alg::ID_KP_EMAIL_PROTECTION),
            None,
            None,
        )
        .map_err(|e| {
            let code = match e {
                webpki::Error::CertExpired { .. } => ReasonCode::SignerExpired,
                webpki::Error::CertNotValidYet { .. } => ReasonCode::SignerNotYetValid,
                webpki::Error::RequiredEkuNotFoundContext(_) => ReasonCode::KeyUsageNotAllowed,
                _ => ReasonCode::UntrustedAnchor,
            };
            (code, format!("path validation: {e:?}"))
        })?;
    let used = path.anchor();
    let anchor_cert = anchors
        .iter()
        .position(|a| {
            a.subject == used.subject && a.subject_public_key_info == used.subject_public_key_info
        })
        .and_then(|i| anchor_certs.get(i))
        .ok_or_else(|| {
            (
                ReasonCode::UntrustedAnchor,
                "the path's anchor is not among the configured anchors".to_string(),
            )
        })?;

    // Revocation: every certificate below the anchor, against the lists its issuer
    // published (the caller fetched them from the distribution points).
    // Borrowed, not cloned: only the intermediates, known to webpki as DER,
    // are parsed again.
    let mut path_certs = Vec::new();
    for c in path.intermediate_certificates() {
        path_certs.push(
            Certificate::from_der(c.der().as_ref())
                .map_err(|e| (ReasonCode::Malformed, format!("intermediate: {e}")))?,
        );
    }
    let mut chain = Vec::with_capacity(path_certs.len() + 2);
    chain.push(cert);
    chain.extend(&path_certs);
    chain.push(*anchor_cert);
    check_revocation(&chain, &trust.crls, keys::unix_seconds(now))?;
    Ok(anchor_cert.tbs_certificate().subject().to_string())
}

/// Checks each certificate of `chain` (end entity first, anchor last) against the
/// lists in `crls` that name its issuer. A list that cannot be read or used refuses
/// the path: it was reached, so "unknown" is not an answer it may give.
fn check_revocation(
    chain: &[&Certificate],
    crls: &[Vec<u8>],
    now: u64,
) -> Result<(), (ReasonCode, String)> {
    let unusable = |e: crl::Unusable| (ReasonCode::RevocationListUnusable, e.0);
    let lists: Vec<Crl> = crls
        .iter()
        .map(|d| Crl::from_der(d))
        .collect::<Result<_, _>>()
        .map_err(unusable)?;
    for pair in chain.windows(2) {
        let (cert, issuer) = (pair[0], pair[1]);
        for list in lists.iter().filter(|l| l.names_issuer_of(cert)) {
            if let crl::Status::Revoked { since } =
                list.status(cert, issuer, now).map_err(unusable)?
            {
                return Err((
                    ReasonCode::SignerRevoked,
                    format!(
                        "{} (serial {}) is on its issuer's revocation list since {since} (Unix time)",
                        cert.tbs_certificate().subject(),
                        hex(cert.tbs_certificate().serial_number().as_bytes())
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn details(cert: &Certificate, anchor: Option<String>) -> SignerDetails {
    let tbs = cert.tbs_certificate();
    let (not_before, not_after) = keys::validity_unix(cert);
    let mut bound_names = keys::san_rfc822_names(cert);
    bound_names.extend(keys::san_dns_names(cert));
    SignerDetails {
        subject: tbs.subject().to_string(),
        issuer: tbs.issuer().to_string(),
        serial: tbs
            .serial_number()
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        anchor,
        not_before,
        not_after,
        fingerprint_sha256: keys::fingerprint_sha256(cert),
        bound_names,
    }
}

/// Validates a certificate found for a recipient (certificate discovery) the way a
/// signer's is: a path to one of `trust.anchors` through `trust.intermediates`, at
/// `now`, with the CRLs given. Returns the anchor's subject, or the reason and detail.
pub fn validate_certificate(
    cert: &Certificate,
    trust: &TrustStore,
    now: SystemTime,
) -> Result<String, (ReasonCode, String)> {
    chain(cert, &[], trust, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_stable_name_and_a_sentence() {
        for c in ReasonCode::ALL {
            assert_eq!(ReasonCode::parse(c.as_str()), Some(c));
            assert!(c.sentence().ends_with('.'));
        }
    }
}
