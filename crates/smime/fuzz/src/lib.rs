//! The fuzz target for the inbound parser, shared by the libFuzzer target
//! (`cargo fuzz run judge`) and the plain, libFuzzer-free harness
//! (`cargo run --release --bin judge-loop`).
//!
//! The first input byte picks how the rest reaches [`judge`]:
//! - `0` (and anything not listed): the bytes are a whole inbound message;
//! - `1`: the bytes are the *decrypted* entity (multipart/signed, or an opaque
//!   signed-data part); the harness encrypts them for the fixture recipient, so
//!   mutations reach the MIME splitter and the SignedData verifier instead of
//!   dying at decryption;
//! - `2`: the bytes are the CMS EnvelopedData (DER/BER); the harness wraps them
//!   in an `application/pkcs7-mime` message, so mutations hit the BER reader
//!   without having to keep base64 intact.
//!
//! Fixtures (a development CA, a recipient identity, and the sender's
//! certificate) are committed under `fixtures/`, made by `make-seeds` with the
//! crate's own development PKI. The clock is fixed one day after the recipient
//! certificate's notBefore so that seeds judge `Trusted` forever.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::todo)]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use directmail_smime::{
    ContentCipher, Identity, KeyTransport, ReasonCode, Recipient, TrustStore, envelope, judge,
    parse_certificates,
};

/// Mode byte: a whole inbound message.
pub const MODE_MESSAGE: u8 = 0;
/// Mode byte: the decrypted (signed) entity.
pub const MODE_SIGNED_ENTITY: u8 = 1;
/// Mode byte: the EnvelopedData DER.
pub const MODE_ENVELOPE: u8 = 2;

/// The fixed world the target judges in.
pub struct World {
    /// The recipient's decryption identity (domain-bound).
    pub keys: Vec<Identity>,
    /// The development CA as the only anchor.
    pub trust: TrustStore,
    /// Recipient info for re-encrypting mode-1 inputs.
    pub recipient: Vec<Recipient>,
    /// One day after the recipient certificate's notBefore.
    pub now: SystemTime,
}

const CA_PEM: &[u8] = include_bytes!("../fixtures/ca.pem");
const RECIPIENT_PEM: &[u8] = include_bytes!("../fixtures/recipient.pem");
const RECIPIENT_KEY_DER: &[u8] = include_bytes!("../fixtures/recipient.key.der");

/// Load the committed fixtures once. `None` only if the fixtures are broken,
/// which [`run`] treats as "nothing to do" rather than as a finding.
pub fn world() -> Option<&'static World> {
    static WORLD: OnceLock<Option<World>> = OnceLock::new();
    WORLD
        .get_or_init(|| {
            let anchors = parse_certificates(CA_PEM).ok()?;
            let me = Identity::from_pem_or_der(RECIPIENT_PEM, RECIPIENT_KEY_DER).ok()?;
            let not_before = me
                .certificate()
                .tbs_certificate()
                .validity()
                .not_before
                .to_system_time();
            let recipient = vec![Recipient {
                certificate: me.certificate().clone(),
                // PKCS#1 v1.5 exercises the implicit-rejection path too.
                key_transport: KeyTransport::RsaPkcs1v15,
            }];
            Some(World {
                keys: vec![me],
                trust: TrustStore::with_anchors(anchors),
                recipient,
                now: not_before + Duration::from_secs(86_400),
            })
        })
        .as_ref()
}

/// Wrap EnvelopedData DER as the body of an inbound Direct message.
pub fn wrap_envelope(der: &[u8]) -> Vec<u8> {
    let mut m = b"From: dr.who@direct.dev-sender.example\r\n\
To: records@direct.dev-receiver.example\r\n\
MIME-Version: 1.0\r\n\
Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n\
Content-Transfer-Encoding: binary\r\n\r\n"
        .to_vec();
    m.extend_from_slice(der);
    m
}

/// One fuzz input. Must never panic or hang, whatever `data` is.
pub fn run(data: &[u8]) {
    let _ = verdict_code(data);
}

/// Judge one fuzz input and return the reason code (`None` when the harness
/// could not even build the message, e.g. fixtures missing).
pub fn verdict_code(data: &[u8]) -> Option<ReasonCode> {
    let w = world()?;
    let Some((&mode, rest)) = data.split_first() else {
        return Some(judge(data, &w.keys, &w.trust, w.now).code);
    };
    let message = match mode {
        MODE_SIGNED_ENTITY => {
            wrap_envelope(&envelope(rest, &w.recipient, ContentCipher::Aes128Cbc).ok()?)
        }
        MODE_ENVELOPE => wrap_envelope(rest),
        _ => rest.to_vec(),
    };
    let verdict = judge(&message, &w.keys, &w.trust, w.now);
    // Touch everything a caller would show.
    let _ = (
        verdict.sentence(),
        verdict.detail.len(),
        verdict.code.as_str(),
    );
    Some(verdict.code)
}
