//! The HIE opt-out list's rules outside the database: checking an entry as typed (the
//! compose page's patient-block rules, [`crate::patient`]), reading the CSV import
//! and writing the CSV export. The list itself is in [`crate::store::opt_outs`].

use crate::directory::csv;
pub use crate::directory::import::FileProblem;
use crate::export::csv_safe;
use crate::patient::{check_birth_date, check_typed, identifier_parts};
use crate::store::opt_outs::{MatchInput, NewOptOut, OptOut};

/// Largest CSV the opt-out page imports, in bytes (a line is ~60 bytes: some 8,000
/// patients). The request limit of uploads is larger, so a bigger file gets this
/// sentence rather than a bare refusal.
pub const MAX_CSV_BYTES: usize = 512 * 1024;

/// Most rows one file may carry.
pub const MAX_ROWS: usize = 10_000;

/// The CSV columns, in export order; the export adds the record and removal columns.
pub const COLUMNS: [&str; 4] = ["family_name", "given_name", "birth_date", "identifier"];

/// The export's extra columns (ignored by nothing: the import refuses them, so an
/// export is not re-imported by mistake with its removed entries).
pub const EXPORT_COLUMNS: [&str; 7] = [
    "recorded_at",
    "recorded_by",
    "status",
    "removed_at",
    "removed_by",
    "removal_reason",
    "id",
];

/// An entry as typed in the form or read from a CSV row.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct OptOutInput {
    pub family_name: String,
    pub given_name: String,
    pub birth_date: String,
    /// `OID:id`, or empty.
    pub identifier: String,
}

