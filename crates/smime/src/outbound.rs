//! Outbound: turn an RFC 5322 message into a Direct message (Applicability
//! Statement 1.3 §2; RFC 8551): wrap as message/rfc822, sign detached, encrypt.

use std::time::SystemTime;

use cms::builder::{
    ContentEncryptionAlgorithm, EnvelopedDataBuilder, RecipientInfoBuilder, RecipientInfoType,
};
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::enveloped_data::{KeyTransRecipientInfo, RecipientIdentifier, RecipientInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use der::asn1::{Any, OctetString, SetOfVec, UtcTime};
use der::{Decode, Encode};
use getrandom::SysRng;
use rand_core::UnwrapErr;
use spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;
use x509_cert::attr::Attribute;

use crate::alg;
use crate::error::SealError;
use crate::keys::{self, Identity};
use crate::mime;

/// The random number generator handed to the `cms` builders, which want an
/// infallible RNG. [`seal`] probes the OS RNG first so that a failing RNG is
/// reported as [`SealError::Random`] rather than reaching `UnwrapErr`'s panic.
type Rng = UnwrapErr<SysRng>;

/// Symmetric cipher for the message content.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ContentCipher {
    /// AES-256-CBC (RFC 3565): the default.
    #[default]
    Aes256Cbc,
    /// AES-128-CBC, for receivers that need it.
    Aes128Cbc,
}

/// How the content-encryption key is wrapped for a recipient.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyTransport {
    /// RSAES-OAEP with SHA-256 and MGF1-SHA-256 (RFC 3560): the default.
    #[default]
    RsaOaepSha256,
    /// RSAES-PKCS1-v1_5, for HISPs that cannot read OAEP yet.
    RsaPkcs1v15,
}

/// What the outer (unencrypted, visible on the wire) Subject says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OuterSubject {
    /// Copy the real subject to the outer header. It is then visible in transit.
    Keep,
    /// Replace it with this neutral text; the real subject rides inside.
    Replace(String),
}

impl Default for OuterSubject {
    fn default() -> Self {
        // DIRECT.md §Message format: the outer Subject is visible on the wire, so
        // by default nothing from the real subject leaks there.
        OuterSubject::Replace("Direct secure message".to_string())
    }
}

/// Options for [`seal`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SealOptions {
    /// Content encryption; AES-256-CBC by default.
    pub cipher: ContentCipher,
    /// Key transport for the sender's own recipient info; recipients carry theirs.
    pub sender_key_transport: KeyTransport,
    /// Outer Subject handling.
    pub outer_subject: OuterSubject,
    /// Address for `Disposition-Notification-To`; the From address when `None`.
    pub disposition_notification_to: Option<String>,
    /// Ask for no delivery notification: for MDNs themselves, which are never
    /// answered with an MDN (Implementation Guide for Delivery Notification).
    pub no_notification_request: bool,
}

/// One recipient: a certificate to encrypt to and the key transport to use
/// (chosen per recipient domain by the caller).
#[derive(Clone, Debug)]
pub struct Recipient {
    /// The recipient's encryption certificate (address- or domain-bound).
    pub certificate: Certificate,
    /// Key transport for this recipient.
    pub key_transport: KeyTransport,
}

impl Recipient {
    /// A recipient using the default key transport (RSA-OAEP SHA-256).
    pub fn new(certificate: Certificate) -> Self {
        Recipient {
            certificate,
            key_transport: KeyTransport::default(),
        }
    }
}

/// Headers copied from the message to the outer envelope (DIRECT.md, AS §2 step 2).
const COPIED_HEADERS: &[&str] = &[
    "From",
    "To",
    "Cc",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
];

/// AS 1.3 §3 / Implementation Guide for Delivery Notification: ask for the
/// dispatched MDN as well as processed.
const DNO_VALUE: &str = "X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true";

