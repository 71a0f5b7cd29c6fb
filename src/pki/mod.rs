//! Hosted certificates, private keys and trust anchors: importing them (from the
//! console or `directmail admin`), sealing keys at rest, and loading them back for the
//! S/MIME engine.

pub mod bundles;
pub mod fetch;
pub mod publish;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use der::EncodePem as _;
use directmail_smime::{self as smime, Binding, Certificate, Identity, ImportError};

use crate::audit::{self, Actor, Event};
use crate::clock::format_utc;
use crate::db::Db;
use crate::domain::Email;
use crate::secrets::SecretKey;
use crate::stages::{self, Stage};
use crate::store::orgs::Domain;
use crate::store::pki::{self as store, CertRow, NewCert};

/// The facts shown about a certificate.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub fingerprint: String,
    pub not_before: i64,
    pub not_after: i64,
}

pub fn info(cert: &Certificate) -> CertInfo {
    let tbs = cert.tbs_certificate();
    let validity = tbs.validity();
    CertInfo {
        subject: tbs.subject().to_string(),
        issuer: tbs.issuer().to_string(),
        serial: hex::encode(tbs.serial_number().as_bytes()),
        fingerprint: smime::fingerprint_sha256(cert),
        not_before: validity.not_before.to_unix_duration().as_secs() as i64,
        not_after: validity.not_after.to_unix_duration().as_secs() as i64,
    }
}

fn to_pem(certs: &[&Certificate]) -> anyhow::Result<String> {
    let mut out = String::new();
    for c in certs {
        out.push_str(&c.to_pem(der::pem::LineEnding::LF)?);
    }
    Ok(out)
}

/// How a key and certificate arrive.
pub enum KeyFile {
    /// PEM or DER: the certificate (then its chain) and an unencrypted key.
    Pem { certs: Vec<u8>, key: Vec<u8> },
    /// PKCS#12 with its password.
    Pkcs12 { der: Vec<u8>, password: String },
}

/// Why an import was refused, in a sentence for the administrator.
#[derive(Debug, thiserror::Error)]
pub enum ImportProblem {
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ImportProblem {
    fn from(e: sqlx::Error) -> Self {
        ImportProblem::Internal(e.into())
    }
}

fn refused(e: ImportError) -> ImportProblem {
    ImportProblem::Refused(match e {
        ImportError::NotValidNow {
            not_before,
            not_after,
        } => format!(
            "The certificate is not valid now: it is valid from {} to {}.",
            format_utc(not_before as i64),
            format_utc(not_after as i64)
        ),
        other => {
            let text = other.to_string();
            let mut chars = text.chars();
            match chars.next() {
                Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str()),
                None => "The files could not be read.".into(),
            }
        }
    })
}

fn system_time(unix: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64)
}

