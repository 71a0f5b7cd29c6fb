//! Outbound: turn an RFC 5322 message into a Direct message (Applicability
//! Statement 1.3 §2; RFC 8551): wrap as message/rfc822, sign detached, encrypt.

use std::time::SystemTime;

use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::enveloped_data::{KeyTransRecipientInfo, RecipientIdentifier, RecipientInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use der::asn1::{Any, OctetString, SetOfVec, UtcTime};
use der::{Decode, Encode};
use spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;
use x509_cert::attr::Attribute;
use zeroize::Zeroizing;

use crate::alg;
use crate::crypto::{self, CbcEncryptor};
use crate::error::SealError;
use crate::keys::{self, Identity};
use crate::mime;

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
    // the receiver sees it in the authenticated copy. The signed entity is
    // never put together in memory: it is hashed, then encrypted and written
    // as base64, piece by piece (the prefix, the caller's message, the
    // signature). Peak memory is the output plus a few small buffers.
    let mut prefix = Vec::with_capacity(300);
    prefix.extend_from_slice(b"Content-Type: message/rfc822\r\n\r\n");
    let ask = !options.no_notification_request;
    if ask && mime::find(&fields, "Disposition-Notification-To").is_none() {
        prefix.extend_from_slice(format!("Disposition-Notification-To: {dnt}\r\n").as_bytes());
    }
    if ask && mime::find(&fields, "Disposition-Notification-Options").is_none() {
        prefix.extend_from_slice(
            format!("Disposition-Notification-Options: {DNO_VALUE}\r\n").as_bytes(),
        );
    }

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

    let (head, tail) = signed_frame(&[&prefix, &message], signer, now)?;

    // The certificates are borrowed, never cloned: at 10 KB a copy of each
    // parsed certificate weighed half as much as the message.
    let mut all: Vec<(&Certificate, KeyTransport)> = Vec::with_capacity(recipients.len() + 1);
    all.extend(recipients.iter().map(|r| (&r.certificate, r.key_transport)));
    // AS 1.3 §2 step 4: one recipient info for the sender, so Sent stays readable.
    all.push((signer.certificate(), options.sender_key_transport));
    let plain: [&[u8]; 4] = [&head, &prefix, &message, &tail];
    let start = envelope_start(plain.iter().map(|p| p.len()).sum(), &all, options.cipher)?;
    drop(all);

    // The outer header first, then room for exactly the base64 of the DER: the
    // output is allocated once, at its final size (it is most of the peak).
    let mut out = Vec::with_capacity(1024);
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
    out.reserve_exact(mime::base64_lines_len(start.der_len()));
    let mut lines = mime::Base64Lines::new(&mut out);
    start.write(&plain, &mut lines)?;
    lines.finish();
    Ok(out)
}

fn probe_rng() -> Result<(), SealError> {
    let mut probe = [0u8; 16];
    crypto::fill_random(&mut probe).map_err(|()| SealError::Random)
}

