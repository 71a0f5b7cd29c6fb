//! Outbound: turn an RFC 5322 message into a Direct message (Applicability
//! Statement 1.3 §2; RFC 8551): wrap as message/rfc822, sign detached, encrypt.

use std::time::SystemTime;

use der::asn1::{Any, SetOfVec, UtcTime};
use der::{Decode, DerOrd, Encode};
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
const DNO_FIELD: &[u8] =
    b"Disposition-Notification-Options: X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true\r\n";

/// Build a complete Direct message from `message` (a whole RFC 5322 message):
/// wrap it as `message/rfc822`, sign it with `signer` (SHA-256, RSA PKCS#1 v1.5,
/// detached, certificate chain included) and encrypt it for every recipient and
/// for the sender. `now` is the signing time.
///
/// Memory: the output is allocated once, at its final size, and everything is
/// written inside it. The signed entity (multipart/signed around the wrapped
/// message and its signature) is put together at the far end of the output,
/// where the DER of the EnvelopedData ends; the EnvelopedData head is written
/// just before it; the content is encrypted in place, and the DER is turned
/// into base64 lines in place from the front ([`mime::Base64InPlace`]). Beside
/// the output, seal holds only the signed attributes, the signature value, the
/// content key and a few names and lengths.
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
    // The header is read where it lies (borrowed), here and when the outer
    // header is written: no parsed copy is held beside the output.
    let (header, _) = mime::split(&message);
    let from_value =
        mime::first_value(header, "From").ok_or(SealError::BadMessage("no From header"))?;
    let from_addr =
        mime::first_address(&from_value).ok_or(SealError::BadMessage("From has no address"))?;
    drop(from_value);
    let dnt: &str = options
        .disposition_notification_to
        .as_deref()
        .unwrap_or(&from_addr);
    let has = |name: &str| mime::field_lines(header, name).next().is_some();

    // AS 1.3 §2: wrapping the whole message as message/rfc822 is required.
    // The signed inner message carries the notification request too, so that
    // the receiver sees it in the authenticated copy. The wrapper is never put
    // together: it is these pieces, hashed, then written where they go.
    let ask = !options.no_notification_request;
    let add_dnt = ask && !has("Disposition-Notification-To");
    let add_dno = ask && !has("Disposition-Notification-Options");
    let when = |add: bool, piece: &'static [u8]| if add { piece } else { &[] };
    let content: [&[u8]; 6] = [
        b"Content-Type: message/rfc822\r\n\r\n",
        when(add_dnt, b"Disposition-Notification-To: "),
        if add_dnt { dnt.as_bytes() } else { &[] },
        when(add_dnt, b"\r\n"),
        when(add_dno, DNO_FIELD),
        &message,
    ];

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

    let signature = Signature::new(&content, signer, now)?;
    let boundary = boundary()?;
    let entity = |o: &mut Out<'_>| signed_entity(o, &boundary, &content, &signature);
    // AS 1.3 §2 step 4: one recipient info for the sender, so Sent stays readable.
    // The certificates are borrowed, never cloned.
    let envelope = Envelope::new(
        Out::measure(entity)?,
        recipients
            .iter()
            .map(|r| (&r.certificate, r.key_transport))
            .chain([(signer.certificate(), options.sender_key_transport)]),
        options.cipher,
    )?;
    let outer = |o: &mut Out<'_>| outer_header(o, header, options, dnt);
    let outer_len = Out::measure(outer)?;
    let der_len = envelope.der_len();

    let mut out = vec![0u8; outer_len + mime::base64_lines_len(der_len)];
    let (head, lines) = out.split_at_mut(outer_len);
    Out::fill(head, outer)?;
    // The DER ends where the output ends; the plaintext ends with it.
    let der_at = lines.len() - der_len;
    let content_at = der_at + envelope.head_len();
    Out::fill(
        &mut lines[content_at..content_at + envelope.plain_len],
        entity,
    )?;
    drop((signature, from_addr));
    envelope.write_head(&mut lines[der_at..])?;

    // Encrypted in pieces, each turned into base64 lines while it is in cache.
    const STEP: usize = 64 * 16 * 57;
    let mut base64 = mime::Base64InPlace::new(der_len);
    base64.advance(lines, envelope.head_len());
    let mut enc = envelope.encryptor()?;
    let mut done = content_at;
    while done < lines.len() {
        let end = (done + STEP).min(lines.len());
        enc.encrypt(&mut lines[done..end])
            .map_err(|()| SealError::Encryption("AES-CBC failed".into()))?;
        done = end;
        base64.advance(lines, done - der_at);
    }
    base64.finish(lines);
    Ok(out)
}

