//! Command line and `DIRECTMAIL_*` environment configuration, read once at start-up.
//!
//! Every field has a working default so that `cargo run --release` starts a portal with
//! no configuration at all. The README lists every variable; keep the two in step.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// `directmail [serve]` or `directmail admin …`.
/// `directmail --version`: the release and the cryptographic module in use.
static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{} (cryptography: {})",
        env!("CARGO_PKG_VERSION"),
        directmail_smime::crypto_module()
    )
});

#[derive(Debug, Parser)]
#[command(
    name = "directmail",
    version = VERSION.as_str(),
    about = "Direct secure messaging (HISP) with webmail"
)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the portal (the default with no subcommand).
    Serve,
    /// Provision organizations, domains, users and mailboxes from a script.
    Admin(crate::cli::AdminArgs),
}

/// The portal's settings. Each one is a flag and a `DIRECTMAIL_*` variable.
#[derive(Clone, Args)]
pub struct Config {
    /// Address the web portal listens on.
    #[arg(
        long,
        env = "DIRECTMAIL_HTTP_ADDR",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub http_addr: SocketAddr,

    /// Directory for the SQLite database and generated development secrets.
    #[arg(
        long,
        env = "DIRECTMAIL_DATA_DIR",
        default_value = "./data",
        global = true
    )]
    pub data_dir: PathBuf,

    /// Database: `sqlite://PATH` or `postgres://USER:PASS@HOST/DB`.
    /// Defaults to `sqlite://<data dir>/directmail.db`.
    #[arg(long, env = "DIRECTMAIL_DATABASE_URL", global = true)]
    pub database_url: Option<DatabaseUrl>,

    /// The HISP's own Direct domain, created at first start-up.
    #[arg(
        long,
        env = "DIRECTMAIL_HISP_DOMAIN",
        default_value = "direct.localhost",
        global = true
    )]
    pub hisp_domain: String,

    /// E-mail of the first HISP operator, created at first start-up.
    #[arg(
        long,
        env = "DIRECTMAIL_OPERATOR_EMAIL",
        default_value = "operator@direct.localhost",
        global = true
    )]
    pub operator_email: String,

    /// The URL users reach the portal at. An `https://` URL marks cookies `Secure`
    /// and turns on HSTS (for deployments that terminate TLS at a proxy).
    #[arg(long, env = "DIRECTMAIL_PUBLIC_URL", global = true)]
    pub public_url: Option<url::Url>,

    /// Address the inbound SMTP listener (for other HISPs) listens on.
    #[arg(
        long,
        env = "DIRECTMAIL_SMTP_ADDR",
        default_value = "127.0.0.1:2525",
        global = true
    )]
    pub smtp_addr: SocketAddr,

    /// Name this HISP gives in SMTP greetings and `Received:` lines; the HISP
    /// domain when unset.
    #[arg(long, env = "DIRECTMAIL_SMTP_HOSTNAME", global = true)]
    pub smtp_hostname: Option<String>,

    /// Send messages for other HISPs through this SMTP relay (`host:port`); STARTTLS
    /// is used when the relay offers it.
    #[arg(long, env = "DIRECTMAIL_SMTP_RELAY", global = true)]
    pub smtp_relay: Option<String>,

    /// Send e-mail alerts (new secure mail, alert-address checks, invitation and
    /// password links) through this SMTP relay (`host:port`), always with STARTTLS.
    /// Alerts are off when unset, and administrators copy links by hand.
    #[arg(long, env = "DIRECTMAIL_ALERT_SMTP_RELAY", global = true)]
    pub alert_smtp_relay: Option<String>,

    /// User name for the alert relay (with `DIRECTMAIL_ALERT_SMTP_PASSWORD`); no
    /// authentication when unset.
    #[arg(
        long,
        env = "DIRECTMAIL_ALERT_SMTP_USERNAME",
        global = true,
        requires = "alert_smtp_password"
    )]
    pub alert_smtp_username: Option<String>,

    /// Password for the alert relay.
    #[arg(
        long,
        env = "DIRECTMAIL_ALERT_SMTP_PASSWORD",
        hide_env_values = true,
        global = true,
        requires = "alert_smtp_username"
    )]
    pub alert_smtp_password: Option<crate::secrets::SecretString>,

    /// The From address of alert e-mails; `no-reply@<HISP domain>` when unset.
    #[arg(long, env = "DIRECTMAIL_ALERT_FROM", global = true)]
    pub alert_from: Option<String>,

    /// Minutes between two new-mail alerts about the same mailbox to the same user;
    /// messages arriving in between are counted in the next one.
    #[arg(
        long,
        env = "DIRECTMAIL_ALERT_INTERVAL",
        default_value_t = 15,
        global = true,
        value_parser = clap::value_parser!(u32).range(1..=1440)
    )]
    pub alert_interval: u32,

    /// Seconds a webhook receiver gets to answer one event (connection included).
    #[arg(
        long,
        env = "DIRECTMAIL_WEBHOOK_TIMEOUT_SECONDS",
        default_value_t = 10,
        global = true,
        value_parser = clap::value_parser!(u64).range(1..=60)
    )]
    pub webhook_timeout_seconds: u64,

    /// Attempts at delivering one webhook event before it is given up (retried with
    /// exponential backoff from 30 seconds, at most an hour apart).
    #[arg(
        long,
        env = "DIRECTMAIL_WEBHOOK_MAX_ATTEMPTS",
        default_value_t = 10,
        global = true,
        value_parser = clap::value_parser!(u32).range(1..=30)
    )]
    pub webhook_max_attempts: u32,

    /// Webhook events posted at once by one instance.
    #[arg(
        long,
        env = "DIRECTMAIL_WEBHOOK_CONCURRENCY",
        default_value_t = 4,
        global = true,
        value_parser = clap::value_parser!(u16).range(1..=64)
    )]
    pub webhook_concurrency: u16,

    /// The portal's name as alert e-mails give it ("You have 2 new secure messages in
    /// <name>").
    #[arg(
        long,
        env = "DIRECTMAIL_PORTAL_NAME",
        default_value = "directmail",
        global = true
    )]
    pub portal_name: String,

    /// Seconds to wait for a recipient's processed notification before the message
    /// counts as failed for that recipient.
    #[arg(
        long,
        env = "DIRECTMAIL_NOTIFY_TIMEOUT",
        default_value_t = 3600,
        global = true,
        value_parser = clap::value_parser!(u64).range(60..)
    )]
    pub notify_timeout: u64,

    /// Seconds a claim on a received message or a queue entry lasts without renewal:
    /// the instance holding it renews it every third of that while it works, so the
    /// claims of an instance that died are taken over within this time.
    #[arg(
        long,
        env = "DIRECTMAIL_CLAIM_SECONDS",
        default_value_t = 60,
        global = true,
        value_parser = clap::value_parser!(u64).range(5..=3600)
    )]
    pub claim_seconds: u64,

    /// Send every DNS query (MX for delivery; later certificate discovery) to this
    /// resolver (`host:port`); the system's resolvers otherwise.
    #[arg(long, env = "DIRECTMAIL_DNS_RESOLVER", global = true)]
    pub dns_resolver: Option<SocketAddr>,

    /// The port other HISPs' mail exchangers listen on (25; tests use another).
    #[arg(
        long,
        env = "DIRECTMAIL_SMTP_MX_PORT",
        default_value_t = 25,
        global = true
    )]
    pub smtp_mx_port: u16,

    /// Seconds during which temporary delivery failures (4xx, unreachable peers) are
    /// retried before the recipients fail.
    #[arg(
        long,
        env = "DIRECTMAIL_RETRY_DEADLINE",
        default_value_t = 86400,
        global = true,
        value_parser = clap::value_parser!(u64).range(60..)
    )]
    pub retry_deadline: u64,

    /// Certificate chain (PEM) offered with STARTTLS on the SMTP listener.
    #[arg(
        long,
        env = "DIRECTMAIL_SMTP_TLS_CERT",
        global = true,
        requires = "smtp_tls_key"
    )]
    pub smtp_tls_cert: Option<PathBuf>,

    /// Private key (PEM) for `DIRECTMAIL_SMTP_TLS_CERT`.
    #[arg(
        long,
        env = "DIRECTMAIL_SMTP_TLS_KEY",
        global = true,
        requires = "smtp_tls_cert"
    )]
    pub smtp_tls_key: Option<PathBuf>,

    /// Largest message accepted over SMTP, in bytes (SIZE; 552 above it).
    #[arg(
        long,
        env = "DIRECTMAIL_SMTP_MAX_SIZE",
        default_value_t = 50 * 1024 * 1024,
        global = true,
        value_parser = clap::value_parser!(u64).range(1024..)
    )]
    pub smtp_max_size: u64,

    /// Answer DNS CERT queries for the hosted certificates on this address (a small
    /// authoritative responder; delegate the names to it). Off when unset.
    #[arg(long, env = "DIRECTMAIL_DNS_CERT_ADDR", global = true)]
    pub dns_cert_addr: Option<SocketAddr>,

    /// Serve `GET /metrics` (Prometheus/OpenMetrics text) on this address, apart from
    /// the portal, for the operator's monitoring only (`127.0.0.1:9464`, or a private
    /// network). Off when unset.
    #[arg(long, env = "DIRECTMAIL_METRICS_ADDR", global = true)]
    pub metrics_addr: Option<SocketAddr>,

    /// The outbound-connection policy for everything fetched or contacted on someone
    /// else's word (AIA issuers and CRLs, trust bundles, directory sources, discovery's
    /// LDAP servers and IPKIX URLs, MX hosts): `false` for public addresses only,
    /// `true` for any address, or a comma-separated list of addresses and networks
    /// (`10.20.0.0/16,fd00::/8`) allowed besides the public ones.
    #[arg(
        long,
        env = "DIRECTMAIL_ALLOW_PRIVATE_NETWORKS",
        global = true,
        value_parser = directmail_net::Policy::parse
    )]
    pub allow_private_networks: Option<directmail_net::Policy>,

    /// The earlier name of `DIRECTMAIL_ALLOW_PRIVATE_NETWORKS` (true or false), read
    /// when the new one is not set.
    #[arg(
        long,
        env = "DIRECTMAIL_DISCOVERY_PRIVATE_NETWORKS",
        global = true,
        hide = true,
        action = clap::ArgAction::Set
    )]
    pub discovery_private_networks: Option<bool>,

    /// Largest total size of the attachments of one message written in the webmail,
    /// in megabytes.
    #[arg(
        long,
        env = "DIRECTMAIL_MAX_MESSAGE_MB",
        default_value_t = 30,
        global = true,
        value_parser = clap::value_parser!(u32).range(1..=200)
    )]
    pub max_message_mb: u32,

    /// Attachment types users may send besides PDF, comma separated from `xml`
    /// (C-CDA and other XML), `image` (PNG, JPEG, GIF), `text` and `word`.
    #[arg(
        long,
        env = "DIRECTMAIL_ATTACHMENT_TYPES",
        default_value = "xml,image,text,word",
        global = true,
        value_parser = parse_kinds
    )]
    pub attachment_types: AttachmentTypes,

    /// Seconds the compose page's as-you-type address check looks for a Direct
    /// certificate before it says the address looks like ordinary e-mail (sending
    /// always looks again, fully).
    #[arg(
        long,
        env = "DIRECTMAIL_ADDRESS_CHECK_SECONDS",
        default_value_t = 4,
        global = true,
        value_parser = clap::value_parser!(u64).range(1..=120)
    )]
    pub address_check_seconds: u64,

    /// Direct addresses of public-health agencies, comma separated. A mental-health
    /// record about a patient who opted out of HIE sharing may always be sent to them
    /// (740 ILCS 110, public-health reporting; docs/sensitive-records.md).
    #[arg(
        long,
        env = "DIRECTMAIL_PUBLIC_HEALTH_ADDRESSES",
        default_value = "",
        global = true,
        value_parser = parse_addresses
    )]
    pub public_health_addresses: Addresses,

    /// Days after which a records request sent by Direct and not answered is shown
    /// as overdue on the mailbox's requests page (1–365).
    #[arg(
        long,
        env = "DIRECTMAIL_RECORD_REQUEST_OVERDUE_DAYS",
        default_value_t = 14,
        global = true,
        value_parser = clap::value_parser!(i64).range(1..=365)
    )]
    pub record_request_overdue_days: i64,

    /// Days a message stays in Trash before it is deleted for good.
    #[arg(
        long,
        env = "DIRECTMAIL_TRASH_RETENTION_DAYS",
        default_value_t = 30,
        global = true,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub trash_retention_days: u32,

    /// The Subject header outside the encryption: `hidden` (a neutral text; the real
    /// subject travels only inside) or `visible` (the real subject, readable in transit).
    #[arg(
        long,
        env = "DIRECTMAIL_OUTER_SUBJECT",
        default_value = "hidden",
        global = true
    )]
    pub outer_subject: OuterSubject,

    /// Certificate chain (PEM) for serving HTTPS directly. Needs `--tls-key`.
    #[arg(long, env = "DIRECTMAIL_TLS_CERT", global = true, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) for serving HTTPS directly. Needs `--tls-cert`.
    #[arg(long, env = "DIRECTMAIL_TLS_KEY", global = true, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Comma-separated IP addresses of reverse proxies whose `X-Forwarded-For` and
    /// `X-Forwarded-Proto` headers are believed.
    #[arg(
        long,
        env = "DIRECTMAIL_TRUSTED_PROXIES",
        value_delimiter = ',',
        global = true
    )]
    pub trusted_proxies: Vec<IpAddr>,

    /// Absolute session lifetime in minutes, whatever the activity.
    #[arg(
        long,
        env = "DIRECTMAIL_SESSION_LIFETIME_MINUTES",
        default_value_t = 720,
        global = true,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub session_lifetime_minutes: u32,

    /// Failed sign-ins in a row before an account is locked.
    #[arg(
        long,
        env = "DIRECTMAIL_LOCKOUT_THRESHOLD",
        default_value_t = 5,
        global = true,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub lockout_threshold: u32,

    /// Minutes an account (or a source address) stays locked.
    #[arg(
        long,
        env = "DIRECTMAIL_LOCKOUT_MINUTES",
        default_value_t = 15,
        global = true,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub lockout_minutes: u32,

    /// Failed sign-ins from one source address (any account) before it is blocked.
    #[arg(
        long,
        env = "DIRECTMAIL_IP_LOCKOUT_THRESHOLD",
        default_value_t = 20,
        global = true,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub ip_lockout_threshold: u32,

    /// HISP operators must use two-step sign-in (TOTP): an operator without it is sent
    /// to enrolment before any other page, and cannot use API tokens. Turn off only
    /// where operators sign in some other protected way (tests turn it off).
    #[arg(long, env = "DIRECTMAIL_OPERATOR_MFA", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub operator_mfa: bool,

    /// Key-encryption key for private keys at rest: 64 hex digits or base64 of 32
    /// bytes. Without it (or the `_FILE` variant) a development key is generated into
    /// the data directory.
    #[arg(
        long,
        env = "DIRECTMAIL_SECRET_KEY",
        hide_env_values = true,
        global = true
    )]
    pub secret_key: Option<crate::secrets::SecretString>,

    /// File holding the key-encryption key (instead of `DIRECTMAIL_SECRET_KEY`).
    #[arg(
        long,
        env = "DIRECTMAIL_SECRET_KEY_FILE",
        global = true,
        conflicts_with = "secret_key"
    )]
    pub secret_key_file: Option<PathBuf>,

    /// A PEM file of certificate authorities trusted for HTTPS fetches (trust bundles,
    /// directory sources) besides the web PKI's roots: for publishers on a private PKI.
    #[arg(long, env = "DIRECTMAIL_HTTPS_ROOTS", global = true)]
    pub https_roots: Option<PathBuf>,

    /// Seconds to wait for a CRL or an AIA issuer certificate over HTTP.
    #[arg(
        long,
        env = "DIRECTMAIL_FETCH_TIMEOUT_SECONDS",
        default_value_t = 10,
        global = true,
        value_parser = clap::value_parser!(u64).range(1..=120)
    )]
    pub fetch_timeout_seconds: u64,

    /// URLs (comma-separated) of CSV or FHIR files the shared directory is refreshed
    /// from on a schedule; entries a source no longer lists are removed.
    #[arg(
        long,
        env = "DIRECTMAIL_DIRECTORY_SOURCES",
        value_delimiter = ',',
        global = true
    )]
    pub directory_sources: Vec<url::Url>,

    /// Minutes between two refreshes of each directory source.
    #[arg(
        long,
        env = "DIRECTMAIL_DIRECTORY_REFRESH_MINUTES",
        default_value_t = 1440,
        global = true,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub directory_refresh_minutes: u64,

    /// Largest trust bundle accepted, in bytes, from a URL or a file (the console's
    /// uploads are also held to 1 MB).
    #[arg(
        long,
        env = "DIRECTMAIL_BUNDLE_MAX_BYTES",
        default_value_t = 4 * 1024 * 1024,
        global = true,
        value_parser = clap::value_parser!(u64).range(1024..=100 * 1024 * 1024)
    )]
    pub bundle_max_bytes: u64,

    /// On first start, give the HISP domain a certificate from a built-in development
    /// CA (labelled not for production), so a new portal can sign and encrypt at once.
    #[arg(long, env = "DIRECTMAIL_DEV_PKI", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub dev_pki: bool,

    /// Logging filter (tracing `EnvFilter` syntax), e.g. `info` or `directmail=debug`.
    #[arg(long, env = "DIRECTMAIL_LOG", default_value = "info", global = true)]
    pub log: String,

    /// Log format: `text` or `json`.
    #[arg(
        long,
        env = "DIRECTMAIL_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,

    /// Seconds a client of the web portal has to finish the TLS handshake, and then to
    /// send a request's headers once the connection is ready for one (hyper starts
    /// that clock as soon as the previous response is sent, so it also bounds how long
    /// a kept-alive connection waits for its next request).
    #[arg(
        long,
        env = "DIRECTMAIL_HTTP_HEADER_TIMEOUT_SECONDS",
        default_value_t = 20,
        global = true,
        value_parser = clap::value_parser!(u64).range(1..=600)
    )]
    pub http_header_timeout_seconds: u64,

    /// Seconds a web connection may stay silent (nothing received or sent) before it
    /// is closed (after the request in progress, if any); a request body that stops
    /// arriving for this long fails, and a client that stops reading its response for
    /// this long is cut off.
    #[arg(
        long,
        env = "DIRECTMAIL_HTTP_IDLE_TIMEOUT_SECONDS",
        default_value_t = 60,
        global = true,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub http_idle_timeout_seconds: u64,

    /// Most web connections served at once; more wait to be accepted until one
    /// closes. Keep it below the process's open-file limit.
    #[arg(
        long,
        env = "DIRECTMAIL_HTTP_MAX_CONNECTIONS",
        default_value_t = 512,
        global = true,
        value_parser = clap::value_parser!(u32).range(1..=100_000)
    )]
    pub http_max_connections: u32,
}

