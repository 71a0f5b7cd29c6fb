//! The cryptographic core, on AWS-LC through aws-lc-rs (issue 16): RSA private-
//! and public-key operations, AES-CBC and AES-GCM, SHA-2 digests and randomness.
//! The rest of the crate handles structure only (`cms`, `x509-cert`, `der`, and
//! `pkcs1`/`pkcs8` to read key containers).
//!
//! What stays on RustCrypto, and why, is listed in the README ("Cryptography"):
//! RSA signature *verification* in the few forms aws-lc-rs does not offer
//! (SHA-224, RSA-PSS with a salt other than the digest length, keys outside
//! 2048–8192 bits), the PKCS#12 MAC and PBES2 key decryption. No private-key
//! operation is among them. RSA-OAEP decryption calls AWS-LC's C API directly
//! (`oaep`), because aws-lc-rs offers matched OAEP/MGF1 hashes only.

#[expect(
    unsafe_code,
    reason = "OAEP with mixed hashes has no safe API in aws-lc-rs; the FFI stays in this module"
)]
mod oaep;

use std::sync::{Arc, OnceLock};

use aws_lc_rs::cipher::{
    self, DecryptionContext, EncryptingKey, EncryptionContext, PaddedBlockDecryptingKey,
    UnboundCipherKey,
};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{
    self as lc_rsa, KeyPair, KeySize, OaepPublicEncryptingKey, Pkcs1PrivateDecryptingKey,
    Pkcs1PublicEncryptingKey, PrivateDecryptingKey, PublicEncryptingKey,
};
use aws_lc_rs::{aead, digest, rand, signature};
use der::{Decode, Encode};
use subtle::{ConditionallySelectable, ConstantTimeEq};
use x509_cert::Certificate;
use zeroize::Zeroizing;

use crate::alg::{self, DigestAlg};
use crate::error::ImportError;

pub(crate) use oaep::OaepHash;

/// Names the cryptographic module doing the work, for `--version` and the logs:
/// "AWS-LC 4.2.0 (FIPS 140-3 module)" when AWS-LC runs in FIPS mode (the crate's
/// `fips` feature; it says FIPS_mode() is 1, not that this version is validated),
/// else "AWS-LC 5.12.0 (not FIPS mode)".
pub fn crypto_module() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let version = aws_lc_rs::awslc_version();
        if aws_lc_rs::try_fips_mode().is_ok() {
            format!("AWS-LC {version} (FIPS 140-3 module)")
        } else {
            format!("AWS-LC {version} (not FIPS mode)")
        }
    })
}

/// The operating system's random numbers, through AWS-LC's DRBG.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<(), ()> {
    rand::fill(buf).map_err(|_| ())
}

/// One-shot digest of `parts` in order. `None` for MD5/SHA-1 (never computed).
pub(crate) fn hash(alg: DigestAlg, parts: &[&[u8]]) -> Option<Vec<u8>> {
    let algorithm = digest_algorithm(alg)?;
    let mut ctx = digest::Context::new(algorithm);
    for p in parts {
        ctx.update(p);
    }
    Some(ctx.finish().as_ref().to_vec())
}

fn digest_algorithm(alg: DigestAlg) -> Option<&'static digest::Algorithm> {
    Some(match alg {
        DigestAlg::Sha224 => &digest::SHA224,
        DigestAlg::Sha256 => &digest::SHA256,
        DigestAlg::Sha384 => &digest::SHA384,
        DigestAlg::Sha512 => &digest::SHA512,
        DigestAlg::Weak(_) => return None,
    })
}

/// The RSA public key of a certificate: its SubjectPublicKeyInfo and the modulus
/// and exponent read from it (with `pkcs1`, structure only).
#[derive(Clone, Debug)]
pub(crate) struct PublicKey {
    spki: Vec<u8>,
    n: Vec<u8>,
    e: Vec<u8>,
}

