//! FHIR R4 JSON bundles in the shape of the national directory (the HL7 National
//! Directory of Healthcare Providers & Services): Practitioner, PractitionerRole,
//! Organization, HealthcareService and Endpoint resources, an Endpoint being a Direct
//! address when its connectionType is `direct-project` and its address `mailto:`.

use std::collections::HashMap;

use base64::Engine as _;
use serde_json::{Value, json};

use super::EntryInput;
use super::import::{FileProblem, ParsedRow};
use crate::domain::directory::parse_zip;
use crate::store::directory::Entry;

const NPI_SYSTEM: &str = "http://hl7.org/fhir/sid/us-npi";
const NUCC_SYSTEM: &str = "http://nucc.org/provider-taxonomy";
const CONNECTION_TYPES: &str = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type";
/// NDH's extension carrying an endpoint's certificate (a `certificate` sub-extension
/// with valueBase64Binary).
const SECURE_EXCHANGE: &str =
    "http://hl7.org/fhir/us/ndh/StructureDefinition/base-ext-secureExchangeArtifacts";

/// What the bundle yields: rows, and how many resources had no Direct address.
pub struct Parsed {
    pub rows: Vec<ParsedRow>,
    pub skipped: usize,
}

/// Reads a Bundle. Practitioners (through their PractitionerRoles), Organizations and
/// HealthcareServices with at least one Direct endpoint become entries; the others
/// are counted as skipped.
pub fn parse(text: &str) -> Result<Parsed, FileProblem> {
    let bundle: Value = serde_json::from_str(text).map_err(|e| {
        FileProblem(format!(
            "The file looks like JSON but is not valid JSON (line {}, column {}); export it again as a FHIR R4 Bundle.",
            e.line(),
            e.column()
        ))
    })?;
    match bundle.get("resourceType").and_then(Value::as_str) {
        Some("Bundle") => {}
        Some(other) => {
            return Err(FileProblem(format!(
                "The JSON file is a FHIR {other}, not a Bundle; the directory imports Bundles of Practitioner, PractitionerRole, Organization and Endpoint resources."
            )));
        }
        None => {
            return Err(FileProblem(
                "The JSON file is not a FHIR resource (it has no resourceType); the directory imports FHIR R4 Bundles or CSV.".into(),
            ));
        }
    }
    let entries: Vec<(usize, &Value, String)> = bundle
        .get("entry")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .enumerate()
                .filter_map(|(i, e)| {
                    let r = e.get("resource")?;
                    let full_url = e
                        .get("fullUrl")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    Some((i + 1, r, full_url))
                })
                .collect()
        })
        .unwrap_or_default();
    let index = Index::new(&entries);
    let mut rows = Vec::new();
    let mut skipped = 0;
    for (number, resource, _) in &entries {
        let kind = rtype(resource);
        let id = str_at(resource, "id");
        let label = format!("{kind}/{id}");
        let input = match kind {
            "Practitioner" => practitioner(resource, &index, &label),
            "Organization" => organization(resource, &index),
            "HealthcareService" => service(resource, &index),
            _ => continue,
        };
        match input {
            Some(mut input) => {
                input.fhir_id = label.clone();
                rows.push(ParsedRow {
                    number: *number,
                    label,
                    result: Ok(input),
                });
            }
            None => skipped += 1,
        }
    }
    Ok(Parsed { rows, skipped })
}

fn rtype(r: &Value) -> &str {
    r.get("resourceType").and_then(Value::as_str).unwrap_or("")
}

fn str_at<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn array<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Resources by `Type/id` and by full URL, for resolving references.
struct Index<'a> {
    by_ref: HashMap<String, &'a Value>,
    /// PractitionerRoles by the `Type/id` of the practitioner they name, in bundle
    /// order (looked up once here, not per practitioner).
    roles_of: HashMap<String, Vec<&'a Value>>,
}

