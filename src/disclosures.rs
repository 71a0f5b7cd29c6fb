//! The disclosures report's rules outside the database (issue #13): the range of days
//! as typed, the kind of record in words, and the CSV export. The rows themselves are
//! in [`crate::store::disclosures`]; docs/sensitive-records.md, "The disclosures
//! report", says what the report is for.

use time::{Date, Duration, Month, OffsetDateTime};

use crate::clock::{format_rfc3339, parse_date};
use crate::export::csv_safe;
use crate::sensitivity::Law;
use crate::store::disclosures::{Disclosure, Filter};

/// Days before the end that the report starts at when no start is given.
pub const DEFAULT_DAYS: i64 = 30;

/// Longest range, in years.
pub const MAX_YEARS: i32 = 10;

/// Longest patient filter, in characters.
pub const MAX_PATIENT: usize = 200;

/// The CSV export's columns, in order.
pub const COLUMNS: [&str; 8] = [
    "sent_at",
    "sender",
    "mailbox",
    "patient",
    "recipients",
    "kind",
    "purpose",
    "consent",
];

/// The range as typed in the report's form (or carried by its links).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub struct RangeInput {
    /// First day, `YYYY-MM-DD` (UTC); empty for [`DEFAULT_DAYS`] before the end.
    pub from: String,
    /// Last day, included, `YYYY-MM-DD` (UTC); empty for today.
    pub to: String,
    /// Part of the patient's name; empty for every patient.
    pub patient: String,
}

/// A checked range: whole UTC days, both ends included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub from: Date,
    pub to: Date,
    pub patient: String,
}

fn day_of(unix: i64) -> Date {
    OffsetDateTime::from_unix_timestamp(unix)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .date()
}

fn midnight(day: Date) -> i64 {
    day.midnight().assume_utc().unix_timestamp()
}

/// The same day `years` later; 29 February becomes 1 March in a year without one.
fn years_after(day: Date, years: i32) -> Option<Date> {
    let year = day.year().checked_add(years)?;
    day.replace_year(year)
        .or_else(|_| Date::from_calendar_date(year, Month::March, 1))
        .ok()
}

impl RangeInput {
    /// The range, its empty ends filled in (the end: today; the start: [`DEFAULT_DAYS`]
    /// before the end), or each wrong field with a sentence.
    pub fn check(&self, now: i64) -> Result<Range, Vec<(&'static str, String)>> {
        let mut problems = Vec::new();
        let mut day = |field: &'static str, text: &str, what: &str| {
            if text.trim().is_empty() {
                return Ok(None);
            }
            match parse_date(text) {
                Some(t) => Ok(Some(day_of(t))),
                None => {
                    problems.push((
                        field,
                        format!("The {what} date is not a date; write it as 2026-01-31."),
                    ));
                    Err(())
                }
            }
        };
        let from = day("from", &self.from, "start");
        let to = day("to", &self.to, "end");
        let patient = self.patient.trim().to_owned();
        if patient.chars().count() > MAX_PATIENT {
            problems.push((
                "patient",
                format!("The patient filter is longer than {MAX_PATIENT} characters."),
            ));
        }
        let (Ok(from), Ok(to)) = (from, to) else {
            return Err(problems);
        };
        let to = to.unwrap_or_else(|| day_of(now));
        let from = from.unwrap_or_else(|| to.saturating_sub(Duration::days(DEFAULT_DAYS)));
        if from > to {
            problems.push((
                "from",
                format!("The start date, {from}, is after the end date, {to}."),
            ));
        } else if years_after(from, MAX_YEARS).is_some_and(|limit| to >= limit) {
            problems.push((
                "from",
                format!(
                    "The range is longer than {MAX_YEARS} years; ask for at most {MAX_YEARS} years at a time."
                ),
            ));
        }
        if problems.is_empty() {
            Ok(Range { from, to, patient })
        } else {
            Err(problems)
        }
    }
}

impl Range {
    /// What the store is asked: from the first day's midnight to the midnight after
    /// the last day.
    pub fn filter(&self) -> Filter {
        Filter {
            from: midnight(self.from),
            to: midnight(self.to) + 86_400,
            patient: self.patient.clone(),
        }
    }

    /// The range as the form shows it.
    pub fn input(&self) -> RangeInput {
        RangeInput {
            from: self.from.to_string(),
            to: self.to.to_string(),
            patient: self.patient.clone(),
        }
    }

    /// The range for the audit log: the days, and whether a patient was asked for
    /// (never who).
    pub fn describe(&self) -> String {
        let filtered = if self.patient.is_empty() {
            ""
        } else {
            ", filtered by patient"
        };
        format!("{} to {}{filtered}", self.from, self.to)
    }
}

/// The kind of record, in words; a value this version does not know is shown as
/// stored, so that no row is hidden.
pub fn kind(law: &str) -> &str {
    match Law::parse(law) {
        Some(Law::Part2) => "Substance use disorder (42 CFR Part 2)",
        Some(Law::MentalHealth) => "Mental health (740 ILCS 110)",
        Some(Law::Restricted) => "Other restricted",
        None => law,
    }
}