impl Config {
    /// Where the database lives, with the default filled in.
    pub fn database_url(&self) -> DatabaseUrl {
        self.database_url.clone().unwrap_or_else(|| {
            DatabaseUrl(format!(
                "sqlite://{}",
                self.data_dir.join("directmail.db").display()
            ))
        })
    }

    /// Whether the browser reaches us over HTTPS (directly or through a proxy).
    pub fn served_over_https(&self) -> bool {
        self.tls_cert.is_some()
            || self
                .public_url
                .as_ref()
                .is_some_and(|u| u.scheme() == "https")
    }

    /// The extra HTTPS roots of `DIRECTMAIL_HTTPS_ROOTS` (none when unset).
    pub fn extra_https_roots(&self) -> anyhow::Result<Vec<reqwest::Certificate>> {
        use anyhow::Context as _;
        let Some(path) = &self.https_roots else {
            return Ok(Vec::new());
        };
        let pem = std::fs::read(path).with_context(|| {
            format!("DIRECTMAIL_HTTPS_ROOTS: {} cannot be read", path.display())
        })?;
        let roots = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
            format!(
                "DIRECTMAIL_HTTPS_ROOTS: {} is not a PEM file of certificates",
                path.display()
            )
        })?;
        anyhow::ensure!(
            !roots.is_empty(),
            "DIRECTMAIL_HTTPS_ROOTS: {} holds no certificate",
            path.display()
        );
        Ok(roots)
    }

    /// The outbound-connection policy: `DIRECTMAIL_ALLOW_PRIVATE_NETWORKS`, else its
    /// earlier name, else public addresses only.
    pub fn network_policy(&self) -> directmail_net::Policy {
        match (
            &self.allow_private_networks,
            self.discovery_private_networks,
        ) {
            (Some(p), _) => p.clone(),
            (None, Some(true)) => directmail_net::Policy::everything(),
            _ => directmail_net::Policy::public_only(),
        }
    }

    /// The configuration with every default, as if started with no flags and no
    /// environment (tests change fields from here).
    pub fn defaults() -> Self {
        Cli::parse_from(["directmail"]).config
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("http_addr", &self.http_addr)
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url())
            .field("hisp_domain", &self.hisp_domain)
            .field("public_url", &self.public_url.as_ref().map(|u| u.as_str()))
            .field("tls_cert", &self.tls_cert)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("alert_smtp_relay", &self.alert_smtp_relay)
            .field("alert_smtp_username", &self.alert_smtp_username)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OuterSubject {
    Hidden,
    Visible,
}