impl<'a> Index<'a> {
    fn new(entries: &[(usize, &'a Value, String)]) -> Self {
        let mut index = Index {
            by_ref: HashMap::new(),
            roles_of: HashMap::new(),
        };
        for (_, r, full_url) in entries {
            let key = format!("{}/{}", rtype(r), str_at(r, "id"));
            index.by_ref.insert(key, *r);
            if !full_url.is_empty() {
                index.by_ref.insert(full_url.clone(), *r);
            }
        }
        for (_, r, _) in entries {
            if rtype(r) != "PractitionerRole" {
                continue;
            }
            if let Some(p) = r.get("practitioner").and_then(|p| index.resolve(p)) {
                let label = format!("{}/{}", rtype(p), str_at(p, "id"));
                index.roles_of.entry(label).or_default().push(*r);
            }
        }
        index
    }

    /// The resource a `Reference` points to: by full URL, else by its `Type/id` tail.
    fn resolve(&self, reference: &Value) -> Option<&'a Value> {
        let r = reference.get("reference").and_then(Value::as_str)?;
        if let Some(v) = self.by_ref.get(r) {
            return Some(v);
        }
        let mut parts = r.rsplitn(3, '/');
        let id = parts.next()?;
        let kind = parts.next()?;
        self.by_ref.get(&format!("{kind}/{id}")).copied()
    }

    /// The Direct addresses (and a certificate) of a list of endpoint references.
    fn direct(&self, refs: &[Value], out: &mut EntryInput) {
        for r in refs {
            let Some(ep) = self.resolve(r) else { continue };
            if let Some(address) = direct_address(ep) {
                if out.certificate.is_none() && out.addresses.is_empty() {
                    out.certificate = endpoint_certificate(ep);
                }
                if !out.addresses.contains(&address) {
                    out.addresses.push(address);
                }
            }
        }
    }

    fn organization_name(&self, reference: Option<&Value>) -> String {
        reference
            .and_then(|r| {
                self.resolve(r)
                    .map(|o| str_at(o, "name").to_owned())
                    .or_else(|| r.get("display").and_then(Value::as_str).map(str::to_owned))
            })
            .unwrap_or_default()
    }
}

/// `dr@example.org` when the Endpoint is an active Direct one.
fn direct_address(ep: &Value) -> Option<String> {
    if rtype(ep) != "Endpoint" {
        return None;
    }
    if matches!(str_at(ep, "status"), "off" | "error" | "entered-in-error") {
        return None;
    }
    let code = ep
        .get("connectionType")
        .and_then(|c| c.get("code"))
        .and_then(Value::as_str)?;
    if code != "direct-project" {
        return None;
    }
    let address = str_at(ep, "address");
    let lower = address.to_ascii_lowercase();
    lower
        .strip_prefix("mailto:")
        .map(|_| address["mailto:".len()..].to_owned())
}

fn endpoint_certificate(ep: &Value) -> Option<Vec<u8>> {
    array(ep, "extension")
        .iter()
        .filter(|e| str_at(e, "url") == SECURE_EXCHANGE)
        .flat_map(|e| array(e, "extension"))
        .find(|e| str_at(e, "url") == "certificate")
        .and_then(|e| e.get("valueBase64Binary").and_then(Value::as_str))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
}

fn npi(r: &Value) -> String {
    array(r, "identifier")
        .iter()
        .find(|i| str_at(i, "system") == NPI_SYSTEM)
        .map(|i| str_at(i, "value").to_owned())
        .unwrap_or_default()
}

fn phone(r: &Value) -> String {
    array(r, "telecom")
        .iter()
        .find(|t| str_at(t, "system") == "phone")
        .map(|t| str_at(t, "value").to_owned())
        .unwrap_or_default()
}

fn human_name(r: &Value) -> String {
    let Some(n) = array(r, "name").first() else {
        return String::new();
    };
    let text = str_at(n, "text");
    if !text.is_empty() {
        return text.to_owned();
    }
    let words = |key: &str| {
        array(n, key)
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    };
    [
        words("prefix"),
        words("given"),
        str_at(n, "family").to_owned(),
        words("suffix"),
    ]
    .into_iter()
    .filter(|s| !s.is_empty())
    .collect::<Vec<_>>()
    .join(" ")
}

fn postal(r: &Value, out: &mut EntryInput) {
    if let Some(a) = array(r, "address").first() {
        out.address_line = array(a, "line")
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        out.city = str_at(a, "city").to_owned();
        out.state = str_at(a, "state").to_owned();
        out.zip = str_at(a, "postalCode").to_owned();
    }
}

/// NUCC codes among a list of CodeableConcepts.
fn specialties(concepts: &[Value], out: &mut EntryInput) {
    for c in concepts {
        for coding in array(c, "coding") {
            if str_at(coding, "system") == NUCC_SYSTEM {
                let pair = (
                    str_at(coding, "code").to_owned(),
                    str_at(coding, "display").to_owned(),
                );
                if !out.specialties.contains(&pair) {
                    out.specialties.push(pair);
                }
            }
        }
    }
}

fn practitioner(r: &Value, index: &Index<'_>, label: &str) -> Option<EntryInput> {
    let mut input = EntryInput {
        kind: "practitioner".into(),
        name: human_name(r),
        npi: npi(r),
        phone: phone(r),
        ..EntryInput::default()
    };
    postal(r, &mut input);
    // R4's Practitioner.qualification carries taxonomy codes in some directories
    let qualifications: Vec<Value> = array(r, "qualification")
        .iter()
        .filter_map(|q| q.get("code").cloned())
        .collect();
    specialties(&qualifications, &mut input);
    for role in index.roles_of.get(label).into_iter().flatten() {
        index.direct(array(role, "endpoint"), &mut input);
        specialties(array(role, "specialty"), &mut input);
        if input.organization.is_empty() {
            input.organization = index.organization_name(role.get("organization"));
        }
        if input.phone.is_empty() {
            input.phone = phone(role);
        }
    }
    (!input.addresses.is_empty()).then_some(input)
}

fn organization(r: &Value, index: &Index<'_>) -> Option<EntryInput> {
    let mut input = EntryInput {
        kind: "organization".into(),
        name: str_at(r, "name").to_owned(),
        npi: npi(r),
        phone: phone(r),
        ..EntryInput::default()
    };
    postal(r, &mut input);
    index.direct(array(r, "endpoint"), &mut input);
    (!input.addresses.is_empty()).then_some(input)
}

fn service(r: &Value, index: &Index<'_>) -> Option<EntryInput> {
    let mut input = EntryInput {
        kind: "service".into(),
        name: str_at(r, "name").to_owned(),
        phone: phone(r),
        organization: index.organization_name(r.get("providedBy")),
        ..EntryInput::default()
    };
    specialties(array(r, "specialty"), &mut input);
    index.direct(array(r, "endpoint"), &mut input);
    (!input.addresses.is_empty()).then_some(input)
}

/// A FHIR id: `[A-Za-z0-9\-\.]{1,64}`.
fn fhir_id_part(entry: &Entry, kind: &str) -> String {
    entry
        .fhir_id
        .as_deref()
        .and_then(|f| f.strip_prefix(kind))
        .and_then(|f| f.strip_prefix('/'))
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        })
        .map(str::to_owned)
        .unwrap_or_else(|| format!("dm-{}", entry.id))
}

