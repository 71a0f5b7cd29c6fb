//! Sensitive records (issue #13, docs/sensitive-records.md): whether a message is
//! restricted, read once when it is filed from what it carries, and why.
//!
//! A message is restricted when any of these says so: a CDA `confidentialityCode` R
//! or V at document or section level; a DS4P security observation (the policy
//! `42CFRPart2`, the sensitivities `ETH`, `PSY` and others, a refrain policy such as
//! `NORDSCLCD`); an XDM DocumentEntry confidentialityCode (R, V, or a DS4P code); or
//! the sender's own 42 CFR Part 2 notice in the message text. Which law applies is the
//! strongest signal: Part 2 (substance use disorder) before Illinois mental health
//! before "restricted" alone. Each reason is one sentence naming the document and code.

use directmail_content::cda::{self, Section};
use directmail_content::xdm;

/// Which rules a restricted message falls under, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Law {
    /// Marked restricted (R or V, or a sensitivity without a law of its own here).
    Restricted,
    /// Mental-health information: the Illinois Mental Health and Developmental
    /// Disabilities Confidentiality Act (740 ILCS 110).
    MentalHealth,
    /// Substance use disorder records: 42 CFR Part 2.
    Part2,
}

impl Law {
    /// The stored form (`messages.restriction`).
    pub fn as_str(self) -> &'static str {
        match self {
            Law::Restricted => "restricted",
            Law::MentalHealth => "mental_health",
            Law::Part2 => "part2",
        }
    }

    pub fn parse(text: &str) -> Option<Law> {
        match text {
            "restricted" => Some(Law::Restricted),
            "mental_health" => Some(Law::MentalHealth),
            "part2" => Some(Law::Part2),
            _ => None,
        }
    }

    /// The banner's heading.
    pub fn words(self) -> &'static str {
        match self {
            Law::Restricted => "Restricted record",
            Law::MentalHealth => "Mental-health record (Illinois, 740 ILCS 110)",
            Law::Part2 => "Substance use disorder record (42 CFR Part 2)",
        }
    }

    /// What the reader must know, in our words (the sender's own notice, when it sent
    /// one, is in the message).
    pub fn statement(self) -> &'static str {
        match self {
            Law::Restricted => {
                "The sender marked this record restricted. Share it only with people who need it for this patient's care."
            }
            Law::MentalHealth => {
                "This is a mental-health record under the Illinois Mental Health and Developmental Disabilities Confidentiality Act (740 ILCS 110). Use it for the patient's treatment and care coordination; do not disclose it further unless the Act allows it, and respect the patient's choice to opt out of sharing through a health information exchange."
            }
            Law::Part2 => {
                "This record is protected by federal confidentiality rules for substance use disorder records (42 CFR part 2). Do not use or disclose it further unless the patient's written consent or the rule expressly allows it; a general authorization for the release of medical information is not enough."
            }
        }
    }
}

/// Why a message is restricted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub law: Law,
    /// One sentence per signal found, in the order found; at most [`MAX_REASONS`].
    pub reasons: Vec<String>,
}

/// The most reasons kept for one message.
pub const MAX_REASONS: usize = 20;

/// Collects the signals of one message.
#[derive(Debug, Default)]
pub struct Labeller {
    found: Vec<(Law, String)>,
}

impl Labeller {
    fn add(&mut self, law: Law, reason: String) {
        if self.found.len() < MAX_REASONS && !self.found.iter().any(|(_, r)| *r == reason) {
            self.found.push((law, reason));
        }
    }

    /// A CDA document, named `name` (its file name, or its place in a package).
    pub fn cda(&mut self, name: &str, document: &cda::Document) {
        let what = format!("\u{201c}{}\u{201d} ({name})", document.display_title());
        if let Some(level) = document
            .confidentiality
            .as_ref()
            .and_then(|c| restricted_level(&c.code))
        {
            self.add(Law::Restricted, format!("{what} is marked {level}."));
        }
        let mut stack: Vec<&Section> = document.sections().iter().collect();
        while let Some(section) = stack.pop() {
            if let Some(level) = section
                .confidentiality
                .as_ref()
                .and_then(|c| restricted_level(&c.code))
            {
                self.add(
                    Law::Restricted,
                    format!(
                        "{what} has a section, \u{201c}{}\u{201d}, marked {level}.",
                        section.display_title()
                    ),
                );
            }
            stack.extend(section.sections.iter());
        }
        for code in &document.security_labels {
            if let Some((law, meaning)) = security_code(&code.code) {
                self.add(
                    law,
                    format!(
                        "{what} carries the security label {} ({meaning}).",
                        code.code
                    ),
                );
            }
        }
    }