/// The operator's attachment allow-list (PDF is always allowed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachmentTypes(pub Vec<directmail_content::Kind>);

fn parse_kinds(text: &str) -> Result<AttachmentTypes, String> {
    directmail_content::parse_kinds(text)
        .map(AttachmentTypes)
        .map_err(|e| e.to_string())
}

/// Direct addresses, lower case.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Addresses(pub Vec<String>);

impl Addresses {
    pub fn contains(&self, address: &str) -> bool {
        self.0
            .iter()
            .any(|a| a.eq_ignore_ascii_case(address.trim()))
    }
}

fn parse_addresses(text: &str) -> Result<Addresses, String> {
    text.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| {
            crate::domain::Email::parse(a)
                .map(|e| e.as_str().to_owned())
                .map_err(|e| format!("{a}: {}", e.0))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Addresses)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// A database URL. Its password never appears in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(pub String);

impl DatabaseUrl {
    pub fn is_postgres(&self) -> bool {
        self.0.starts_with("postgres://") || self.0.starts_with("postgresql://")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The database file of a `sqlite:` URL; `None` for PostgreSQL.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        use std::str::FromStr as _;
        if self.is_postgres() {
            return None;
        }
        sqlx::sqlite::SqliteConnectOptions::from_str(&self.0)
            .ok()
            .map(|o| o.get_filename().to_path_buf())
    }

    /// The URL with any password replaced by `***`, for messages and logs.
    pub fn redacted(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(mut u) if u.password().is_some() => {
                let _ = u.set_password(Some("***"));
                u.to_string()
            }
            _ => self.0.clone(),
        }
    }
}

