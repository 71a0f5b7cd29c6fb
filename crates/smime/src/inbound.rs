//! Inbound cryptography: decrypt EnvelopedData / AuthEnvelopedData and verify
//! SignedData. Trust (chains, binding, validity) is judged in `verdict`.
//!
//! SignedData is read with the BER walker rather than the typed `cms` decoder:
//! the signature covers the sender's own encoding of the signed attributes, and
//! a chunked eContent must be reassembled (RFC 5652 §5.4; STACK.md).

use cms::cert::IssuerAndSerialNumber;
use cms::enveloped_data::{RecipientIdentifier, RecipientInfo};
use cms::signed_data::SignerIdentifier;
use der::asn1::ObjectIdentifier;
use der::{Decode, Encode};
use spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectKeyIdentifier;

use crate::alg::{self, DigestAlg};
use crate::ber::{self, Tlv};
use crate::crypto;
use crate::error::Malformed;
use crate::keys::{self, Identity};
use crate::verdict::ReasonCode;

/// A failure with its reason code and a technical detail for administrators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub code: ReasonCode,
    pub detail: String,
}

impl Failure {
    pub(crate) fn new(code: ReasonCode, detail: impl Into<String>) -> Self {
        Failure {
            code,
            detail: detail.into(),
        }
    }
}

impl From<Malformed> for Failure {
    fn from(m: Malformed) -> Self {
        Failure::new(ReasonCode::Malformed, m.0)
    }
}

fn malformed(what: &str, e: impl std::fmt::Display) -> Failure {
    Failure::new(ReasonCode::Malformed, format!("{what}: {e}"))
}

/// Decrypt a CMS EnvelopedData or AuthEnvelopedData (DER or BER) with whichever
/// of `keys` it was encrypted for. Returns the plaintext MIME entity.
///
/// The structure is walked with the BER reader (any length form, chunked
/// OCTET STRINGs in either length form); only the small recipient infos and
/// algorithm identifiers go through the typed `cms` decoder.
///
/// The message is decrypted in place, in the buffer it came in: for a large
/// message that buffer is the only one.
pub(crate) fn decrypt(cms_bytes: Vec<u8>, keys: &[Identity]) -> Result<Vec<u8>, Failure> {
    let (parts, ciphertext) = {
        let buf = cms_bytes.as_slice();
        let ci = ber::read(buf, 0)?;
        let ci_fields = ber::children(buf, &ci)?;
        let (Some(oid), Some(explicit)) = (ci_fields.first(), ci_fields.get(1)) else {
            return Err(Failure::new(ReasonCode::Malformed, "not a CMS ContentInfo"));
        };
        let oid = ObjectIdentifier::from_der(&buf[oid.start..oid.end])
            .map_err(|e| malformed("not a CMS message", e))?;
        let authenticated = match oid {
            alg::ID_ENVELOPED_DATA => false,
            alg::ID_AUTH_ENVELOPED_DATA => true,
            alg::ID_SIGNED_DATA => {
                return Err(Failure::new(
                    ReasonCode::NotEncrypted,
                    "the CMS content is SignedData, not EnvelopedData",
                ));
            }
            other => {
                return Err(Failure::new(
                    ReasonCode::Malformed,
                    format!("unexpected CMS content type {other}"),
                ));
            }
        };
        let body = first_child(buf, explicit)?;
        let Envelope {
            recipient_infos,
            content_enc_alg,
            ciphertext,
            mac,
            aad,
        } = read_envelope(buf, &body, authenticated)?;
        let ciphertext = match ciphertext {
            // Sent in one piece: where it lies in the buffer.
            std::borrow::Cow::Borrowed(c) => {
                let start = (c.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize);
                Err(start..start + c.len())
            }
            std::borrow::Cow::Owned(c) => Ok(c),
        };
        ((recipient_infos, content_enc_alg, mac, aad), ciphertext)
    };
    let (recipient_infos, alg_id, mac, aad) = parts;
    let buf = match ciphertext {
        Ok(owned) => owned,
        Err(range) => {
            let mut buf = cms_bytes;
            if range.end > buf.len() {
                return Err(Failure::new(ReasonCode::Malformed, "content out of range"));
            }
            buf.truncate(range.end);
            buf.drain(..range.start);
            buf
        }
    };
    let mut plain = with_content_key(
        &recipient_infos,
        keys,
        content_key_len(&alg_id)?,
        buf,
        |cek, buf| decrypt_content(&alg_id, cek, buf, mac.as_deref(), &aad),
    )?;
    // The DER head and the padding are given back (shrunk where it lies).
    plain.shrink_to_fit();
    Ok(plain)
}

