//! RSAES-OAEP decryption (RFC 8017 §7.1.2) with any OAEP hash and any MGF1 hash,
//! through AWS-LC's EVP API. aws-lc-rs offers only matched pairs, but HISPs send
//! others: Java's default `OAEPParameterSpec` for SHA-256 is SHA-256 with
//! MGF1-SHA-1. This is the crate's only unsafe code; it calls the AWS-LC that
//! aws-lc-rs links (`aws-lc-sys`, or `aws-lc-fips-sys` under `fips`, which has
//! the same C API).

use std::mem::MaybeUninit;
use std::ptr::{self, NonNull};

#[cfg(feature = "fips")]
use aws_lc_fips_sys as sys;
// Both features on: aws-lc-rs picks the FIPS module, and so does this.
#[cfg(not(feature = "fips"))]
use aws_lc_sys as sys;

use crate::alg;

/// A digest for the OAEP hash or for MGF1 (RFC 4055 §2.1 names them by OID).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OaepHash {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl OaepHash {
    /// The digest named by `oid`; `None` for any other.
    pub(crate) fn from_oid(oid: &der::asn1::ObjectIdentifier) -> Option<Self> {
        Some(match *oid {
            alg::ID_SHA1 => OaepHash::Sha1,
            alg::ID_SHA224 => OaepHash::Sha224,
            alg::ID_SHA256 => OaepHash::Sha256,
            alg::ID_SHA384 => OaepHash::Sha384,
            alg::ID_SHA512 => OaepHash::Sha512,
            _ => return None,
        })
    }

    fn md(self) -> *const sys::EVP_MD {
        // SAFETY: these return pointers to static, immutable EVP_MD tables; they
        // take no arguments and cannot fail.
        unsafe {
            match self {
                OaepHash::Sha1 => sys::EVP_sha1(),
                OaepHash::Sha224 => sys::EVP_sha224(),
                OaepHash::Sha256 => sys::EVP_sha256(),
                OaepHash::Sha384 => sys::EVP_sha384(),
                OaepHash::Sha512 => sys::EVP_sha512(),
            }
        }
    }
}

/// An `EVP_PKEY` this code owns (one reference), freed on drop.
struct Pkey(NonNull<sys::EVP_PKEY>);

// SAFETY: an EVP_PKEY is reference-counted with atomics and, once parsed, only
// read here: each decryption makes its own EVP_PKEY_CTX, and AWS-LC's RSA
// guards its lazily built caches (Montgomery contexts, blinding) with its own
// lock. aws-lc-rs shares its keys across threads on the same grounds.
unsafe impl Send for Pkey {}
// SAFETY: as for Send.
unsafe impl Sync for Pkey {}

impl Drop for Pkey {
    fn drop(&mut self) {
        // SAFETY: the pointer came from EVP_parse_private_key, which handed over
        // one reference; this is its only release.
        unsafe { sys::EVP_PKEY_free(self.0.as_ptr()) }
    }
}

/// An `EVP_PKEY_CTX` this code owns, freed on drop (it holds its own reference
/// to the key, so the order of the two drops does not matter).
struct PkeyCtx(NonNull<sys::EVP_PKEY_CTX>);

impl Drop for PkeyCtx {
    fn drop(&mut self) {
        // SAFETY: the pointer came from EVP_PKEY_CTX_new and is freed only here.
        unsafe { sys::EVP_PKEY_CTX_free(self.0.as_ptr()) }
    }
}

/// An RSA private key parsed by AWS-LC for OAEP decryption. Parsed once, when
/// the key is read: AWS-LC's parse checks the key (`RSA_check_key`), which
/// cost more than the decryption itself when done for each message.
pub(crate) struct OaepKey(Pkey);

impl OaepKey {
    /// The RSA key in `pkcs8`, an unencrypted PKCS#8 `PrivateKeyInfo`.
    pub(crate) fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, ()> {
        let key = parse_private_key(pkcs8);
        clear_errors();
        key.map(OaepKey)
    }

    /// Decrypt `wrapped` with RSAES-OAEP, `hash`, MGF1 over `mgf1` and an empty
    /// label, into `out` (at least the modulus length). Returns the length of
    /// the message at the start of `out`.
    ///
    /// Every failure is the one `Err(())`, whatever failed, and AWS-LC's error
    /// queue is cleared afterwards either way: the caller's implicit rejection
    /// must learn nothing else.
    pub(crate) fn decrypt(
        &self,
        hash: OaepHash,
        mgf1: OaepHash,
        wrapped: &[u8],
        out: &mut [u8],
    ) -> Result<usize, ()> {
        let result = self.decrypt_inner(hash, mgf1, wrapped, out);
        clear_errors();
        result
    }