/// Build a complete Direct message from `message` (a whole RFC 5322 message):
/// wrap it as `message/rfc822`, sign it with `signer` (SHA-256, RSA PKCS#1 v1.5,
/// detached, certificate chain included) and encrypt it for every recipient and
/// for the sender. `now` is the signing time.
pub fn seal(
    message: &[u8],
    signer: &Identity,
    recipients: &[Recipient],
    options: &SealOptions,
    now: SystemTime,
) -> Result<Vec<u8>, SealError> {
    if recipients.is_empty() {
        return Err(SealError::NoRecipients);
    }
    probe_rng()?;
    let message = mime::to_crlf(message);
    let (header, _) = mime::split(&message);
    let fields = mime::fields(header);
    let from = mime::find(&fields, "From").ok_or(SealError::BadMessage("no From header"))?;
    let from_addr =
        mime::first_address(&from.value).ok_or(SealError::BadMessage("From has no address"))?;
    let dnt = options
        .disposition_notification_to
        .clone()
        .unwrap_or(from_addr);

    // AS 1.3 §2: wrapping the whole message as message/rfc822 is required.
    // The signed inner message carries the notification request too, so that
    // the receiver sees it in the authenticated copy. Built in one buffer, and
    // each large buffer is dropped as soon as the next one exists: peak memory
    // stays a small multiple of the message size.
    let mut wrapped = Vec::with_capacity(message.len() + 300);
    wrapped.extend_from_slice(b"Content-Type: message/rfc822\r\n\r\n");
    let ask = !options.no_notification_request;
    if ask && mime::find(&fields, "Disposition-Notification-To").is_none() {
        wrapped.extend_from_slice(format!("Disposition-Notification-To: {dnt}\r\n").as_bytes());
    }
    if ask && mime::find(&fields, "Disposition-Notification-Options").is_none() {
        wrapped.extend_from_slice(
            format!("Disposition-Notification-Options: {DNO_VALUE}\r\n").as_bytes(),
        );
    }
    wrapped.extend_from_slice(&message);
    drop(message);

    // Receivers refuse what is signed with, or encrypted to, a certificate
    // outside its validity period (AS 1.3 §2): stop here with a clear reason.
    let now_s = keys::unix_seconds(now);
    let (nb, na) = keys::validity_unix(signer.certificate());
    if now_s < nb || now_s > na {
        return Err(SealError::Signing(
            "the signing certificate is not valid at this time".into(),
        ));
    }
    for r in recipients {
        let (nb, na) = keys::validity_unix(&r.certificate);
        if now_s < nb || now_s > na {
            return Err(SealError::UnusableRecipient {
                subject: r.certificate.tbs_certificate().subject().to_string(),
                reason: "it is expired or not yet valid",
            });
        }
    }

    let signed = sign(&wrapped, signer, now)?;
    drop(wrapped);

    let mut all = recipients.to_vec();
    // AS 1.3 §2 step 4: one recipient info for the sender, so Sent stays readable.
    all.push(Recipient {
        certificate: signer.certificate().clone(),
        key_transport: options.sender_key_transport,
    });
    let p7m = envelope(&signed, &all, options.cipher)?;
    drop(signed);

    let mut out = Vec::with_capacity(p7m.len().div_ceil(57) * 78 + 2048);
    for name in COPIED_HEADERS {
        for f in fields.iter().filter(|f| f.name.eq_ignore_ascii_case(name)) {
            out.extend_from_slice(&f.raw);
        }
    }
    match &options.outer_subject {
        OuterSubject::Keep => {
            if let Some(f) = mime::find(&fields, "Subject") {
                out.extend_from_slice(&f.raw);
            }
        }
        OuterSubject::Replace(text) => {
            let text: String = text.chars().filter(|c| !c.is_control()).collect();
            out.extend_from_slice(format!("Subject: {text}\r\n").as_bytes());
        }
    }
    if ask {
        out.extend_from_slice(
            format!(
                "Disposition-Notification-To: {dnt}\r\nDisposition-Notification-Options: {DNO_VALUE}\r\n"
            )
            .as_bytes(),
        );
    }
    out.extend_from_slice(
        b"MIME-Version: 1.0\r\n\
          Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n\
          Content-Transfer-Encoding: base64\r\n\
          Content-Disposition: attachment; filename=smime.p7m\r\n\r\n",
    );
    mime::push_base64_lines(&mut out, &p7m);
    Ok(out)
}

fn probe_rng() -> Result<(), SealError> {
    let mut probe = [0u8; 16];
    getrandom::fill(&mut probe).map_err(|_| SealError::Random)
}