impl PublicKey {
    /// The RSA key of a certificate; `NotRsa` for anything else.
    pub(crate) fn from_certificate(cert: &Certificate) -> Result<Self, ImportError> {
        let spki = cert.tbs_certificate().subject_public_key_info();
        if spki.algorithm.oid != alg::RSA_ENCRYPTION {
            return Err(ImportError::NotRsa);
        }
        let bits = spki
            .subject_public_key
            .as_bytes()
            .ok_or(ImportError::NotRsa)?;
        let rsa = pkcs1::RsaPublicKeyRef::from_der(bits).map_err(|_| ImportError::NotRsa)?;
        let n = strip_zeros(rsa.modulus.as_bytes()).to_vec();
        let e = strip_zeros(rsa.public_exponent.as_bytes()).to_vec();
        if n.is_empty() || e.is_empty() {
            return Err(ImportError::NotRsa);
        }
        Ok(PublicKey {
            spki: spki.to_der().map_err(|_| ImportError::NotRsa)?,
            n,
            e,
        })
    }

    /// Number of significant bits in the modulus.
    pub(crate) fn bits(&self) -> usize {
        modulus_bits(&self.n)
    }

    fn encrypting_key(&self) -> Result<PublicEncryptingKey, String> {
        PublicEncryptingKey::from_der(&self.spki).map_err(|e| e.to_string())
    }

    /// Length of the modulus in bytes: the length of every RSA ciphertext and
    /// signature made with this key.
    pub(crate) fn modulus_len(&self) -> usize {
        self.n.len()
    }

    /// RSAES-OAEP with SHA-256 and MGF1-SHA-256, empty label (RFC 8017 §7.1),
    /// written into `out` ([`modulus_len`](Self::modulus_len) bytes).
    pub(crate) fn encrypt_oaep_sha256(&self, message: &[u8], out: &mut [u8]) -> Result<(), String> {
        let key =
            OaepPublicEncryptingKey::new(self.encrypting_key()?).map_err(|e| e.to_string())?;
        let len = key
            .encrypt(&lc_rsa::OAEP_SHA256_MGF1SHA256, message, out, None)
            .map_err(|e| e.to_string())?
            .len();
        whole(len, out)
    }

    /// RSAES-PKCS1-v1_5 (RFC 8017 §7.2), written into `out`
    /// ([`modulus_len`](Self::modulus_len) bytes).
    pub(crate) fn encrypt_pkcs1v15(&self, message: &[u8], out: &mut [u8]) -> Result<(), String> {
        let key =
            Pkcs1PublicEncryptingKey::new(self.encrypting_key()?).map_err(|e| e.to_string())?;
        let len = key.encrypt(message, out).map_err(|e| e.to_string())?.len();
        whole(len, out)
    }

    /// Verify an RSASSA-PKCS1-v1_5 signature over `message` (which is hashed here).
    pub(crate) fn verify_pkcs1v15(
        &self,
        digest_alg: DigestAlg,
        message: &[u8],
        sig: &[u8],
    ) -> Result<(), String> {
        let params: Option<&'static signature::RsaParameters> = match digest_alg {
            DigestAlg::Sha256 => Some(&signature::RSA_PKCS1_2048_8192_SHA256),
            DigestAlg::Sha384 => Some(&signature::RSA_PKCS1_2048_8192_SHA384),
            DigestAlg::Sha512 => Some(&signature::RSA_PKCS1_2048_8192_SHA512),
            _ => None,
        };
        match params {
            Some(p) if self.in_aws_lc_range() => signature::UnparsedPublicKey::new(p, &self.spki)
                .verify(message, sig)
                .map_err(|_| "the signature does not match the signer's key".to_string()),
            _ => legacy::verify_pkcs1v15(&self.spki, digest_alg, message, sig),
        }
    }

    /// Verify an RSASSA-PSS signature with MGF1 over the same digest and `salt`
    /// bytes of salt (RFC 8017 §8.1, RFC 4055 §3.1).
    pub(crate) fn verify_pss(
        &self,
        digest_alg: DigestAlg,
        salt: usize,
        message: &[u8],
        sig: &[u8],
    ) -> Result<(), String> {
        let params: Option<(&'static signature::RsaParameters, usize)> = match digest_alg {
            DigestAlg::Sha256 => Some((&signature::RSA_PSS_2048_8192_SHA256, 32)),
            DigestAlg::Sha384 => Some((&signature::RSA_PSS_2048_8192_SHA384, 48)),
            DigestAlg::Sha512 => Some((&signature::RSA_PSS_2048_8192_SHA512, 64)),
            _ => None,
        };
        match params {
            // aws-lc-rs verifies PSS with a salt as long as the digest only.
            Some((p, digest_len)) if salt == digest_len && self.in_aws_lc_range() => {
                signature::UnparsedPublicKey::new(p, &self.spki)
                    .verify(message, sig)
                    .map_err(|_| "the signature does not match the signer's key".to_string())
            }
            _ => legacy::verify_pss(&self.spki, digest_alg, salt, message, sig),
        }
    }

    fn in_aws_lc_range(&self) -> bool {
        (2048..=8192).contains(&self.bits())
    }
}

