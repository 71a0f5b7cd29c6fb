//! Typed configuration of the SMTP listener, with defaults from RFC 5321 §4.5.3.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Settings of the inbound SMTP server. [`Config::default`] gives working values.
#[derive(Clone)]
pub struct Config {
    /// Where the portal should bind (`DIRECTMAIL_SMTP_ADDR`, default `127.0.0.1:2525`).
    /// [`crate::serve`] takes an already bound listener and does not read this field.
    pub listen_addr: SocketAddr,
    /// Name announced in the greeting and the EHLO reply (RFC 5321 §4.1.1.1).
    pub hostname: String,
    /// Certificate and key for STARTTLS (RFC 3207); `None` leaves STARTTLS unadvertised.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Largest message accepted, in octets, advertised as `SIZE` (RFC 1870).
    /// Default 50 MiB.
    pub max_message_size: usize,
    /// Sessions served at once; further connections get `421 4.3.2` and are closed.
    /// Default 100 (at least 1 is used).
    pub max_sessions: usize,
    /// Time allowed to send one complete command line, and to read a reply we write.
    /// Default 5 minutes (RFC 5321 §4.5.3.2.7).
    pub command_timeout: Duration,
    /// Longest silence while reading message data. Default 3 minutes (RFC 5321 §4.5.3.2.5).
    pub data_timeout: Duration,
    /// Total time allowed for one message's data. Default 10 minutes (RFC 5321 §4.5.3.2.6).
    pub data_total_timeout: Duration,
    /// Longest command line, CRLF included; longer lines get `500 5.5.2`.
    /// Default 1000 (RFC 5321 §4.5.3.1.4 requires at least 512).
    pub max_line_length: usize,
    /// Commands allowed in one session before `421` and close. Default 1000.
    pub max_commands: usize,
    /// Unrecognised, malformed or out-of-sequence commands tolerated before `421` and
    /// close. Default 10.
    pub max_invalid_commands: usize,
    /// Recipients per transaction; more get `452 4.5.3`. Default 100 (RFC 5321 §4.5.3.1.8).
    pub max_recipients: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 2525)),
            hostname: "localhost".into(),
            tls: None,
            max_message_size: 50 * 1024 * 1024,
            max_sessions: 100,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            data_total_timeout: Duration::from_secs(600),
            max_line_length: 1000,
            max_commands: 1000,
            max_invalid_commands: 10,
            max_recipients: 100,
        }
    }
}

// The rustls ServerConfig holds the private key: never print it.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen_addr", &self.listen_addr)
            .field("hostname", &self.hostname)
            .field(
                "tls",
                &self.tls.as_ref().map(|_| "<certificate and key redacted>"),
            )
            .field("max_message_size", &self.max_message_size)
            .field("max_sessions", &self.max_sessions)
            .field("command_timeout", &self.command_timeout)
            .field("data_timeout", &self.data_timeout)
            .field("data_total_timeout", &self.data_total_timeout)
            .field("max_line_length", &self.max_line_length)
            .field("max_commands", &self.max_commands)
            .field("max_invalid_commands", &self.max_invalid_commands)
            .field("max_recipients", &self.max_recipients)
            .finish()
    }
}

/// Why a STARTTLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// The certificate chain PEM holds no usable certificate.
    #[error("no certificate found in the certificate PEM")]
    NoCertificate,
    /// The key PEM could not be read.
    #[error("no usable private key in the key PEM: {0}")]
    Key(rustls::pki_types::pem::Error),
    /// The certificate PEM could not be read.
    #[error("unreadable certificate PEM: {0}")]
    Certificate(rustls::pki_types::pem::Error),
    /// rustls refused the pair (key does not match, unsupported algorithm, …).
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds a STARTTLS server configuration on the `ring` provider from a PEM certificate
/// chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn tls_config_from_pem(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, TlsConfigError> {
    let certs = CertificateDer::pem_slice_iter(cert_chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsConfigError::Certificate)?;
    if certs.is_empty() {
        return Err(TlsConfigError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(TlsConfigError::Key)?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_tls_configuration() {
        let key = rustls::crypto::ring::default_provider();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(key))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(rustls::server::ResolvesServerCertUsingSni::new()));
        let cfg = Config {
            tls: Some(Arc::new(config)),
            ..Config::default()
        };
        let printed = format!("{cfg:?}");
        assert!(printed.contains("<certificate and key redacted>"));
        assert!(!printed.contains("ServerConfig"));
    }

    #[test]
    fn a_pem_without_certificates_is_refused() {
        assert!(matches!(
            tls_config_from_pem(b"", b""),
            Err(TlsConfigError::NoCertificate)
        ));
    }
}