fn random_hex(n: usize) -> Result<String, SealError> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|_| SealError::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Sign a MIME entity: returns a `multipart/signed` entity (RFC 8551 §3.5.3)
/// whose first part is `entity` (canonicalised to CRLF) and whose second part is
/// a detached SignedData, SHA-256 with RSA PKCS#1 v1.5, with the signer's
/// certificate and chain.
pub fn sign(entity: &[u8], signer: &Identity, now: SystemTime) -> Result<Vec<u8>, SealError> {
    let entity = mime::to_crlf(entity);
    let p7s = signed_data_detached(&entity, signer, now)?;
    let boundary = format!("----=_directmail_{}", random_hex(12)?);
    // Exact size up front: a Vec that outgrows its capacity doubles it, which
    // for a large message costs a whole extra copy of it at the peak.
    let mut out = Vec::with_capacity(entity.len() + p7s.len().div_ceil(57) * 78 + 1024);
    out.extend_from_slice(
        format!(
            "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; \
             micalg=sha-256;\r\n\tboundary=\"{boundary}\"\r\n\r\n\
             This is an S/MIME signed message.\r\n\r\n--{boundary}\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(&entity);
    out.extend_from_slice(
        format!(
            "\r\n--{boundary}\r\n\
             Content-Type: application/pkcs7-signature; name=smime.p7s\r\n\
             Content-Transfer-Encoding: base64\r\n\
             Content-Disposition: attachment; filename=smime.p7s\r\n\r\n"
        )
        .as_bytes(),
    );
    mime::push_base64_lines(&mut out, &p7s);
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    Ok(out)
}

/// DER ContentInfo(SignedData) over `content`, detached (no eContent).
pub(crate) fn signed_data_detached(
    content: &[u8],
    signer: &Identity,
    now: SystemTime,
) -> Result<Vec<u8>, SealError> {
    let cert = signer.certificate();
    let digest = alg::DigestAlg::Sha256
        .hash(&[content])
        .ok_or_else(|| SealError::Signing("SHA-256 unavailable".into()))?;

    // RFC 5652 §11: contentType and messageDigest are mandatory; signingTime
    // comes from the caller (the crate has no clock).
    let signing_time = x509_cert::time::Time::UtcTime(UtcTime::from_system_time(now)?);
    let mut time_values = SetOfVec::new();
    time_values.insert(Any::from_der(&signing_time.to_der()?)?)?;
    let attrs = vec![
        cms::builder::create_content_type_attribute(alg::ID_DATA)?,
        Attribute {
            oid: alg::ID_SIGNING_TIME,
            values: time_values,
        },
        cms::builder::create_message_digest_attribute(&digest)?,
    ];
    let signed_attrs: SetOfVec<Attribute> = SetOfVec::try_from(attrs)?;
    // RFC 5652 §5.4: the signature covers the DER of the attributes as a SET OF.
    let to_sign = signed_attrs.to_der()?;
    let hashed = alg::DigestAlg::Sha256
        .hash(&[&to_sign])
        .ok_or_else(|| SealError::Signing("SHA-256 unavailable".into()))?;
    let signature = signer
        .key()
        .pkcs1v15_sign_prehash_with_rng::<sha2::Sha256, _>(&mut SysRng, &hashed)
        .map_err(|e| SealError::Signing(e.to_string()))?;

    let sha256 = AlgorithmIdentifierOwned {
        oid: alg::ID_SHA256,
        parameters: None,
    };
    let signer_info = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(issuer_and_serial(cert)),
        digest_alg: sha256.clone(),
        signed_attrs: Some(signed_attrs),
        signature_algorithm: AlgorithmIdentifierOwned {
            oid: alg::RSA_ENCRYPTION,
            parameters: Some(Any::from(der::asn1::Null)),
        },
        signature: OctetString::new(signature)?,
        unsigned_attrs: None,
    };
    let mut certs: Vec<CertificateChoices> = Vec::new();
    // the signer and its intermediates; a root is never sent (the receiver has its own)
    let intermediates = signer
        .chain()
        .iter()
        .filter(|c| c.tbs_certificate().subject() != c.tbs_certificate().issuer());
    for c in std::iter::once(cert).chain(intermediates) {
        let choice = CertificateChoices::Certificate(c.clone());
        if !certs.contains(&choice) {
            certs.push(choice);
        }
    }
    let signed_data = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::try_from(vec![sha256])?,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: alg::ID_DATA,
            econtent: None,
        },
        certificates: Some(CertificateSet(SetOfVec::try_from(certs)?)),
        crls: None,
        signer_infos: SignerInfos(SetOfVec::try_from(vec![signer_info])?),
    };
    let ci = ContentInfo {
        content_type: alg::ID_SIGNED_DATA,
        content: Any::from_der(&signed_data.to_der()?)?,
    };
    Ok(ci.to_der()?)
}

