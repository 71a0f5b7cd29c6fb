//! Reportability Responses: what public health answered to an electronic initial case
//! report (eICR), read from the coded entries of an RR document for a card above the
//! narrative.
//!
//! Structure per HL7 CDA R2 Implementation Guide: Public Health Case Report – the
//! Electronic Initial Case Report, Reportability Response (RR R1 STU1.1), templates
//! `2.16.840.1.113883.10.20.15.2.x` with extension `2017-04-01`:
//!
//! ```text
//! ClinicalDocument (2.1.2, code 88085-6)
//!  Reportability Response Summary Section (2.2.2, 55112-7)
//!   RR Priority (3.30)                                       value RRVS14…RRVS18
//!   RR Coded Information Organizer (3.34, RR11)
//!    Relevant Reportable Condition Observation (3.12)       value = condition (SNOMED CT)
//!     Reportability Information Organizer (3.13), one per jurisdiction; code = location relevance
//!      participant LOC: Routing Entity (4.1), Responsible Agency (4.2), Rules Authoring Agency (4.3)
//!      Determination of Reportability (3.19, RR1)           value RRVS1…RRVS4
//!       reason (3.26, RR2), rule (3.27, RR3)
//!      Reporting Timeframe (3.14, RR4)                       value PQ
//!      External Resource (3.20)                              priorityCode; reference/externalDocument
//!  Electronic Initial Case Report Section (2.2.3, 88082-3)
//!   Received eICR Information (3.9) / reference / eICR External Document Reference (3.10, 55751-2)
//! ```
//!
//! Checked against the RR schematron and Lantana's FHIR↔CDA eCR stylesheets. [verify]
//! where this module says so: that the agency's role code (`RR8`, `RR7`) sits on
//! `participantRole/code`, and that the template IDs of the participants may be on the
//! `participant` or its `participantRole`; both are accepted.

use roxmltree::Node;

use super::header::{Code, InstanceId, code, instance_id};
use super::tree::{attr, child, children, has_template, is, path, text_of};

/// LOINC "Reportability response report Document Public health".
pub const RR_DOCUMENT_CODE: &str = "88085-6";
/// Template of the RR document (RR R1 STU1.1).
pub const RR_DOCUMENT_TEMPLATE: &str = "2.16.840.1.113883.10.20.15.2.1.2";
/// LOINC "Public health case report" (the eICR that an RR answers).
pub const EICR_DOCUMENT_CODE: &str = "55751-2";

const CONDITION: &str = "2.16.840.1.113883.10.20.15.2.3.12";
const INFORMATION: &str = "2.16.840.1.113883.10.20.15.2.3.13";
const TIMEFRAME: &str = "2.16.840.1.113883.10.20.15.2.3.14";
const DETERMINATION: &str = "2.16.840.1.113883.10.20.15.2.3.19";
const EXTERNAL_RESOURCE: &str = "2.16.840.1.113883.10.20.15.2.3.20";
const REASON: &str = "2.16.840.1.113883.10.20.15.2.3.26";
const RULE: &str = "2.16.840.1.113883.10.20.15.2.3.27";
const PRIORITY: &str = "2.16.840.1.113883.10.20.15.2.3.30";
const EICR_REFERENCE: &str = "2.16.840.1.113883.10.20.15.2.3.10";
const ROUTING_ENTITY: &str = "2.16.840.1.113883.10.20.15.2.4.1";
const RESPONSIBLE_AGENCY: &str = "2.16.840.1.113883.10.20.15.2.4.2";

/// What public health answered, condition by condition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportabilityResponse {
    /// The eICR this responds to (`externalDocument/id` of the eICR External Document
    /// Reference).
    pub eicr_id: Option<InstanceId>,
    /// The response's overall priority (RR Priority), such as "Immediate action
    /// requested"; see [`priority_words`].
    pub priority: Option<Code>,
    /// The conditions public health considered.
    pub conditions: Vec<ReportableCondition>,
}

impl ReportabilityResponse {
    /// The most pressing determination in the response: reportable before may be
    /// reportable before not reportable before no rule met.
    pub fn strongest(&self) -> Option<&Determination> {
        self.conditions
            .iter()
            .flat_map(|condition| &condition.jurisdictions)
            .filter_map(|jurisdiction| jurisdiction.determination.as_ref())
            .min_by_key(|determination| determination.rank())
    }
}