/// Imports a domain's (or, with `address`, an address's) key and certificate: checks
/// that the key matches, is RSA ≥ 2048, that the certificate binds the domain or
/// address and is valid now; seals the key; stores and audits it with its chain:
/// the issuers that came with the file, then (with a `fetcher`) those reached through
/// AIA up to a configured anchor or a self-signed root. The same certificate again is
/// refused, unless it brings issuers its stored chain lacks: then the chain is kept.
#[allow(clippy::too_many_arguments)]
pub async fn import_certificate(
    db: &Db,
    kek: &SecretKey,
    fetcher: Option<&fetch::Fetcher>,
    domain: &Domain,
    address: Option<&Email>,
    file: KeyFile,
    now: i64,
    actor: &Actor,
) -> Result<Imported, ImportProblem> {
    if let Some(a) = address
        && a.domain() != domain.name
    {
        return Err(ImportProblem::Refused(format!(
            "The address {a} is not on the domain {}.",
            domain.name
        )));
    }
    let binding_name = address
        .map(|a| a.as_str().to_owned())
        .unwrap_or_else(|| domain.name.clone());
    let is_address = address.is_some();
    // RSA and PKCS#12 key derivation are slow: off the async threads
    let identity = tokio::task::spawn_blocking(move || -> Result<Identity, ImportError> {
        let identity = match file {
            KeyFile::Pem { certs, key } => Identity::from_pem_or_der(&certs, &key)?,
            KeyFile::Pkcs12 { der, password } => Identity::from_pkcs12(&der, &password)?,
        };
        let key = smime::parse_private_key(&identity.private_key_pkcs8_der()?)?;
        let binding = if is_address {
            Binding::Address(&binding_name)
        } else {
            Binding::Domain(&binding_name)
        };
        smime::check_import(&key, identity.certificate(), binding, system_time(now))?;
        Ok(identity)
    })
    .await
    .map_err(anyhow::Error::from)?
    .map_err(refused)?;

    let cert = identity.certificate();
    let facts = info(cert);
    // the issuers that came with the file, then those its AIA names, up to an anchor
    let mut chain: Vec<Certificate> = vec![cert.clone()];
    chain.extend(identity.chain().iter().cloned());
    let anchors = sending_anchors(db).await?;
    if let Some(fetcher) = fetcher {
        complete_chain(fetcher, &mut chain, &anchors, now).await;
    }
    let chain_pem = to_pem(&chain.iter().collect::<Vec<_>>())?;
    let chain_gap = missing_issuer(&chain, &anchors).map(gap_sentence);
    if let Some(mut row) = store::cert_by_fingerprint(db, &facts.fingerprint).await? {
        // the same certificate again, with issuers its stored chain lacks: keep them
        let stored = smime::parse_certificates(row.chain_pem.as_bytes()).unwrap_or_default();
        if row.domain_id != domain.id
            || missing_issuer(&stored, &anchors).is_none()
            || chain.len() <= stored.len()
        {
            return Err(ImportProblem::Refused(
                "This certificate is already imported.".into(),
            ));
        }
        let mut tx = db.begin().await?;
        store::set_chain(&mut tx, row.id, &chain_pem).await?;
        audit::append(
            &mut tx,
            now,
            actor,
            Event::new(
                "cert.chain",
                row.address.clone().unwrap_or_else(|| domain.name.clone()),
            )
            .detail(format!(
                "sha256 {}: {} issuer(s) stored",
                facts.fingerprint,
                chain.len() - 1
            ))
            .org(domain.org_id),
        )
        .await?;
        tx.commit().await?;
        row.chain_pem = chain_pem;
        return Ok(Imported { row, chain_gap });
    }
    let key_der = identity.private_key_pkcs8_der().map_err(refused)?;
    let key_sealed = kek.seal(&key_der, facts.fingerprint.as_bytes())?;
    let mut tx = db.begin().await?;
    let id = store::insert_cert(
        &mut tx,
        NewCert {
            domain_id: domain.id,
            address: address.map(Email::as_str),
            subject: &facts.subject,
            issuer: &facts.issuer,
            serial: &facts.serial,
            fingerprint: &facts.fingerprint,
            not_before: facts.not_before,
            not_after: facts.not_after,
            chain_pem: &chain_pem,
            key_sealed: &key_sealed,
        },
        now,
    )
    .await?;
    audit::append(
        &mut tx,
        now,
        actor,
        Event::new(
            "cert.import",
            address
                .map(|a| a.to_string())
                .unwrap_or_else(|| domain.name.clone()),
        )
        .detail(format!("sha256 {}", facts.fingerprint))
        .org(domain.org_id),
    )
    .await?;
    tx.commit().await?;
    Ok(Imported {
        row: CertRow {
            id,
            domain_id: domain.id,
            address: address.map(|a| a.to_string()),
            subject: facts.subject,
            issuer: facts.issuer,
            serial: facts.serial,
            fingerprint: facts.fingerprint,
            not_before: facts.not_before,
            not_after: facts.not_after,
            chain_pem,
        },
        chain_gap,
    })
}

/// A certificate just imported, and what its chain lacks.
pub struct Imported {
    pub row: CertRow,
    /// One sentence when the stored chain does not reach an anchor or a root:
    /// other HISPs may then be unable to verify this certificate's signatures.
    pub chain_gap: Option<String>,
}

/// Every anchor configured here: the domains' own and the sending bundles'.
pub async fn sending_anchors(db: &Db) -> anyhow::Result<Vec<Certificate>> {
    let mut anchors = Vec::new();
    for pem in crate::store::bundles::sending_anchor_pems(db).await? {
        anchors.extend(smime::parse_certificates(pem.as_bytes()).unwrap_or_default());
    }
    Ok(anchors)
}

fn self_signed(c: &Certificate) -> bool {
    c.tbs_certificate().subject() == c.tbs_certificate().issuer()
}