/// A field and what is wrong with it.
pub type Problem = (&'static str, String);

impl OptOutInput {
    /// The entry, or each field's problem in a sentence. `now` in Unix seconds.
    pub fn check(&self, now: i64) -> Result<NewOptOut, Vec<Problem>> {
        let mut problems: Vec<Problem> = Vec::new();
        for (field, value, label) in [
            ("family_name", &self.family_name, "The family name"),
            ("given_name", &self.given_name, "The given name"),
            ("identifier", &self.identifier, "The identifier"),
        ] {
            if let Err(message) = check_typed(label, value) {
                problems.push((field, message));
            }
        }
        if self.family_name.trim().is_empty() {
            problems.push(("family_name", "Give the patient's family name.".into()));
        }
        if self.given_name.trim().is_empty() {
            problems.push(("given_name", "Give the patient's given name.".into()));
        }
        if self.birth_date.trim().is_empty() {
            problems.push((
                "birth_date",
                "Give the patient's birth date (YYYY-MM-DD).".into(),
            ));
        } else if let Err(message) = check_birth_date(&self.birth_date, now) {
            problems.push(("birth_date", message));
        }
        let identifier = match self.identifier.trim() {
            "" => None,
            typed => match identifier_parts(typed) {
                (Some(authority), id) if !id.is_empty() => Some((authority, id)),
                _ => {
                    problems.push((
                        "identifier",
                        "Write the identifier with its assigning authority, as OID:id (for example 2.16.840.1.113883.19.5:12345), or leave it empty."
                            .into(),
                    ));
                    None
                }
            },
        };
        if !problems.is_empty() {
            // one sentence per field
            let mut seen = Vec::new();
            problems.retain(|(field, _)| {
                let first = !seen.contains(field);
                seen.push(field);
                first
            });
            return Err(problems);
        }
        let clean = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        Ok(NewOptOut {
            family_name: clean(&self.family_name),
            given_name: clean(&self.given_name),
            birth_date: self.birth_date.trim().to_owned(),
            identifier,
        })
    }
}

/// One data row of a CSV file: its line number (the header is line 1) and its cells.
#[derive(Debug, Clone)]
pub struct CsvRow {
    pub line: usize,
    pub result: Result<OptOutInput, String>,
}

/// Reads an uploaded file: at most [`MAX_CSV_BYTES`], UTF-8, the header naming
/// `family_name`, `given_name` and `birth_date` (and optionally `identifier`), in any
/// order. A row with a cell that starts like a spreadsheet formula is wrong.
pub fn parse_csv(bytes: &[u8]) -> Result<Vec<CsvRow>, FileProblem> {
    if bytes.len() > MAX_CSV_BYTES {
        return Err(FileProblem(format!(
            "The file is {} KB; the opt-out list imports files of at most {} KB. Split it and import the parts.",
            bytes.len().div_ceil(1024),
            MAX_CSV_BYTES / 1024
        )));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        FileProblem(format!(
            "The file is not UTF-8 text (byte {} is not); save it as UTF-8 CSV and import it again.",
            e.valid_up_to() + 1
        ))
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(FileProblem("The file is empty.".into()));
    }
    let mut reader = csv::reader(text);
    let header = csv::read_header(
        &mut reader,
        &COLUMNS,
        &["family_name", "given_name", "birth_date"],
        "opt-out list",
    )?;
    let mut rows = Vec::new();
    for record in reader.records() {
        if rows.len() >= MAX_ROWS {
            return Err(FileProblem(format!(
                "The file has more than {MAX_ROWS} rows; split it and import the parts."
            )));
        }
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let (line, message) = csv::unreadable_row(&e, header.len(), rows.len() + 2);
                rows.push(CsvRow {
                    line,
                    result: Err(message),
                });
                continue;
            }
        };
        let line = record
            .position()
            .map(|p| p.line() as usize)
            .unwrap_or(rows.len() + 2);
        if record.iter().all(str::is_empty) {
            continue;
        }
        let cell = |name: &str| -> String {
            header
                .iter()
                .position(|h| h == name)
                .and_then(|i| record.get(i))
                .unwrap_or_default()
                .to_owned()
        };
        let formulas: Vec<&str> = COLUMNS
            .iter()
            .copied()
            .filter(|c| cell(c).starts_with(['=', '+', '-', '@']))
            .collect();
        rows.push(CsvRow {
            line,
            result: if formulas.is_empty() {
                Ok(OptOutInput {
                    family_name: cell("family_name"),
                    given_name: cell("given_name"),
                    birth_date: cell("birth_date"),
                    identifier: cell("identifier"),
                })
            } else {
                Err(format!(
                    "The {} cell starts with =, +, - or @, like a spreadsheet formula; names, dates and identifiers never do.",
                    formulas.join(" and ")
                ))
            },
        });
    }
    Ok(rows)
}

/// The CSV export: every entry, active and removed, with who recorded and removed it;
/// `format_time` writes the times. Cells that spreadsheets would run are made safe.
pub fn export_csv(
    entries: &[OptOut],
    format_time: impl Fn(i64) -> String,
) -> anyhow::Result<Vec<u8>> {
    let mut out = ::csv::Writer::from_writer(Vec::new());
    out.write_record(COLUMNS.iter().chain(EXPORT_COLUMNS.iter()))?;
    for e in entries {
        let record = [
            e.family_name.clone(),
            e.given_name.clone(),
            e.birth_date.clone(),
            e.identifier_text(),
            format_time(e.recorded_at),
            e.recorded_by_name.clone(),
            if e.is_removed() { "removed" } else { "active" }.to_owned(),
            e.removed_at.map(&format_time).unwrap_or_default(),
            e.removed_by_name.clone().unwrap_or_default(),
            e.removal_reason.clone().unwrap_or_default(),
            e.id.to_string(),
        ];
        out.write_record(record.iter().map(|c| csv_safe(c)))?;
    }
    out.into_inner().map_err(|e| anyhow::anyhow!("csv: {e}"))
}

