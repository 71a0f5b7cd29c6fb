//! The portal's signing key for SMART Backend Services: RSA, used with `RS384`, its
//! private half sealed at rest with the key-encryption key ([`crate::secrets`]), its
//! public half published as a JWKS at `/.well-known/jwks.json` with a `kid` (the key's
//! RFC 7638 thumbprint). The key is made when the first document source is added (or
//! at the first token request, whichever comes first) and kept; the newest key signs.

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use sqlx::Row as _;

use crate::db::Db;
use crate::secrets::SecretKey;
use directmail_smime::PrivateKey;

/// The size of the keys made here.
const BITS: usize = 2048;

/// The key that signs client assertions, and its `kid`.
pub struct SigningKey {
    pub kid: String,
    key: PrivateKey,
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The public JWK of `key`, and its thumbprint (RFC 7638: SHA-256 over the required
/// members in lexical order, without white space).
fn public_jwk(key: &PrivateKey) -> (String, Value) {
    let (n, e) = key.public_numbers();
    let (n, e) = (b64url(n), b64url(e));
    let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
    let kid = b64url(&Sha256::digest(canonical.as_bytes()));
    let jwk = json!({
        "kty": "RSA",
        "kid": kid,
        "use": "sig",
        "alg": "RS384",
        "n": n,
        "e": e,
    });
    (kid, jwk)
}

/// The newest signing key, made (and stored sealed) when there is none yet.
pub async fn current(db: &Db, secret: &SecretKey, now: i64) -> anyhow::Result<SigningKey> {
    if let Some(key) = newest(db, secret).await? {
        return Ok(key);
    }
    let key = tokio::task::spawn_blocking(|| PrivateKey::generate(BITS))
        .await?
        .map_err(|e| anyhow::anyhow!("generating the signing key: {e}"))?;
    let (kid, jwk) = public_jwk(&key);
    let sealed = secret.seal(&key.to_pkcs8_der(), kid.as_bytes())?;
    let mut tx = db.begin().await?;
    sqlx::query(
        "insert into signing_keys (kid, private_key, public_jwk, created_at) values ($1, $2, $3, $4)",
    )
    .bind(&kid)
    .bind(sealed)
    .bind(jwk.to_string())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    crate::audit::append(
        &mut tx,
        now,
        &crate::audit::Actor::system(),
        crate::audit::Event::new("records.key_create", format!("jwk:{kid}"))
            .detail("RSA 2048, RS384, published at /.well-known/jwks.json"),
    )
    .await?;
    tx.commit().await?;
    Ok(SigningKey { kid, key })
}

async fn newest(db: &Db, secret: &SecretKey) -> anyhow::Result<Option<SigningKey>> {
    let row = sqlx::query(
        "select kid, private_key from signing_keys order by created_at desc, id desc limit 1",
    )
    .fetch_optional(&db.pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let kid: String = row.try_get("kid")?;
    let sealed: String = row.try_get("private_key")?;
    let der = secret.open(&sealed, kid.as_bytes())?;
    let key = PrivateKey::from_pkcs8_der(&der)
        .map_err(|e| anyhow::anyhow!("the stored signing key does not read: {e}"))?;
    Ok(Some(SigningKey { kid, key }))
}

/// Every public key, as a JWK Set.
pub async fn jwks(db: &Db) -> anyhow::Result<Value> {
    let rows: Vec<String> =
        sqlx::query_scalar("select public_jwk from signing_keys order by created_at desc, id desc")
            .fetch_all(&db.pool)
            .await?;
    let keys = rows
        .iter()
        .filter_map(|r| serde_json::from_str::<Value>(r).ok())
        .collect::<Vec<_>>();
    Ok(json!({ "keys": keys }))
}

impl SigningKey {
    /// A client assertion (RFC 7523, as SMART Backend Services profiles it): issued by
    /// and about `client_id`, for the token endpoint `audience`, valid five minutes,
    /// with a `jti` never used before (128 random bits).
    pub fn assertion(&self, client_id: &str, audience: &str, now: i64) -> anyhow::Result<String> {
        let header = json!({ "alg": "RS384", "typ": "JWT", "kid": self.kid });
        let mut jti = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut jti);
        let claims = json!({
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "iat": now,
            "exp": now + ASSERTION_SECONDS,
            "jti": hex::encode(jti),
        });
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let signature = self
            .key
            .sign_rs384(signing_input.as_bytes())
            .map_err(|e| anyhow::anyhow!("signing the client assertion: {e}"))?;
        Ok(format!("{signing_input}.{}", b64url(&signature)))
    }
}

/// How long a client assertion is valid (SMART: at most five minutes).
pub const ASSERTION_SECONDS: i64 = 300;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assertion_names_the_client_the_audience_and_the_key() {
        let key = PrivateKey::generate(2048).expect("key");
        let (kid, jwk) = public_jwk(&key);
        assert_eq!(jwk["kid"], kid.as_str());
        let signing = SigningKey { kid, key };
        let a = signing
            .assertion("client-1", "https://ehr.example/token", 1_000)
            .expect("assertion");
        let b = signing
            .assertion("client-1", "https://ehr.example/token", 1_000)
            .expect("assertion");
        let parts: Vec<&str> = a.split('.').collect();
        assert_eq!(parts.len(), 3);
        let decode = |p: &str| -> Value {
            serde_json::from_slice(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p)
                    .expect("base64url"),
            )
            .expect("json")
        };
        let (header, claims) = (decode(parts[0]), decode(parts[1]));
        assert_eq!(header["alg"], "RS384");
        assert_eq!(header["kid"], signing.kid.as_str());
        assert_eq!(claims["iss"], "client-1");
        assert_eq!(claims["sub"], "client-1");
        assert_eq!(claims["aud"], "https://ehr.example/token");
        assert_eq!(claims["exp"], 1_300);
        let other: Vec<&str> = b.split('.').collect();
        assert_ne!(decode(other[1])["jti"], claims["jti"]);
    }
}