    fn decrypt_inner(
        &self,
        hash: OaepHash,
        mgf1: OaepHash,
        wrapped: &[u8],
        out: &mut [u8],
    ) -> Result<usize, ()> {
        // SAFETY: the key is a valid EVP_PKEY; EVP_PKEY_CTX_new takes its own
        // reference, and a null ENGINE is the documented default. A context
        // per call: the shared key is only read (see `Pkey`'s Sync).
        let ctx =
            NonNull::new(unsafe { sys::EVP_PKEY_CTX_new(self.0.0.as_ptr(), ptr::null_mut()) })
                .map(PkeyCtx)
                .ok_or(())?;
        let ctx_ptr = ctx.0.as_ptr();
        // SAFETY: `ctx_ptr` is a valid context for the whole block; the EVP_MDs
        // are static. Each call returns 1 on success.
        let ready = unsafe {
            sys::EVP_PKEY_decrypt_init(ctx_ptr) == 1
                && sys::EVP_PKEY_CTX_set_rsa_padding(ctx_ptr, sys::RSA_PKCS1_OAEP_PADDING) == 1
                && sys::EVP_PKEY_CTX_set_rsa_oaep_md(ctx_ptr, hash.md()) == 1
                && sys::EVP_PKEY_CTX_set_rsa_mgf1_md(ctx_ptr, mgf1.md()) == 1
        };
        if !ready {
            return Err(());
        }
        let mut out_len = out.len();
        // SAFETY: `out` is writable for `out_len` bytes, which AWS-LC checks
        // against the modulus length before writing; `wrapped` is readable for
        // its length; `out_len` is a valid place for the result.
        let rc = unsafe {
            sys::EVP_PKEY_decrypt(
                ctx_ptr,
                out.as_mut_ptr(),
                &mut out_len,
                wrapped.as_ptr(),
                wrapped.len(),
            )
        };
        if rc == 1 && out_len <= out.len() {
            Ok(out_len)
        } else {
            Err(())
        }
    }
}

fn clear_errors() {
    // SAFETY: clears this thread's error queue; no arguments, no preconditions.
    unsafe { sys::ERR_clear_error() };
}

/// Parse a PKCS#8 `PrivateKeyInfo` holding an RSA key.
fn parse_private_key(pkcs8: &[u8]) -> Result<Pkey, ()> {
    let mut cbs = MaybeUninit::<sys::CBS>::uninit();
    // SAFETY: CBS_init initialises every field of the CBS; it then borrows
    // `pkcs8`, which outlives it (the parsed key copies what it keeps).
    let key = unsafe {
        sys::CBS_init(cbs.as_mut_ptr(), pkcs8.as_ptr(), pkcs8.len());
        sys::EVP_parse_private_key(cbs.as_mut_ptr())
    };
    let key = NonNull::new(key).map(Pkey).ok_or(())?;
    // SAFETY: `key` is a valid EVP_PKEY.
    if unsafe { sys::EVP_PKEY_id(key.0.as_ptr()) } != sys::EVP_PKEY_RSA {
        return Err(());
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::{self, KeyPair, KeySize, OaepPublicEncryptingKey, PrivateDecryptingKey};

    use super::*;

    fn key() -> Vec<u8> {
        let pair = KeyPair::generate(KeySize::Rsa2048).unwrap();
        pair.as_der().unwrap().as_ref().to_vec()
    }

    fn decrypt(
        pkcs8: &[u8],
        hash: OaepHash,
        mgf1: OaepHash,
        wrapped: &[u8],
        out: &mut [u8],
    ) -> Result<usize, ()> {
        OaepKey::from_pkcs8(pkcs8)?.decrypt(hash, mgf1, wrapped, out)
    }

    fn encrypt(pkcs8: &[u8], alg: &'static rsa::OaepAlgorithm, message: &[u8]) -> Vec<u8> {
        let public = PrivateDecryptingKey::from_pkcs8(pkcs8)
            .unwrap()
            .public_key();
        let key = OaepPublicEncryptingKey::new(public).unwrap();
        let mut out = vec![0u8; key.ciphertext_size()];
        let len = key.encrypt(alg, message, &mut out, None).unwrap().len();
        out.truncate(len);
        out
    }

    fn error_queue_is_empty() -> bool {
        // SAFETY: reads this thread's error queue; no preconditions.
        unsafe { sys::ERR_peek_error() == 0 }
    }

    #[test]
    fn decrypts_what_aws_lc_rs_encrypts_and_refuses_another_mgf1_hash_leaving_no_error() {
        let pkcs8 = key();
        let cek = [0x5au8; 32];
        for (alg, hash) in [
            (&rsa::OAEP_SHA1_MGF1SHA1, OaepHash::Sha1),
            (&rsa::OAEP_SHA256_MGF1SHA256, OaepHash::Sha256),
            (&rsa::OAEP_SHA384_MGF1SHA384, OaepHash::Sha384),
        ] {
            let wrapped = encrypt(&pkcs8, alg, &cek);
            let mut out = [0u8; 256];
            let len = decrypt(&pkcs8, hash, hash, &wrapped, &mut out).unwrap();
            assert_eq!(&out[..len], &cek);
            assert!(error_queue_is_empty());

            let other = if hash == OaepHash::Sha1 {
                OaepHash::Sha256
            } else {
                OaepHash::Sha1
            };
            assert_eq!(decrypt(&pkcs8, hash, other, &wrapped, &mut out), Err(()));
            assert!(error_queue_is_empty());
        }
    }

    #[test]
    fn a_damaged_key_or_a_short_buffer_is_one_error_leaving_no_error_queued() {
        let pkcs8 = key();
        let wrapped = encrypt(&pkcs8, &rsa::OAEP_SHA256_MGF1SHA256, &[1u8; 16]);
        let mut out = [0u8; 256];
        let sha256 = OaepHash::Sha256;
        assert_eq!(
            decrypt(&pkcs8[..100], sha256, sha256, &wrapped, &mut out),
            Err(())
        );
        assert!(error_queue_is_empty());
        assert_eq!(
            decrypt(&pkcs8, sha256, sha256, &wrapped, &mut out[..255]),
            Err(())
        );
        assert!(error_queue_is_empty());
        assert_eq!(
            decrypt(&pkcs8, sha256, sha256, &wrapped[1..], &mut out),
            Err(())
        );
        assert!(error_queue_is_empty());
    }
}