fn random_hex(n: usize) -> Result<String, SealError> {
    let mut bytes = vec![0u8; n];
    crypto::fill_random(&mut bytes).map_err(|()| SealError::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Sign a MIME entity: returns a `multipart/signed` entity (RFC 8551 §3.5.3)
/// whose first part is `entity` (canonicalised to CRLF) and whose second part is
/// a detached SignedData, SHA-256 with RSA PKCS#1 v1.5, with the signer's
/// certificate and chain.
pub fn sign(entity: &[u8], signer: &Identity, now: SystemTime) -> Result<Vec<u8>, SealError> {
    let entity = mime::to_crlf(entity);
    let (head, tail) = signed_frame(&[&entity], signer, now)?;
    let mut out = Vec::with_capacity(head.len() + entity.len() + tail.len());
    out.extend_from_slice(&head);
    out.extend_from_slice(&entity);
    out.extend_from_slice(&tail);
    Ok(out)
}

/// The `multipart/signed` around an entity given in pieces (already CRLF):
/// what goes before the pieces and what goes after, the detached signature
/// over their concatenation included.
fn signed_frame(
    entity: &[&[u8]],
    signer: &Identity,
    now: SystemTime,
) -> Result<(Vec<u8>, Vec<u8>), SealError> {
    let p7s = signed_data_detached(entity, signer, now)?;
    let boundary = format!("----=_directmail_{}", random_hex(12)?);
    let head = format!(
        "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; \
         micalg=sha-256;\r\n\tboundary=\"{boundary}\"\r\n\r\n\
         This is an S/MIME signed message.\r\n\r\n--{boundary}\r\n"
    )
    .into_bytes();
    let part_head = format!(
        "\r\n--{boundary}\r\n\
         Content-Type: application/pkcs7-signature; name=smime.p7s\r\n\
         Content-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=smime.p7s\r\n\r\n"
    );
    let close = format!("--{boundary}--\r\n");
    // Exact capacity: the tail is still held while the output is written.
    let mut tail =
        Vec::with_capacity(part_head.len() + mime::base64_lines_len(p7s.len()) + close.len());
    tail.extend_from_slice(part_head.as_bytes());
    mime::push_base64_lines(&mut tail, &p7s);
    tail.extend_from_slice(close.as_bytes());
    Ok((head, tail))
}

/// DER ContentInfo(SignedData) over `content`, detached (no eContent).
pub(crate) fn signed_data_detached(
    content: &[&[u8]],
    signer: &Identity,
    now: SystemTime,
) -> Result<Vec<u8>, SealError> {
    let cert = signer.certificate();
    let digest = alg::DigestAlg::Sha256
        .hash(content)
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
    let signature = signer
        .key()
        .sign_pkcs1v15_sha256(&to_sign)
        .map_err(SealError::Signing)?;

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
    let to: Vec<(&Certificate, KeyTransport)> = recipients
        .iter()
        .map(|r| (&r.certificate, r.key_transport))
        .collect();
    let start = envelope_start(entity.len(), &to, cipher)?;
    let mut out = Vec::with_capacity(start.der_len());
    start.write(&[entity], &mut out)?;
    Ok(out)
}

/// Where encrypted bytes go: a DER buffer, or base64 lines of a message.
pub(crate) trait Sink {
    fn put(&mut self, data: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, data: &[u8]) {
        self.extend_from_slice(data);
    }
}

/// An EnvelopedData whose recipient infos are made and whose content is yet to
/// be encrypted: the DER up to the ciphertext, the content key and the IV.
/// Written by hand rather than with `cms`'s builder, so that the content can be
/// encrypted in pieces straight into the output (no copy of the message).
pub(crate) struct EnvelopeStart {
    der_head: Vec<u8>,
    cek: Zeroizing<Vec<u8>>,
    iv: [u8; 16],
    plain_len: usize,
}

impl EnvelopeStart {
    /// Length of the whole DER ContentInfo.
    pub(crate) fn der_len(&self) -> usize {
        self.der_head.len() + cbc_len(self.plain_len)
    }

    /// Write the DER: the head, then `plain` (whose lengths add up to the one
    /// given to [`envelope_start`]) encrypted with AES-CBC and PKCS#7 padding.
    pub(crate) fn write(&self, plain: &[&[u8]], sink: &mut impl Sink) -> Result<(), SealError> {
        // A multiple of 16 (AES blocks) and of 57 (base64 lines).
        const STEP: usize = 16 * 57;
        let total: usize = plain.iter().map(|p| p.len()).sum();
        if total != self.plain_len {
            return Err(SealError::Encryption("content length changed".into()));
        }
        // The staging buffer is at most a sixteenth of the content (912 bytes
        // at least, 58 KB at most): min(58 KB, content) staged a copy of the
        // whole content below 58 KB, yet large chunks keep big messages fast.
        let chunk_len = (total / 16).clamp(STEP, 64 * STEP) / STEP * STEP;
        sink.put(&self.der_head);
        let failed = |()| SealError::Encryption("AES-CBC failed".into());
        let mut enc = CbcEncryptor::new(&self.cek, self.iv).map_err(failed)?;
        // A small message needs no more than its own size.
        let mut chunk = Zeroizing::new(Vec::with_capacity(chunk_len.min(total) + 16));
        for part in plain {
            let mut part: &[u8] = part;
            while !part.is_empty() {
                let take = (chunk_len - chunk.len()).min(part.len());
                chunk.extend_from_slice(&part[..take]);
                part = &part[take..];
                if chunk.len() == chunk_len {
                    enc.encrypt(&mut chunk).map_err(failed)?;
                    sink.put(&chunk);
                    chunk.clear();
                }
            }
        }
        // RFC 5652 §6.3: PKCS#7 padding, always at least one byte.
        let pad = 16 - chunk.len() % 16;
        let padded = chunk.len() + pad;
        chunk.resize(padded, pad as u8);
        enc.encrypt(&mut chunk).map_err(failed)?;
        sink.put(&chunk);
        Ok(())
    }
}

/// Ciphertext length of `n` bytes under AES-CBC with PKCS#7 padding.
fn cbc_len(n: usize) -> usize {
    (n / 16 + 1) * 16
}

/// Make the content key and IV, wrap the key for every recipient, and write the
/// DER that comes before the ciphertext of `plain_len` bytes:
/// ContentInfo { envelopedData, [0] EnvelopedData { version 0, recipientInfos,
/// EncryptedContentInfo { id-data, aes-CBC with the IV, [0] IMPLICIT ciphertext } } }.
pub(crate) fn envelope_start(
    plain_len: usize,
    recipients: &[(&Certificate, KeyTransport)],
    cipher: ContentCipher,
) -> Result<EnvelopeStart, SealError> {
    if recipients.is_empty() {
        return Err(SealError::NoRecipients);
    }
    probe_rng()?;
    let (oid, key_len) = match cipher {
        ContentCipher::Aes256Cbc => (alg::AES256_CBC, 32),
        ContentCipher::Aes128Cbc => (alg::AES128_CBC, 16),
    };
    let mut cek = Zeroizing::new(vec![0u8; key_len]);
    crypto::fill_random(&mut cek).map_err(|()| SealError::Random)?;
    let mut iv = [0u8; 16];
    crypto::fill_random(&mut iv).map_err(|()| SealError::Random)?;

    let mut infos = Vec::with_capacity(recipients.len());
    for &(certificate, key_transport) in recipients {
        infos.push(recipient_info(certificate, key_transport, &cek)?);
    }
    // RFC 5652 §6.1: version 0 when every recipient info is version 0 (key
    // transport by issuer and serial number) and there are no other fields.
    let infos = SetOfVec::try_from(infos)?.to_der()?;
    let content_alg = AlgorithmIdentifierOwned {
        oid,
        parameters: Some(Any::encode_from(&OctetString::new(iv.to_vec())?)?),
    }
    .to_der()?;
    let data_oid = alg::ID_DATA.to_der()?;
    let ct_len = cbc_len(plain_len);
    let eci_len = data_oid.len() + content_alg.len() + der_header_len(ct_len) + ct_len;
    let version = [0x02, 0x01, 0x00];
    let env_len = version.len() + infos.len() + der_header_len(eci_len) + eci_len;
    let ci_oid = alg::ID_ENVELOPED_DATA.to_der()?;
    let explicit_len = der_header_len(env_len) + env_len;
    let ci_len = ci_oid.len() + der_header_len(explicit_len) + explicit_len;

    let mut head = Vec::with_capacity(infos.len() + 128);
    push_der_header(&mut head, 0x30, ci_len);
    head.extend_from_slice(&ci_oid);
    push_der_header(&mut head, 0xa0, explicit_len);
    push_der_header(&mut head, 0x30, env_len);
    head.extend_from_slice(&version);
    head.extend_from_slice(&infos);
    push_der_header(&mut head, 0x30, eci_len);
    head.extend_from_slice(&data_oid);
    head.extend_from_slice(&content_alg);
    push_der_header(&mut head, 0x80, ct_len);
    Ok(EnvelopeStart {
        der_head: head,
        cek,
        iv,
        plain_len,
    })
}

/// One key-transport recipient info: the checks on the recipient's certificate,
/// then the content key wrapped with RSA-OAEP (SHA-256) or PKCS#1 v1.5.
fn recipient_info(
    certificate: &Certificate,
    key_transport: KeyTransport,
    cek: &[u8],
) -> Result<RecipientInfo, SealError> {
    let subject = certificate.tbs_certificate().subject().to_string();
    let key = keys::rsa_public_key(certificate).map_err(|_| SealError::UnusableRecipient {
        subject: subject.clone(),
        reason: "its key is not RSA",
    })?;
    if key.bits() < keys::MIN_RSA_BITS {
        return Err(SealError::UnusableRecipient {
            subject,
            reason: "its RSA key is shorter than 2048 bits",
        });
    }
    // RFC 8550 §4.4.2: keyUsage, when present, must allow keyEncipherment.
    if let Ok(Some((_, ku))) = certificate
        .tbs_certificate()
        .get_extension::<x509_cert::ext::pkix::KeyUsage>()
        && !ku.key_encipherment()
    {
        return Err(SealError::UnusableRecipient {
            subject,
            reason: "its key usage does not allow key encipherment",
        });
    }
    let fail = |e: String| SealError::Encryption(format!("key transport: {e}"));
    let (encrypted, key_enc_alg) = match key_transport {
        KeyTransport::RsaOaepSha256 => (
            key.encrypt_oaep_sha256(cek).map_err(fail)?,
            AlgorithmIdentifierOwned {
                oid: alg::ID_RSAES_OAEP,
                parameters: Some(oaep_sha256_params()?),
            },
        ),
        KeyTransport::RsaPkcs1v15 => (
            key.encrypt_pkcs1v15(cek).map_err(fail)?,
            AlgorithmIdentifierOwned {
                oid: alg::RSA_ENCRYPTION,
                parameters: Some(Any::from(der::asn1::Null)),
            },
        ),
    };
    Ok(RecipientInfo::Ktri(KeyTransRecipientInfo {
        // RFC 5652 §6.2.1: version 0 with issuerAndSerialNumber.
        version: CmsVersion::V0,
        rid: RecipientIdentifier::IssuerAndSerialNumber(issuer_and_serial(certificate)),
        key_enc_alg,
        enc_key: OctetString::new(encrypted)?,
    }))
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
    fn the_hand_written_envelope_is_der_that_cms_reads_and_that_decrypts_back() {
        let now = SystemTime::now();
        let ca = crate::DevCa::generate("envelope test", now).unwrap();
        let id = ca.issue_domain("envelope.example", now).unwrap();
        let recipients = [Recipient::new(id.certificate().clone())];
        for n in [
            0usize, 1, 15, 16, 17, 911, 912, 913, 14_591, 14_592, 14_593, 58_367, 58_368, 58_369,
            200_000, 1_000_000,
        ] {
            let mut entity = b"Content-Type: text/plain\r\n\r\n".to_vec();
            entity.resize(entity.len() + n, b'x');
            let der = envelope(&entity, &recipients, ContentCipher::Aes256Cbc).unwrap();
            let ci = ContentInfo::from_der(&der).unwrap();
            assert_eq!(ci.content_type, alg::ID_ENVELOPED_DATA);
            let env: cms::enveloped_data::EnvelopedData = ci.content.decode_as().unwrap();
            assert_eq!(env.version, CmsVersion::V0);
            assert_eq!(env.recip_infos.0.len(), 1);
            let ct = env.encrypted_content.encrypted_content.unwrap();
            assert_eq!(ct.as_bytes().len(), cbc_len(entity.len()), "length {n}");
            let plain = crate::inbound::decrypt(der.clone(), std::slice::from_ref(&id)).unwrap();
            assert!(plain == entity, "length {n}");
        }
    }

    #[test]
    fn the_sealed_message_is_allocated_once_at_its_final_size() {
        let now = SystemTime::now();
        let ca = crate::DevCa::generate("capacity test", now).unwrap();
        let sender = ca.issue_address("a@sender.example", now).unwrap();
        let id = ca.issue_domain("receiver.example", now).unwrap();
        let recipients = [Recipient::new(id.certificate().clone())];
        for n in [0usize, 10, 1_000, 10_000, 100_000] {
            let mut message = b"From: <a@sender.example>\r\nTo: <b@receiver.example>\r\n\
                References: <x@y> <z@w>\r\nSubject: capacity\r\n\r\n"
                .to_vec();
            message.resize(message.len() + n, b'y');
            let out = seal(&message, &sender, &recipients, &SealOptions::default(), now).unwrap();
            assert_eq!(out.capacity(), out.len(), "body of {n} bytes");
        }
    }
}
