//! Sending a sensitive record (docs/sensitive-records.md, "Sending"): the rules a
//! draft marked *Sensitive* must meet before it goes, outside the web layer.
//!
//! - A 42 CFR Part 2 disclosure carries the patient's consent (an attached PDF, or a
//!   sentence describing its scope: §2.32(b)), or names the exception under which the
//!   rule allows it without consent, and why.
//! - A mental-health record (740 ILCS 110) about a patient on the organization's HIE
//!   opt-out list does not go outside the organization unless the sender chooses an
//!   exception the Act allows; the operator's public-health addresses are always
//!   allowed.
//! - The sender sees each recipient's organization before a sensitive record goes
//!   ([`review`]), and confirms that list ([`review_key`]).

use crate::db::Db;
use crate::sensitivity::{Law, OPT_OUT_EXCEPTIONS, PART2_EXCEPTIONS, choice_words};
use crate::store::directory::{self, Viewer};
use crate::store::drafts::{AttachmentMeta, Sensitive};
use crate::store::opt_outs::{self, MatchInput, OptOut};
use crate::store::orgs;

/// The longest consent scope or exception reason kept, in characters.
pub const MAX_TEXT: usize = 2000;

/// Why a Part 2 disclosure cannot go as it stands, or `None` when it can.
pub fn consent_problem(sensitive: &Sensitive, attachments: &[AttachmentMeta]) -> Option<String> {
    if sensitive.law != Some(Law::Part2) {
        return None;
    }
    if let Some(id) = sensitive.consent_attachment_id {
        return match attachments.iter().find(|a| a.id == id) {
            Some(a) if a.content_type == "application/pdf" => None,
            Some(a) => Some(format!(
                "{} is not a PDF; attach the patient's consent as a PDF, or describe its scope.",
                a.name
            )),
            None => Some(
                "The consent you picked is no longer attached; attach it again, or describe its scope."
                    .into(),
            ),
        };
    }
    if !sensitive.consent_scope.trim().is_empty() {
        return None;
    }
    let basis = sensitive.no_consent_basis.trim();
    if basis.is_empty() {
        return Some(
            "A substance use disorder record (42 CFR Part 2) goes with the patient's consent: pick the attached consent, or describe its scope. If the rule allows this disclosure without consent, choose the exception and say why."
                .into(),
        );
    }
    if choice_words(&PART2_EXCEPTIONS, basis).is_none() {
        return Some("Choose one of the listed exceptions.".into());
    }
    if sensitive.no_consent_reason.trim().is_empty() {
        return Some(
            "Say why the exception applies to this disclosure; it is recorded with it.".into(),
        );
    }
    None
}

/// What the sender's consent or exception was, in words for the disclosures report.
pub fn consent_words(sensitive: &Sensitive, attachments: &[AttachmentMeta]) -> String {
    if sensitive.law != Some(Law::Part2) {
        return String::new();
    }
    if let Some(a) = sensitive
        .consent_attachment_id
        .and_then(|id| attachments.iter().find(|a| a.id == id))
    {
        return format!("Consent attached: {}", a.name);
    }
    if !sensitive.consent_scope.trim().is_empty() {
        return format!("Consent described: {}", sensitive.consent_scope.trim());
    }
    match choice_words(&PART2_EXCEPTIONS, sensitive.no_consent_basis.trim()) {
        Some(words) => format!(
            "Without consent, {words}: {}",
            sensitive.no_consent_reason.trim()
        ),
        None => String::new(),
    }
}

/// One recipient as the sender confirms it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reviewed {
    pub address: String,
    /// The person or service, as the directory names it ("" when it does not).
    pub name: String,
    /// Their organization: the hosting organization for an address on this HISP,
    /// else the directory entry's; "" when neither says.
    pub organization: String,
    /// Hosted here by the sender's own organization.
    pub inside: bool,
}

