//! The key-encryption key: seals private keys, TOTP secrets, and secrets waiting in a
//! session (new API tokens, invitation links) at rest with AES-256-GCM.
//!
//! It comes from `DIRECTMAIL_SECRET_KEY` (64 hex digits or base64 of 32 bytes), or the
//! file named by `DIRECTMAIL_SECRET_KEY_FILE`; failing both, a development key is
//! generated once into the data directory with a loud warning. A check value stored in
//! the database catches a key that does not match the data at start-up.

use std::fmt;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use rand::RngCore as _;
use zeroize::Zeroizing;

use crate::config::Config;
use crate::db::Db;

/// Sealed values start with this, so a future key rotation can tell versions apart.
const PREFIX: &str = "v1:";
const CHECK_PLAINTEXT: &[u8] = b"directmail key-encryption key check";
const CHECK_AAD: &[u8] = b"kek-check";

/// 32 secret bytes. Never printed.
#[derive(Clone)]
pub struct SecretKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

/// Where the key came from, for the start-up log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    Environment,
    File,
    /// Generated into the data directory: fine for evaluation, not for production.
    Development,
}

impl SecretKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SecretKey(Zeroizing::new(bytes))
    }

    /// Reads 64 hex digits or standard/URL-safe base64 of exactly 32 bytes.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|_| anyhow!("not hex"))?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
                .map_err(|_| anyhow!("the key is neither 64 hex digits nor base64"))?
        };
        let bytes = Zeroizing::new(bytes);
        let array: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            anyhow!(
                "the key must be 32 bytes (64 hex digits), not {}",
                bytes.len()
            )
        })?;
        Ok(SecretKey::from_bytes(array))
    }

    /// Encrypts `plaintext`, binding it to `aad` (what it belongs to, e.g. a
    /// certificate fingerprint) so a sealed value cannot be moved to another row.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> anyhow::Result<String> {
        let cipher =
            Aes256Gcm::new_from_slice(self.0.as_slice()).map_err(|_| anyhow!("key length"))?;
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| anyhow!("encryption failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        ))
    }

    /// Decrypts a value made by [`SecretKey::seal`] with the same `aad`.
    pub fn open(&self, sealed: &str, aad: &[u8]) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        let body = sealed
            .strip_prefix(PREFIX)
            .ok_or_else(|| anyhow!("not a sealed value"))?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| anyhow!("sealed value is not base64"))?;
        if raw.len() < 12 + 16 {
            bail!("sealed value is too short");
        }
        let (nonce, ciphertext) = raw.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| anyhow!("nonce"))?;
        let cipher =
            Aes256Gcm::new_from_slice(self.0.as_slice()).map_err(|_| anyhow!("key length"))?;
        cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| anyhow!("the value does not open with this key"))
    }
}

/// Whether a stored value is sealed.
pub fn is_sealed(value: &str) -> bool {
    value.starts_with(PREFIX)
}

/// Seals a user's TOTP secret, bound to that user.
pub fn seal_totp(key: &SecretKey, user_id: i64, secret_b32: &str) -> anyhow::Result<String> {
    key.seal(secret_b32.as_bytes(), format!("totp:{user_id}").as_bytes())
}

/// The user's TOTP secret from its sealed form. An unsealed value is refused, never
/// read as the secret: [`seal_plaintext_totp`] seals rows from before sealing at
/// start-up, so one seen here was written around the portal.
pub fn open_totp(key: &SecretKey, user_id: i64, stored: &str) -> Option<String> {
    if !is_sealed(stored) {
        tracing::warn!(
            user_id,
            "a TOTP secret is stored unsealed; it is refused (reset the user's two-step sign-in)"
        );
        return None;
    }
    let bytes = key
        .open(stored, format!("totp:{user_id}").as_bytes())
        .ok()?;
    String::from_utf8(bytes.to_vec()).ok()
}

/// Seals the TOTP secrets that versions before sealing stored in clear (SQL cannot
/// seal, so this runs at start-up rather than in a migration). Returns how many.
pub async fn seal_plaintext_totp(db: &Db, key: &SecretKey) -> anyhow::Result<u64> {
    use sqlx::Row as _;
    let rows = sqlx::query(
        "select id, totp_secret from users where totp_secret is not null and totp_secret not like 'v1:%'",
    )
    .fetch_all(&db.pool)
    .await?;
    let mut sealed = 0;
    for row in rows {
        let id: i64 = row.try_get("id")?;
        let plain: String = row.try_get("totp_secret")?;
        let value = seal_totp(key, id, &plain)?;
        // only if unchanged meanwhile (another instance starting, a new enrolment)
        let done =
            sqlx::query("update users set totp_secret = $1 where id = $2 and totp_secret = $3")
                .bind(value)
                .bind(id)
                .bind(&plain)
                .execute(&db.pool)
                .await?;
        sealed += done.rows_affected();
    }
    Ok(sealed)
}

/// Loads the key from the configuration, or makes the development key.
pub fn load(config: &Config) -> anyhow::Result<(SecretKey, KeySource)> {
    if let Some(found) = find(config)? {
        return Ok(found);
    }
    let path = config.data_dir.join("secret.key");
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    write_private(&path, &hex::encode(bytes))?;
    Ok((SecretKey::from_bytes(bytes), KeySource::Development))
}