/// The parts of an (Auth)EnvelopedData that decryption needs.
struct Envelope<'a> {
    recipient_infos: Vec<RecipientInfo>,
    content_enc_alg: AlgorithmIdentifierOwned,
    /// Borrowed from the input when sent in one piece (DER, most senders).
    ciphertext: std::borrow::Cow<'a, [u8]>,
    /// AuthEnvelopedData only: the GCM tag.
    mac: Option<Vec<u8>>,
    /// AuthEnvelopedData only: the authenticated attributes, as the AAD.
    aad: Vec<u8>,
}

/// EnvelopedData ::= SEQUENCE { version, originatorInfo [0] OPTIONAL,
///   recipientInfos SET, encryptedContentInfo, unprotectedAttrs [1] OPTIONAL }
/// AuthEnvelopedData ::= SEQUENCE { version, originatorInfo [0] OPTIONAL,
///   recipientInfos SET, authEncryptedContentInfo, authAttrs [1] OPTIONAL,
///   mac OCTET STRING, unauthAttrs [2] OPTIONAL }   (RFC 5652 §6.1, RFC 5083 §2.1)
fn read_envelope<'a>(
    buf: &'a [u8],
    body: &Tlv,
    authenticated: bool,
) -> Result<Envelope<'a>, Failure> {
    let fields = ber::children(buf, body)?;
    let mut rest = fields.get(1..).unwrap_or_default();
    if let Some(f) = rest.first()
        && f.tag == 0xa0
    {
        rest = &rest[1..];
    }
    let [ris, eci, tail @ ..] = rest else {
        return Err(Failure::new(
            ReasonCode::Malformed,
            "EnvelopedData too short",
        ));
    };
    if ris.tag != 0x31 || eci.tag != 0x30 {
        return Err(Failure::new(
            ReasonCode::Malformed,
            "EnvelopedData fields out of order",
        ));
    }
    let mut recipient_infos = Vec::new();
    for ri in ber::children(buf, ris)? {
        // Unknown or damaged recipient infos are skipped: another may be ours.
        if let Ok(r) = RecipientInfo::from_ber(&buf[ri.start..ri.end]) {
            recipient_infos.push(r);
        }
    }
    // EncryptedContentInfo ::= SEQUENCE { contentType, contentEncryptionAlgorithm,
    //   encryptedContent [0] IMPLICIT OCTET STRING OPTIONAL }
    let eci_fields = ber::children(buf, eci)?;
    let (Some(alg), Some(content)) = (eci_fields.get(1), eci_fields.get(2)) else {
        return Err(Failure::new(
            ReasonCode::Malformed,
            "no encrypted content (detached content is not supported)",
        ));
    };
    let content_enc_alg = AlgorithmIdentifierOwned::from_ber(&buf[alg.start..alg.end])
        .map_err(|e| malformed("content encryption algorithm", e))?;
    if content.tag & 0xdf != 0x80 {
        return Err(Failure::new(
            ReasonCode::Malformed,
            "unexpected encryptedContent tag",
        ));
    }
    let ciphertext = ber::octets_cow(buf, content)?;
    let (mac, aad) = if authenticated {
        let mut aad = Vec::new();
        let mut mac = None;
        for f in tail {
            match f.tag {
                // RFC 5083 §2.2: the AAD is the DER of authAttrs with the
                // IMPLICIT [1] tag replaced by SET OF (0x31), as sent.
                0xa1 => {
                    aad = buf[f.start..f.end].to_vec();
                    if let Some(t) = aad.first_mut() {
                        *t = 0x31;
                    }
                }
                0x04 | 0x24 if mac.is_none() => mac = Some(ber::octets(buf, f)?),
                _ => {}
            }
        }
        let mac = mac
            .ok_or_else(|| Failure::new(ReasonCode::Malformed, "AuthEnvelopedData without mac"))?;
        (Some(mac), aad)
    } else {
        (None, Vec::new())
    };
    Ok(Envelope {
        recipient_infos,
        content_enc_alg,
        ciphertext,
        mac,
        aad,
    })
}

fn content_key_len(alg_id: &AlgorithmIdentifierOwned) -> Result<usize, Failure> {
    Ok(match alg_id.oid {
        alg::AES128_CBC | alg::AES128_GCM => 16,
        alg::AES192_CBC | alg::AES192_GCM => 24,
        alg::AES256_CBC | alg::AES256_GCM => 32,
        other => {
            return Err(Failure::new(
                ReasonCode::UnsupportedAlgorithm,
                format!("content encryption {other} is not accepted (AES-CBC or AES-GCM only)"),
            ));
        }
    })
}

/// What a content that does not decrypt is reported as, whatever the reason: a
/// damaged key transport (the RFC 3218 random key) and a damaged content must
/// not be told apart, in the code, the sentence or the detail.
const NOT_DECRYPTED: &str = "the content did not decrypt with the key unwrapped for our certificate: the key transport or the content is damaged, or the message was encrypted for another key";

