//! The provider directory: entries for practitioners, organizations and services with
//! their Direct addresses, searched by name, specialty, organization, place and NPI.
//!
//! Entries live in one of three scopes: the HISP's shared directory (`public`: its own
//! mailboxes, listed automatically, plus imports and what operators add), one
//! organization's contacts (`org`), and one user's address book (`personal`).
//! - [`search`]: the folding that makes search tolerant of case, accents and order;
//! - [`import`]: CSV and FHIR R4 files in (dry run, all or nothing) and out;
//! - [`refresh`]: the scheduled refresh from `DIRECTMAIL_DIRECTORY_SOURCES`;
//! - storage and queries are in [`crate::store::directory`], re-exported here for the
//!   webmail: [`suggest`], [`names_for`], [`certificate_for`].

pub mod csv;
pub mod fhir;
pub mod import;
pub mod refresh;
pub mod search;

use directmail_smime as smime;

use crate::accounts::{Outcome, Refusal};
use crate::audit::{self, Actor, Event};
use crate::db::Db;
use crate::domain::directory::{parse_phone, parse_state, parse_text, parse_zip};
use crate::domain::{Email, Invalid, Npi, Specialty};

use crate::store::directory::{self as store, KeyColumn};

pub use crate::store::directory::{Entry, Suggestion, Viewer, certificate_for, names_for, suggest};

/// Largest file accepted by an import or a refresh (the browser's upload form is
/// further held to 1 MB by the CSRF layer).
pub const MAX_IMPORT_BYTES: usize = 32 * 1024 * 1024;

/// Most Direct addresses one entry may have.
const MAX_ADDRESSES: usize = 20;

/// What an entry describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Kind {
    Practitioner,
    Organization,
    /// A lab, a referral desk, a shared inbox.
    Service,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Practitioner => "practitioner",
            Kind::Organization => "organization",
            Kind::Service => "service",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Practitioner => "Practitioner",
            Kind::Organization => "Organization",
            Kind::Service => "Service",
        }
    }

    /// `practitioner`, `organization` or `service`; empty means practitioner.
    pub fn parse(input: &str) -> Result<Kind, Invalid> {
        match input.trim().to_ascii_lowercase().as_str() {
            "" | "practitioner" => Ok(Kind::Practitioner),
            "organization" | "organisation" => Ok(Kind::Organization),
            "service" => Ok(Kind::Service),
            other => Err(Invalid(format!(
                "\u{201c}{other}\u{201d} is not a kind of entry: use practitioner, organization or service."
            ))),
        }
    }
}

/// Whose entries these are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The HISP's shared directory, visible to every signed-in user.
    Public,
    /// One organization's contacts, visible to its users.
    Org(i64),
    /// One user's address book, visible to them alone.
    Personal(i64),
}

impl Scope {
    /// The stored scope name.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Public => "public",
            Scope::Org(_) => "org",
            Scope::Personal(_) => "personal",
        }
    }

    /// The key under which NPIs, FHIR ids and addresses are unique.
    pub fn key(self) -> String {
        match self {
            Scope::Public => "public".into(),
            Scope::Org(id) => format!("org:{id}"),
            Scope::Personal(id) => format!("user:{id}"),
        }
    }

    pub fn org_id(self) -> Option<i64> {
        match self {
            Scope::Org(id) => Some(id),
            _ => None,
        }
    }

    pub fn owner_id(self) -> Option<i64> {
        match self {
            Scope::Personal(id) => Some(id),
            _ => None,
        }
    }
}

/// A certificate attached to an address, with the facts shown about it.
#[derive(Debug, Clone)]
pub struct Attached {
    pub pem: String,
    pub subject: String,
    pub fingerprint: String,
    pub not_after: i64,
}

impl Attached {
    /// Reads a certificate (PEM or DER; the first of several) for `address`: it must
    /// bind the address (rfc822Name) or its domain (dNSName) and be valid at `now`.
    pub fn parse(bytes: &[u8], address: &Email, now: i64) -> Result<Attached, Invalid> {
        let certs = smime::parse_certificates(bytes).map_err(|_| {
            Invalid("The certificate could not be read: give one certificate as PEM or DER.".into())
        })?;
        let Some(cert) = certs.first() else {
            return Err(Invalid("The file holds no certificate.".into()));
        };
        // Applicability Statement 1.3 §1.4: binding by subjectAltName only
        if !smime::binds_address(cert, address.as_str()) {
            return Err(Invalid(format!(
                "The certificate is not for {address}: its subjectAltName names neither the address nor its domain."
            )));
        }
        let facts = crate::pki::info(cert);
        if facts.not_after < now {
            return Err(Invalid(format!(
                "The certificate for {address} expired on {}.",
                crate::clock::format_utc(facts.not_after)
            )));
        }
        if facts.not_before > now {
            return Err(Invalid(format!(
                "The certificate for {address} is not valid before {}.",
                crate::clock::format_utc(facts.not_before)
            )));
        }
        let pem = der::EncodePem::to_pem(cert, der::pem::LineEnding::LF)
            .map_err(|_| Invalid("The certificate could not be re-encoded.".into()))?;
        Ok(Attached {
            pem,
            subject: facts.subject,
            fingerprint: facts.fingerprint,
            not_after: facts.not_after,
        })
    }
}

