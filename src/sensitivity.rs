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

use directmail_content::cda::{self, LabelKind, Section, SecurityLabel};
use directmail_content::xdm;

/// Which rules a restricted message falls under, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
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

/// The compose page's "Sensitive" choices, as stored in the draft and shown.
pub const CHOICES: [(Law, &str); 3] = [
    (Law::Part2, "Substance use disorder (42 CFR Part 2)"),
    (Law::MentalHealth, "Mental health (740 ILCS 110)"),
    (Law::Restricted, "Other restricted"),
];

/// What goes out first in a sensitive message, and where its words come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notice {
    pub text: &'static str,
    pub source: &'static str,
}

/// 42 CFR §2.32(a)(1), "Statement 1", as revised by the final rule of 16 February
/// 2024 (89 FR 12472; effective 2024-04-16, compliance from 2026-02-16). Sent with
/// every Part 2 disclosure. The line breaks are ours; the words are the rule's.
pub const PART2_NOTICE: Notice = Notice {
    text: "This record which has been disclosed to you is protected by Federal confidentiality rules (42 CFR part 2). These rules prohibit you from using or disclosing this record, or testimony that describes the information contained in this record, in any civil, criminal, administrative, or legislative proceedings by any Federal, State, or local authority, against the patient, unless authorized by the consent of the patient, except as provided at 42 CFR 2.12(c)(5) or as authorized by a court in accordance with 42 CFR 2.64 or 2.65. In addition, the Federal rules prohibit you from making any other use or disclosure of this record unless at least one of the following applies:\n\n(i) Further use or disclosure is expressly permitted by the written consent of the individual whose information is being disclosed in this record or as otherwise permitted by 42 CFR part 2.\n\n(ii) You are a covered entity or business associate and have received the record for treatment, payment, or health care operations, or\n\n(iii) You have received the record from a covered entity or business associate as permitted by 45 CFR part 164, subparts A and E.\n\nA general authorization for the release of medical or other information is NOT sufficient to meet the required elements of written consent to further use or redisclose the record (see 42 CFR 2.31).",
    source: "42 CFR 2.32(a)(1), as revised by 89 FR 12472 (16 February 2024; effective 16 April 2024, compliance from 16 February 2026)",
};

/// The Illinois Act prescribes no wording for a disclosure; these are ours, naming
/// the Act and what it allows the recipient (740 ILCS 110/9.5–9.11, Public Act
/// 98-0378).
pub const MENTAL_HEALTH_NOTICE: Notice = Notice {
    text: "This message contains mental-health records protected by the Illinois Mental Health and Developmental Disabilities Confidentiality Act (740 ILCS 110). They are disclosed for the patient's treatment and care coordination. Do not disclose them further except as the Act allows.",
    source: "directmail's wording for 740 ILCS 110 (the Act prescribes none)",
};

/// For a record the sender marks restricted without naming a law.
pub const RESTRICTED_NOTICE: Notice = Notice {
    text: "The sender marked this message restricted. Use it only for this patient's care and do not disclose it further without the patient's permission or a legal basis.",
    source: "directmail's wording",
};

/// 42 CFR Part 2 disclosures that need no written consent: the sender names one
/// (and says why) instead of attaching a consent.
pub const PART2_EXCEPTIONS: [(&str, &str); 7] = [
    ("emergency", "Medical emergency (42 CFR 2.51)"),
    ("research", "Research (42 CFR 2.52)"),
    ("audit", "Audit or evaluation (42 CFR 2.53)"),
    (
        "public_health",
        "Public health, de-identified (42 CFR 2.54)",
    ),
    ("court_order", "Court order (42 CFR 2.61–2.67)"),
    (
        "qso",
        "Qualified service organization (42 CFR 2.11, 2.12(c)(4))",
    ),
    (
        "child_abuse",
        "Reporting suspected child abuse or neglect (42 CFR 2.12(c)(6))",
    ),
];

/// What the Illinois Act allows for a patient who opted out of HIE sharing
/// (740 ILCS 110/9.6–9.7 as amended by Public Act 98-0378).
pub const OPT_OUT_EXCEPTIONS: [(&str, &str); 3] = [
    ("treatment", "Treatment by the recipient"),
    ("care_coordination", "Care coordination by the recipient"),
    ("public_health", "Public-health reporting"),
];

/// The words of a choice in one of the lists above, when `key` is one of them.
pub fn choice_words(list: &[(&'static str, &'static str)], key: &str) -> Option<&'static str> {
    list.iter()
        .find(|(k, _)| *k == key)
        .map(|(_, words)| *words)
}