/// One condition and what each jurisdiction decided about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportableCondition {
    /// The condition, in SNOMED CT (such as 840539006, COVID-19).
    pub condition: Option<Code>,
    /// One entry per public health jurisdiction (the patient's home, the provider's
    /// facility, or both).
    pub jurisdictions: Vec<Jurisdiction>,
}

/// A jurisdiction's decision about one condition (Reportability Information Organizer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Jurisdiction {
    pub determination: Option<Determination>,
    /// Why the jurisdiction is concerned: the patient's home address, the provider's
    /// facility, or both (value set 2.16.840.1.113883.10.20.15.2.5.6).
    pub location_relevance: Option<Code>,
    /// The reason given for the determination (RR2).
    pub reason: Option<String>,
    /// The rule applied (RR3).
    pub rule: Option<String>,
    /// The public health agency responsible for the condition here.
    pub responsible_agency: Option<Agency>,
    /// The agency that received the report, when different.
    pub routing_entity: Option<Agency>,
    /// How soon the condition must be reported, such as "24 hours".
    pub timeframe: Option<String>,
    /// What the provider is asked to do or read.
    pub actions: Vec<RequestedAction>,
}

/// A public health agency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Agency {
    pub name: String,
    /// Telephone numbers, email and web addresses as the document gives them
    /// (`tel:`, `mailto:`, `http:` …), for showing as text.
    pub contact: Vec<String>,
}

/// A determination of reportability (value set 2.16.840.1.113883.10.20.15.2.5.3, code
/// system PHIN VS 2.16.840.1.114222.4.5.274).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Determination {
    /// RRVS1.
    Reportable,
    /// RRVS2.
    MayBeReportable,
    /// RRVS3.
    NotReportable,
    /// RRVS4: no reporting rule matched.
    NoRuleMet,
    /// A code outside the value set.
    Other(Code),
}

impl Determination {
    fn from_code(code: Code) -> Determination {
        match code.code.as_str() {
            "RRVS1" => Determination::Reportable,
            "RRVS2" => Determination::MayBeReportable,
            "RRVS3" => Determination::NotReportable,
            "RRVS4" => Determination::NoRuleMet,
            _ => Determination::Other(code),
        }
    }

    /// The determination in words: "Reportable", "May be reportable", "Not
    /// reportable", "No rule met", or the sender's name for another code.
    pub fn words(&self) -> &str {
        match self {
            Determination::Reportable => "Reportable",
            Determination::MayBeReportable => "May be reportable",
            Determination::NotReportable => "Not reportable",
            Determination::NoRuleMet => "No rule met",
            Determination::Other(code) => code.label(),
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Determination::Reportable => 0,
            Determination::MayBeReportable => 1,
            Determination::NotReportable => 2,
            Determination::NoRuleMet => 3,
            Determination::Other(_) => 4,
        }
    }
}

/// Something the provider is asked to do or read (External Resource).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestedAction {
    /// What it is, in the agency's words.
    pub description: Option<String>,
    /// How urgent (`priorityCode`); see [`priority_words`].
    pub priority: Option<Code>,
    /// The kind of resource (the act's `code`), such as a form or patient education.
    pub kind: Option<Code>,
    /// Where it is, as the document gives it. [`super::render_document`] links it through
    /// the leaving-the-site page when it is an `http:` or `https:` URL, and leaves it out
    /// otherwise.
    pub url: Option<String>,
}

/// An RR priority in words (value set "Reportability Priority (eCR)"), or the sender's
/// name for another code.
pub fn priority_words(code: &Code) -> &str {
    match code.code.as_str() {
        "RRVS14" => "Action required",
        "RRVS15" => "Information only",
        "RRVS16" => "Action requested",
        "RRVS17" => "Immediate action required",
        "RRVS18" => "Immediate action requested",
        _ => code.label(),
    }
}