/// A ciphertext must fill its buffer: the DER around it was sized for that.
fn whole(len: usize, out: &[u8]) -> Result<(), String> {
    if len == out.len() {
        Ok(())
    } else {
        Err(format!(
            "{len} bytes of ciphertext for {} bytes of room",
            out.len()
        ))
    }
}

fn strip_zeros(mut bytes: &[u8]) -> &[u8] {
    while let [0, rest @ ..] = bytes {
        bytes = rest;
    }
    bytes
}

fn modulus_bits(n: &[u8]) -> usize {
    let n = strip_zeros(n);
    match n.first() {
        Some(b) => n.len() * 8 - b.leading_zeros() as usize,
        None => 0,
    }
}

/// An RSA private key, held by AWS-LC. Cloning shares the key.
///
/// A key shorter than 2048 bits can be read (so that an import can say
/// "too short" rather than "not a key"), but does nothing: AWS-LC refuses it and
/// [`crate::Identity`] never holds one.
#[derive(Clone)]
pub struct PrivateKey(Arc<Inner>);

struct Inner {
    pkcs8: Zeroizing<Vec<u8>>,
    n: Vec<u8>,
    e: Vec<u8>,
    ops: Option<Ops>,
}

struct Ops {
    signing: KeyPair,
    decrypting: PrivateDecryptingKey,
    oaep: oaep::OaepKey,
}

impl std::fmt::Debug for PrivateKey {
    // A key never appears in a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RsaKey")
            .field("bits", &self.bits())
            .finish_non_exhaustive()
    }
}

/// Two keys are equal when their RSAPrivateKey (RFC 8017 §A.1.2) is: DER, so
/// the same key is the same bytes whichever container it came in. Compared in
/// constant time.
impl PartialEq for PrivateKey {
    fn eq(&self, other: &Self) -> bool {
        fn inner(pkcs8: &[u8]) -> &[u8] {
            pkcs8::PrivateKeyInfoRef::from_der(pkcs8)
                .map(|i| i.private_key.as_bytes())
                .unwrap_or_default()
        }
        let (a, b) = (inner(&self.0.pkcs8), inner(&other.0.pkcs8));
        !a.is_empty() && bool::from(a.ct_eq(b))
    }
}

impl Eq for PrivateKey {}

