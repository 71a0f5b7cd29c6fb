//! PKCS#12 (RFC 7292) import of a private key and its certificates.
//!
//! Only the modern encryption OpenSSL 3 writes by default is read: PBES2 with
//! PBKDF2 and AES (RFC 8018). Legacy RC2/3DES files are refused with a clear
//! error. The integrity MAC is not checked: a wrong password already fails the
//! PBES2 decryption, and the imported key is checked against its certificate.

use der::Decode;
use der::asn1::ObjectIdentifier as Oid;
use pkcs8::DecodePrivateKey;
use x509_cert::Certificate;

use crate::ber::{self, Tlv};
use crate::error::ImportError;

const ID_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.1");
const ID_ENCRYPTED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.6");
const KEY_BAG: Oid = Oid::new_unwrap("1.2.840.113549.1.12.10.1.1");
const SHROUDED_KEY_BAG: Oid = Oid::new_unwrap("1.2.840.113549.1.12.10.1.2");
const CERT_BAG: Oid = Oid::new_unwrap("1.2.840.113549.1.12.10.1.3");
const SAFE_CONTENTS_BAG: Oid = Oid::new_unwrap("1.2.840.113549.1.12.10.1.6");
const X509_CERTIFICATE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.22.1");
/// RFC 7292 appendix C: pbeWithSHAAnd* (RC2, RC4, 3DES), all legacy.
const LEGACY_PBE_ARC: &str = "1.2.840.113549.1.12.1.";

const MAX_NESTING: usize = 4;

fn bad(what: &'static str) -> ImportError {
    ImportError::Pkcs12(what)
}

/// Read an RSA private key and all certificates from a PKCS#12 file.
pub fn parse_pkcs12(
    input: &[u8],
    password: &str,
) -> Result<(rsa::PrivateKey, Vec<Certificate>), ImportError> {
    let pfx = ber::read(input, 0).map_err(|_| bad("not a PKCS#12 file"))?;
    let fields = ber::children(input, &pfx).map_err(|_| bad("not a PKCS#12 file"))?;
    // PFX ::= SEQUENCE { version INTEGER (v3), authSafe ContentInfo, macData OPTIONAL }
    let auth_safe = fields.get(1).ok_or(bad("not a PKCS#12 file"))?;
    let (oid, content) = content_info(input, auth_safe)?;
    if oid != ID_DATA {
        return Err(bad("public-key integrity mode is not supported"));
    }
    let auth_safe = octets_of_explicit(input, &content)?;
    let mut keys = Vec::new();
    let mut certs = Vec::new();
    let top = ber::read(&auth_safe, 0).map_err(|_| bad("damaged AuthenticatedSafe"))?;
    for ci in ber::children(&auth_safe, &top).map_err(|_| bad("damaged AuthenticatedSafe"))? {
        let (oid, content) = content_info(&auth_safe, &ci)?;
        let safe_contents = if oid == ID_DATA {
            octets_of_explicit(&auth_safe, &content)?
        } else if oid == ID_ENCRYPTED_DATA {
            decrypt_encrypted_data(&auth_safe, &content, password)?
        } else {
            return Err(bad("enveloped PKCS#12 content is not supported"));
        };
        read_safe_contents(&safe_contents, password, &mut keys, &mut certs, 0)?;
    }
    let key = match keys.len() {
        0 => return Err(ImportError::NoPrivateKey),
        1 => keys.remove(0),
        _ => return Err(bad("the file holds more than one private key")),
    };
    if certs.is_empty() {
        return Err(ImportError::NoCertificate);
    }
    Ok((key, certs))
}

/// ContentInfo ::= SEQUENCE { contentType OID, content [0] EXPLICIT ANY }
fn content_info(buf: &[u8], ci: &Tlv) -> Result<(Oid, Tlv), ImportError> {
    let parts = ber::children(buf, ci).map_err(|_| bad("damaged ContentInfo"))?;
    let (Some(oid), Some(content)) = (parts.first(), parts.get(1)) else {
        return Err(bad("damaged ContentInfo"));
    };
    let oid = Oid::from_der(&buf[oid.start..oid.end]).map_err(|_| bad("damaged ContentInfo"))?;
    Ok((oid, *content))
}