/// The outer (visible) header: the copied fields as written, the Subject, the
/// notification request, and the application/pkcs7-mime head.
fn outer_header(
    o: &mut Out<'_>,
    header: &[u8],
    options: &SealOptions,
    dnt: &str,
) -> Result<(), SealError> {
    let copy = |o: &mut Out<'_>, name: &str| -> Result<(), SealError> {
        for (_, line) in mime::field_lines(header, name) {
            o.put(line)?;
            if !line.ends_with(b"\n") {
                o.put(b"\r\n")?;
            }
        }
        Ok(())
    };
    for name in COPIED_HEADERS {
        copy(o, name)?;
    }
    match &options.outer_subject {
        OuterSubject::Keep => copy(o, "Subject")?,
        OuterSubject::Replace(text) => {
            o.put(b"Subject: ")?;
            for c in text.chars().filter(|c| !c.is_control()) {
                o.put(c.encode_utf8(&mut [0u8; 4]).as_bytes())?;
            }
            o.put(b"\r\n")?;
        }
    }
    if !options.no_notification_request {
        o.put(b"Disposition-Notification-To: ")?;
        o.put(dnt.as_bytes())?;
        o.put(b"\r\n")?;
        o.put(DNO_FIELD)?;
    }
    o.put(
        b"MIME-Version: 1.0\r\n\
          Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n\
          Content-Transfer-Encoding: base64\r\n\
          Content-Disposition: attachment; filename=smime.p7m\r\n\r\n",
    )
}

fn probe_rng() -> Result<(), SealError> {
    let mut probe = [0u8; 16];
    crypto::fill_random(&mut probe).map_err(|()| SealError::Random)
}

/// A fresh multipart boundary, `----=_directmail_` and 24 random hex digits
/// (on the stack: seal keeps it beside the output).
fn boundary() -> Result<[u8; 41], SealError> {
    let mut random = [0u8; 12];
    crypto::fill_random(&mut random).map_err(|()| SealError::Random)?;
    let mut out = [0u8; 41];
    out[..17].copy_from_slice(b"----=_directmail_");
    for (pair, b) in out[17..].chunks_exact_mut(2).zip(random) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 15)];
    }
    Ok(out)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Sign a MIME entity: returns a `multipart/signed` entity (RFC 8551 §3.5.3)
/// whose first part is `entity` (canonicalised to CRLF) and whose second part is
/// a detached SignedData, SHA-256 with RSA PKCS#1 v1.5, with the signer's
/// certificate and chain.
pub fn sign(entity: &[u8], signer: &Identity, now: SystemTime) -> Result<Vec<u8>, SealError> {
    let entity = mime::to_crlf(entity);
    let content: [&[u8]; 1] = [&entity];
    let signature = Signature::new(&content, signer, now)?;
    let boundary = boundary()?;
    let write = |o: &mut Out<'_>| signed_entity(o, &boundary, &content, &signature);
    let mut out = vec![0u8; Out::measure(write)?];
    Out::fill(&mut out, write)?;
    Ok(out)
}