impl PrivateKey {
    /// Read an unencrypted PKCS#8 `PrivateKeyInfo` holding an RSA key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, ImportError> {
        // Structure with `pkcs8`/`pkcs1` (to learn the size and the public half);
        // the key itself goes to AWS-LC.
        let info =
            pkcs8::PrivateKeyInfoRef::from_der(der).map_err(|_| ImportError::NoPrivateKey)?;
        if info.algorithm.oid != alg::RSA_ENCRYPTION {
            return Err(ImportError::NotRsa);
        }
        let rsa = pkcs1::RsaPrivateKeyRef::from_der(info.private_key.as_bytes())
            .map_err(|_| ImportError::NoPrivateKey)?;
        let n = strip_zeros(rsa.modulus.as_bytes()).to_vec();
        let e = strip_zeros(rsa.public_exponent.as_bytes()).to_vec();
        let ops = if modulus_bits(&n) < crate::keys::MIN_RSA_BITS {
            None
        } else {
            Some(Ops {
                signing: KeyPair::from_pkcs8(der).map_err(|_| ImportError::NoPrivateKey)?,
                decrypting: PrivateDecryptingKey::from_pkcs8(der)
                    .map_err(|_| ImportError::NoPrivateKey)?,
                oaep: oaep::OaepKey::from_pkcs8(der).map_err(|()| ImportError::NoPrivateKey)?,
            })
        };
        Ok(PrivateKey(Arc::new(Inner {
            pkcs8: Zeroizing::new(der.to_vec()),
            n,
            e,
            ops,
        })))
    }

    /// Read a PKCS#1 `RSAPrivateKey` (it is rewrapped as PKCS#8, RFC 5208 §5).
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self, ImportError> {
        pkcs1::RsaPrivateKeyRef::from_der(der).map_err(|_| ImportError::NoPrivateKey)?;
        // PrivateKeyInfo ::= SEQUENCE { version 0, rsaEncryption with NULL, OCTET STRING }
        let algorithm = crate::outbound::tlv(
            0x30,
            &[
                alg::RSA_ENCRYPTION
                    .to_der()
                    .map_err(|_| ImportError::NoPrivateKey)?,
                vec![0x05, 0x00],
            ]
            .concat(),
        );
        let body = Zeroizing::new(
            [
                vec![0x02, 0x01, 0x00],
                algorithm,
                crate::outbound::tlv(0x04, der),
            ]
            .concat(),
        );
        let pkcs8 = Zeroizing::new(crate::outbound::tlv(0x30, &body));
        PrivateKey::from_pkcs8_der(&pkcs8)
    }

    /// A new RSA key of `bits` bits (2048, 3072 or 4096) from AWS-LC.
    pub fn generate(bits: usize) -> Result<Self, String> {
        let size = match bits {
            2048 => KeySize::Rsa2048,
            3072 => KeySize::Rsa3072,
            4096 => KeySize::Rsa4096,
            other => return Err(format!("{other}-bit RSA keys are not generated")),
        };
        let pair = KeyPair::generate(size).map_err(|e| e.to_string())?;
        let der = pair.as_der().map_err(|e| e.to_string())?;
        PrivateKey::from_pkcs8_der(der.as_ref()).map_err(|e| e.to_string())
    }

    /// Number of significant bits in the modulus.
    pub fn bits(&self) -> usize {
        modulus_bits(&self.0.n)
    }

    /// The key as unencrypted PKCS#8 DER (zeroed on drop).
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.0.pkcs8.to_vec())
    }

    /// Whether `public` is this key's public half.
    pub(crate) fn matches(&self, public: &PublicKey) -> bool {
        public.n == self.0.n && public.e == self.0.e
    }

    fn ops(&self) -> Result<&Ops, String> {
        self.0
            .ops
            .as_ref()
            .ok_or_else(|| format!("a {}-bit RSA key is not used", self.bits()))
    }

    /// The public key as a DER SubjectPublicKeyInfo.
    pub(crate) fn public_key_spki_der(&self) -> Result<Vec<u8>, String> {
        let public = self.ops()?.decrypting.public_key();
        let der = public.as_der().map_err(|e| e.to_string())?;
        Ok(der.as_ref().to_vec())
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 over `message` (hashed here).
    pub(crate) fn sign_pkcs1v15_sha256(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let pair = &self.ops()?.signing;
        let mut sig = vec![0u8; pair.public_modulus_len()];
        pair.sign(
            &signature::RSA_PKCS1_SHA256,
            &rand::SystemRandom::new(),
            message,
            &mut sig,
        )
        .map_err(|e| e.to_string())?;
        Ok(sig)
    }

    /// RSASSA-PKCS1-v1_5 with SHA-384 over `message` (hashed here): JOSE's `RS384`,
    /// for the client assertions of SMART Backend Services.
    pub fn sign_rs384(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let pair = &self.ops()?.signing;
        let mut sig = vec![0u8; pair.public_modulus_len()];
        pair.sign(
            &signature::RSA_PKCS1_SHA384,
            &rand::SystemRandom::new(),
            message,
            &mut sig,
        )
        .map_err(|e| e.to_string())?;
        Ok(sig)
    }

    /// The public modulus and exponent, big-endian without leading zeros (a JWK's
    /// `n` and `e`).
    pub fn public_numbers(&self) -> (&[u8], &[u8]) {
        (&self.0.n, &self.0.e)
    }

    /// Unwrap a content-encryption key of `key_len` bytes with implicit
    /// rejection (RFC 3218 §2.3.2; the same idea as RFC 8017's errata and
    /// OpenSSL 3.2's implicit rejection): a random key is drawn *before* the RSA
    /// operation, and whatever the padding check says, the result is selected in
    /// constant time between the unwrapped key and the random one. A bad key
    /// transport therefore surfaces only later, as a content that does not
    /// decrypt, after the same work as a bad content. `oaep` is `None` for
    /// PKCS#1 v1.5, else the OAEP hash and the MGF1 hash (RFC 4055 §4.1), which
    /// may differ: both go to AWS-LC's EVP API (`oaep`), since aws-lc-rs takes
    /// matched pairs only.
    pub(crate) fn unwrap_key_implicit(
        &self,
        oaep: Option<(OaepHash, OaepHash)>,
        wrapped: &[u8],
        key_len: usize,
    ) -> Result<Zeroizing<Vec<u8>>, String> {
        let mut fallback = Zeroizing::new(vec![0u8; key_len]);
        fill_random(&mut fallback).map_err(|()| "the system RNG failed".to_string())?;
        let ops = self.ops()?;
        let decrypting = ops.decrypting.clone();
        let mut out = Zeroizing::new(vec![0u8; decrypting.key_size_bytes()]);
        // AWS-LC checks the padding in constant time and reports one error for
        // every failure; from here on no branch depends on the outcome.
        let result = match oaep {
            None => Pkcs1PrivateDecryptingKey::new(decrypting)
                .and_then(|k| k.decrypt(wrapped, &mut out).map(|p| p.len()))
                .map_err(|_| ()),
            Some((hash, mgf1)) => ops.oaep.decrypt(hash, mgf1, wrapped, &mut out),
        };
        let (ok, len) = match result {
            Ok(len) => (1u8, len),
            Err(()) => (0u8, 0),
        };
        let good = subtle::Choice::from(ok) & (len as u64).ct_eq(&(key_len as u64));
        let mut cek = Zeroizing::new(vec![0u8; key_len]);
        for (i, b) in cek.iter_mut().enumerate() {
            let real = out.get(i).copied().unwrap_or(0);
            *b = u8::conditional_select(&fallback[i], &real, good);
        }
        Ok(cek)
    }
}