/// The OCTET STRING inside an explicit `[0]`.
fn octets_of_explicit(buf: &[u8], explicit: &Tlv) -> Result<Vec<u8>, ImportError> {
    let inner = ber::children(buf, explicit)
        .ok()
        .and_then(|c| c.into_iter().next())
        .ok_or(bad("empty content"))?;
    ber::octets(buf, &inner).map_err(|_| bad("damaged OCTET STRING"))
}

/// EncryptedData ::= SEQUENCE { version, EncryptedContentInfo }
fn decrypt_encrypted_data(
    buf: &[u8],
    explicit: &Tlv,
    password: &str,
) -> Result<Vec<u8>, ImportError> {
    let ed = ber::children(buf, explicit)
        .ok()
        .and_then(|c| c.into_iter().next())
        .ok_or(bad("empty EncryptedData"))?;
    let fields = ber::children(buf, &ed).map_err(|_| bad("damaged EncryptedData"))?;
    let eci = fields.get(1).ok_or(bad("damaged EncryptedData"))?;
    let eci = ber::children(buf, eci).map_err(|_| bad("damaged EncryptedData"))?;
    let (Some(alg), Some(content)) = (eci.get(1), eci.get(2)) else {
        return Err(bad("EncryptedData without content"));
    };
    let alg_der = &buf[alg.start..alg.end];
    check_not_legacy(alg_der)?;
    let scheme =
        pkcs5::EncryptionScheme::try_from(alg_der).map_err(|_| bad("unsupported encryption"))?;
    let ciphertext = ber::octets(buf, content).map_err(|_| bad("damaged EncryptedData"))?;
    scheme
        .decrypt(password.as_bytes(), &ciphertext)
        .map_err(|_| ImportError::WrongPassword)
}

fn check_not_legacy(alg_id_der: &[u8]) -> Result<(), ImportError> {
    let alg = spki::AlgorithmIdentifierOwned::from_der(alg_id_der)
        .map_err(|_| bad("damaged algorithm identifier"))?;
    if alg.oid.to_string().starts_with(LEGACY_PBE_ARC) {
        return Err(ImportError::Pkcs12Legacy);
    }
    Ok(())
}

/// SafeContents ::= SEQUENCE OF SafeBag { bagId, bagValue [0] EXPLICIT, bagAttributes }
fn read_safe_contents(
    buf: &[u8],
    password: &str,
    keys: &mut Vec<rsa::PrivateKey>,
    certs: &mut Vec<Certificate>,
    depth: usize,
) -> Result<(), ImportError> {
    if depth > MAX_NESTING {
        return Err(bad("SafeContents nested too deep"));
    }
    let top = ber::read(buf, 0).map_err(|_| bad("damaged SafeContents"))?;
    for bag in ber::children(buf, &top).map_err(|_| bad("damaged SafeContents"))? {
        let (bag_id, value) = content_info(buf, &bag)?;
        let inner = ber::children(buf, &value)
            .ok()
            .and_then(|c| c.into_iter().next())
            .ok_or(bad("empty SafeBag"))?;
        let inner_der = &buf[inner.start..inner.end];
        if bag_id == SHROUDED_KEY_BAG {
            // EncryptedPrivateKeyInfo ::= SEQUENCE { encryptionAlgorithm, encryptedData }
            let alg = ber::children(buf, &inner)
                .ok()
                .and_then(|c| c.into_iter().next())
                .ok_or(bad("damaged key bag"))?;
            check_not_legacy(&buf[alg.start..alg.end])?;
            let key = rsa::PrivateKey::from_pkcs8_encrypted_der(inner_der, password.as_bytes())
                .map_err(|e| match e {
                    pkcs8::Error::EncryptedPrivateKey(_) => ImportError::WrongPassword,
                    _ => ImportError::NotRsa,
                })?;
            keys.push(key);
        } else if bag_id == KEY_BAG {
            keys.push(rsa::PrivateKey::from_pkcs8_der(inner_der).map_err(|_| ImportError::NotRsa)?);
        } else if bag_id == CERT_BAG {
            // CertBag ::= SEQUENCE { certId OID, certValue [0] EXPLICIT OCTET STRING }
            let (cert_id, cert_value) = content_info(buf, &inner)?;
            if cert_id == X509_CERTIFICATE {
                let der = octets_of_explicit(buf, &cert_value)?;
                certs.push(Certificate::from_der(&der).map_err(|_| ImportError::NoCertificate)?);
            }
        } else if bag_id == SAFE_CONTENTS_BAG {
            read_safe_contents(inner_der, password, keys, certs, depth + 1)?;
        }
    }
    Ok(())
}