/// The highest certificate reached from `chain[0]` through issuers in `chain`.
fn top_of(chain: &[Certificate]) -> Option<&Certificate> {
    let mut top = chain.first()?;
    for _ in 0..chain.len() {
        if self_signed(top) {
            break;
        }
        match chain
            .iter()
            .find(|c| c.tbs_certificate().subject() == top.tbs_certificate().issuer())
        {
            Some(next) => top = next,
            None => break,
        }
    }
    Some(top)
}

/// The issuer `chain` stops short of (its name), or `None` when it reaches a
/// self-signed certificate or the issuer of its top is one of `anchors`.
fn missing_issuer(chain: &[Certificate], anchors: &[Certificate]) -> Option<String> {
    let top = top_of(chain)?;
    let issuer = top.tbs_certificate().issuer();
    let reached = self_signed(top)
        || anchors
            .iter()
            .any(|a| a.tbs_certificate().subject() == issuer);
    (!reached).then(|| issuer.to_string())
}

fn gap_sentence(issuer: String) -> String {
    format!(
        "Other HISPs may not be able to verify this certificate's signatures: its issuer {issuer} \
         is neither in the file nor reachable through the certificate's AIA, nor a configured \
         anchor; import the certificate again as a PEM file with {issuer}'s certificate (and any \
         CA above it) after it, or as a PKCS#12 file that includes them."
    )
}

/// Follows AIA from the top of `chain` until it reaches a self-signed certificate or
/// an issuer among `anchors` (four steps at most), adding each issuer found.
async fn complete_chain(
    fetcher: &fetch::Fetcher,
    chain: &mut Vec<Certificate>,
    anchors: &[Certificate],
    now: i64,
) {
    for _ in 0..4 {
        if missing_issuer(chain, anchors).is_none() {
            return;
        }
        let Some(top) = top_of(chain).cloned() else {
            return;
        };
        let mut found = false;
        for url in fetch::issuer_urls(&top) {
            let Ok(certs) = fetcher.issuers(&url, now).await else {
                continue;
            };
            for c in certs {
                if c.tbs_certificate().subject() == top.tbs_certificate().issuer()
                    && !chain.contains(&c)
                {
                    chain.push(c);
                    found = true;
                }
            }
            if found {
                break;
            }
        }
        if !found {
            return;
        }
    }
}

/// [`gap_sentence`] for a stored certificate, or `None` when its chain reaches one
/// of `anchors` ([`sending_anchors`]) or a root.
pub fn chain_gap(row: &CertRow, anchors: &[Certificate]) -> Option<String> {
    let chain = smime::parse_certificates(row.chain_pem.as_bytes()).ok()?;
    missing_issuer(&chain, anchors).map(gap_sentence)
}

/// What adding anchors did.
#[derive(Debug, Default, serde::Serialize)]
pub struct AnchorImport {
    pub added: Vec<CertInfo>,
    /// Already trusted by this domain: nothing changed for these.
    pub already: Vec<CertInfo>,
}

/// Adds trust anchors to a domain from PEM (any number), DER, or a `.p7b` bundle.
pub async fn add_anchors(
    db: &Db,
    domain: &Domain,
    bytes: &[u8],
    now: i64,
    actor: &Actor,
) -> Result<AnchorImport, ImportProblem> {
    let certs = smime::parse_certificates(bytes).map_err(refused)?;
    let mut result = AnchorImport::default();
    let mut tx = db.begin().await?;
    for cert in &certs {
        let facts = info(cert);
        let pem = to_pem(&[cert])?;
        let added = store::insert_anchor(
            &mut tx,
            domain.id,
            &facts.subject,
            &facts.issuer,
            &facts.fingerprint,
            facts.not_before,
            facts.not_after,
            &pem,
            now,
        )
        .await?;
        if added {
            audit::append(
                &mut tx,
                now,
                actor,
                Event::new("anchor.add", &domain.name)
                    .detail(format!("{} sha256 {}", facts.subject, facts.fingerprint))
                    .org(domain.org_id),
            )
            .await?;
            result.added.push(facts);
        } else {
            result.already.push(facts);
        }
    }
    tx.commit().await?;
    Ok(result)
}