/// Each recipient with their organization, in the order given.
pub async fn review(
    db: &Db,
    viewer: &Viewer,
    sender_org: i64,
    recipients: &[String],
) -> anyhow::Result<Vec<Reviewed>> {
    let known = directory::known(db, viewer, recipients).await?;
    let mut rows = Vec::new();
    for address in recipients {
        let address = address.trim().to_ascii_lowercase();
        let entry = known.iter().find(|k| k.address == address);
        let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
        let hosted = match orgs::domain_by_name(db, domain).await? {
            Some(d) => match d.org_id {
                Some(org) => orgs::get(db, org).await?.map(|o| (o.id, o.name)),
                None => None,
            },
            None => None,
        };
        rows.push(Reviewed {
            name: entry.map(|e| e.name.clone()).unwrap_or_default(),
            organization: match (&hosted, entry) {
                (Some((_, name)), _) => name.clone(),
                (None, Some(e)) => e.organization.clone(),
                (None, None) => String::new(),
            },
            inside: hosted.as_ref().is_some_and(|(id, _)| *id == sender_org),
            address,
        });
    }
    Ok(rows)
}

/// What the sender confirmed: the recipients, in the order reviewed. A draft whose
/// recipients changed since is reviewed again.
pub fn review_key(rows: &[Reviewed]) -> String {
    rows.iter()
        .map(|r| r.address.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// A mental-health record stopped by the opt-out list: who, and which recipients are
/// outside the organization.
#[derive(Debug, Clone)]
pub struct OptOutStop {
    pub entry: OptOut,
    pub outside: Vec<String>,
}

impl OptOutStop {
    /// The sentence the sender reads.
    pub fn sentence(&self, org_name: &str) -> String {
        format!(
            "Not sent: {} {} (born {}) opted out of sharing mental-health records through the health information exchange (recorded by {} on {}). {} {} outside {org_name}. The Illinois Mental Health and Developmental Disabilities Confidentiality Act (740 ILCS 110) allows sending it only for the recipient's treatment or care coordination, or for public-health reporting: choose which applies below, or remove {}.",
            self.entry.given_name,
            self.entry.family_name,
            self.entry.birth_date,
            self.entry.recorded_by_name,
            crate::clock::format_utc(self.entry.recorded_at)
                .split(' ')
                .next()
                .unwrap_or_default(),
            self.outside.join(", "),
            if self.outside.len() == 1 { "is" } else { "are" },
            if self.outside.len() == 1 {
                "that recipient"
            } else {
                "those recipients"
            },
        )
    }
}

/// Whether the opt-out list stops this record: a *Mental health* record, about a
/// patient on the organization's list (any of `patients`), to a recipient outside the
/// organization who is not one of the operator's public-health addresses. `None` when
/// it may go (also when an exception was chosen: the caller records it).
pub async fn opt_out_stop(
    db: &Db,
    public_health: &crate::config::Addresses,
    sensitive: &Sensitive,
    patients: &[MatchInput],
    reviewed: &[Reviewed],
    org_id: i64,
) -> anyhow::Result<Option<OptOutStop>> {
    if sensitive.law != Some(Law::MentalHealth) {
        return Ok(None);
    }
    let outside: Vec<String> = reviewed
        .iter()
        .filter(|r| !r.inside && !public_health.contains(&r.address))
        .map(|r| r.address.clone())
        .collect();
    if outside.is_empty() {
        return Ok(None);
    }
    for patient in patients {
        if let Some(entry) = opt_outs::find_match(db, org_id, patient).await? {
            return Ok(Some(OptOutStop { entry, outside }));
        }
    }
    Ok(None)
}

/// The exception chosen for an opted-out patient, in words, when it is one the Act
/// allows.
pub fn opt_out_exception(sensitive: &Sensitive) -> Option<&'static str> {
    choice_words(&OPT_OUT_EXCEPTIONS, sensitive.opt_out_exception.trim())
}