    /// A document of an XDM package, by its metadata's confidentiality codes.
    pub fn xdm_document(&mut self, package: &str, document: &xdm::Document) {
        let what = format!("\u{201c}{}\u{201d} (in {package})", document.label());
        for code in &document.confidentiality {
            if let Some(level) = restricted_level(&code.code) {
                self.add(
                    Law::Restricted,
                    format!("{what} is marked {level} in the package."),
                );
            } else if let Some((law, meaning)) = security_code(code.code.trim()) {
                self.add(
                    law,
                    format!(
                        "{what} carries the security label {} ({meaning}) in the package.",
                        code.code.trim()
                    ),
                );
            }
        }
    }

    /// The message's text: a sender that disclosed a Part 2 record put the notice in.
    pub fn text(&mut self, text: &str) {
        if has_part2_notice(text) {
            self.add(
                Law::Part2,
                "The message text carries a 42 CFR Part 2 notice.".to_owned(),
            );
        }
    }

    /// The label, when anything was found.
    pub fn label(self) -> Option<Label> {
        let law = self.found.iter().map(|(law, _)| *law).max()?;
        Some(Label {
            law,
            reasons: self.found.into_iter().map(|(_, reason)| reason).collect(),
        })
    }
}

/// "Restricted (R)" or "Very restricted (V)" for a confidentiality code (CDA or XDM)
/// that is.
fn restricted_level(code: &str) -> Option<&'static str> {
    match code.trim() {
        "R" => Some("Restricted (R)"),
        "V" => Some("Very restricted (V)"),
        _ => None,
    }
}

/// What a DS4P security code means and which law it brings, for the codes that
/// restrict (HL7 ActCode: policies, sensitivities, refrain policies).
fn security_code(code: &str) -> Option<(Law, &'static str)> {
    Some(match code {
        "42CFRPart2" => (Law::Part2, "42 CFR Part 2 policy"),
        "ETH" => (Law::Part2, "substance use information"),
        "SUD" => (Law::Part2, "substance use disorder information"),
        "PSY" => (Law::MentalHealth, "psychiatry information"),
        "PSYTHPN" => (Law::MentalHealth, "psychotherapy notes"),
        "MH" => (Law::MentalHealth, "mental health information"),
        "HIV" => (Law::Restricted, "HIV/AIDS information"),
        "STD" => (Law::Restricted, "sexually transmitted disease information"),
        "SDV" => (
            Law::Restricted,
            "sexual assault, abuse or domestic violence information",
        ),
        "SEX" => (
            Law::Restricted,
            "sexuality and reproductive health information",
        ),
        "GDIS" => (Law::Restricted, "genetic disease information"),
        "NORDSCLCD" => (
            Law::Restricted,
            "no redisclosure without the patient's consent directive",
        ),
        "NORDSLCD" => (
            Law::Restricted,
            "no redisclosure without the patient's consent directive",
        ),
        "NOREDISCLOSE" => (Law::Restricted, "no redisclosure"),
        _ => return None,
    })
}

/// Whether `text` names 42 CFR Part 2 the way its notices do ("42 CFR part 2",
/// "42 C.F.R. Part 2", any case and spacing).
fn has_part2_notice(text: &str) -> bool {
    let squeezed: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '.')
        .flat_map(char::to_lowercase)
        .collect();
    squeezed
        .match_indices("42cfrpart2")
        .any(|(at, found)| !squeezed[at + found.len()..].starts_with(|c: char| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_part2_notice_is_found_however_it_is_spaced() {
        for text in [
            "42 CFR part 2 prohibits unauthorized disclosure of these records.",
            "protected by Federal confidentiality rules (42 C.F.R. Part 2).",
            "see 42\nCFR  Part\t2",
        ] {
            assert!(has_part2_notice(text), "{text}");
        }
        for text in ["42 CFR part 20", "Part 2 of the letter", "42 CFR 164"] {
            assert!(!has_part2_notice(text), "{text}");
        }
    }

    #[test]
    fn the_strongest_law_wins_and_every_reason_is_kept_once() {
        let mut labeller = Labeller::default();
        assert_eq!(Labeller::default().label(), None);
        labeller.add(Law::Restricted, "a".into());
        labeller.add(Law::Part2, "b".into());
        labeller.add(Law::MentalHealth, "c".into());
        labeller.add(Law::MentalHealth, "c".into());
        let label = labeller.label().unwrap();
        assert_eq!(label.law, Law::Part2);
        assert_eq!(label.reasons, ["a", "b", "c"]);
        for law in [Law::Restricted, Law::MentalHealth, Law::Part2] {
            assert_eq!(Law::parse(law.as_str()), Some(law));
        }
    }
}