/// The identities (key + certificate + chain) a domain signs and decrypts with.
pub async fn identities(db: &Db, kek: &SecretKey, domain_id: i64) -> anyhow::Result<Vec<Identity>> {
    let mut out = Vec::new();
    for (fingerprint, chain_pem, sealed) in store::key_material(db, domain_id).await? {
        if let Some(identity) = OPENED.get(&fingerprint, &chain_pem) {
            out.push(identity);
            continue;
        }
        let key = kek.open(&sealed, fingerprint.as_bytes())?;
        let (identity, chain_pem) = tokio::task::spawn_blocking(move || {
            Identity::from_pem_or_der(chain_pem.as_bytes(), &key).map(|i| (i, chain_pem))
        })
        .await??;
        OPENED.put(fingerprint, chain_pem, identity.clone());
        out.push(identity);
    }
    Ok(out)
}

/// Identities already unsealed and parsed, by certificate fingerprint: a certificate's
/// key never changes, so an entry stays right for as long as the stored chain is the
/// same. Opening a key for every message and every notification cost more than the
/// RSA operation it was opened for.
static OPENED: Opened = Opened(std::sync::LazyLock::new(Default::default));

struct Opened(
    std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, (String, Identity)>>>,
);

impl Opened {
    /// Most identities kept; past it the cache starts again.
    const MAX: usize = 10_000;

    fn get(&self, fingerprint: &str, chain_pem: &str) -> Option<Identity> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(fingerprint)
            .filter(|(chain, _)| chain == chain_pem)
            .map(|(_, identity)| identity.clone())
    }

    fn put(&self, fingerprint: String, chain_pem: String, identity: Identity) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= Self::MAX {
            map.clear();
        }
        map.insert(fingerprint, (chain_pem, identity));
    }
}

/// The anchors a domain trusts for senders, as certificates for the engine's trust
/// store: its own, and those of the bundles it uses for receiving.
pub async fn anchors(db: &Db, domain_id: i64) -> anyhow::Result<Vec<Certificate>> {
    let mut pems = store::anchor_pems(db, domain_id).await?;
    pems.extend(crate::store::bundles::receiving_anchor_pems(db, domain_id).await?);
    pems.sort();
    pems.dedup();
    let mut out = Vec::new();
    for pem in pems {
        out.extend(smime::parse_certificates(pem.as_bytes())?);
    }
    Ok(out)
}

/// The key transport for encrypting to a recipient domain (AS 1.3: RSA-OAEP with
/// SHA-256 unless the operator set PKCS#1 v1.5 for that HISP).
pub async fn key_transport_for(
    db: &Db,
    recipient_domain: &str,
) -> anyhow::Result<smime::KeyTransport> {
    let name = crate::store::orgs::remote_key_transport(db, recipient_domain).await?;
    Ok(if name == "rsa-pkcs1v15" {
        smime::KeyTransport::RsaPkcs1v15
    } else {
        smime::KeyTransport::RsaOaepSha256
    })
}

/// Whether a trust anchor is a development or test CA: its common name or
/// organization ([`dn_names`]) names it so ("directmail development CA", "DirectTrust
/// Test CA"), as a word. Messages trusted through one are not for real patient data,
/// and say so.
pub fn is_test_anchor(subject_dn: &str) -> bool {
    dn_names(subject_dn).iter().any(|value| {
        value.split(|c: char| !c.is_alphanumeric()).any(|word| {
            ["test", "testing", "development", "dev", "sandbox"]
                .iter()
                .any(|w| word.eq_ignore_ascii_case(w))
        })
    })
}

/// The CN and O of an RFC 4514 name (escapes honoured), each once, in that order:
/// what the reader is shown of a certificate's subject or issuer.
pub fn dn_names(dn: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in dn.chars() {
        match c {
            _ if escaped => {
                current.push(c);
                escaped = false;
            }
            '\\' => escaped = true,
            ',' | '+' => parts.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    parts.push(current);
    let value = |key: &str| {
        parts.iter().find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case(key)
                .then(|| v.trim().to_owned())
        })
    };
    [value("CN"), value("O")]
        .into_iter()
        .flatten()
        .fold(Vec::new(), |mut acc, v| {
            if !acc.contains(&v) {
                acc.push(v);
            }
            acc
        })
}

/// The development CA's records in `settings`.
const DEV_CA_CERT: &str = "dev_ca_cert";
const DEV_CA_KEY: &str = "dev_ca_key";
const DEV_CA_AAD: &[u8] = b"dev-ca";

