//! Reading and writing the portal's records: organizations, domains, users,
//! mailboxes, single-use links, sessions and sign-in throttling.
//!
//! Functions that change something take a connection (usually a transaction), so the
//! caller commits the change together with its audit entry.

pub mod alerts;
pub mod bundles;
pub mod directory;
pub mod disclosures;
pub mod documents;
pub mod drafts;
pub mod figures;
pub mod inbound;
pub mod invites;
pub mod mailboxes;
pub mod messages;
pub mod opt_outs;
pub mod orgs;
pub mod outbound;
pub mod pki;
pub mod records;
pub mod sessions;
pub mod throttle;
pub mod tokens;
pub mod users;

/// A `1`/`0` column as a bool.
pub(crate) fn flag(v: i64) -> bool {
    v != 0
}

/// Whether an error is a uniqueness violation (a name or address already taken).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.is_unique_violation()
                // the Any driver does not always carry the kind through
                || db.message().contains("UNIQUE constraint failed")
                || db.message().contains("duplicate key value")
        }
        _ => false,
    }
}