/// The CSV export: one line per disclosure, in the order given, times in ISO 8601
/// UTC. Cells that spreadsheets would run are made safe.
pub fn export_csv(rows: &[Disclosure]) -> anyhow::Result<Vec<u8>> {
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(COLUMNS)?;
    for d in rows {
        let record = [
            format_rfc3339(d.sent_at),
            d.user_name.clone(),
            d.mailbox_address.clone(),
            d.patient.clone(),
            d.recipients.clone(),
            kind(&d.law).to_owned(),
            d.purpose.clone(),
            d.consent.clone(),
        ];
        out.write_record(record.iter().map(|c| csv_safe(c)))?;
    }
    out.into_inner().map_err(|e| anyhow::anyhow!("csv: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_780_000_000; // 2026-05-28 20:26 UTC

    fn input(from: &str, to: &str) -> RangeInput {
        RangeInput {
            from: from.into(),
            to: to.into(),
            patient: String::new(),
        }
    }

    fn fields(problems: Vec<(&'static str, String)>) -> Vec<&'static str> {
        problems.into_iter().map(|(f, _)| f).collect()
    }

    #[test]
    fn an_empty_range_is_the_last_thirty_days_up_to_today() {
        let r = input("", "").check(NOW).unwrap();
        assert_eq!(r.input(), input("2026-04-28", "2026-05-28"));
        let only_end = input("", "2026-01-31").check(NOW).unwrap();
        assert_eq!(only_end.from.to_string(), "2026-01-01");
    }

    #[test]
    fn both_days_are_whole_and_included() {
        let r = input("2026-01-01", "2026-01-31").check(NOW).unwrap();
        let f = r.filter();
        assert_eq!(f.from, parse_date("2026-01-01").unwrap());
        assert_eq!(f.to, parse_date("2026-02-01").unwrap());
        let one_day = input("2026-01-01", "2026-01-01").check(NOW).unwrap();
        assert_eq!(one_day.filter().to - one_day.filter().from, 86_400);
    }

    #[test]
    fn wrong_dates_are_said_beside_their_field() {
        assert_eq!(
            fields(input("2026-02-30", "soon").check(NOW).unwrap_err()),
            ["from", "to"]
        );
        let after = input("2026-03-01", "2026-02-01").check(NOW).unwrap_err();
        assert_eq!(after[0].0, "from");
        assert!(after[0].1.contains("after the end date"), "{}", after[0].1);
        let long = RangeInput {
            patient: "x".repeat(MAX_PATIENT + 1),
            ..input("", "")
        };
        assert_eq!(fields(long.check(NOW).unwrap_err()), ["patient"]);
    }

    #[test]
    fn a_range_may_cover_ten_years_and_no_more() {
        assert!(input("2016-01-01", "2025-12-31").check(NOW).is_ok());
        let over = input("2016-01-01", "2026-01-01").check(NOW).unwrap_err();
        assert_eq!(fields(over), ["from"]);
        // 29 February ten years on is 1 March
        assert!(input("2016-02-29", "2026-02-28").check(NOW).is_ok());
        assert!(input("2016-02-29", "2026-03-01").check(NOW).is_err());
    }

    #[test]
    fn the_audit_detail_names_no_patient() {
        let r = RangeInput {
            patient: "  Jones ".into(),
            ..input("2026-01-01", "2026-01-31")
        }
        .check(NOW)
        .unwrap();
        assert_eq!(r.patient, "Jones");
        assert_eq!(
            r.describe(),
            "2026-01-01 to 2026-01-31, filtered by patient"
        );
    }

    #[test]
    fn the_export_has_its_columns_kinds_in_words_and_safe_cells() {
        let d = Disclosure {
            sent_at: 1_780_000_000,
            user_name: "Ana Diaz".into(),
            mailbox_address: "dr.ana@direct.lakeside.test".into(),
            law: "part2".into(),
            patient: "=HYPERLINK(\"x\")".into(),
            recipients: "a@direct.example, b@direct.example".into(),
            purpose: "treatment".into(),
            consent: "consent.pdf".into(),
            ..Disclosure::default()
        };
        let text = String::from_utf8(export_csv(&[d]).unwrap()).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("sent_at,sender,mailbox,patient,recipients,kind,purpose,consent")
        );
        assert_eq!(
            lines.next(),
            Some(
                "2026-05-28T20:26:40Z,Ana Diaz,dr.ana@direct.lakeside.test,\"'=HYPERLINK(\"\"x\"\")\",\"a@direct.example, b@direct.example\",Substance use disorder (42 CFR Part 2),treatment,consent.pdf"
            )
        );
        assert_eq!(kind("mental_health"), "Mental health (740 ILCS 110)");
        assert_eq!(kind("restricted"), "Other restricted");
        assert_eq!(kind("something-new"), "something-new");
    }
}