/// The built-in development CA ("not for production"), created on first use and kept
/// in the database with its key sealed.
pub async fn dev_ca(db: &Db, kek: &SecretKey, now: i64) -> anyhow::Result<smime::DevCa> {
    let stored: Vec<(String, String)> =
        sqlx::query_as("select key, value from settings where key = $1 or key = $2")
            .bind(DEV_CA_CERT)
            .bind(DEV_CA_KEY)
            .fetch_all(&db.pool)
            .await?;
    let get = |k: &str| {
        stored
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    if let (Some(cert), Some(key)) = (get(DEV_CA_CERT), get(DEV_CA_KEY)) {
        let key = kek.open(&key, DEV_CA_AAD)?;
        let key = String::from_utf8(key.to_vec())?;
        return Ok(smime::DevCa::from_pem(&cert, &key)?);
    }
    let ca = tokio::task::spawn_blocking(move || {
        smime::DevCa::generate("directmail development CA", system_time(now))
    })
    .await??;
    let (cert_pem, key_pem) = ca.to_pem()?;
    let sealed = kek.seal(key_pem.as_bytes(), DEV_CA_AAD)?;
    let mut tx = db.begin().await?;
    // a concurrent first use may have won: keep whichever CA was stored first
    let inserted = sqlx::query(
        "insert into settings (key, value) values ($1, $2) on conflict (key) do nothing",
    )
    .bind(DEV_CA_CERT)
    .bind(&cert_pem)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        drop(tx);
        return Box::pin(dev_ca(db, kek, now)).await;
    }
    sqlx::query("insert into settings (key, value) values ($1, $2)")
        .bind(DEV_CA_KEY)
        .bind(&sealed)
        .execute(&mut *tx)
        .await?;
    audit::append(
        &mut tx,
        now,
        &Actor::system(),
        Event::new("pki.dev-ca", info(ca.certificate()).fingerprint),
    )
    .await?;
    tx.commit().await?;
    Ok(ca)
}

/// Issues a certificate from the development CA for a domain (or one address of it),
/// imports it with its sealed key, and makes the domain trust the development CA.
pub async fn issue_dev_certificate(
    db: &Db,
    kek: &SecretKey,
    domain: &Domain,
    address: Option<&Email>,
    now: i64,
    actor: &Actor,
) -> Result<CertRow, ImportProblem> {
    let ca = dev_ca(db, kek, now).await?;
    let name = address
        .map(|a| a.to_string())
        .unwrap_or_else(|| domain.name.clone());
    let is_address = address.is_some();
    let (certs, key, ca_pem) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let identity = if is_address {
            ca.issue_address(&name, system_time(now))?
        } else {
            ca.issue_domain(&name, system_time(now))?
        };
        // the chain up to the development CA's root, which is never sent
        let mut chain: Vec<&Certificate> = vec![identity.certificate()];
        chain.extend(identity.chain().iter());
        if !chain.contains(&ca.certificate()) {
            chain.push(ca.certificate());
        }
        let key = identity.private_key_pkcs8_der()?;
        Ok((to_pem(&chain)?, key, to_pem(&[ca.certificate()])?))
    })
    .await
    .map_err(anyhow::Error::from)??;
    let Imported { row, .. } = import_certificate(
        db,
        kek,
        None,
        domain,
        address,
        KeyFile::Pem {
            certs: certs.into_bytes(),
            key: key.to_vec(),
        },
        now,
        actor,
    )
    .await?;
    add_anchors(db, domain, ca_pem.as_bytes(), now, actor).await?;
    Ok(row)
}

/// The outcome of judging an inbound message for a hosted domain: the engine's
/// verdict after fetching what the certificates point to, how revocation went, and
/// every lookup step for the operator.
#[derive(Debug)]
pub struct Judgement {
    pub verdict: smime::Verdict,
    pub revocation: Revocation,
    /// "AIA http://…: 1 certificate", "CRL http://…: could not be reached", …
    pub steps: Vec<String>,
}

/// What one message may make the server fetch (AIA issuers and CRLs): a few
/// certificates looked at, a few URLs, and a deadline for all of them together.
pub(crate) struct FetchBudget {
    certificates: usize,
    urls: usize,
    deadline: tokio::time::Instant,
    noted: bool,
}

impl FetchBudget {
    /// Certificates of one message whose AIA is followed.
    const CERTIFICATES: usize = 8;
    /// URLs (AIA and CRL together) fetched for one message.
    const URLS: usize = 8;