/// An entry as typed in a form or read from a file, before validation.
#[derive(Debug, Clone, Default)]
pub struct EntryInput {
    pub kind: String,
    pub name: String,
    pub organization: String,
    pub npi: String,
    /// Already split into (code, label) pairs.
    pub specialties: Vec<(String, String)>,
    pub address_line: String,
    pub city: String,
    pub state: String,
    pub zip: String,
    pub phone: String,
    pub addresses: Vec<String>,
    /// A certificate (PEM or DER) for the first address, from an import.
    pub certificate: Option<Vec<u8>>,
    pub fhir_id: String,
    /// Whether the recipient wants a message's documents as an XDM package; `None`
    /// (a file without the column) keeps what a stored entry says, or no.
    pub wants_xdm: Option<bool>,
}

/// A validated entry, ready to store.
#[derive(Debug, Clone)]
pub struct EntryData {
    pub kind: Kind,
    pub name: String,
    pub organization: String,
    pub npi: Option<Npi>,
    pub specialties: Vec<Specialty>,
    pub address_line: String,
    pub city: String,
    pub state: String,
    pub zip: String,
    pub phone: String,
    pub addresses: Vec<Email>,
    /// With the address it belongs to.
    pub certificate: Option<(Email, Attached)>,
    pub fhir_id: Option<String>,
    /// See [`EntryInput::wants_xdm`].
    pub wants_xdm: Option<bool>,
}

impl EntryInput {
    /// Validates every field; the problems, each a sentence, when any.
    pub fn validate(&self, now: i64) -> Result<EntryData, Vec<Invalid>> {
        let mut problems = Vec::new();
        let mut ok = |r: Result<String, Invalid>| match r {
            Ok(v) => v,
            Err(e) => {
                problems.push(e);
                String::new()
            }
        };
        let name = ok(crate::domain::DisplayName::parse(&self.name).map(|n| n.as_str().to_owned()));
        let organization = ok(parse_text("organization", &self.organization, 200));
        let address_line = ok(parse_text("street address", &self.address_line, 200));
        let city = ok(parse_text("city", &self.city, 100));
        let state = ok(parse_state(&self.state));
        let zip = ok(parse_zip(&self.zip));
        let phone = ok(parse_phone(&self.phone));
        let fhir_id = ok(parse_text("FHIR id", &self.fhir_id, 200));
        let kind = Kind::parse(&self.kind).map_err(|e| problems.push(e)).ok();
        let npi = if self.npi.trim().is_empty() {
            None
        } else {
            Npi::parse(&self.npi).map_err(|e| problems.push(e)).ok()
        };
        let mut specialties = Vec::new();
        for (code, label) in &self.specialties {
            match Specialty::parse(code, label) {
                Ok(s) if !specialties.contains(&s) => specialties.push(s),
                Ok(_) => {}
                Err(e) => problems.push(e),
            }
        }
        let mut addresses: Vec<Email> = Vec::new();
        for raw in self.addresses.iter().filter(|a| !a.trim().is_empty()) {
            match Email::parse(raw.trim().trim_start_matches("mailto:")) {
                Ok(a) if !addresses.contains(&a) => addresses.push(a),
                Ok(_) => {}
                Err(e) => problems.push(e),
            }
        }
        if addresses.is_empty() && self.addresses.iter().all(|a| a.trim().is_empty()) {
            problems.push(Invalid("Give at least one Direct address.".into()));
        }
        if addresses.len() > MAX_ADDRESSES {
            problems.push(Invalid(format!(
                "An entry has at most {MAX_ADDRESSES} Direct addresses."
            )));
        }
        let certificate = match (&self.certificate, addresses.first()) {
            (Some(bytes), Some(first)) => {
                // the certificate belongs to whichever address it binds
                let bound = addresses
                    .iter()
                    .find_map(|a| Attached::parse(bytes, a, now).ok().map(|c| (a.clone(), c)));
                match bound {
                    Some(pair) => Some(pair),
                    None => {
                        if let Err(e) = Attached::parse(bytes, first, now) {
                            problems.push(e);
                        }
                        None
                    }
                }
            }
            _ => None,
        };
        match (kind, problems.is_empty()) {
            (Some(kind), true) => Ok(EntryData {
                kind,
                name,
                organization,
                npi,
                specialties,
                address_line,
                city,
                state,
                zip,
                phone,
                addresses,
                certificate,
                fhir_id: Some(fhir_id).filter(|s| !s.is_empty()),
                wants_xdm: self.wants_xdm,
            }),
            _ => Err(problems),
        }
    }
}