fn cipher_algorithm(key: &[u8]) -> Result<&'static cipher::Algorithm, ()> {
    Ok(match key.len() {
        16 => &cipher::AES_128,
        24 => &cipher::AES_192,
        32 => &cipher::AES_256,
        _ => return Err(()),
    })
}

/// AES-CBC with PKCS#7 padding (RFC 3565), decrypted in place; returns the
/// length of the plaintext at the start of `buf`.
pub(crate) fn aes_cbc_decrypt(key: &[u8], iv: &[u8], buf: &mut [u8]) -> Result<usize, ()> {
    let iv: [u8; 16] = iv.try_into().map_err(|_| ())?;
    let key = UnboundCipherKey::new(cipher_algorithm(key)?, key).map_err(|_| ())?;
    let key = PaddedBlockDecryptingKey::cbc_pkcs7(key).map_err(|_| ())?;
    let plain = key
        .decrypt(buf, DecryptionContext::Iv128(iv.into()))
        .map_err(|_| ())?;
    Ok(plain.len())
}

/// AES-CBC encryption of whole blocks in place (the caller pads), for content
/// encrypted in pieces: the IV of each piece is the last ciphertext block of the
/// one before.
pub(crate) struct CbcEncryptor {
    key: EncryptingKey,
    iv: [u8; 16],
}