    pub(crate) fn new(fetch_timeout: std::time::Duration) -> FetchBudget {
        FetchBudget {
            certificates: Self::CERTIFICATES,
            urls: Self::URLS,
            // room for one round of AIA and one of CRLs at the fetch timeout
            deadline: tokio::time::Instant::now()
                + fetch_timeout * 2
                + std::time::Duration::from_secs(1),
            noted: false,
        }
    }

    fn look_at_certificate(&mut self, steps: &mut Vec<String>) -> bool {
        if self.certificates == 0 {
            if !self.noted {
                steps.push(format!(
                    "AIA: only {} certificates of one message are followed",
                    Self::CERTIFICATES
                ));
                self.noted = true;
            }
            return false;
        }
        self.certificates -= 1;
        true
    }

    fn take_urls(&mut self, mut urls: Vec<String>, steps: &mut Vec<String>) -> Vec<String> {
        if urls.len() > self.urls {
            steps.push(format!(
                "{} URL(s) not fetched: one message may make this server fetch {} at most",
                urls.len() - self.urls,
                Self::URLS
            ));
            urls.truncate(self.urls);
        }
        self.urls -= urls.len();
        urls
    }

    /// Runs the fetches side by side, each cut off at the message's deadline.
    async fn run<T>(
        &self,
        fetches: impl Iterator<Item = impl std::future::Future<Output = Result<T, fetch::FetchError>>>,
    ) -> Vec<Result<T, fetch::FetchError>> {
        let deadline = self.deadline;
        futures_util::future::join_all(fetches.map(|f| async move {
            tokio::time::timeout_at(deadline, f)
                .await
                .unwrap_or_else(|_| {
                    Err(fetch::FetchError(
                        "not fetched: the time this message may spend fetching ran out".into(),
                    ))
                })
        }))
        .await
    }
}

/// Whether the signer's certificates were checked against their CRLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// Every distribution point answered.
    Checked,
    /// The certificates name no distribution point.
    NoDistributionPoint,
    /// Some CRL could not be fetched (the reason); soft-failed or refused per policy.
    Unavailable(String),
    /// The message was not trusted before revocation mattered.
    NotReached,
}

/// The CRLs of `certs`' distribution points, fetched within `budget`.
pub(crate) struct Lists {
    /// The lists fetched (DER).
    pub crls: Vec<Vec<u8>>,
    /// `None` when no certificate names a distribution point; else the points that
    /// could not be reached (an empty list when all were).
    pub unavailable: Option<Vec<String>>,
    /// A list reached that cannot be used for the certificate that pointed to it
    /// (unreadable, or issued under another name): refused whatever the policy.
    pub unusable: Option<String>,
}

/// Fetches the CRLs that `certs` point to. A list fetched from a certificate's
/// distribution point must be readable and issued under that certificate's issuer
/// name; its signature, currency and entries are judged by the engine.
pub(crate) async fn revocation_lists(
    fetcher: &fetch::Fetcher,
    certs: &[Certificate],
    now: i64,
    budget: &mut FetchBudget,
    steps: &mut Vec<String>,
) -> Lists {
    let mut urls: Vec<String> = Vec::new();
    let mut named_by: Vec<Vec<&Certificate>> = Vec::new();
    for cert in certs {
        for url in fetch::crl_urls(cert) {
            match urls.iter().position(|u| *u == url) {
                Some(i) => named_by[i].push(cert),
                None => {
                    urls.push(url);
                    named_by.push(vec![cert]);
                }
            }
        }
    }
    let mut lists = Lists {
        crls: Vec::new(),
        unavailable: None,
        unusable: None,
    };
    if urls.is_empty() {
        return lists;
    }
    let mut unavailable = Vec::new();
    let wanted = urls.len();
    let urls = budget.take_urls(urls, steps);
    if urls.len() < wanted {
        unavailable.push(format!(
            "{} distribution point(s) beyond this message's limit were not fetched",
            wanted - urls.len()
        ));
    }
    let fetched = budget
        .run(urls.iter().map(|url| fetcher.crl(url, now)))
        .await;
    for ((url, result), certs) in urls.iter().zip(fetched).zip(&named_by) {
        let crl = match result {
            Ok(crl) => crl,
            Err(e) => {
                steps.push(format!("CRL {e}"));
                unavailable.push(e.0);
                continue;
            }
        };
        let refused = match smime::crl::Crl::from_der(&crl) {
            Err(e) => Some(e.0),
            Ok(list) => certs.iter().find(|c| !list.names_issuer_of(c)).map(|c| {
                format!(
                    "the revocation list was issued by {}, not by the certificate's issuer {}",
                    list.issuer(),
                    c.tbs_certificate().issuer()
                )
            }),
        };
        match refused {
            Some(why) => {
                steps.push(format!("CRL {url}: fetched, but cannot be used: {why}"));
                lists
                    .unusable
                    .get_or_insert_with(|| format!("CRL {url}: {why}"));
            }
            None => {
                steps.push(format!("CRL {url}: fetched"));
                lists.crls.push(crl.to_vec());
            }
        }
    }
    lists.unavailable = Some(unavailable);
    lists
}