/// Reads the RR entries of a document already known to be an RR.
pub(super) fn read_reportability(root: Node) -> ReportabilityResponse {
    let with_template = |name: &'static str, template: &'static str| {
        move |node: &Node| is(*node, name) && has_template(*node, template)
    };
    ReportabilityResponse {
        eicr_id: root
            .descendants()
            .find(|node| {
                is(*node, "externalDocument")
                    && (has_template(*node, EICR_REFERENCE)
                        || child(*node, "code").and_then(|c| attr(c, "code"))
                            == Some(EICR_DOCUMENT_CODE))
            })
            .and_then(|document| child(document, "id"))
            .and_then(instance_id),
        priority: root
            .descendants()
            .find(with_template("observation", PRIORITY))
            .and_then(|observation| child(observation, "value"))
            .and_then(code),
        conditions: root
            .descendants()
            .filter(with_template("observation", CONDITION))
            .map(|observation| ReportableCondition {
                condition: child(observation, "value").and_then(code),
                jurisdictions: related(observation, "organizer", INFORMATION)
                    .map(jurisdiction)
                    .collect(),
            })
            .collect(),
    }
}

/// The `name` elements with `template` one relationship below `node`
/// (`entryRelationship/…` or `component/…`). Looking only there, not through all
/// descendants, keeps reading linear however a document nests these templates.
fn related<'a, 'input: 'a>(
    node: Node<'a, 'input>,
    name: &'static str,
    template: &'static str,
) -> impl Iterator<Item = Node<'a, 'input>> {
    node.children()
        .filter(|relationship| {
            is(*relationship, "entryRelationship") || is(*relationship, "component")
        })
        .flat_map(move |relationship| children(relationship, name))
        .filter(move |target| has_template(*target, template))
}

fn jurisdiction(organizer: Node) -> Jurisdiction {
    let determination = related(organizer, "observation", DETERMINATION).next();
    let value_text = |template| {
        determination
            .and_then(|d| related(d, "observation", template).next())
            .and_then(|o| child(o, "value"))
            .and_then(text_of)
    };
    let participants: Vec<Node> = children(organizer, "participant").collect();
    let agency = |template: &str, role_code: &str| {
        participants
            .iter()
            .find(|participant| {
                let role = child(**participant, "participantRole");
                has_template(**participant, template)
                    || role.is_some_and(|role| {
                        has_template(role, template)
                            // [verify] the role code's place.
                            || child(role, "code").and_then(|c| attr(c, "code")) == Some(role_code)
                    })
            })
            .and_then(|participant| {
                let role = child(*participant, "participantRole")?;
                Some(Agency {
                    name: path(role, &["playingEntity", "name"]).and_then(text_of)?,
                    contact: children(role, "telecom")
                        .filter_map(|telecom| attr(telecom, "value"))
                        .map(str::to_owned)
                        .collect(),
                })
            })
    };
    Jurisdiction {
        determination: determination
            .and_then(|o| child(o, "value"))
            .and_then(code)
            .map(Determination::from_code),
        location_relevance: child(organizer, "code").and_then(code),
        reason: value_text(REASON),
        rule: value_text(RULE),
        responsible_agency: agency(RESPONSIBLE_AGENCY, "RR8"),
        routing_entity: agency(ROUTING_ENTITY, "RR7"),
        timeframe: related(organizer, "observation", TIMEFRAME)
            .next()
            .and_then(|o| child(o, "value"))
            .and_then(timeframe),
        actions: related(organizer, "act", EXTERNAL_RESOURCE)
            .map(action)
            .collect(),
    }
}

/// A PQ duration in words: "24 hours", "3 days".
fn timeframe(value: Node) -> Option<String> {
    let amount = attr(value, "value")?;
    let unit = match attr(value, "unit").unwrap_or("1") {
        // UCUM units.
        "min" => "minutes",
        "h" => "hours",
        "d" => "days",
        "wk" => "weeks",
        "mo" => "months",
        other => other,
    };
    Some(format!("{amount} {unit}"))
}

fn action(act: Node) -> RequestedAction {
    let document = path(act, &["reference", "externalDocument"]);
    RequestedAction {
        description: document
            .and_then(|d| child(d, "code"))
            .and_then(|c| {
                child(c, "originalText")
                    .and_then(text_of)
                    .or_else(|| attr(c, "displayName").map(str::to_owned))
            })
            .or_else(|| document.and_then(|d| child(d, "title")).and_then(text_of)),
        priority: child(act, "priorityCode").and_then(code),
        kind: child(act, "code").and_then(code),
        url: document
            .and_then(|d| path(d, &["text", "reference"]))
            .and_then(|reference| attr(reference, "value"))
            .map(str::to_owned),
    }
}
