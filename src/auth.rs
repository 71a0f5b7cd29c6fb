//! Credentials: argon2id password hashes, random tokens, TOTP codes and recovery codes.
//!
//! Pure and synchronous; argon2 is deliberately slow, so async callers use
//! `tokio::task::spawn_blocking`.

use std::sync::LazyLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use totp_rs::{Builder, Secret};

/// argon2id with the crate's defaults (19 MiB, 2 passes: OWASP's recommended minimum).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt)?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// A hash of no real password, checked against when an account does not exist so
/// that a missing account takes as long to refuse as a wrong password.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| hash_password("no account has this password").unwrap_or_default());

/// Checks `password` against a stored PHC string; `None` burns the same time.
pub fn verify_password(stored: Option<&str>, password: &str) -> bool {
    let stored = stored.unwrap_or(DUMMY_HASH.as_str());
    match PasswordHash::new(stored) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A random URL-safe token (256 bits) and the SHA-256 hex under which it is stored.
pub fn new_token() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = token_hash(&token);
    (token, hash)
}

/// The stored form of a token or recovery code.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

/// Ten one-time recovery codes like `7kq4-m2xp-9d`, and their stored hashes.
pub fn new_recovery_codes() -> Vec<(String, String)> {
    // no 0/o, 1/l/i: codes are read off paper
    const ALPHABET: &[u8] = b"23456789abcdefghjkmnpqrstuvwxyz";
    let mut rng = rand::rng();
    (0..10)
        .map(|_| {
            let mut code = String::with_capacity(12);
            for i in 0..10 {
                if i == 4 || i == 8 {
                    code.push('-');
                }
                let idx = (rng.next_u32() as usize) % ALPHABET.len();
                code.push(char::from(ALPHABET[idx]));
            }
            let hash = token_hash(&normalize_recovery_code(&code));
            (code, hash)
        })
        .collect()
}

/// Recovery codes are accepted with or without dashes, in any case.
pub fn normalize_recovery_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// A new TOTP secret, as base32 (what authenticator apps show and type).
pub fn new_totp_secret() -> String {
    let mut bytes = [0u8; 20];
    rand::rng().fill_bytes(&mut bytes);
    Secret::from(bytes).to_base32()
}

/// The `otpauth://` URL an authenticator app scans.
pub fn totp_url(secret_b32: &str, issuer: &str, account: &str) -> Option<String> {
    let secret = Secret::try_from_base32(secret_b32).ok()?;
    Builder::new()
        .with_secret(secret)
        .with_issuer(Some(issuer.replace(':', " ")))
        .with_account_name(account.replace(':', " "))
        .build()
        .ok()?
        .to_url()
        .ok()
}

/// Checks a 6-digit code at `now` (unix seconds), allowing one step of clock skew.
/// Returns the matched time step, which the caller accepts only once.
pub fn check_totp(secret_b32: &str, code: &str, now: i64) -> Option<i64> {
    let secret = totp_secret(secret_b32)?;
    let totp = Builder::new().with_secret(secret).build().ok()?;
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = u64::try_from(now).ok()?;
    totp.check(&code, now)
        .and_then(|step| i64::try_from(step).ok())
}

/// A base32 TOTP key as people copy it: in groups, in any case.
fn totp_secret(secret_b32: &str) -> Option<Secret> {
    let key: String = secret_b32
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_uppercase)
        .collect();
    Secret::try_from_base32(&key).ok()
}

/// The key in groups of four ("JBSW Y3DP EHPK 3PXP"), as the enrolment page shows it
/// to type into an app.
pub fn grouped_key(secret_b32: &str) -> String {
    secret_b32
        .as_bytes()
        .chunks(4)
        .map(|group| String::from_utf8_lossy(group).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The code an authenticator shows at `now` (for tests and the CLI's self-check).
pub fn totp_code(secret_b32: &str, now: i64) -> Option<String> {
    let secret = totp_secret(secret_b32)?;
    let totp = Builder::new().with_secret(secret).build().ok()?;
    Some(totp.generate(u64::try_from(now).ok()?).to_string())
}

/// A QR code for `text` as an SVG image, rendered here (no outside service sees the
/// secret). The SVG carries no scripts or styles, so it passes the page's CSP.
pub fn qr_svg(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::svg::Color>()
            .min_dimensions(200, 200)
            .quiet_zone(true)
            .build(),
    )
}

/// A one-time password for the first operator: 20 characters from an unambiguous set.
pub fn new_one_time_password() -> String {
    const ALPHABET: &[u8] = b"23456789abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ";
    let mut rng = rand::rng();
    (0..20)
        .map(|_| char::from(ALPHABET[(rng.next_u32() as usize) % ALPHABET.len()]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_hash() {
        let hash = hash_password("harbor-violet-cactus").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(Some(&hash), "harbor-violet-cactus"));
        assert!(!verify_password(Some(&hash), "harbor-violet-cactuz"));
        assert!(!verify_password(None, "anything"));
        assert!(!verify_password(Some("garbage"), "anything"));
    }

    #[test]
    fn totp_codes_match_within_one_step_only() {
        let secret = new_totp_secret();
        let now = 1_800_000_000;
        let code = totp_code(&secret, now).unwrap();
        assert_eq!(check_totp(&secret, &code, now), Some(now / 30));
        assert!(check_totp(&secret, &code, now + 30).is_some());
        assert!(check_totp(&secret, &code, now + 90).is_none());
        assert!(check_totp(&secret, "12345", now).is_none());
        assert!(check_totp(&secret, "abcdef", now).is_none());
    }

    #[test]
    fn recovery_codes_are_distinct_and_normalized() {
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), 10);
        let (code, hash) = &codes[0];
        assert_eq!(
            &token_hash(&normalize_recovery_code(&code.to_uppercase())),
            hash
        );
    }

    #[test]
    fn qr_codes_render_as_svg() {
        let url = totp_url(&new_totp_secret(), "directmail", "a@b.org").unwrap();
        assert!(url.starts_with("otpauth://totp/"));
        assert!(qr_svg(&url).unwrap().contains("<svg"));
    }
}