/// The `multipart/signed` entity (RFC 8551 §3.5.3) around `content` (given in
/// pieces, already CRLF), its second part the detached signature in base64.
fn signed_entity(
    o: &mut Out<'_>,
    boundary: &[u8],
    content: &[&[u8]],
    signature: &Signature<'_>,
) -> Result<(), SealError> {
    o.put(
        b"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; \
          micalg=sha-256;\r\n\tboundary=\"",
    )?;
    o.put(boundary)?;
    o.put(b"\"\r\n\r\nThis is an S/MIME signed message.\r\n\r\n--")?;
    o.put(boundary)?;
    o.put(b"\r\n")?;
    for part in content {
        o.put(part)?;
    }
    o.put(b"\r\n--")?;
    o.put(boundary)?;
    o.put(
        b"\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\n\
          Content-Transfer-Encoding: base64\r\n\
          Content-Disposition: attachment; filename=smime.p7s\r\n\r\n",
    )?;
    // The DER is written at the end of the room for its base64, which is then
    // written over it from the front.
    let der_len = Out::measure(|o| signature.write(o))?;
    let lines = mime::base64_lines_len(der_len);
    if let Some(room) = o.reserve(lines)? {
        Out::fill(&mut room[lines - der_len..], |o| signature.write(o))?;
        mime::Base64InPlace::new(der_len).finish(room);
    }
    o.put(b"--")?;
    o.put(boundary)?;
    o.put(b"--\r\n")
}

/// A detached signature made and waiting to be written: the signed attributes,
/// the signature value and the certificates to carry, borrowed.
struct Signature<'a> {
    signer: &'a Certificate,
    /// The signer's certificate and its intermediates, in DER SET OF order.
    certificates: Vec<&'a Certificate>,
    /// DER of the signed attributes as a SET OF (what the signature covers).
    attributes: Vec<u8>,
    value: Vec<u8>,
}

impl<'a> Signature<'a> {
    /// Sign the concatenation of `content` (SHA-256, RSA PKCS#1 v1.5).
    fn new(content: &[&[u8]], signer: &'a Identity, now: SystemTime) -> Result<Self, SealError> {
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
        // RFC 5652 §5.4: the signature covers the DER of the attributes as a SET OF.
        let attributes = SetOfVec::try_from(attrs)?.to_der()?;
        let value = signer
            .key()
            .sign_pkcs1v15_sha256(&attributes)
            .map_err(SealError::Signing)?;
        // the signer and its intermediates; a root is never sent (the receiver has its own)
        let cert = signer.certificate();
        let mut certificates = vec![cert];
        for c in signer.chain() {
            let tbs = c.tbs_certificate();
            if tbs.subject() != tbs.issuer() && !certificates.contains(&c) {
                certificates.push(c);
            }
        }
        let mut failed = None;
        certificates.sort_by(|a, b| {
            a.der_cmp(b).unwrap_or_else(|e| {
                failed = Some(e);
                std::cmp::Ordering::Equal
            })
        });
        if let Some(e) = failed {
            return Err(e.into());
        }
        Ok(Signature {
            signer: cert,
            certificates,
            attributes,
            value,
        })
    }

    /// DER ContentInfo(SignedData), detached (no eContent), RFC 5652 §5:
    /// version 1, digestAlgorithms {sha256}, encapContentInfo {id-data},
    /// certificates [0], one SignerInfo (issuerAndSerialNumber).
    fn write(&self, o: &mut Out<'_>) -> Result<(), SealError> {
        o.tlv(0x30, |o| {
            o.put_der(&alg::ID_SIGNED_DATA)?;
            o.tlv(0xa0, |o| {
                o.tlv(0x30, |o| {
                    o.put(&VERSION_1)?;
                    o.tlv(0x31, |o| o.put(&SHA256_ALG))?;
                    o.tlv(0x30, |o| o.put_der(&alg::ID_DATA))?;
                    o.tlv(0xa0, |o| {
                        self.certificates.iter().try_for_each(|c| o.put_der(*c))
                    })?;
                    o.tlv(0x31, |o| {
                        o.tlv(0x30, |o| {
                            o.put(&VERSION_1)?;
                            issuer_and_serial(o, self.signer)?;
                            o.put(&SHA256_ALG)?;
                            // signedAttrs [0] IMPLICIT: the SET OF with its tag replaced
                            o.put(&[0xa0])?;
                            o.put(self.attributes.get(1..).unwrap_or_default())?;
                            o.put(&RSA_ENCRYPTION_ALG)?;
                            o.tlv(0x04, |o| o.put(&self.value))
                        })
                    })
                })
            })
        })
    }
}