/// Judges `message` for `domain`: decrypt with its keys, verify against its anchors,
/// fetch missing intermediates from AIA when the chain does not reach an anchor, then
/// fetch the CRLs of the signer's certificates and judge again. A revoked signer is
/// always refused; an unreachable CRL follows the domain's policy.
pub async fn judge_inbound(
    db: &Db,
    kek: &SecretKey,
    fetcher: &fetch::Fetcher,
    domain: &Domain,
    message: Arc<Vec<u8>>,
    now: i64,
) -> anyhow::Result<Judgement> {
    let started = std::time::Instant::now();
    let keys = Arc::new(identities(db, kek, domain.id).await?);
    let anchors = anchors(db, domain.id).await?;
    stages::record(Stage::Keys, started.elapsed());
    let policy = crate::store::orgs::crl_policy(db, domain.id).await?;
    let mut steps = Vec::new();
    let mut trust = smime::TrustStore {
        anchors,
        intermediates: Vec::new(),
        crls: Vec::new(),
    };
    let judge = |trust: smime::TrustStore| {
        let (keys, message) = (keys.clone(), message.clone());
        stages::timed(
            Stage::Judge,
            tokio::task::spawn_blocking(move || {
                smime::judge(&message, &keys, &trust, system_time(now))
            }),
        )
    };
    let mut verdict = judge(trust.clone()).await?;

    // What one message may make this server fetch, however many certificates it
    // carries and however slowly their servers answer.
    let mut budget = FetchBudget::new(fetcher.timeout());

    // A chain that stops short of an anchor may lack an intermediate: follow AIA, for
    // the signer's certificate first and a few others at most.
    if verdict.code == smime::ReasonCode::UntrustedAnchor {
        let mut known: Vec<String> = verdict
            .certificates
            .iter()
            .map(smime::fingerprint_sha256)
            .collect();
        let signer_fp = verdict
            .signer
            .as_ref()
            .map(|s| s.fingerprint_sha256.clone());
        let mut frontier = verdict.certificates.clone();
        frontier.sort_by_key(|c| Some(smime::fingerprint_sha256(c)) != signer_fp);
        for _round in 0..4 {
            let mut urls = Vec::new();
            for cert in &frontier {
                if !budget.look_at_certificate(&mut steps) {
                    break;
                }
                for url in fetch::issuer_urls(cert) {
                    if !urls.contains(&url) {
                        urls.push(url);
                    }
                }
            }
            let urls = budget.take_urls(urls, &mut steps);
            let fetched = budget
                .run(urls.iter().map(|url| fetcher.issuers(url, now)))
                .await;
            let mut found = Vec::new();
            for (url, result) in urls.iter().zip(fetched) {
                match result {
                    Ok(certs) => {
                        steps.push(format!("AIA {url}: {} certificate(s)", certs.len()));
                        for c in certs {
                            let fp = smime::fingerprint_sha256(&c);
                            if !known.contains(&fp) {
                                known.push(fp);
                                found.push(c);
                            }
                        }
                    }
                    Err(e) => steps.push(format!("AIA {e}")),
                }
            }
            if found.is_empty() {
                break;
            }
            trust.intermediates.extend(found.iter().cloned());
            frontier = found;
        }
        if !trust.intermediates.is_empty() {
            verdict = judge(trust.clone()).await?;
        }
    }
    if !verdict.is_trusted() {
        return Ok(Judgement {
            verdict,
            revocation: Revocation::NotReached,
            steps,
        });
    }

    // Revocation: the CRLs of every certificate on the way to the anchor.
    let certs: Vec<Certificate> = verdict
        .certificates
        .iter()
        .chain(trust.intermediates.iter())
        .cloned()
        .collect();
    let lists = stages::timed(
        Stage::Revocation,
        revocation_lists(fetcher, &certs, now, &mut budget, &mut steps),
    )
    .await;
    let Some(unavailable) = lists.unavailable else {
        steps.push("CRL: the certificates name no distribution point".into());
        return Ok(Judgement {
            verdict,
            revocation: Revocation::NoDistributionPoint,
            steps,
        });
    };
    if let Some(why) = lists.unusable {
        verdict.code = smime::ReasonCode::RevocationListUnusable;
        verdict.detail = why;
        return Ok(Judgement {
            verdict,
            revocation: Revocation::Checked,
            steps,
        });
    }
    trust.crls = lists.crls;
    if !trust.crls.is_empty() {
        verdict = judge(trust).await?;
    }
    let revocation = if unavailable.is_empty() {
        Revocation::Checked
    } else {
        Revocation::Unavailable(unavailable.join("; "))
    };
    if verdict.is_trusted()
        && let Revocation::Unavailable(why) = &revocation
    {
        match policy {
            crate::store::orgs::CrlUnreachable::FailClosed => {
                verdict.code = smime::ReasonCode::RevocationUnknown;
                verdict.detail = format!("revocation could not be checked: {why}");
            }
            crate::store::orgs::CrlUnreachable::SoftFail => {
                tracing::warn!(domain = %domain.name, "revocation not checked (soft-fail): {why}");
            }
        }
    }
    Ok(Judgement {
        verdict,
        revocation,
        steps,
    })
}