/// Find the recipient infos meant for one of `keys`, unwrap the content key and
/// run `decrypt` with it on `ciphertext` (decrypted in place). The first key
/// that decrypts wins.
fn with_content_key(
    infos: &[RecipientInfo],
    keys: &[Identity],
    key_len: usize,
    ciphertext: Vec<u8>,
    decrypt: impl Fn(&[u8], &mut Vec<u8>) -> Result<(), Failure>,
) -> Result<Vec<u8>, Failure> {
    let mut last: Option<Failure> = None;
    let mut saw_kari = false;
    // Unwrap every key meant for us first (an unwrap never fails on padding:
    // see `unwrap_key`), then try them on the content.
    let mut ceks = Vec::new();
    for ri in infos {
        let ktri = match ri {
            RecipientInfo::Ktri(k) => k,
            RecipientInfo::Kari(_) => {
                saw_kari = true;
                continue;
            }
            _ => continue,
        };
        for id in keys {
            if !rid_matches(&ktri.rid, id.certificate()) {
                continue;
            }
            match unwrap_key(id, &ktri.key_enc_alg, ktri.enc_key.as_bytes(), key_len) {
                Ok(k) => ceks.push(k),
                Err(f) => last = Some(f),
            }
        }
    }
    let mut ciphertext = Some(ciphertext);
    let count = ceks.len();
    for (i, cek) in ceks.iter().enumerate() {
        // The last try decrypts in place; earlier ones work on a copy.
        let mut buf = if i + 1 == count {
            ciphertext.take().unwrap_or_default()
        } else {
            ciphertext.clone().unwrap_or_default()
        };
        match decrypt(cek, &mut buf) {
            // AES-CBC has no integrity: a wrong key (such as the RFC 3218
            // random key) passes the padding check about once in 256. What
            // decrypted must at least start like a MIME entity.
            Ok(()) if looks_like_mime(&buf) => return Ok(buf),
            Ok(()) => last = Some(Failure::new(ReasonCode::DecryptionFailed, NOT_DECRYPTED)),
            Err(f) => last = Some(f),
        }
    }
    Err(last.unwrap_or_else(|| {
        let detail = if saw_kari {
            "no key-transport recipient info names one of our certificates (key agreement/ECDH is not supported)"
        } else {
            "no recipient info names one of our certificates"
        };
        Failure::new(ReasonCode::NoKeyForRecipient, detail)
    }))
}

/// Whether `plain` starts with an RFC 5322 header field (`name:` with a
/// printable, space-free name).
fn looks_like_mime(plain: &[u8]) -> bool {
    let line_end = plain
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(plain.len());
    let line = &plain[..line_end];
    match line.iter().position(|&b| b == b':') {
        Some(colon) if colon > 0 => line[..colon].iter().all(|&b| (33..=126).contains(&b)),
        _ => false,
    }
}

fn rid_matches(rid: &RecipientIdentifier, cert: &Certificate) -> bool {
    match rid {
        RecipientIdentifier::IssuerAndSerialNumber(ias) => ias_matches(ias, cert),
        RecipientIdentifier::SubjectKeyIdentifier(ski) => ski_matches(ski, cert),
    }
}

fn ias_matches(ias: &IssuerAndSerialNumber, cert: &Certificate) -> bool {
    let tbs = cert.tbs_certificate();
    ias.serial_number == *tbs.serial_number() && ias.issuer == *tbs.issuer()
}

fn ski_matches(ski: &SubjectKeyIdentifier, cert: &Certificate) -> bool {
    match cert
        .tbs_certificate()
        .get_extension::<SubjectKeyIdentifier>()
    {
        Ok(Some((_, own))) => own.0.as_bytes() == ski.0.as_bytes(),
        _ => false,
    }
}

/// Unwrap the content-encryption key, with implicit rejection for both PKCS#1
/// v1.5 and OAEP (RFC 3218 §2.3.2): a wrapped key that does not unwrap gives a
/// random key of the right length, after the same work, so that the failure
/// surfaces only as a content that does not decrypt, exactly like a damaged
/// content. Only what does not depend on the private key (an unknown or
/// unsupported algorithm, damaged parameters) is an error here.
fn unwrap_key(
    id: &Identity,
    alg_id: &AlgorithmIdentifierOwned,
    wrapped: &[u8],
    key_len: usize,
) -> Result<zeroize::Zeroizing<Vec<u8>>, Failure> {
    let oaep = match alg_id.oid {
        alg::RSA_ENCRYPTION => None,
        alg::ID_RSAES_OAEP => {
            let (hash, mgf) = oaep_params(alg_id)?;
            // Any pairing, e.g. SHA-256 with MGF1-SHA-1 (Java's default
            // OAEPParameterSpec): RFC 4055 §4.1 lets the two differ.
            let digest = |oid| {
                crypto::OaepHash::from_oid(oid).ok_or_else(|| {
                    Failure::new(
                        ReasonCode::UnsupportedAlgorithm,
                        format!(
                            "RSA-OAEP with hash {hash} and MGF1 hash {mgf} is not accepted (SHA-1, SHA-224, SHA-256, SHA-384 or SHA-512 for each)"
                        ),
                    )
                })
            };
            Some((digest(&hash)?, digest(&mgf)?))
        }
        other => {
            return Err(Failure::new(
                ReasonCode::UnsupportedAlgorithm,
                format!("key transport {other} is not accepted (RSA PKCS#1 v1.5 or RSA-OAEP only)"),
            ));
        }
    };
    id.key()
        .unwrap_key_implicit(oaep, wrapped, key_len)
        .map_err(|e| Failure::new(ReasonCode::DecryptionFailed, e))
}