impl Law {
    /// The notice sent first in a message the sender marked with this law.
    pub fn notice(self) -> Notice {
        match self {
            Law::Part2 => PART2_NOTICE,
            Law::MentalHealth => MENTAL_HEALTH_NOTICE,
            Law::Restricted => RESTRICTED_NOTICE,
        }
    }

    /// The compose page's words for it.
    pub fn choice(self) -> &'static str {
        CHOICES
            .iter()
            .find(|(law, _)| *law == self)
            .map(|(_, words)| *words)
            .unwrap_or_default()
    }

    /// The DS4P security labels a document sent under this law carries (HL7 ActCode,
    /// 2.16.840.1.113883.5.4), besides its confidentiality R.
    pub fn security_labels(self) -> Vec<SecurityLabel> {
        let label = |code: &str, display: &str, kind| SecurityLabel {
            code: code.to_owned(),
            system: ACT_CODE.to_owned(),
            display: display.to_owned(),
            kind,
        };
        let refrain = label(
            "NORDSCLCD",
            "no redisclosure without consent directive",
            LabelKind::Refrain,
        );
        match self {
            Law::Part2 => vec![
                label("42CFRPart2", "42 CFR Part2", LabelKind::Category),
                label(
                    "ETH",
                    "substance abuse information sensitivity",
                    LabelKind::Category,
                ),
                refrain,
            ],
            Law::MentalHealth => vec![
                label(
                    "PSY",
                    "psychiatry information sensitivity",
                    LabelKind::Category,
                ),
                refrain,
            ],
            Law::Restricted => vec![refrain],
        }
    }
}

/// A message the sender marked sensitive, as it goes out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub law: Law,
    /// The message's first text part: the law's notice, word for word, and for a
    /// Part 2 disclosure the consent's scope when the sender described it
    /// (§2.32(b)).
    pub first_part: String,
}

impl Outgoing {
    pub fn new(law: Law, consent_scope: &str) -> Outgoing {
        let mut first_part = law.notice().text.to_owned();
        let scope = consent_scope.trim();
        if law == Law::Part2 && !scope.is_empty() {
            first_part.push_str("\n\nThe patient's consent to this disclosure: ");
            first_part.push_str(scope);
        }
        Outgoing { law, first_part }
    }
}

/// HL7 ActCode.
const ACT_CODE: &str = "2.16.840.1.113883.5.4";

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
    /// Our own notices ([`Law::notice`]) are found word for word, whatever the line
    /// breaks.
    pub fn text(&mut self, text: &str) {
        if has_part2_notice(text) {
            self.add(
                Law::Part2,
                "The message text carries a 42 CFR Part 2 notice.".to_owned(),
            );
        }
        let words = squeezed(text);
        for (law, reason) in [
            (
                Law::MentalHealth,
                "The message text carries the Illinois mental-health notice.",
            ),
            (
                Law::Restricted,
                "The message text says the sender marked it restricted.",
            ),
        ] {
            if words.contains(&squeezed(law.notice().text)) {
                self.add(law, reason.to_owned());
            }
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

/// `text` with every run of white space made one space.
fn squeezed(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether `text` names 42 CFR Part 2 the way its notices do ("42 CFR part 2",
/// "42 C.F.R. Part 2", any case and spacing).
fn has_part2_notice(text: &str) -> bool {
    // "42cfrpart2" in the text without spaces and dots, lowercased, not followed by a
    // digit; read as it streams (the pattern does not overlap itself, so a mismatch
    // starts over), since every received message's text is asked
    const NOTICE: [char; 10] = ['4', '2', 'c', 'f', 'r', 'p', 'a', 'r', 't', '2'];
    let mut matched = 0;
    let mut whole = false;
    for c in text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '.')
        .flat_map(char::to_lowercase)
    {
        if whole {
            if !c.is_ascii_digit() {
                return true;
            }
            whole = false;
        }
        matched = if c == NOTICE[matched] {
            matched + 1
        } else {
            usize::from(c == NOTICE[0])
        };
        if matched == NOTICE.len() {
            whole = true;
            matched = 0;
        }
    }
    whole
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
            "42 CFR part 20 does not apply; 42 CFR Part 2 does.",
            "42 CFR part 242 CFR Part 2",
            "under 442 CFR part 2",
        ] {
            assert!(has_part2_notice(text), "{text}");
        }
        for text in [
            "42 CFR part 20",
            "Part 2 of the letter",
            "42 CFR 164",
            "42 CFR part 21 and 42 CFR part 22",
            "4 2 CFR part",
        ] {
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