impl CbcEncryptor {
    pub(crate) fn new(key: &[u8], iv: [u8; 16]) -> Result<Self, ()> {
        let key = UnboundCipherKey::new(cipher_algorithm(key)?, key).map_err(|_| ())?;
        Ok(CbcEncryptor {
            key: EncryptingKey::cbc(key).map_err(|_| ())?,
            iv,
        })
    }

    /// Encrypt `blocks` (a multiple of 16 bytes) in place, chaining on.
    pub(crate) fn encrypt(&mut self, blocks: &mut [u8]) -> Result<(), ()> {
        if blocks.is_empty() {
            return Ok(());
        }
        if !blocks.len().is_multiple_of(16) {
            return Err(());
        }
        self.key
            .less_safe_encrypt(blocks, EncryptionContext::Iv128(self.iv.into()))
            .map_err(|_| ())?;
        let last = &blocks[blocks.len() - 16..];
        self.iv.copy_from_slice(last);
        Ok(())
    }
}

/// An AES-GCM key of 16, 24 or 32 bytes.
fn gcm_key(key: &[u8]) -> Result<aead::LessSafeKey, ()> {
    let algorithm = match key.len() {
        16 => &aead::AES_128_GCM,
        24 => &aead::AES_192_GCM,
        32 => &aead::AES_256_GCM,
        _ => return Err(()),
    };
    Ok(aead::LessSafeKey::new(
        aead::UnboundKey::new(algorithm, key).map_err(|_| ())?,
    ))
}

/// AES-GCM (RFC 5084) with a 12-byte nonce and a 16-byte tag, opened in place.
pub(crate) fn aes_gcm_open(
    key: &[u8],
    nonce: &[u8],
    aad: &[u8],
    buf: &mut [u8],
    tag: &[u8],
) -> Result<(), ()> {
    let key = gcm_key(key)?;
    let nonce = aead::Nonce::try_assume_unique_for_key(nonce).map_err(|_| ())?;
    key.open_in_place_separate_tag(nonce, aead::Aad::from(aad), tag, buf)
        .map(|_| ())
        .map_err(|_| ())
}

/// AES-GCM sealing with a random 12-byte nonce: returns (nonce, tag).
#[cfg(test)]
pub(crate) fn aes_gcm_seal(
    key: &[u8],
    aad: &[u8],
    buf: &mut [u8],
) -> Result<([u8; 12], [u8; 16]), ()> {
    let key = gcm_key(key)?;
    let mut nonce = [0u8; 12];
    fill_random(&mut nonce)?;
    let tag = key
        .seal_in_place_separate_tag(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(aad),
            buf,
        )
        .map_err(|_| ())?;
    let mut out = [0u8; 16];
    out.copy_from_slice(tag.as_ref());
    Ok((nonce, out))
}

/// RSA signature verification in the forms aws-lc-rs does not offer, on the
/// RustCrypto `rsa` crate. Public-key operations only: the Marvin timing side
/// channel (RUSTSEC-2023-0071) concerns private-key operations, none of which
/// is here.
mod legacy {
    use pkcs8::DecodePublicKey;

    use crate::alg::DigestAlg;

    fn key(spki: &[u8]) -> Result<rsa::PublicKey, String> {
        rsa::PublicKey::from_public_key_der(spki).map_err(|e| e.to_string())
    }