/// The configured key, or the development key already in the data directory; `None`
/// when there is neither (and nothing is generated: `admin restore` must be able to
/// say that the key is missing).
pub fn find(config: &Config) -> anyhow::Result<Option<(SecretKey, KeySource)>> {
    if let Some(text) = &config.secret_key {
        let key = SecretKey::parse(text.expose()).context("DIRECTMAIL_SECRET_KEY is not usable")?;
        return Ok(Some((key, KeySource::Environment)));
    }
    if let Some(path) = &config.secret_key_file {
        let text = Zeroizing::new(std::fs::read_to_string(path).with_context(|| {
            format!("cannot read DIRECTMAIL_SECRET_KEY_FILE {}", path.display())
        })?);
        let key = SecretKey::parse(&text).with_context(|| {
            format!(
                "DIRECTMAIL_SECRET_KEY_FILE {} does not hold a usable key",
                path.display()
            )
        })?;
        return Ok(Some((key, KeySource::File)));
    }
    let path = config.data_dir.join("secret.key");
    if !path.exists() {
        return Ok(None);
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the development key {}", path.display()))?,
    );
    let key = SecretKey::parse(&text)
        .with_context(|| format!("the development key {} is damaged", path.display()))?;
    Ok(Some((key, KeySource::Development)))
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write the development key {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// Stores a check value the first time, and afterwards refuses a key that does not
/// open it: private keys sealed with another key would be unreadable.
pub async fn check_against_database(db: &Db, key: &SecretKey) -> anyhow::Result<()> {
    let stored: Option<String> =
        sqlx::query_scalar("select value from settings where key = 'kek_check'")
            .fetch_optional(&db.pool)
            .await?;
    match stored {
        Some(sealed) => {
            key.open(&sealed, CHECK_AAD).map(drop).map_err(|_| {
                anyhow!("the key-encryption key (DIRECTMAIL_SECRET_KEY, DIRECTMAIL_SECRET_KEY_FILE or <data dir>/secret.key) is not the one this database's private keys were sealed with; start with the original key")
            })
        }
        None => {
            let sealed = key.seal(CHECK_PLAINTEXT, CHECK_AAD)?;
            sqlx::query("insert into settings (key, value) values ('kek_check', $1) on conflict (key) do nothing")
                .bind(sealed)
                .execute(&db.pool)
                .await?;
            Ok(())
        }
    }
}

/// A secret configuration string (the KEK itself). Never printed.
#[derive(Clone)]
pub struct SecretString(String);

impl SecretString {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl std::str::FromStr for SecretString {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(SecretString(s.to_owned()))
    }
}

// Added for the keyed audit chain (src/audit.rs); kept at the end of the file (before
// its tests) so it stays apart from the sealing code above.
impl SecretKey {
    /// A key for another purpose, derived as HMAC-SHA-256(key-encryption key, `label`)
    /// (the HKDF-Expand step of RFC 5869 for one block, with the key already uniform),
    /// so that the key-encryption key itself only ever seals. The label names the use
    /// and its version, e.g. `directmail audit chain v1`.
    pub fn derive(&self, label: &str) -> Zeroizing<[u8; 32]> {
        use hmac::digest::generic_array::GenericArray;
        use hmac::{Hmac, Mac as _};
        // RFC 2104 pads a key shorter than the hash's block (64 bytes) with zeros;
        // padding here gives the same MAC without a fallible constructor
        let mut block = Zeroizing::new([0u8; 64]);
        block[..32].copy_from_slice(self.0.as_slice());
        let mut mac = <Hmac<sha2::Sha256> as hmac::digest::KeyInit>::new(GenericArray::from_slice(
            &block[..],
        ));
        mac.update(label.as_bytes());
        mac.update(&[1]);
        Zeroizing::new(mac.finalize().into_bytes().into())
    }

    /// A public name for the key, to tell keys apart without showing one: the first
    /// 16 bytes, in hex, of a key derived for no other use. A backup's manifest
    /// carries it so a restore can say the key is different.
    pub fn fingerprint(&self) -> String {
        hex::encode(&self.derive("directmail key fingerprint v1")[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_context() {
        let key = SecretKey::from_bytes([7; 32]);
        let sealed = key.seal(b"private key bytes", b"fp:1").unwrap();
        assert!(is_sealed(&sealed));
        assert!(!sealed.contains("private"));
        assert_eq!(
            key.open(&sealed, b"fp:1").unwrap().as_slice(),
            b"private key bytes"
        );
        assert!(key.open(&sealed, b"fp:2").is_err(), "bound to its row");
        assert!(
            SecretKey::from_bytes([8; 32])
                .open(&sealed, b"fp:1")
                .is_err()
        );
        assert!(key.open("v1:AAAA", b"fp:1").is_err());
        assert!(key.open("garbage", b"fp:1").is_err());
    }

    #[test]
    fn a_fingerprint_tells_keys_apart_without_showing_them() {
        let key = SecretKey::from_bytes([7; 32]);
        assert_eq!(key.fingerprint(), key.clone().fingerprint());
        assert_ne!(
            key.fingerprint(),
            SecretKey::from_bytes([8; 32]).fingerprint()
        );
        assert_eq!(key.fingerprint().len(), 32);
        assert!(!hex::encode([7u8; 32]).contains(&key.fingerprint()));
    }

    #[test]
    fn keys_parse_from_hex_or_base64_of_32_bytes_only() {
        assert!(SecretKey::parse(&"ab".repeat(32)).is_ok());
        assert!(
            SecretKey::parse(&base64::engine::general_purpose::STANDARD.encode([1u8; 32])).is_ok()
        );
        assert!(SecretKey::parse("short").is_err());
        assert!(SecretKey::parse(&"ab".repeat(16)).is_err());
        assert_eq!(
            format!("{:?}", SecretKey::from_bytes([1; 32])),
            "SecretKey(***)"
        );
    }
}