impl std::str::FromStr for DatabaseUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = ["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .any(|p| s.starts_with(p));
        if ok {
            Ok(DatabaseUrl(s.to_owned()))
        } else {
            Err("expected sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DATABASE".into())
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_password_never_prints() {
        let url: DatabaseUrl = "postgres://app:hunter2secret@db:5432/direct"
            .parse()
            .unwrap();
        assert!(!format!("{url:?}").contains("hunter2secret"));
        assert!(!format!("{url}").contains("hunter2secret"));
        let mut config = Config::defaults();
        config.database_url = Some(url);
        assert!(!format!("{config:?}").contains("hunter2secret"));
    }

    #[test]
    fn the_alert_relay_password_never_prints() {
        let config = Cli::parse_from([
            "directmail",
            "--alert-smtp-relay",
            "smtp.example.org:587",
            "--alert-smtp-username",
            "portal",
            "--alert-smtp-password",
            "hunter2relay",
        ])
        .config;
        assert!(config.alert_smtp_password.is_some());
        assert!(!format!("{config:?}").contains("hunter2relay"));
    }

    #[test]
    fn defaults_need_no_configuration() {
        let config = Config::defaults();
        assert_eq!(config.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.hisp_domain, "direct.localhost");
        assert!(
            config
                .database_url()
                .as_str()
                .ends_with("data/directmail.db")
        );
        assert!(!config.served_over_https());
    }
}