    fn bad(e: impl std::fmt::Display) -> String {
        format!("the signature does not match the signer's key ({e})")
    }

    pub(super) fn verify_pkcs1v15(
        spki: &[u8],
        digest: DigestAlg,
        message: &[u8],
        sig: &[u8],
    ) -> Result<(), String> {
        let key = key(spki)?;
        let hashed = super::hash(digest, &[message]).ok_or("weak digest")?;
        let r = match digest {
            DigestAlg::Sha224 => key.pkcs1v15_verify_prehash::<sha2::Sha224>(&hashed, sig),
            DigestAlg::Sha256 => key.pkcs1v15_verify_prehash::<sha2::Sha256>(&hashed, sig),
            DigestAlg::Sha384 => key.pkcs1v15_verify_prehash::<sha2::Sha384>(&hashed, sig),
            DigestAlg::Sha512 => key.pkcs1v15_verify_prehash::<sha2::Sha512>(&hashed, sig),
            DigestAlg::Weak(_) => Err(rsa::Error::InvalidPaddingScheme),
        };
        r.map_err(bad)
    }

    pub(super) fn verify_pss(
        spki: &[u8],
        digest: DigestAlg,
        salt: usize,
        message: &[u8],
        sig: &[u8],
    ) -> Result<(), String> {
        let key = key(spki)?;
        let hashed = super::hash(digest, &[message]).ok_or("weak digest")?;
        let r = match digest {
            DigestAlg::Sha224 => {
                key.verify(rsa::Pss::<sha2::Sha224>::new_with_salt(salt), &hashed, sig)
            }
            DigestAlg::Sha256 => {
                key.verify(rsa::Pss::<sha2::Sha256>::new_with_salt(salt), &hashed, sig)
            }
            DigestAlg::Sha384 => {
                key.verify(rsa::Pss::<sha2::Sha384>::new_with_salt(salt), &hashed, sig)
            }
            DigestAlg::Sha512 => {
                key.verify(rsa::Pss::<sha2::Sha512>::new_with_salt(salt), &hashed, sig)
            }
            DigestAlg::Weak(_) => Err(rsa::Error::InvalidPaddingScheme),
        };
        r.map_err(bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_gcm_opens_what_it_seals_and_refuses_a_changed_byte() {
        let key = [7u8; 32];
        let mut buf = b"Content-Type: text/plain\r\n\r\nhello".to_vec();
        let (nonce, tag) = aes_gcm_seal(&key, b"aad", &mut buf).unwrap();
        let mut copy = buf.clone();
        aes_gcm_open(&key, &nonce, b"aad", &mut copy, &tag).unwrap();
        assert!(copy.starts_with(b"Content-Type"));
        buf[0] ^= 1;
        assert!(aes_gcm_open(&key, &nonce, b"aad", &mut buf, &tag).is_err());
    }

    #[test]
    fn cbc_in_pieces_is_cbc_in_one_go() {
        let key = [9u8; 16];
        let iv = [3u8; 16];
        let plain: Vec<u8> = (0..96u8).collect();
        let mut whole = plain.clone();
        CbcEncryptor::new(&key, iv)
            .unwrap()
            .encrypt(&mut whole)
            .unwrap();
        let mut pieces = plain.clone();
        let mut enc = CbcEncryptor::new(&key, iv).unwrap();
        let (a, b) = pieces.split_at_mut(32);
        enc.encrypt(a).unwrap();
        enc.encrypt(b).unwrap();
        assert_eq!(whole, pieces);
    }

    #[test]
    fn the_module_is_named() {
        let module = crypto_module();
        let mode = if cfg!(feature = "fips") {
            "(FIPS 140-3 module)"
        } else {
            "(not FIPS mode)"
        };
        assert!(
            module.starts_with("AWS-LC ") && module.ends_with(mode),
            "{module}"
        );
    }
}
