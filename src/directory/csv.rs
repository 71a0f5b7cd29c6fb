//! The directory's CSV form (docs/directory.md lists the columns): read for imports,
//! written for exports with cells that spreadsheets cannot run as formulas.

use base64::Engine as _;

use super::EntryInput;
use super::import::{FileProblem, ParsedRow};
use crate::clock::format_rfc3339;
use crate::export::csv_safe;
use crate::store::directory::Entry;

/// The columns, in export order. `source` and `last_confirmed` are written by exports
/// and ignored by imports.
pub const COLUMNS: &[&str] = &[
    "kind",
    "name",
    "organization",
    "npi",
    "specialties",
    "address_line",
    "city",
    "state",
    "zip",
    "phone",
    "direct_addresses",
    "certificate",
    "fhir_id",
    "xdm",
    "source",
    "last_confirmed",
];

/// Reads every row; a header that is not the directory's is a problem of the whole
/// file, a row that is wrong is a problem of that row.
pub fn parse(text: &str) -> Result<Vec<ParsedRow>, FileProblem> {
    let mut reader = reader(text);
    let header = read_header(
        &mut reader,
        COLUMNS,
        &["name", "direct_addresses"],
        "directory",
    )?;
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let (number, message) = unreadable_row(&e, header.len(), rows.len() + 2);
                rows.push(ParsedRow {
                    number,
                    label: String::new(),
                    result: Err(message),
                });
                continue;
            }
        };
        let number = record
            .position()
            .map(|p| p.line() as usize)
            .unwrap_or(rows.len() + 2);
        let cell = |name: &str| -> String {
            header
                .iter()
                .position(|h| h == name)
                .and_then(|i| record.get(i))
                .map(unescape)
                .unwrap_or_default()
        };
        let mut problems = Vec::new();
        let specialties = match crate::domain::Specialty::parse_list(&cell("specialties")) {
            Ok(list) => list.into_iter().map(|s| (s.code, s.label)).collect(),
            Err(e) => {
                problems.push(e.0);
                Vec::new()
            }
        };
        let certificate = match cell("certificate") {
            c if c.is_empty() => None,
            c if c.contains("-----BEGIN") => Some(c.into_bytes()),
            c => match base64::engine::general_purpose::STANDARD
                .decode(c.split_whitespace().collect::<String>())
            {
                Ok(der) => Some(der),
                Err(_) => {
                    problems.push("The certificate cell is neither PEM nor base64 DER.".to_owned());
                    None
                }
            },
        };
        let wants_xdm = match cell("xdm").to_ascii_lowercase().as_str() {
            "" => None,
            "yes" | "true" | "1" => Some(true),
            "no" | "false" | "0" => Some(false),
            other => {
                problems.push(format!(
                    "The xdm cell says \u{201c}{other}\u{201d}; it must be yes or no."
                ));
                None
            }
        };
        let input = EntryInput {
            kind: cell("kind"),
            name: cell("name"),
            organization: cell("organization"),
            npi: cell("npi"),
            specialties,
            address_line: cell("address_line"),
            city: cell("city"),
            state: cell("state"),
            zip: cell("zip"),
            phone: cell("phone"),
            addresses: cell("direct_addresses")
                .split([';', ',', ' '])
                .filter(|s| !s.trim().is_empty())
                .map(str::to_owned)
                .collect(),
            certificate,
            fhir_id: cell("fhir_id"),
            wants_xdm,
        };
        rows.push(ParsedRow {
            number,
            label: input.name.clone(),
            result: if problems.is_empty() {
                Ok(input)
            } else {
                Err(problems.join(" "))
            },
        });
    }
    Ok(rows)
}

/// A reader of CSV text with a header line, cells trimmed, every row as long as the
/// header.
pub fn reader(text: &str) -> ::csv::Reader<&[u8]> {
    ::csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .trim(::csv::Trim::All)
        .from_reader(text.as_bytes())
}

/// The header's column names, lowercased, when each is one of `columns`, none is
/// there twice and every one of `required` is; else the problem of the whole file.
/// `what` names the list for the sentences ("directory", "opt-out list").
pub fn read_header(
    reader: &mut ::csv::Reader<&[u8]>,
    columns: &[&str],
    required: &[&str],
    what: &str,
) -> Result<Vec<String>, FileProblem> {
    let header: Vec<String> = reader
        .headers()
        .map_err(|_| {
            FileProblem("The first line of the file could not be read as CSV column names.".into())
        })?
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_ascii_lowercase())
        .collect();
    if header.iter().all(String::is_empty) {
        return Err(FileProblem(format!(
            "The file is empty: the first line must name the columns (see the {what} documentation)."
        )));
    }
    for h in &header {
        if !columns.contains(&h.as_str()) {
            return Err(FileProblem(format!(
                "The column \u{201c}{h}\u{201d} is not one the {what} knows; the columns are: {}.",
                columns.join(", ")
            )));
        }
        if header.iter().filter(|other| *other == h).count() > 1 {
            return Err(FileProblem(format!(
                "The column \u{201c}{h}\u{201d} appears twice in the header."
            )));
        }
    }
    for required in required {
        if !header.iter().any(|h| h == required) {
            return Err(FileProblem(format!(
                "The header has no \u{201c}{required}\u{201d} column; it is required."
            )));
        }
    }
    Ok(header)
}

/// A row the reader could not read: its line (`fallback` when unknown) and why, in a
/// sentence.
pub fn unreadable_row(e: &::csv::Error, columns: usize, fallback: usize) -> (usize, String) {
    let line = e.position().map(|p| p.line() as usize).unwrap_or(fallback);
    let message = match e.kind() {
        ::csv::ErrorKind::UnequalLengths { len, .. } => {
            format!("It has {len} cells but the header names {columns} columns.")
        }
        _ => "It could not be read as CSV (check its quotes).".to_owned(),
    };
    (line, message)
}

/// Undoes the export's formula protection: `'=…`, `'+…`, `'-…`, `'@…` lose the quote.
fn unescape(cell: &str) -> String {
    match cell.strip_prefix('\'') {
        Some(rest) if rest.starts_with(['=', '+', '-', '@']) => rest.to_owned(),
        _ => cell.to_owned(),
    }
}

/// The CSV of these entries (with their certificates as base64 DER).
pub fn export(entries: &[(Entry, Vec<Option<Vec<u8>>>)]) -> anyhow::Result<Vec<u8>> {
    let mut out = ::csv::Writer::from_writer(Vec::new());
    out.write_record(COLUMNS)?;
    for (e, certs) in entries {
        let certificate = certs
            .iter()
            .flatten()
            .next()
            .map(|der| base64::engine::general_purpose::STANDARD.encode(der))
            .unwrap_or_default();
        let record = [
            e.kind.as_str().to_owned(),
            e.name.clone(),
            e.organization.clone(),
            e.npi.clone().unwrap_or_default(),
            crate::domain::Specialty::format_list(&e.specialties),
            e.address_line.clone(),
            e.city.clone(),
            e.state.clone(),
            e.zip.clone(),
            e.phone.clone(),
            e.addresses
                .iter()
                .map(|a| a.address.as_str())
                .collect::<Vec<_>>()
                .join("; "),
            certificate,
            e.fhir_id.clone().unwrap_or_default(),
            if e.wants_xdm { "yes" } else { "no" }.to_owned(),
            e.source.clone(),
            format_rfc3339(e.confirmed_at),
        ];
        out.write_record(record.iter().map(|c| csv_safe(c)))?;
    }
    out.into_inner().map_err(|e| anyhow::anyhow!("csv: {e}"))
}