/// INTEGER 1.
const VERSION_1: [u8; 3] = [0x02, 0x01, 0x01];
/// AlgorithmIdentifier { id-sha256 } (parameters absent, RFC 5754 §2).
const SHA256_ALG: [u8; 13] = [
    0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
];
/// AlgorithmIdentifier { rsaEncryption, NULL } (RFC 3370 §3.2, §4.2.1).
const RSA_ENCRYPTION_ALG: [u8; 15] = [
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];
/// AlgorithmIdentifier { id-RSAES-OAEP, { [0] sha256, [1] mgf1(sha256) } }
/// (RFC 4055 §4.1, the label empty by default).
const OAEP_SHA256_ALG: [u8; 58] = [
    0x30, 0x38, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x07, 0x30, 0x2b, 0xa0,
    0x0d, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0xa1, 0x1a,
    0x30, 0x18, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08, 0x30, 0x0b, 0x06,
    0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
];

/// IssuerAndSerialNumber of `cert` (RFC 5652 §10.2.4), from the borrowed certificate.
fn issuer_and_serial(o: &mut Out<'_>, cert: &Certificate) -> Result<(), SealError> {
    let tbs = cert.tbs_certificate();
    o.tlv(0x30, |o| {
        o.put_der(tbs.issuer())?;
        o.put_der(tbs.serial_number())
    })
}

/// Encrypt a MIME entity as DER ContentInfo(EnvelopedData) with one
/// key-transport recipient info per recipient (RFC 5652 §6, RFC 8551 §3.3).
pub fn envelope(
    entity: &[u8],
    recipients: &[Recipient],
    cipher: ContentCipher,
) -> Result<Vec<u8>, SealError> {
    let envelope = Envelope::new(
        entity.len(),
        recipients.iter().map(|r| (&r.certificate, r.key_transport)),
        cipher,
    )?;
    let mut out = vec![0u8; envelope.der_len()];
    let at = envelope.head_len();
    out[at..at + entity.len()].copy_from_slice(entity);
    envelope.write_head(&mut out)?;
    envelope
        .encryptor()?
        .encrypt(&mut out[at..])
        .map_err(|()| SealError::Encryption("AES-CBC failed".into()))?;
    Ok(out)
}

/// Where DER and MIME are written: a slice, filled from the front (writing
/// past its end is an error, never a panic), or nowhere, only counting, to
/// learn a length before the buffer exists. The same code measures and writes,
/// so the two cannot disagree.
pub(crate) struct Out<'a> {
    buf: Option<&'a mut [u8]>,
    pos: usize,
}