fn issuer_and_serial(cert: &Certificate) -> IssuerAndSerialNumber {
    IssuerAndSerialNumber {
        issuer: cert.tbs_certificate().issuer().clone(),
        serial_number: cert.tbs_certificate().serial_number().clone(),
    }
}

/// Encrypt a MIME entity as DER ContentInfo(EnvelopedData) with one
/// key-transport recipient info per recipient (RFC 5652 §6, RFC 8551 §3.3).
pub fn envelope(
    entity: &[u8],
    recipients: &[Recipient],
    cipher: ContentCipher,
) -> Result<Vec<u8>, SealError> {
    if recipients.is_empty() {
        return Err(SealError::NoRecipients);
    }
    probe_rng()?;
    let algorithm = match cipher {
        ContentCipher::Aes256Cbc => ContentEncryptionAlgorithm::Aes256Cbc,
        ContentCipher::Aes128Cbc => ContentEncryptionAlgorithm::Aes128Cbc,
    };
    let mut builder = EnvelopedDataBuilder::<Rng>::new(None, entity, algorithm, None)?;
    for r in recipients {
        let subject = r.certificate.tbs_certificate().subject().to_string();
        let key =
            keys::rsa_public_key(&r.certificate).map_err(|_| SealError::UnusableRecipient {
                subject: subject.clone(),
                reason: "its key is not RSA",
            })?;
        if keys::modulus_bits(&key) < keys::MIN_RSA_BITS {
            return Err(SealError::UnusableRecipient {
                subject,
                reason: "its RSA key is shorter than 2048 bits",
            });
        }
        // RFC 8550 §4.4.2: keyUsage, when present, must allow keyEncipherment.
        if let Ok(Some((_, ku))) = r
            .certificate
            .tbs_certificate()
            .get_extension::<x509_cert::ext::pkix::KeyUsage>()
            && !ku.key_encipherment()
        {
            return Err(SealError::UnusableRecipient {
                subject,
                reason: "its key usage does not allow key encipherment",
            });
        }
        builder.add_recipient_info(KeyTransBuilder {
            rid: RecipientIdentifier::IssuerAndSerialNumber(issuer_and_serial(&r.certificate)),
            key,
            transport: r.key_transport,
        })?;
    }
    let mut rng = UnwrapErr(SysRng);
    let enveloped = builder.build_with_rng(&mut rng)?;
    let body = enveloped.to_der()?;
    drop(enveloped);
    content_info_der(alg::ID_ENVELOPED_DATA, &body)
}

/// DER of `ContentInfo ::= SEQUENCE { contentType OBJECT IDENTIFIER, content [0]
/// EXPLICIT ANY }` (RFC 5652 §3) around an already encoded `content`, written
/// directly: going through `der::Any` would copy a large content twice more.
fn content_info_der(
    content_type: der::oid::ObjectIdentifier,
    content: &[u8],
) -> Result<Vec<u8>, SealError> {
    let oid = content_type.to_der()?;
    let explicit_len = der_header_len(content.len()) + content.len();
    let seq_len = oid.len() + explicit_len;
    let mut out = Vec::with_capacity(der_header_len(seq_len) + seq_len);
    push_der_header(&mut out, 0x30, seq_len);
    out.extend_from_slice(&oid);
    push_der_header(&mut out, 0xa0, content.len());
    out.extend_from_slice(content);
    Ok(out)
}