fn resource_entry(resource: Value) -> Value {
    let url = format!(
        "{}/{}",
        str_at(&resource, "resourceType"),
        str_at(&resource, "id")
    );
    json!({ "fullUrl": url, "resource": resource })
}

/// A `collection` Bundle of these entries, certificates on their Endpoints.
pub fn export(entries: &[(Entry, Vec<Option<Vec<u8>>>)]) -> anyhow::Result<Vec<u8>> {
    let mut out: Vec<Value> = Vec::new();
    // one Organization per organization name; an organization entry gives its own
    let mut orgs: HashMap<String, String> = HashMap::new();
    for (e, _) in entries {
        if e.kind == super::Kind::Organization {
            orgs.entry(e.name.clone())
                .or_insert_with(|| fhir_id_part(e, "Organization"));
        }
    }
    let mut name_only_orgs = 0usize;
    let mut org_ref = |name: &str, out: &mut Vec<Value>| -> Option<Value> {
        if name.is_empty() {
            return None;
        }
        let id = match orgs.get(name) {
            Some(id) => id.clone(),
            None => {
                name_only_orgs += 1;
                let id = format!("dm-org-{name_only_orgs}");
                orgs.insert(name.to_owned(), id.clone());
                out.push(resource_entry(json!({
                    "resourceType": "Organization", "id": id, "name": name,
                })));
                id
            }
        };
        Some(json!({ "reference": format!("Organization/{id}"), "display": name }))
    };
    for (e, certs) in entries {
        let mut endpoint_refs = Vec::new();
        for (n, a) in e.addresses.iter().enumerate() {
            let id = format!("dm-ep-{}-{}", e.id, n + 1);
            let mut ep = json!({
                "resourceType": "Endpoint",
                "id": id,
                "status": "active",
                "connectionType": { "system": CONNECTION_TYPES, "code": "direct-project" },
                "name": e.name,
                "payloadType": [{ "text": "Direct secure messaging" }],
                "address": format!("mailto:{}", a.address),
            });
            if let Some(Some(der)) = certs.get(n) {
                ep["extension"] = json!([{
                    "url": SECURE_EXCHANGE,
                    "extension": [{
                        "url": "certificate",
                        "valueBase64Binary": base64::engine::general_purpose::STANDARD.encode(der),
                    }],
                }]);
            }
            endpoint_refs.push(json!({ "reference": format!("Endpoint/{id}") }));
            out.push(resource_entry(ep));
        }
        let telecom = if e.phone.is_empty() {
            json!([])
        } else {
            json!([{ "system": "phone", "value": e.phone }])
        };
        let identifier = match &e.npi {
            Some(npi) => json!([{ "system": NPI_SYSTEM, "value": npi }]),
            None => json!([]),
        };
        let address = if e.address_line.is_empty() && e.city.is_empty() && e.zip.is_empty() {
            json!([])
        } else {
            let line: Vec<&str> = Some(e.address_line.as_str())
                .filter(|l| !l.is_empty())
                .into_iter()
                .collect();
            json!([{
                "line": line, "city": e.city, "state": e.state,
                "postalCode": parse_zip(&e.zip).unwrap_or_default(), "country": "US",
            }])
        };
        let specialty: Vec<Value> = e
            .specialties
            .iter()
            .map(|s| json!({ "coding": [{ "system": NUCC_SYSTEM, "code": s.code, "display": s.label }] }))
            .collect();
        match e.kind {
            super::Kind::Practitioner => {
                let id = fhir_id_part(e, "Practitioner");
                out.push(resource_entry(json!({
                    "resourceType": "Practitioner", "id": id,
                    "identifier": identifier, "name": [{ "text": e.name }],
                    "telecom": telecom, "address": address,
                })));
                let mut role = json!({
                    "resourceType": "PractitionerRole", "id": format!("{id}-role"),
                    "practitioner": { "reference": format!("Practitioner/{id}") },
                    "specialty": specialty, "endpoint": endpoint_refs,
                });
                if let Some(r) = org_ref(&e.organization, &mut out) {
                    role["organization"] = r;
                }
                out.push(resource_entry(role));
            }
            super::Kind::Organization => {
                out.push(resource_entry(json!({
                    "resourceType": "Organization", "id": fhir_id_part(e, "Organization"),
                    "identifier": identifier, "name": e.name, "telecom": telecom,
                    "address": address, "endpoint": endpoint_refs,
                })));
            }
            super::Kind::Service => {
                let mut service = json!({
                    "resourceType": "HealthcareService", "id": fhir_id_part(e, "HealthcareService"),
                    "name": e.name, "telecom": telecom, "specialty": specialty,
                    "endpoint": endpoint_refs,
                });
                if let Some(r) = org_ref(&e.organization, &mut out) {
                    service["providedBy"] = r;
                }
                out.push(resource_entry(service));
            }
        }
    }
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "collection",
        "entry": out,
    });
    Ok(serde_json::to_vec_pretty(&bundle)?)
}
