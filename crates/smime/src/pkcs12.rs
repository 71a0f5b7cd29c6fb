//! PKCS#12 (RFC 7292) import of a private key and its certificates.
//!
//! Only the modern encryption OpenSSL 3 writes by default is read: PBES2 with
//! PBKDF2 and AES (RFC 8018). Legacy RC2/3DES files are refused with a clear
//! error. The integrity MAC (RFC 7292 §4, HMAC with SHA-1/SHA-2 keyed by the
//! Appendix B KDF) is checked first, so a wrong password is always reported as
//! such rather than as a damaged file.

use der::Decode;
use der::asn1::ObjectIdentifier as Oid;
use x509_cert::Certificate;

use crate::ber::{self, Tlv};
use crate::crypto::PrivateKey;
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
) -> Result<(PrivateKey, Vec<Certificate>), ImportError> {
    let pfx = ber::read(input, 0).map_err(|_| bad("not a PKCS#12 file"))?;
    let fields = ber::children(input, &pfx).map_err(|_| bad("not a PKCS#12 file"))?;
    // PFX ::= SEQUENCE { version INTEGER (v3), authSafe ContentInfo, macData OPTIONAL }
    let auth_safe = fields.get(1).ok_or(bad("not a PKCS#12 file"))?;
    let (oid, content) = content_info(input, auth_safe)?;
    if oid != ID_DATA {
        return Err(bad("public-key integrity mode is not supported"));
    }
    let auth_safe = octets_of_explicit(input, &content)?;
    if let Some(mac_data) = fields.get(2) {
        check_mac(input, mac_data, &auth_safe, password)?;
    }
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
    keys: &mut Vec<PrivateKey>,
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
            // PBES2 (RFC 8018) is undone by RustCrypto's `pkcs8`/`pkcs5` (README
            // "Cryptography"); the key itself goes to AWS-LC.
            let info = pkcs8::EncryptedPrivateKeyInfoRef::try_from(inner_der)
                .map_err(|_| ImportError::NotRsa)?;
            let plain = info.decrypt(password.as_bytes()).map_err(|e| match e {
                pkcs8::Error::EncryptedPrivateKey(_) => ImportError::WrongPassword,
                _ => ImportError::NotRsa,
            })?;
            keys.push(
                PrivateKey::from_pkcs8_der(plain.as_bytes()).map_err(|_| ImportError::NotRsa)?,
            );
        } else if bag_id == KEY_BAG {
            keys.push(PrivateKey::from_pkcs8_der(inner_der).map_err(|_| ImportError::NotRsa)?);
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

const SHA1: Oid = Oid::new_unwrap("1.3.14.3.2.26");
const SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
const SHA384: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.2");
const SHA512: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.3");
/// Upper bound on MAC iterations a file may ask for (OpenSSL writes 2048).
const MAX_MAC_ITERATIONS: u64 = 10_000_000;

/// MacData ::= SEQUENCE { mac DigestInfo, macSalt OCTET STRING, iterations INTEGER DEFAULT 1 }
/// A MAC algorithm this reader does not know (PBMAC1) is left unchecked; the
/// decryption and the key/certificate match still guard the import.
fn check_mac(
    buf: &[u8],
    mac_data: &Tlv,
    auth_safe: &[u8],
    password: &str,
) -> Result<(), ImportError> {
    let damaged = || bad("damaged MacData");
    let fields = ber::children(buf, mac_data).map_err(|_| damaged())?;
    let digest_info = fields.first().ok_or_else(damaged)?;
    let salt = fields.get(1).ok_or_else(damaged)?;
    let salt = ber::octets(buf, salt).map_err(|_| damaged())?;
    let iterations = match fields.get(2) {
        Some(t) => {
            let bytes = &buf[t.start..t.end];
            let value = der::asn1::Uint::from_der(bytes).map_err(|_| damaged())?;
            let mut n: u64 = 0;
            for b in value.as_bytes() {
                n = n
                    .checked_mul(256)
                    .and_then(|n| n.checked_add(u64::from(*b)))
                    .ok_or_else(damaged)?;
            }
            n
        }
        None => 1,
    };
    if iterations == 0 || iterations > MAX_MAC_ITERATIONS {
        return Err(damaged());
    }
    let di = ber::children(buf, digest_info).map_err(|_| damaged())?;
    let (Some(alg), Some(expected)) = (di.first(), di.get(1)) else {
        return Err(damaged());
    };
    let alg_fields = ber::children(buf, alg).map_err(|_| damaged())?;
    let oid = alg_fields.first().ok_or_else(damaged)?;
    let oid = Oid::from_der(&buf[oid.start..oid.end]).map_err(|_| damaged())?;
    let expected = ber::octets(buf, expected).map_err(|_| damaged())?;
    let pw = bmp_password(password);
    let computed = if oid == SHA1 {
        pkcs12_mac::<sha1::Sha1>(&pw, &salt, iterations, auth_safe, 64)
    } else if oid == SHA256 {
        pkcs12_mac::<sha2::Sha256>(&pw, &salt, iterations, auth_safe, 64)
    } else if oid == SHA384 {
        pkcs12_mac::<sha2::Sha384>(&pw, &salt, iterations, auth_safe, 128)
    } else if oid == SHA512 {
        pkcs12_mac::<sha2::Sha512>(&pw, &salt, iterations, auth_safe, 128)
    } else {
        return Ok(());
    };
    use subtle_eq::ct_eq;
    if ct_eq(&computed, &expected) {
        Ok(())
    } else {
        Err(ImportError::WrongPassword)
    }
}

mod subtle_eq {
    /// Compares without an early exit.
    pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// RFC 7292 Appendix B.1: the password as a BMPString with a two-byte terminator.
fn bmp_password(password: &str) -> zeroize::Zeroizing<Vec<u8>> {
    let mut out = Vec::with_capacity(password.len() * 2 + 2);
    for unit in password.encode_utf16() {
        out.extend_from_slice(&unit.to_be_bytes());
    }
    out.extend_from_slice(&[0, 0]);
    zeroize::Zeroizing::new(out)
}

/// HMAC over `data` with the key from the Appendix B.2 KDF (ID 3, key length = hash
/// length). `block` is the hash's block size (v).
fn pkcs12_mac<D: sha2::Digest>(
    password: &[u8],
    salt: &[u8],
    iterations: u64,
    data: &[u8],
    block: usize,
) -> Vec<u8> {
    let u = <D as sha2::Digest>::output_size();
    let key = pkcs12_kdf::<D>(3, password, salt, iterations, u, block);
    hmac::<D>(&key, data, block)
}

/// RFC 7292 Appendix B.2.
fn pkcs12_kdf<D: sha2::Digest>(
    id: u8,
    password: &[u8],
    salt: &[u8],
    iterations: u64,
    n: usize,
    v: usize,
) -> Vec<u8> {
    let fill = |src: &[u8]| -> Vec<u8> {
        if src.is_empty() {
            return Vec::new();
        }
        let len = src.len().div_ceil(v) * v;
        src.iter().cycle().take(len).copied().collect()
    };
    let d = vec![id; v];
    let mut i: Vec<u8> = fill(salt);
    i.extend(fill(password));
    let u = <D as sha2::Digest>::output_size();
    let c = n.div_ceil(u);
    let mut out = Vec::with_capacity(c * u);
    for _ in 0..c {
        let mut a = D::new()
            .chain_update(&d)
            .chain_update(&i)
            .finalize()
            .to_vec();
        for _ in 1..iterations {
            a = D::digest(&a).to_vec();
        }
        out.extend_from_slice(&a);
        let b: Vec<u8> = a.iter().cycle().take(v).copied().collect();
        for chunk in i.chunks_mut(v) {
            // I_j = (I_j + B + 1) mod 2^(8v), big-endian
            let mut carry: u16 = 1;
            for k in (0..chunk.len()).rev() {
                let sum = u16::from(chunk[k]) + u16::from(b[k]) + carry;
                chunk[k] = (sum & 0xff) as u8;
                carry = sum >> 8;
            }
        }
    }
    out.truncate(n);
    out
}

/// RFC 2104 HMAC.
fn hmac<D: sha2::Digest>(key: &[u8], data: &[u8], block: usize) -> Vec<u8> {
    let mut k = if key.len() > block {
        D::digest(key).to_vec()
    } else {
        key.to_vec()
    };
    k.resize(block, 0);
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = D::new().chain_update(&ipad).chain_update(data).finalize();
    D::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac::<sha2::Sha256>(b"Jefe", b"what do ya want for nothing?", 64);
        assert_eq!(
            mac.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