/// RSAES-OAEP-params (RFC 4055 §4.1): hash and MGF1 hash, SHA-1 by default.
fn oaep_params(
    alg_id: &AlgorithmIdentifierOwned,
) -> Result<(ObjectIdentifier, ObjectIdentifier), Failure> {
    let mut hash = alg::ID_SHA1;
    let mut mgf_hash = alg::ID_SHA1;
    let Some(params) = &alg_id.parameters else {
        return Ok((hash, mgf_hash));
    };
    if params.is_null() {
        return Ok((hash, mgf_hash));
    }
    let der = params
        .to_der()
        .map_err(|e| malformed("OAEP parameters", e))?;
    let seq = ber::read(&der, 0)?;
    for field in ber::children(&der, &seq)? {
        let inner = ber::read(&der, field.content_start)?;
        let inner_bytes = &der[inner.start..inner.end];
        match field.tag {
            0xa0 => {
                hash = AlgorithmIdentifierOwned::from_der(inner_bytes)
                    .map_err(|e| malformed("OAEP hash", e))?
                    .oid;
            }
            0xa1 => {
                let mgf = AlgorithmIdentifierOwned::from_der(inner_bytes)
                    .map_err(|e| malformed("OAEP mask generation", e))?;
                if mgf.oid != alg::ID_MGF1 {
                    return Err(Failure::new(
                        ReasonCode::UnsupportedAlgorithm,
                        "OAEP mask generation other than MGF1",
                    ));
                }
                let p = mgf
                    .parameters
                    .ok_or_else(|| Failure::new(ReasonCode::Malformed, "MGF1 without a hash"))?;
                mgf_hash = p
                    .decode_as::<AlgorithmIdentifierOwned>()
                    .map_err(|e| malformed("MGF1 hash", e))?
                    .oid;
            }
            0xa2 => {
                return Err(Failure::new(
                    ReasonCode::UnsupportedAlgorithm,
                    "OAEP with a label (pSourceAlgorithm) is not accepted",
                ));
            }
            _ => {
                return Err(Failure::new(
                    ReasonCode::Malformed,
                    "unknown OAEP parameter",
                ));
            }
        }
    }
    Ok((hash, mgf_hash))
}

/// Decrypt content in place with AES-CBC (`tag` None) or AES-GCM (`tag` Some);
/// on success `buf` holds the plaintext.
fn decrypt_content(
    alg_id: &AlgorithmIdentifierOwned,
    cek: &[u8],
    buf: &mut Vec<u8>,
    tag: Option<&[u8]>,
    aad: &[u8],
) -> Result<(), Failure> {
    let bad = |()| Failure::new(ReasonCode::DecryptionFailed, NOT_DECRYPTED);
    let params = alg_id.parameters.as_ref().ok_or_else(|| {
        Failure::new(
            ReasonCode::Malformed,
            "content encryption without parameters",
        )
    })?;
    match (alg_id.oid, tag) {
        (alg::AES128_CBC | alg::AES192_CBC | alg::AES256_CBC, None) => {
            let iv = params
                .decode_as::<der::asn1::OctetString>()
                .map_err(|e| malformed("AES-CBC IV", e))?;
            if iv.as_bytes().len() != 16 {
                return Err(Failure::new(
                    ReasonCode::Malformed,
                    "the AES-CBC IV is not 16 bytes",
                ));
            }
            let len = crypto::aes_cbc_decrypt(cek, iv.as_bytes(), buf).map_err(bad)?;
            buf.truncate(len);
            Ok(())
        }
        (alg::AES128_GCM | alg::AES192_GCM | alg::AES256_GCM, Some(tag)) => {
            // RFC 5084 §3.2: GCMParameters ::= SEQUENCE { aes-nonce OCTET STRING,
            // aes-ICVlen INTEGER DEFAULT 12 }.
            let der = params
                .to_der()
                .map_err(|e| malformed("GCM parameters", e))?;
            let seq = ber::read(&der, 0)?;
            let fields = ber::children(&der, &seq)?;
            let nonce_tlv = fields.first().filter(|t| t.tag == 0x04).ok_or_else(|| {
                Failure::new(ReasonCode::Malformed, "GCM parameters without nonce")
            })?;
            let nonce = &der[nonce_tlv.content_start..nonce_tlv.content_end];
            if nonce.len() != 12 || tag.len() != 16 {
                return Err(Failure::new(
                    ReasonCode::UnsupportedAlgorithm,
                    "AES-GCM is accepted with a 12-byte nonce and a 16-byte tag only",
                ));
            }
            crypto::aes_gcm_open(cek, nonce, aad, buf, tag).map_err(bad)
        }
        _ => Err(Failure::new(
            ReasonCode::Malformed,
            "content encryption algorithm does not match the CMS type",
        )),
    }
}

