//! Files people open in spreadsheets.

/// Spreadsheet formula injection: a cell starting with = + - @ (or a tab or carriage
/// return) is prefixed with ', which spreadsheets show but never evaluate.
pub fn csv_safe(value: &str) -> String {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    }
}