#[cfg(test)]
mod test_anchor_tests {
    use super::is_test_anchor;

    #[test]
    fn development_and_test_cas_are_told_apart_by_their_names() {
        assert!(is_test_anchor("CN=directmail development CA"));
        assert!(is_test_anchor("CN=Root,O=DirectTrust Test"));
        assert!(is_test_anchor("O=Sandbox HISP+CN=Anchor"));
        assert!(!is_test_anchor(
            "CN=DirectTrust Community Trust Anchor,O=DirectTrust"
        ));
        assert!(!is_test_anchor("CN=Contested Health Root"));
        assert!(!is_test_anchor("OU=Test,CN=Production Root"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_makes_the_server_follow_at_most_eight_certificates_and_fetch_eight_urls() {
        let mut budget = FetchBudget::new(std::time::Duration::from_secs(5));
        let mut steps = Vec::new();
        let followed = (0..12)
            .filter(|_| budget.look_at_certificate(&mut steps))
            .count();
        assert_eq!(followed, FetchBudget::CERTIFICATES);
        assert_eq!(
            steps,
            ["AIA: only 8 certificates of one message are followed"],
            "said once"
        );

        let urls = |n: usize| (0..n).map(|i| format!("http://ca.example/{i}")).collect();
        steps.clear();
        assert_eq!(budget.take_urls(urls(5), &mut steps).len(), 5);
        assert!(steps.is_empty());
        let rest = budget.take_urls(urls(6), &mut steps);
        assert_eq!(
            rest,
            [
                "http://ca.example/0",
                "http://ca.example/1",
                "http://ca.example/2"
            ]
        );
        assert_eq!(
            steps,
            ["3 URL(s) not fetched: one message may make this server fetch 8 at most"]
        );
        assert!(budget.take_urls(urls(1), &mut steps).is_empty(), "spent");
    }

    #[tokio::test]
    async fn fetches_still_running_at_the_messages_deadline_are_cut_off_with_a_reason() {
        // a zero fetch timeout leaves the one second of slack: the stuck fetch ends then
        let budget = FetchBudget::new(std::time::Duration::ZERO);
        let quick = async { Ok::<_, fetch::FetchError>("crl") };
        let stuck = async {
            std::future::pending::<()>().await;
            Ok("never")
        };
        let results = budget
            .run(
                [
                    Box::pin(quick) as std::pin::Pin<Box<dyn std::future::Future<Output = _>>>,
                    Box::pin(stuck),
                ]
                .into_iter(),
            )
            .await;
        assert_eq!(results[0].as_ref().ok(), Some(&"crl"));
        let why = results[1]
            .as_ref()
            .err()
            .map(|e| e.0.clone())
            .unwrap_or_default();
        assert!(why.contains("ran out"), "{why}");
    }
}