/// What a SignedData says once its signatures have been checked.
#[derive(Debug)]
pub(crate) struct Verified<'a> {
    /// The bytes that were signed (the detached content as matched, or eContent).
    /// Borrowed from the detached content when that matched as received.
    pub content: std::borrow::Cow<'a, [u8]>,
    /// Every certificate carried in the SignedData.
    pub certificates: Vec<Certificate>,
    /// One entry per SignerInfo, in order.
    pub signers: Vec<SignerResult>,
}

/// The cryptographic outcome for one SignerInfo.
#[derive(Debug)]
pub(crate) struct SignerResult {
    /// The signer's certificate, by its place among the SignedData's
    /// certificates followed by the `known` ones (see
    /// [`Verified::signer_certificate`]): an index, not a copy.
    pub certificate: Option<usize>,
    pub outcome: Result<(), Failure>,
}

impl Verified<'_> {
    /// The certificate of a signer, among those carried, then `known` (the
    /// certificates given to [`verify_signed_data_with`]).
    pub(crate) fn signer_certificate<'s>(
        &'s self,
        signer: &SignerResult,
        known: &'s [Certificate],
    ) -> Option<&'s Certificate> {
        self.certificates
            .iter()
            .chain(known)
            .nth(signer.certificate?)
    }
}

/// Verify a SignedData (DER or BER). `detached` is the content of a
/// multipart/signed first part; for it both the bytes as received and their
/// CRLF-canonical form are tried (RFC 8551 §3.1.1), and the one matching the
/// messageDigest is kept.
pub(crate) fn verify_signed_data<'a>(
    p7: &[u8],
    detached: Option<&'a [u8]>,
) -> Result<Verified<'a>, Failure> {
    verify_signed_data_with(p7, detached, &[])
}

/// [`verify_signed_data`], also finding signers among `known` certificates that the
/// SignedData does not carry (a trust bundle's configured signer).
pub(crate) fn verify_signed_data_with<'a>(
    p7: &[u8],
    detached: Option<&'a [u8]>,
    known: &[Certificate],
) -> Result<Verified<'a>, Failure> {
    let ci = ber::read(p7, 0)?;
    // The lists of fields are dropped once read: the certificates come next.
    let (oid_tlv, explicit) = match ber::children(p7, &ci)?.as_slice() {
        [oid, explicit, ..] => (*oid, *explicit),
        _ => return Err(Failure::new(ReasonCode::Malformed, "ContentInfo too short")),
    };
    let oid = ObjectIdentifier::from_der(&p7[oid_tlv.start..oid_tlv.end])
        .map_err(|e| malformed("ContentInfo type", e))?;
    if oid != alg::ID_SIGNED_DATA {
        return Err(Failure::new(
            ReasonCode::NotSigned,
            format!("the signature part is CMS {oid}, not SignedData"),
        ));
    }
    let sd = first_child(p7, &explicit)?;
    let fields = ber::children(p7, &sd)?;
    // SignedData ::= SEQUENCE { version, digestAlgorithms SET, encapContentInfo,
    //   [0] certificates OPTIONAL, [1] crls OPTIONAL, signerInfos SET }
    let encap = fields
        .get(2)
        .ok_or_else(|| Failure::new(ReasonCode::Malformed, "SignedData too short"))?;
    let (econtent_type, econtent) = {
        let encap_fields = ber::children(p7, encap)?;
        let econtent_type = encap_fields
            .first()
            .ok_or_else(|| Failure::new(ReasonCode::Malformed, "no eContentType"))?;
        let econtent_type = ObjectIdentifier::from_der(&p7[econtent_type.start..econtent_type.end])
            .map_err(|e| malformed("eContentType", e))?;
        let econtent = match encap_fields.get(1) {
            Some(explicit) => Some(ber::octets(p7, &first_child(p7, explicit)?)?),
            None => None,
        };
        (econtent_type, econtent)
    };

    let mut certificates = Vec::new();
    let mut signer_set: Option<Tlv> = None;
    for f in &fields[3..] {
        match f.tag {
            0xa0 => {
                let children = ber::children(p7, f)?;
                // A `Certificate` is large: room for exactly those carried.
                certificates.reserve_exact(children.iter().filter(|c| c.tag == 0x30).count());
                for c in children {
                    // Only X.509 certificates (SEQUENCE); attribute certificates are skipped.
                    if c.tag == 0x30 {
                        let cert = Certificate::from_der(&p7[c.start..c.end])
                            .map_err(|e| malformed("certificate in SignedData", e))?;
                        certificates.push(cert);
                    }
                }
            }
            0xa1 => {}
            0x31 => signer_set = Some(*f),
            _ => {
                return Err(Failure::new(
                    ReasonCode::Malformed,
                    "unexpected SignedData field",
                ));
            }
        }
    }
    let signer_set =
        signer_set.ok_or_else(|| Failure::new(ReasonCode::Malformed, "no signerInfos"))?;
    let signer_tlvs = ber::children(p7, &signer_set)?;
    if signer_tlvs.is_empty() {
        return Err(Failure::new(
            ReasonCode::NotSigned,
            "the SignedData has no signer",
        ));
    }

    use std::borrow::Cow;
    let candidates: Vec<Cow<'a, [u8]>> = match (econtent, detached) {
        (Some(c), _) => vec![Cow::Owned(c)],
        (None, Some(d)) => match crate::mime::to_crlf(d) {
            Cow::Borrowed(_) => vec![Cow::Borrowed(d)],
            Cow::Owned(canon) => vec![Cow::Borrowed(d), Cow::Owned(canon)],
        },
        (None, None) => {
            return Err(Failure::new(
                ReasonCode::Malformed,
                "detached signature without content",
            ));
        }
    };

    let lookup: Vec<&Certificate> = certificates.iter().chain(known).collect();
    let mut signers = Vec::with_capacity(signer_tlvs.len());
    let mut matched_content: Option<usize> = None;
    for s in &signer_tlvs {
        let (result, which) = verify_signer(p7, s, &lookup, &econtent_type, &candidates);
        if let (Ok(()), Some(i)) = (&result.outcome, which) {
            matched_content.get_or_insert(i);
        }
        signers.push(result);
    }
    let content_index = matched_content.unwrap_or(0);
    let content = candidates
        .into_iter()
        .nth(content_index)
        .unwrap_or_default();
    Ok(Verified {
        content,
        certificates,
        signers,
    })
}