/// Bytes taken by a tag and a definite length (X.690 §8.1.3).
fn der_header_len(len: usize) -> usize {
    let significant = (usize::BITS - len.leading_zeros()).div_ceil(8) as usize;
    if len < 0x80 { 2 } else { 2 + significant }
}

/// A one-byte tag and a definite length: short form under 128, else long form
/// with the minimum number of length octets (X.690 §8.1.3, §10.1 for DER).
fn push_der_header(out: &mut Vec<u8>, tag: u8, len: usize) {
    out.push(tag);
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// Key-transport recipient info with RSA-OAEP or PKCS#1 v1.5. The `cms` crate's
/// own builder only does PKCS#1 v1.5; this one implements its public trait.
struct KeyTransBuilder {
    rid: RecipientIdentifier,
    key: rsa::PublicKey,
    transport: KeyTransport,
}

impl RecipientInfoBuilder for KeyTransBuilder {
    type Rng = Rng;

    fn recipient_info_type(&self) -> RecipientInfoType {
        RecipientInfoType::Ktri
    }

    fn recipient_info_version(&self) -> CmsVersion {
        // RFC 5652 §6.2.1: version 0 with issuerAndSerialNumber.
        match self.rid {
            RecipientIdentifier::IssuerAndSerialNumber(_) => CmsVersion::V0,
            RecipientIdentifier::SubjectKeyIdentifier(_) => CmsVersion::V2,
        }
    }

    fn build_with_rng(
        &mut self,
        content_encryption_key: &[u8],
        rng: &mut Self::Rng,
    ) -> Result<RecipientInfo, cms::builder::Error> {
        let fail = |e: rsa::Error| cms::builder::Error::Builder(format!("key transport: {e}"));
        let (encrypted, key_enc_alg) = match self.transport {
            KeyTransport::RsaOaepSha256 => (
                self.key
                    .oaep_encrypt_with_rng::<sha2::Sha256, _>(rng, content_encryption_key)
                    .map_err(fail)?,
                AlgorithmIdentifierOwned {
                    oid: alg::ID_RSAES_OAEP,
                    parameters: Some(oaep_sha256_params()?),
                },
            ),
            KeyTransport::RsaPkcs1v15 => (
                self.key
                    .pkcs1v15_encrypt_with_rng(rng, content_encryption_key)
                    .map_err(fail)?,
                AlgorithmIdentifierOwned {
                    oid: alg::RSA_ENCRYPTION,
                    parameters: Some(Any::from(der::asn1::Null)),
                },
            ),
        };
        Ok(RecipientInfo::Ktri(KeyTransRecipientInfo {
            version: self.recipient_info_version(),
            rid: self.rid.clone(),
            key_enc_alg,
            enc_key: OctetString::new(encrypted)?,
        }))
    }
}

/// RSAES-OAEP-params (RFC 4055 §4.1) for SHA-256 and MGF1-SHA-256, empty label.
fn oaep_sha256_params() -> der::Result<Any> {
    let sha256 = AlgorithmIdentifierOwned {
        oid: alg::ID_SHA256,
        parameters: None,
    }
    .to_der()?;
    let mgf = AlgorithmIdentifierOwned {
        oid: alg::ID_MGF1,
        parameters: Some(Any::from_der(&sha256)?),
    }
    .to_der()?;
    let mut body = tlv(0xa0, &sha256);
    body.extend_from_slice(&tlv(0xa1, &mgf));
    Any::from_der(&tlv(0x30, &body))
}

/// DER tag-length-value with a one-byte tag.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_info_is_the_same_der_as_the_der_crate_writes() {
        for n in [0usize, 1, 127, 128, 255, 256, 65_535, 65_536, 1 << 24] {
            // An OCTET STRING of n bytes as the content.
            let content = OctetString::new(vec![0x5a; n]).unwrap().to_der().unwrap();
            let expected = ContentInfo {
                content_type: alg::ID_ENVELOPED_DATA,
                content: Any::from_der(&content).unwrap(),
            }
            .to_der()
            .unwrap();
            let ours = content_info_der(alg::ID_ENVELOPED_DATA, &content).unwrap();
            assert!(ours == expected, "length {n}");
        }
    }
}