impl Out<'_> {
    /// The length `write` writes.
    fn measure(write: impl Fn(&mut Out<'_>) -> Result<(), SealError>) -> Result<usize, SealError> {
        let mut o = Out { buf: None, pos: 0 };
        write(&mut o)?;
        Ok(o.pos)
    }

    /// Run `write` into `buf`, which it must fill exactly.
    fn fill(
        buf: &mut [u8],
        write: impl Fn(&mut Out<'_>) -> Result<(), SealError>,
    ) -> Result<(), SealError> {
        let len = buf.len();
        let mut o = Out {
            buf: Some(buf),
            pos: 0,
        };
        write(&mut o)?;
        if o.pos == len { Ok(()) } else { Err(overrun()) }
    }

    /// The next `len` bytes, for the caller to fill (`None` when counting).
    fn reserve(&mut self, len: usize) -> Result<Option<&mut [u8]>, SealError> {
        let at = self.pos;
        self.pos += len;
        match self.buf.as_deref_mut() {
            None => Ok(None),
            Some(buf) => buf.get_mut(at..at + len).map(Some).ok_or_else(overrun),
        }
    }

    fn put(&mut self, data: &[u8]) -> Result<(), SealError> {
        if let Some(room) = self.reserve(data.len())? {
            room.copy_from_slice(data);
        }
        Ok(())
    }

    fn put_der(&mut self, value: &impl Encode) -> Result<(), SealError> {
        let len = usize::try_from(value.encoded_len()?)?;
        if let Some(room) = self.reserve(len)? {
            value.encode_to_slice(room)?;
        }
        Ok(())
    }

    /// A tag and a definite length: short form under 128, else long form
    /// with the minimum number of length octets (X.690 §8.1.3, §10.1 for DER).
    fn header(&mut self, tag: u8, len: usize) -> Result<(), SealError> {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        if len < 0x80 {
            self.put(&[tag, len as u8])
        } else {
            self.put(&[tag, 0x80 | (bytes.len() - skip) as u8])?;
            self.put(&bytes[skip..])
        }
    }

    /// A TLV whose content `content` writes: measured first, then written.
    fn tlv(
        &mut self,
        tag: u8,
        content: impl Fn(&mut Out<'_>) -> Result<(), SealError>,
    ) -> Result<(), SealError> {
        let len = Out::measure(&content)?;
        self.header(tag, len)?;
        content(self)
    }
}

fn overrun() -> SealError {
    SealError::Encoding("a structure did not fit the room measured for it".into())
}

/// An EnvelopedData whose content key and IV are drawn, whose recipients are
/// checked and whose content is yet to be written and encrypted. Written by
/// hand rather than with `cms`'s builder, so that the content is encrypted in
/// place where it lies in the output (no copy of the message).
pub(crate) struct Envelope<'c> {
    /// Each recipient with its key transport and its modulus length.
    recipients: Vec<(&'c Certificate, KeyTransport, usize)>,
    cipher: ContentCipher,
    cek: Zeroizing<Vec<u8>>,
    iv: [u8; 16],
    plain_len: usize,
    head_len: usize,
}

impl<'c> Envelope<'c> {
    /// Check every recipient, draw the content key and IV, and lay out the DER
    /// for a content of `plain_len` bytes.
    pub(crate) fn new(
        plain_len: usize,
        recipients: impl Iterator<Item = (&'c Certificate, KeyTransport)>,
        cipher: ContentCipher,
    ) -> Result<Self, SealError> {
        let recipients = recipients
            .map(|(c, t)| Ok((c, t, usable_key(c)?.modulus_len())))
            .collect::<Result<Vec<_>, SealError>>()?;
        if recipients.is_empty() {
            return Err(SealError::NoRecipients);
        }
        probe_rng()?;
        let mut cek = Zeroizing::new(vec![0u8; cipher_key_len(cipher)]);
        crypto::fill_random(&mut cek).map_err(|()| SealError::Random)?;
        let mut iv = [0u8; 16];
        crypto::fill_random(&mut iv).map_err(|()| SealError::Random)?;
        let mut envelope = Envelope {
            recipients,
            cipher,
            cek,
            iv,
            plain_len,
            head_len: 0,
        };
        envelope.head_len = Out::measure(|o| envelope.write(o))? - cbc_len(plain_len);
        Ok(envelope)
    }

    /// Length of the whole DER ContentInfo.
    pub(crate) fn der_len(&self) -> usize {
        self.head_len + cbc_len(self.plain_len)
    }

    /// Where the content starts in the DER.
    pub(crate) fn head_len(&self) -> usize {
        self.head_len
    }

    /// Write the DER around the content into `der` ([`der_len`](Self::der_len)
    /// bytes, the content already at [`head_len`](Self::head_len)): the head
    /// with the content key wrapped for each recipient, and the PKCS#7 padding
    /// after the content (RFC 5652 §6.3, always at least one byte).
    pub(crate) fn write_head(&self, der: &mut [u8]) -> Result<(), SealError> {
        Out::fill(der, |o| self.write(o))?;
        let pad_from = self.head_len + self.plain_len;
        let pad = der.len() - pad_from;
        der[pad_from..].fill(pad as u8);
        Ok(())
    }

    /// The AES-CBC encryption of the padded content, to be run over it in
    /// place, in pieces of whole blocks.
    pub(crate) fn encryptor(&self) -> Result<CbcEncryptor, SealError> {
        CbcEncryptor::new(&self.cek, self.iv)
            .map_err(|()| SealError::Encryption("AES-CBC failed".into()))
    }

    /// ContentInfo { envelopedData, [0] EnvelopedData { version 0,
    /// recipientInfos, EncryptedContentInfo { id-data, aes-CBC with the IV,
    /// [0] IMPLICIT ciphertext } } }; the ciphertext is skipped, not written.
    fn write(&self, o: &mut Out<'_>) -> Result<(), SealError> {
        let oid = match self.cipher {
            ContentCipher::Aes256Cbc => alg::AES256_CBC,
            ContentCipher::Aes128Cbc => alg::AES128_CBC,
        };
        let ct_len = cbc_len(self.plain_len);
        o.tlv(0x30, |o| {
            o.put_der(&alg::ID_ENVELOPED_DATA)?;
            o.tlv(0xa0, |o| {
                o.tlv(0x30, |o| {
                    // RFC 5652 §6.1: version 0 when every recipient info is
                    // version 0 (key transport by issuer and serial number).
                    o.put(&[0x02, 0x01, 0x00])?;
                    o.tlv(0x31, |o| self.recipient_infos(o))?;
                    o.tlv(0x30, |o| {
                        o.put_der(&alg::ID_DATA)?;
                        o.tlv(0x30, |o| {
                            o.put_der(&oid)?;
                            o.tlv(0x04, |o| o.put(&self.iv))
                        })?;
                        o.header(0x80, ct_len)?;
                        o.reserve(ct_len).map(drop)
                    })
                })
            })
        })
    }

    /// One key-transport recipient info per recipient (RFC 5652 §6.2.1,
    /// version 0 with issuerAndSerialNumber), the content key wrapped with
    /// RSA-OAEP (SHA-256) or PKCS#1 v1.5 straight into its place; then sorted
    /// in place into DER SET OF order (X.690 §11.6).
    fn recipient_infos(&self, o: &mut Out<'_>) -> Result<(), SealError> {
        let start = o.pos;
        let mut lens = Vec::with_capacity(self.recipients.len());
        for &(cert, transport, key_len) in &self.recipients {
            let at = o.pos;
            o.tlv(0x30, |o| {
                o.put(&[0x02, 0x01, 0x00])?;
                issuer_and_serial(o, cert)?;
                o.put(match transport {
                    KeyTransport::RsaOaepSha256 => &OAEP_SHA256_ALG[..],
                    KeyTransport::RsaPkcs1v15 => &RSA_ENCRYPTION_ALG[..],
                })?;
                o.header(0x04, key_len)?;
                let Some(room) = o.reserve(key_len)? else {
                    return Ok(());
                };
                let key = usable_key(cert)?;
                match transport {
                    KeyTransport::RsaOaepSha256 => key.encrypt_oaep_sha256(&self.cek, room),
                    KeyTransport::RsaPkcs1v15 => key.encrypt_pkcs1v15(&self.cek, room),
                }
                .map_err(|e| SealError::Encryption(format!("key transport: {e}")))
            })?;
            lens.push(o.pos - at);
        }
        if let Some(buf) = o.buf.as_deref_mut() {
            sort_set_of(&mut buf[start..o.pos], &mut lens);
        }
        Ok(())
    }
}

/// Put the DER encodings lying one after another in `buf` (their lengths in
/// `lens`) in ascending order, in place (selection by rotation: a few items).
fn sort_set_of(buf: &mut [u8], lens: &mut [usize]) {
    let mut start = 0;
    for i in 0..lens.len() {
        let (mut best, mut best_at, mut at) = (i, start, start);
        for j in i..lens.len() {
            if buf[at..at + lens[j]] < buf[best_at..best_at + lens[best]] {
                (best, best_at) = (j, at);
            }
            at += lens[j];
        }
        let len = lens[best];
        buf[start..best_at + len].rotate_right(len);
        lens[i..=best].rotate_right(1);
        start += len;
    }
}

/// Content-key length of a cipher.
fn cipher_key_len(cipher: ContentCipher) -> usize {
    match cipher {
        ContentCipher::Aes256Cbc => 32,
        ContentCipher::Aes128Cbc => 16,
    }
}

/// Ciphertext length of `n` bytes under AES-CBC with PKCS#7 padding.
fn cbc_len(n: usize) -> usize {
    (n / 16 + 1) * 16
}

/// The key of a recipient certificate, checked for encryption: RSA of at least
/// 2048 bits, and keyUsage, when present, allowing keyEncipherment (RFC 8550 §4.4.2).
fn usable_key(certificate: &Certificate) -> Result<crypto::PublicKey, SealError> {
    let unusable = |reason| SealError::UnusableRecipient {
        subject: certificate.tbs_certificate().subject().to_string(),
        reason,
    };
    let key = keys::rsa_public_key(certificate).map_err(|_| unusable("its key is not RSA"))?;
    if key.bits() < keys::MIN_RSA_BITS {
        return Err(unusable("its RSA key is shorter than 2048 bits"));
    }
    if let Ok(Some((_, ku))) = certificate
        .tbs_certificate()
        .get_extension::<x509_cert::ext::pkix::KeyUsage>()
        && !ku.key_encipherment()
    {
        return Err(unusable("its key usage does not allow key encipherment"));
    }
    Ok(key)
}

/// DER tag-length-value with a one-byte tag.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let write = |o: &mut Out<'_>| o.tlv(tag, |o| o.put(content));
    let mut out = vec![0u8; Out::measure(write).unwrap_or_default()];
    // Measured by the same code, so it fits exactly.
    let _ = Out::fill(&mut out, write);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cms::content_info::{CmsVersion, ContentInfo};
    use spki::AlgorithmIdentifierOwned;

    #[test]
    fn the_fixed_algorithm_identifiers_are_the_der_of_their_structures() {
        let sha256 = AlgorithmIdentifierOwned {
            oid: alg::ID_SHA256,
            parameters: None,
        };
        assert_eq!(sha256.to_der().unwrap(), SHA256_ALG);
        let rsa = AlgorithmIdentifierOwned {
            oid: alg::RSA_ENCRYPTION,
            parameters: Some(Any::from(der::asn1::Null)),
        };
        assert_eq!(rsa.to_der().unwrap(), RSA_ENCRYPTION_ALG);
        let mgf = AlgorithmIdentifierOwned {
            oid: alg::ID_MGF1,
            parameters: Some(Any::from_der(&SHA256_ALG).unwrap()),
        };
        let mut params = tlv(0xa0, &SHA256_ALG);
        params.extend_from_slice(&tlv(0xa1, &mgf.to_der().unwrap()));
        let oaep = AlgorithmIdentifierOwned {
            oid: alg::ID_RSAES_OAEP,
            parameters: Some(Any::from_der(&tlv(0x30, &params)).unwrap()),
        };
        assert_eq!(oaep.to_der().unwrap(), OAEP_SHA256_ALG);
    }

    #[test]
    fn the_hand_written_signed_data_is_der_that_cms_reads_back_to_the_same_bytes() {
        let now = SystemTime::now();
        let ca = crate::DevCa::generate("signed data test", now).unwrap();
        let signer = ca.issue_address("a@sender.example", now).unwrap();
        // with intermediates (and a root, never sent), to check the SET OF order
        let other = crate::DevCa::generate("another", now).unwrap();
        let chained = Identity::new(
            signer.key().clone(),
            signer.certificate().clone(),
            vec![
                ca.issue_domain("b.example", now)
                    .unwrap()
                    .certificate()
                    .clone(),
                other
                    .issue_domain("c.example", now)
                    .unwrap()
                    .certificate()
                    .clone(),
                ca.certificate().clone(),
            ],
        )
        .unwrap();
        let content: [&[u8]; 2] = [b"Content-Type: text/plain\r\n\r\n", b"hello"];
        let signature = Signature::new(&content, &chained, now).unwrap();
        assert_eq!(signature.certificates.len(), 3);
        let mut der = vec![0u8; Out::measure(|o| signature.write(o)).unwrap()];
        Out::fill(&mut der, |o| signature.write(o)).unwrap();
        // cms checks DER (SET OF order included) and encodes it again the same way
        let ci = ContentInfo::from_der(&der).unwrap();
        assert_eq!(ci.to_der().unwrap(), der);
        let sd: cms::signed_data::SignedData = ci.content.decode_as().unwrap();
        assert_eq!(sd.to_der().unwrap(), ci.content.to_der().unwrap());
        assert_eq!(sd.version, CmsVersion::V1);
        assert_eq!(sd.certificates.unwrap().0.len(), 3);
        let signed = content.concat();
        let verified = crate::inbound::verify_signed_data(&der, Some(&signed)).unwrap();
        assert!(verified.signers.iter().all(|s| s.outcome.is_ok()));
    }

    #[test]
    fn the_hand_written_envelope_is_der_that_cms_reads_and_that_decrypts_back() {
        let now = SystemTime::now();
        let ca = crate::DevCa::generate("envelope test", now).unwrap();
        let id = ca.issue_domain("envelope.example", now).unwrap();
        let recipients = [Recipient::new(id.certificate().clone())];
        // several recipients, to check the SET OF order of the recipient infos
        let more = ca.issue_address("x@envelope.example", now).unwrap();
        let recipients = [
            recipients[0].clone(),
            Recipient {
                certificate: more.certificate().clone(),
                key_transport: KeyTransport::RsaPkcs1v15,
            },
            Recipient::new(
                ca.issue_domain("z.example", now)
                    .unwrap()
                    .certificate()
                    .clone(),
            ),
        ];
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
            assert_eq!(env.recip_infos.0.len(), 3);
            // X.690 §11.6: the recipient infos in ascending order of their encodings
            // (`cms` orders its own SET OF otherwise, so it is not the reference)
            let body = crate::ber::read(&der, 0).unwrap();
            let explicit = crate::ber::children(&der, &body).unwrap()[1];
            let env_tlv = crate::ber::children(&der, &explicit).unwrap()[0];
            let set = crate::ber::children(&der, &env_tlv).unwrap()[1];
            let infos: Vec<&[u8]> = crate::ber::children(&der, &set)
                .unwrap()
                .iter()
                .map(|t| &der[t.start..t.end])
                .collect();
            assert_eq!(infos.len(), 3);
            assert!(infos.is_sorted(), "{n}");
            let ct = env.encrypted_content.encrypted_content.unwrap();
            assert_eq!(ct.as_bytes().len(), cbc_len(entity.len()), "length {n}");
            for key in [&id, &more] {
                let plain =
                    crate::inbound::decrypt(der.clone(), std::slice::from_ref(key)).unwrap();
                assert!(plain == entity, "length {n}");
            }
        }
    }

    #[test]
    fn encodings_lying_one_after_another_are_sorted_in_place() {
        let items: [&[u8]; 4] = [b"\x30\x03zzz", b"\x30\x01a", b"\x30\x02ab", b"\x30\x01b"];
        let mut buf = items.concat();
        let mut lens: Vec<usize> = items.iter().map(|i| i.len()).collect();
        sort_set_of(&mut buf, &mut lens);
        let mut want = items.to_vec();
        want.sort();
        assert_eq!(buf, want.concat());
        assert_eq!(lens, want.iter().map(|i| i.len()).collect::<Vec<_>>());
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