fn first_child(buf: &[u8], parent: &Tlv) -> Result<Tlv, Failure> {
    ber::children(buf, parent)?
        .into_iter()
        .next()
        .ok_or_else(|| Failure::new(ReasonCode::Malformed, "empty explicit tag"))
}

/// Check one SignerInfo. Returns the result and which content candidate matched.
fn verify_signer(
    p7: &[u8],
    si: &Tlv,
    certs: &[&Certificate],
    econtent_type: &ObjectIdentifier,
    candidates: &[std::borrow::Cow<'_, [u8]>],
) -> (SignerResult, Option<usize>) {
    let mut cert_found = None;
    let outcome = (|| -> Result<Option<usize>, Failure> {
        // SignerInfo ::= SEQUENCE { version, sid, digestAlgorithm,
        //   [0] signedAttrs OPTIONAL, signatureAlgorithm, signature, [1] unsignedAttrs OPTIONAL }
        let f = ber::children(p7, si)?;
        if f.len() < 5 {
            return Err(Failure::new(ReasonCode::Malformed, "SignerInfo too short"));
        }
        // The parsed identifier is dropped once the certificate is found.
        let sid = SignerIdentifier::from_ber(&p7[f[1].start..f[1].end])
            .map_err(|e| malformed("signer identifier", e))?;
        let index = certs
            .iter()
            .position(|c| match &sid {
                SignerIdentifier::IssuerAndSerialNumber(ias) => ias_matches(ias, c),
                SignerIdentifier::SubjectKeyIdentifier(ski) => ski_matches(ski, c),
            })
            .ok_or_else(|| {
                Failure::new(
                    ReasonCode::SignerCertificateMissing,
                    "the signer's certificate is not included in the signature",
                )
            })?;
        drop(sid);
        cert_found = Some(index);
        let cert = certs[index];

        let digest_alg_id = AlgorithmIdentifierOwned::from_der(&p7[f[2].start..f[2].end])
            .map_err(|e| malformed("digest algorithm", e))?;
        let digest = DigestAlg::from_oid(&digest_alg_id.oid).ok_or_else(|| {
            Failure::new(
                ReasonCode::UnsupportedAlgorithm,
                format!("digest {} is not accepted", digest_alg_id.oid),
            )
        })?;
        if let DigestAlg::Weak(name) = digest {
            // AS 1.3 §2: MD5 and SHA-1 are refused.
            return Err(Failure::new(
                ReasonCode::WeakAlgorithm,
                format!("the message was signed with {name}, which Direct no longer accepts"),
            ));
        }

        let (signed_attrs, rest) = if f[3].tag == 0xa0 {
            (Some(f[3]), &f[4..])
        } else {
            (None, &f[3..])
        };
        let [sig_alg, sig, ..] = rest else {
            return Err(Failure::new(ReasonCode::Malformed, "SignerInfo too short"));
        };
        let sig_alg = AlgorithmIdentifierOwned::from_der(&p7[sig_alg.start..sig_alg.end])
            .map_err(|e| malformed("signature algorithm", e))?;
        if sig.tag != 0x04 {
            return Err(Failure::new(
                ReasonCode::Malformed,
                "signature is not an OCTET STRING",
            ));
        }
        let signature = ber::octets_cow(p7, sig)?;

        let mut matched = None;
        let to_verify: std::borrow::Cow<'_, [u8]> = match signed_attrs {
            Some(attrs) => {
                let (content_type, message_digest) = read_signed_attrs(p7, &attrs)?;
                if content_type.as_ref() != Some(econtent_type) {
                    return Err(Failure::new(
                        ReasonCode::BadSignature,
                        "the contentType signed attribute is missing or does not match",
                    ));
                }
                let md = message_digest.ok_or_else(|| {
                    Failure::new(
                        ReasonCode::BadSignature,
                        "no messageDigest signed attribute",
                    )
                })?;
                for (i, c) in candidates.iter().enumerate() {
                    if digest.hash(&[c]).as_deref() == Some(md.as_slice()) {
                        matched = Some(i);
                        break;
                    }
                }
                if matched.is_none() {
                    return Err(Failure::new(
                        ReasonCode::ContentTampered,
                        "the message content does not match the digest the sender signed",
                    ));
                }
                // RFC 5652 §5.4: hash the attributes as the sender encoded them,
                // with the IMPLICIT [0] tag replaced by SET OF (0x31).
                let mut raw = p7[attrs.start..attrs.end].to_vec();
                if let Some(t) = raw.first_mut() {
                    *t = 0x31;
                }
                std::borrow::Cow::Owned(raw)
            }
            None => {
                matched = Some(0);
                std::borrow::Cow::Borrowed(candidates.first().map(|c| &c[..]).unwrap_or_default())
            }
        };
        verify_signature(cert, &sig_alg, digest, &to_verify, &signature)?;
        Ok(matched)
    })();
    match outcome {
        Ok(which) => (
            SignerResult {
                certificate: cert_found,
                outcome: Ok(()),
            },
            which,
        ),
        Err(f) => (
            SignerResult {
                certificate: cert_found,
                outcome: Err(f),
            },
            None,
        ),
    }
}