/// Who an outgoing message is about, for the opt-out check: the patient block when it
/// names one, and the recordTarget of every CDA attachment (each is checked, so a
/// document about an opted-out patient is found whatever the block says). Synchronous
/// and CPU-bound (documents are parsed): call it on a blocking thread.
pub fn patients_of(
    block: &crate::patient::DraftPatient,
    attachments: &[crate::outbound::Attachment],
) -> Vec<MatchInput> {
    use directmail_content::cda::{self, CdaLimits};
    let mut found = Vec::new();
    if !block.is_empty() {
        let (authority, id) = identifier_parts(&block.id);
        found.push(MatchInput {
            identifier: authority.filter(|_| !id.is_empty()).map(|a| (a, id)),
            family: block.family.clone(),
            given: block.given.clone(),
            birth_date: crate::patient::normal_birth_date(&block.birth_date),
        });
    }
    for attachment in attachments {
        if !cda::is_cda(&attachment.data) {
            continue;
        }
        let Ok(document) = cda::parse_cda(&attachment.data, &CdaLimits::default()) else {
            continue;
        };
        let Some(patient) = document.patient else {
            continue;
        };
        let joined = |words: Option<&Vec<String>>| words.map(|w| w.join(" ")).unwrap_or_default();
        let family = joined(patient.name.as_ref().map(|n| &n.family));
        let given = joined(patient.name.as_ref().map(|n| &n.given));
        let birth_date = patient
            .birth_time
            .as_ref()
            .map(|t| crate::patient::normal_birth_date(&t.raw))
            .unwrap_or_default();
        let mut ids: Vec<Option<(String, String)>> = patient
            .ids
            .iter()
            .filter_map(|i| Some((i.root.clone()?, i.extension.clone()?)))
            .map(Some)
            .collect();
        if ids.is_empty() {
            ids.push(None);
        }
        for identifier in ids {
            found.push(MatchInput {
                identifier,
                family: family.clone(),
                given: given.clone(),
                birth_date: birth_date.clone(),
            });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_780_000_000; // 2026-05-28

    fn input(family: &str, given: &str, birth: &str, id: &str) -> OptOutInput {
        OptOutInput {
            family_name: family.into(),
            given_name: given.into(),
            birth_date: birth.into(),
            identifier: id.into(),
        }
    }

    #[test]
    fn entries_follow_the_patient_block_rules() {
        let ok = input(" Jones ", "Anna  Marie", "1970-03-12", "1.2.3:MRN-1")
            .check(NOW)
            .unwrap();
        assert_eq!(ok.family_name, "Jones");
        assert_eq!(ok.given_name, "Anna Marie");
        assert_eq!(ok.identifier, Some(("1.2.3".into(), "MRN-1".into())));
        let fields = |i: OptOutInput| -> Vec<&'static str> {
            i.check(NOW).unwrap_err().into_iter().map(|p| p.0).collect()
        };
        assert_eq!(
            fields(input("Jones", "Anna", "1970-02-30", "")),
            ["birth_date"]
        );
        assert_eq!(
            fields(input("Jones", "Anna", "2099-01-01", "")),
            ["birth_date"]
        );
        assert_eq!(fields(input("Jones", "Anna", "", "")), ["birth_date"]);
        assert_eq!(
            fields(input("Jo;nes", "", "1970-03-12", "MRN-1")),
            ["family_name", "given_name", "identifier"]
        );
    }

    #[test]
    fn csv_files_are_refused_whole_or_by_row() {
        let rows = parse_csv(
            b"given_name,family_name,birth_date\nAnna,Jones,1970-03-12\n=cmd,Lee,1980-01-01\n",
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].line, 2);
        assert_eq!(rows[0].result.as_ref().unwrap().family_name, "Jones");
        assert!(rows[1].result.as_ref().unwrap_err().contains("formula"));
        assert!(
            parse_csv(b"family_name,given_name\nJones,Anna\n")
                .unwrap_err()
                .0
                .contains("no \u{201c}birth_date\u{201d} column; it is required")
        );
        assert!(parse_csv(b"family_name,given_name,birth_date\nJ\xf6nes,A,1970-01-01\n").is_err());
    }
}