/// `org · specialty · city, ST`, leaving out what is empty.
pub fn detail(organization: &str, specialty: Option<&str>, city: &str, state: &str) -> String {
    let place = match (city.is_empty(), state.is_empty()) {
        (false, false) => format!("{city}, {state}"),
        (false, true) => city.to_owned(),
        (true, false) => state.to_owned(),
        (true, true) => String::new(),
    };
    [organization, specialty.unwrap_or(""), place.as_str()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" \u{b7} ")
}

/// All problems of a row as one paragraph.
pub fn sentences(problems: &[Invalid]) -> String {
    problems
        .iter()
        .map(|p| p.0.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------- changes shared by the pages and the CLI, each audited ----------

fn scope_label(scope: Scope) -> String {
    match scope {
        Scope::Public => "shared directory".into(),
        Scope::Org(id) => format!("org:{id} contacts"),
        Scope::Personal(id) => format!("user:{id} address book"),
    }
}

/// Why a new or changed entry clashes with another of its scope, if it does.
async fn clash(
    conn: &mut sqlx::AnyConnection,
    scope: Scope,
    data: &EntryData,
    this: Option<i64>,
) -> sqlx::Result<Option<String>> {
    let key = scope.key();
    if let Some(npi) = &data.npi
        && let Some((other, _)) =
            store::find_by_key(conn, &key, KeyColumn::Npi, npi.as_str()).await?
        && Some(other) != this
    {
        return Ok(Some(format!(
            "The NPI {npi} is already listed for another entry."
        )));
    }
    for a in &data.addresses {
        if let Some((other, _)) =
            store::find_by_key(conn, &key, KeyColumn::Address, a.as_str()).await?
            && Some(other) != this
        {
            return Ok(Some(format!(
                "The Direct address {a} is already listed for another entry."
            )));
        }
    }
    Ok(None)
}

/// Adds an entry by hand (`manual`, or `personal` in an address book).
pub async fn create(
    db: &Db,
    actor: &Actor,
    scope: Scope,
    data: &EntryData,
    now: i64,
) -> Outcome<i64> {
    if scope == Scope::Public {
        for a in &data.addresses {
            if crate::store::mailboxes::by_address(db, a.as_str())
                .await?
                .is_some()
            {
                return Err(Refusal::Refused(format!(
                    "{a} is a mailbox hosted here; it is listed automatically."
                )));
            }
        }
    }
    let source = if matches!(scope, Scope::Personal(_)) {
        "personal"
    } else {
        "manual"
    };
    let _turn = db.write_turn().await;
    let mut tx = db.begin().await?;
    if let Some(problem) = clash(&mut tx, scope, data, None).await? {
        return Err(Refusal::Refused(problem));
    }
    let id = store::insert(&mut tx, scope, source, data, None, now).await?;
    audit::append(
        &mut tx,
        now,
        actor,
        Event::new("directory.create", format!("directory:{id}"))
            .detail(scope_label(scope))
            .org(scope.org_id()),
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// Changes an entry by hand; the caller checked that `actor` may.
pub async fn change(
    db: &Db,
    actor: &Actor,
    entry: &Entry,
    data: &EntryData,
    now: i64,
) -> Outcome<()> {
    if entry.is_hosted() {
        return Err(Refusal::Refused(
            "This entry lists a mailbox hosted here: change the mailbox instead.".into(),
        ));
    }
    let scope = entry.scope();
    let _turn = db.write_turn().await;
    let mut tx = db.begin().await?;
    if let Some(problem) = clash(&mut tx, scope, data, Some(entry.id)).await? {
        return Err(Refusal::Refused(problem));
    }
    let source = if matches!(scope, Scope::Personal(_)) {
        "personal"
    } else {
        "manual"
    };
    store::update(&mut tx, entry.id, source, data, now).await?;
    audit::append(
        &mut tx,
        now,
        actor,
        Event::new("directory.update", format!("directory:{}", entry.id))
            .detail(scope_label(scope))
            .org(scope.org_id()),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Removes an entry; the caller checked that `actor` may.
pub async fn remove(db: &Db, actor: &Actor, entry: &Entry, now: i64) -> Outcome<()> {
    if entry.is_hosted() {
        return Err(Refusal::Refused(
            "This entry lists a mailbox hosted here: unlist the mailbox instead.".into(),
        ));
    }
    let _turn = db.write_turn().await;
    let mut tx = db.begin().await?;
    store::delete(&mut tx, entry.id).await?;
    audit::append(
        &mut tx,
        now,
        actor,
        Event::new("directory.delete", format!("directory:{}", entry.id))
            .detail(scope_label(entry.scope()))
            .org(entry.scope().org_id()),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Attaches a certificate (PEM or DER) by hand to an entry's address; with `None`,
/// removes it. Only entries of the shared directory and organizations' contacts carry
/// certificates (an address book never does), and never a hosted mailbox.
pub async fn attach_certificate(
    db: &Db,
    actor: &Actor,
    entry: &Entry,
    address: &Email,
    bytes: Option<&[u8]>,
    now: i64,
) -> Outcome<Option<Attached>> {
    if entry.is_hosted() {
        return Err(Refusal::Refused(format!(
            "{address} is hosted here: its certificate is managed on its domain's page."
        )));
    }
    if matches!(entry.scope(), Scope::Personal(_)) {
        return Err(Refusal::Refused(
            "An address book entry cannot carry a certificate.".into(),
        ));
    }
    if !entry
        .addresses
        .iter()
        .any(|a| a.address == address.as_str())
    {
        return Err(Refusal::Refused(format!(
            "The entry \u{201c}{}\u{201d} has no address {address}.",
            entry.name
        )));
    }
    let cert = bytes
        .map(|b| Attached::parse(b, address, now))
        .transpose()
        .map_err(|e| Refusal::Refused(e.0))?;
    let _turn = db.write_turn().await;
    let mut tx = db.begin().await?;
    store::attach_certificate(&mut tx, entry.id, address, cert.as_ref()).await?;
    audit::append(
        &mut tx,
        now,
        actor,
        Event::new(
            if cert.is_some() {
                "directory.certificate"
            } else {
                "directory.certificate.remove"
            },
            address.as_str(),
        )
        .detail(
            cert.as_ref()
                .map(|c| format!("sha256 {}", c.fingerprint))
                .unwrap_or_default(),
        )
        .org(entry.scope().org_id()),
    )
    .await?;
    tx.commit().await?;
    Ok(cert)
}

/// Lists or unlists a hosted mailbox; the caller checked that `actor` may.
pub async fn set_listing(
    db: &Db,
    actor: &Actor,
    mailbox: &crate::store::mailboxes::Mailbox,
    listed: bool,
    now: i64,
) -> Outcome<()> {
    let _turn = db.write_turn().await;
    let mut tx = db.begin().await?;
    store::set_listed(&mut tx, mailbox.id, listed).await?;
    audit::append(
        &mut tx,
        now,
        actor,
        Event::new(
            if listed {
                "directory.list"
            } else {
                "directory.unlist"
            },
            &mailbox.address,
        )
        .org(Some(mailbox.org_id)),
    )
    .await?;
    tx.commit().await?;
    drop(_turn);
    // bring the entry up to date now rather than at the next search
    store::sync_hosted(db).await?;
    Ok(())
}

/// Adds an address to a user's address book ("add sender"): the name is updated
/// when the address is already there. True when a new entry was made.
pub async fn add_to_address_book(
    db: &Db,
    actor: &Actor,
    user_id: i64,
    address: &Email,
    name: &str,
    now: i64,
) -> Outcome<bool> {
    let scope = Scope::Personal(user_id);
    let existing = {
        let mut conn = db.pool.acquire().await?;
        store::find_by_key(
            &mut conn,
            &scope.key(),
            KeyColumn::Address,
            address.as_str(),
        )
        .await?
    };
    let name = if name.trim().is_empty() {
        address.local_part().to_owned()
    } else {
        name.trim().to_owned()
    };
    let input = EntryInput {
        name,
        addresses: vec![address.as_str().to_owned()],
        ..EntryInput::default()
    };
    let data = input
        .validate(now)
        .map_err(|p| Refusal::Refused(sentences(&p)))?;
    match existing {
        Some((id, _)) => {
            let entry = store::get(db, id).await?.ok_or_else(|| {
                Refusal::Refused("That address book entry was just removed.".into())
            })?;
            let mut changed = entry.to_input();
            changed.name = data.name.clone();
            let changed = changed
                .validate(now)
                .map_err(|p| Refusal::Refused(sentences(&p)))?;
            change(db, actor, &entry, &changed, now).await?;
            Ok(false)
        }
        None => create(db, actor, scope, &data, now).await.map(|_| true),
    }
}