/// The contentType and messageDigest values of the signed attributes.
fn read_signed_attrs(
    p7: &[u8],
    attrs: &Tlv,
) -> Result<(Option<ObjectIdentifier>, Option<Vec<u8>>), Failure> {
    let mut content_type = None;
    let mut digest = None;
    for attr in ber::children(p7, attrs)? {
        let parts = ber::children(p7, &attr)?;
        let (Some(oid), Some(values)) = (parts.first(), parts.get(1)) else {
            return Err(Failure::new(ReasonCode::Malformed, "bad signed attribute"));
        };
        let oid = ObjectIdentifier::from_der(&p7[oid.start..oid.end])
            .map_err(|e| malformed("signed attribute type", e))?;
        let values = ber::children(p7, values)?;
        let single = |what: &str| -> Result<Tlv, Failure> {
            match values.as_slice() {
                [v] => Ok(*v),
                _ => Err(Failure::new(
                    ReasonCode::BadSignature,
                    format!("{what} attribute must have exactly one value"),
                )),
            }
        };
        if oid == alg::ID_CONTENT_TYPE {
            if content_type.is_some() {
                return Err(Failure::new(
                    ReasonCode::BadSignature,
                    "duplicate contentType",
                ));
            }
            let v = single("contentType")?;
            content_type = Some(
                ObjectIdentifier::from_der(&p7[v.start..v.end])
                    .map_err(|e| malformed("contentType value", e))?,
            );
        } else if oid == alg::ID_MESSAGE_DIGEST {
            if digest.is_some() {
                return Err(Failure::new(
                    ReasonCode::BadSignature,
                    "duplicate messageDigest",
                ));
            }
            let v = single("messageDigest")?;
            digest = Some(ber::octets(p7, &v)?);
        }
    }
    Ok((content_type, digest))
}

