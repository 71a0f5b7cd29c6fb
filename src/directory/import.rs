//! Importing a file into the directory: the format comes from the content (FHIR JSON
//! or CSV), every row is checked, and the whole file is applied in one transaction or
//! not at all. A dry run does the same work and rolls it back, so its preview (rows
//! added, updated, and every row's problems) is exactly what applying would do.

use std::collections::HashMap;

use super::{EntryData, Scope, sentences};
use crate::audit::{self, Actor, Event};
use crate::db::Db;
use crate::store::directory::{self as store, Entry, KeyColumn};

/// A problem with the whole file (nothing was imported), in a sentence.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct FileProblem(pub String);

/// One row of a CSV file (its line number) or one resource of a Bundle (its entry
/// number), read but not yet validated.
#[derive(Debug, Clone)]
pub struct ParsedRow {
    pub number: usize,
    /// A name or `Practitioner/abc`, to help find the row.
    pub label: String,
    pub result: Result<super::EntryInput, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Format {
    Csv,
    Fhir,
}

impl Format {
    pub fn label(self) -> &'static str {
        match self {
            Format::Csv => "CSV",
            Format::Fhir => "FHIR R4 Bundle",
        }
    }
}

/// A row that cannot be imported, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RowError {
    /// The CSV line (the header is line 1) or the Bundle entry (from 1).
    pub row: usize,
    pub label: String,
    pub message: String,
}

/// What an import did, or (dry run, or errors) would do.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub format: Format,
    pub added: usize,
    pub updated: usize,
    /// Entries of the same source that the file no longer has (refresh only).
    pub removed: usize,
    /// Resources of a Bundle without a Direct address.
    pub skipped: usize,
    pub errors: Vec<RowError>,
    /// True when the changes were committed.
    pub applied: bool,
}