/// Verify `signature` over `message` (hashed with `digest`) with the
/// certificate's key.
fn verify_signature(
    cert: &Certificate,
    sig_alg: &AlgorithmIdentifierOwned,
    digest: DigestAlg,
    message: &[u8],
    signature: &[u8],
) -> Result<(), Failure> {
    let spki_oid = cert
        .tbs_certificate()
        .subject_public_key_info()
        .algorithm
        .oid;
    let ecdsa = [
        alg::ECDSA_WITH_SHA256,
        alg::ECDSA_WITH_SHA384,
        alg::ECDSA_WITH_SHA512,
    ];
    if spki_oid == alg::ID_EC_PUBLIC_KEY || ecdsa.contains(&sig_alg.oid) {
        return Err(Failure::new(
            ReasonCode::UnsupportedAlgorithm,
            "the sender signed with an ECDSA key; this system accepts RSA signatures only",
        ));
    }
    let key = keys::rsa_public_key(cert).map_err(|_| {
        Failure::new(
            ReasonCode::UnsupportedAlgorithm,
            "the signer's key is not RSA",
        )
    })?;
    let bad = |e: String| {
        Failure::new(
            ReasonCode::BadSignature,
            format!("signature check failed: {e}"),
        )
    };
    match sig_alg.oid {
        alg::MD5_WITH_RSA | alg::SHA1_WITH_RSA => Err(Failure::new(
            ReasonCode::WeakAlgorithm,
            "the signature uses MD5 or SHA-1, which Direct no longer accepts",
        )),
        alg::RSA_ENCRYPTION
        | alg::SHA224_WITH_RSA
        | alg::SHA256_WITH_RSA
        | alg::SHA384_WITH_RSA
        | alg::SHA512_WITH_RSA => key.verify_pkcs1v15(digest, message, signature).map_err(bad),
        alg::ID_RSASSA_PSS => {
            let (hash, mgf, salt) = pss_params(sig_alg)?;
            let digest_oid = match digest {
                DigestAlg::Sha224 => alg::ID_SHA224,
                DigestAlg::Sha256 => alg::ID_SHA256,
                DigestAlg::Sha384 => alg::ID_SHA384,
                DigestAlg::Sha512 => alg::ID_SHA512,
                DigestAlg::Weak(_) => alg::ID_SHA1,
            };
            if hash != digest_oid || mgf != digest_oid {
                return Err(Failure::new(
                    ReasonCode::UnsupportedAlgorithm,
                    "RSA-PSS parameters must use the message digest for both hash and MGF1",
                ));
            }
            key.verify_pss(digest, salt, message, signature)
                .map_err(bad)
        }
        other => Err(Failure::new(
            ReasonCode::UnsupportedAlgorithm,
            format!("signature algorithm {other} is not accepted"),
        )),
    }
}

/// RSASSA-PSS-params (RFC 4055 §3.1): hash, MGF1 hash, salt length.
fn pss_params(
    alg_id: &AlgorithmIdentifierOwned,
) -> Result<(ObjectIdentifier, ObjectIdentifier, usize), Failure> {
    let mut hash = alg::ID_SHA1;
    let mut mgf_hash = alg::ID_SHA1;
    let mut salt = 20usize;
    let Some(params) = &alg_id.parameters else {
        return Ok((hash, mgf_hash, salt));
    };
    let der = params
        .to_der()
        .map_err(|e| malformed("PSS parameters", e))?;
    let seq = ber::read(&der, 0)?;
    for field in ber::children(&der, &seq)? {
        let inner = ber::read(&der, field.content_start)?;
        let inner_bytes = &der[inner.start..inner.end];
        match field.tag {
            0xa0 => {
                hash = AlgorithmIdentifierOwned::from_der(inner_bytes)
                    .map_err(|e| malformed("PSS hash", e))?
                    .oid;
            }
            0xa1 => {
                let mgf = AlgorithmIdentifierOwned::from_der(inner_bytes)
                    .map_err(|e| malformed("PSS mask generation", e))?;
                if mgf.oid != alg::ID_MGF1 {
                    return Err(Failure::new(
                        ReasonCode::UnsupportedAlgorithm,
                        "PSS mask generation other than MGF1",
                    ));
                }
                let p = mgf
                    .parameters
                    .ok_or_else(|| Failure::new(ReasonCode::Malformed, "MGF1 without a hash"))?;
                mgf_hash = p
                    .decode_as::<AlgorithmIdentifierOwned>()
                    .map_err(|e| malformed("MGF1 hash", e))?
                    .oid;
            }
            0xa2 => {
                let n = der::asn1::Uint::from_der(inner_bytes)
                    .map_err(|e| malformed("PSS salt length", e))?;
                let bytes = n.as_bytes();
                if bytes.len() > 2 {
                    return Err(Failure::new(
                        ReasonCode::Malformed,
                        "PSS salt length too large",
                    ));
                }
                salt = bytes
                    .iter()
                    .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            }
            0xa3 => {}
            _ => return Err(Failure::new(ReasonCode::Malformed, "unknown PSS parameter")),
        }
    }
    Ok((hash, mgf_hash, salt))
}

/// Modulus size of a certificate's RSA key, if it is RSA.
pub(crate) fn rsa_bits(cert: &Certificate) -> Option<usize> {
    keys::rsa_public_key(cert).ok().map(|k| k.bits())
}