/// Where and how to import.
#[derive(Debug, Clone)]
pub struct Options {
    pub scope: Scope,
    /// `import:<file name or URL>`.
    pub source: String,
    pub dry_run: bool,
    /// Remove entries of this source that the file no longer lists (refresh).
    pub prune: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    File(#[from] FileProblem),
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

/// The text of an import file, refusing what is too large or not UTF-8.
pub fn text(bytes: &[u8]) -> Result<&str, FileProblem> {
    if bytes.len() > super::MAX_IMPORT_BYTES {
        return Err(FileProblem(format!(
            "The file is {} MB; the directory imports files of at most {} MB. Split it and import the parts.",
            bytes.len().div_ceil(1024 * 1024),
            super::MAX_IMPORT_BYTES / (1024 * 1024)
        )));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        FileProblem(format!(
            "The file is not UTF-8 text (byte {} is not); save it as UTF-8 CSV or JSON and import it again.",
            e.valid_up_to() + 1
        ))
    })?;
    Ok(text.strip_prefix('\u{feff}').unwrap_or(text))
}

/// Reads a file: FHIR when it starts with `{`, CSV otherwise.
pub fn parse(bytes: &[u8]) -> Result<(Format, Vec<ParsedRow>, usize), FileProblem> {
    let text = text(bytes)?;
    if text.trim().is_empty() {
        return Err(FileProblem("The file is empty.".into()));
    }
    if text.trim_start().starts_with('{') {
        let parsed = super::fhir::parse(text)?;
        Ok((Format::Fhir, parsed.rows, parsed.skipped))
    } else {
        Ok((Format::Csv, super::csv::parse(text)?, 0))
    }
}

/// The source label for a file name or URL: `import:<name>`.
pub fn source_for(name: &str) -> String {
    let short = if name.contains("://") {
        name
    } else {
        name.rsplit(['/', '\\']).next().unwrap_or(name)
    };
    format!("import:{}", short.chars().take(200).collect::<String>())
}

/// Imports `bytes` as `actor`: all rows or none.
pub async fn run(
    db: &Db,
    actor: &Actor,
    bytes: &[u8],
    options: &Options,
    now: i64,
) -> Result<Outcome, ImportError> {
    let (format, rows, skipped) = parse(bytes)?;
    let mut errors = Vec::new();
    let mut valid: Vec<(usize, String, EntryData)> = Vec::new();
    for row in rows {
        let checked = row
            .result
            .and_then(|input| input.validate(now).map_err(|problems| sentences(&problems)));
        match checked {
            Ok(mut data) => {
                if matches!(options.scope, Scope::Personal(_)) {
                    data.certificate = None;
                }
                valid.push((row.number, row.label, data));
            }
            Err(message) => errors.push(RowError {
                row: row.number,
                label: row.label,
                message,
            }),
        }
    }
    let mut outcome = Outcome {
        format,
        added: 0,
        updated: 0,
        removed: 0,
        skipped,
        errors,
        applied: false,
    };
    let scope_key = options.scope.key();
    let _turn = db.write_turn().await;
    let mut tx = db.begin().await?;
    // entry id -> the row that wrote it, to refuse two rows about one entry
    let mut touched: HashMap<i64, usize> = HashMap::new();
    for (number, label, data) in &valid {
        match place(&mut tx, options.scope, &scope_key, data, &touched).await? {
            Err(message) => outcome.errors.push(RowError {
                row: *number,
                label: label.clone(),
                message,
            }),
            Ok(Some(id)) => {
                store::update(&mut tx, id, &options.source, data, now).await?;
                touched.insert(id, *number);
                outcome.updated += 1;
            }
            Ok(None) => {
                let id =
                    store::insert(&mut tx, options.scope, &options.source, data, None, now).await?;
                touched.insert(id, *number);
                outcome.added += 1;
            }
        }
    }
    if options.prune && outcome.errors.is_empty() {
        for id in store::ids_from_source(&mut tx, &scope_key, &options.source).await? {
            if !touched.contains_key(&id) {
                store::delete(&mut tx, id).await?;
                outcome.removed += 1;
            }
        }
    }
    outcome.errors.sort_by_key(|e| e.row);
    if options.dry_run || !outcome.errors.is_empty() {
        tx.rollback().await?;
        return Ok(outcome);
    }
    audit::append(
        &mut tx,
        now,
        actor,
        Event::new("directory.import", &options.source)
            .detail(format!(
                "{} {}: {} added, {} updated, {} removed",
                options.scope.key(),
                format.label(),
                outcome.added,
                outcome.updated,
                outcome.removed
            ))
            .org(options.scope.org_id()),
    )
    .await?;
    tx.commit().await?;
    outcome.applied = true;
    Ok(outcome)
}

/// The existing entry a row updates (`Some(id)`), none (`None`: a new entry), or why
/// the row cannot be applied.
async fn place(
    conn: &mut sqlx::AnyConnection,
    scope: Scope,
    scope_key: &str,
    data: &EntryData,
    touched: &HashMap<i64, usize>,
) -> sqlx::Result<Result<Option<i64>, String>> {
    // the stable key: NPI, else FHIR id, else a Direct address
    let by_npi = match &data.npi {
        Some(npi) => store::find_by_key(conn, scope_key, KeyColumn::Npi, npi.as_str()).await?,
        None => None,
    };
    let by_fhir = match &data.fhir_id {
        Some(id) => store::find_by_key(conn, scope_key, KeyColumn::FhirId, id).await?,
        None => None,
    };
    let mut by_address = Vec::new();
    for a in &data.addresses {
        if let Some(found) =
            store::find_by_key(conn, scope_key, KeyColumn::Address, a.as_str()).await?
        {
            by_address.push((a, found));
        }
    }
    let matched = by_npi
        .or(by_fhir)
        .or_else(|| by_address.first().map(|(_, f)| *f))
        .map(|(id, _)| id);
    if let (Some(npi), Some((other, _))) = (&data.npi, by_npi)
        && Some(other) != matched
    {
        return Ok(Err(format!(
            "The NPI {npi} is already listed for another entry."
        )));
    }
    if let (Some(fhir), Some((other, _))) = (&data.fhir_id, by_fhir)
        && Some(other) != matched
    {
        return Ok(Err(format!(
            "The FHIR resource {fhir} is already listed as another entry (with another NPI)."
        )));
    }
    for (address, (owner, mailbox)) in &by_address {
        if mailbox.is_some() && scope == Scope::Public {
            return Ok(Err(format!(
                "{address} is a mailbox hosted here; it is listed automatically and cannot be imported."
            )));
        }
        if Some(*owner) != matched {
            return Ok(Err(format!(
                "The Direct address {address} already belongs to another entry of the directory."
            )));
        }
    }
    if let Some(id) = matched
        && let Some(row) = touched.get(&id)
    {
        return Ok(Err(format!(
            "It describes the same entry as row {row} (same NPI, FHIR id or Direct address)."
        )));
    }
    Ok(Ok(matched))
}

/// Every entry of a scope with each address's certificate (DER), for exports.
pub async fn entries_for_export(
    db: &Db,
    scope: Scope,
) -> sqlx::Result<Vec<(Entry, Vec<Option<Vec<u8>>>)>> {
    const PAGE: i64 = 1000;
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let page = store::list_scope(db, scope, PAGE, offset).await?;
        let n = page.len() as i64;
        for e in page {
            let certs = if e.addresses.iter().any(|a| a.cert_fingerprint.is_some()) {
                store::certificates_of(db, e.id).await?
            } else {
                Vec::new()
            };
            let ders = e
                .addresses
                .iter()
                .map(|a| {
                    certs
                        .iter()
                        .find(|(addr, _)| *addr == a.address)
                        .and_then(|(_, der)| der.clone())
                })
                .collect();
            out.push((e, ders));
        }
        if n < PAGE {
            return Ok(out);
        }
        offset += PAGE;
    }
}

/// The export of a scope in CSV or as a FHIR Bundle.
pub async fn export(db: &Db, scope: Scope, format: Format) -> anyhow::Result<Vec<u8>> {
    let entries = entries_for_export(db, scope).await?;
    match format {
        Format::Csv => super::csv::export(&entries),
        Format::Fhir => super::fhir::export(&entries),
    }
}
