//! The clinical documents each message carries, by identifier (migration 0019,
//! `message_documents`): recorded when the message is filed, from
//! [`crate::filing::read`], and looked up by a Reportability Response for the message
//! that carried the case report it answers.

use sqlx::{AnyConnection, Row as _};

use super::mailboxes::MAILBOXES_OF_USER;
use crate::db::Db;
use crate::filing::CarriedDocument;

/// Records the documents of a message just filed (inside the caller's transaction).
pub async fn record(
    conn: &mut AnyConnection,
    message_id: i64,
    documents: &[CarriedDocument],
) -> sqlx::Result<()> {
    for document in documents {
        sqlx::query(
            "insert into message_documents (message_id, root, extension, code) values ($1, $2, $3, $4)",
        )
        .bind(message_id)
        .bind(&document.root)
        .bind(&document.extension)
        .bind(&document.code)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// A message that carries a given document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carrier {
    pub message_id: i64,
    pub folder: String,
    pub subject: String,
    /// When it was filed: sent, or received.
    pub at: i64,
}

/// The message carrying the document `(root, extension)` (as
/// [`crate::filing::document_key`] gives it) that `user_id` may read — in one of the
/// mailboxes assigned to them, the same rule as every mail page — other than
/// `except_id`: a Sent one first (the case report we sent), Trash last, the newest of
/// each.
pub async fn carrier(
    db: &Db,
    user_id: i64,
    (root, extension): (&str, &str),
    except_id: i64,
) -> sqlx::Result<Option<Carrier>> {
    let sql = format!(
        "select m.id, m.folder, m.subject, m.received_at from message_documents d
           join messages m on m.id = d.message_id
         where m.mailbox_id in ({MAILBOXES_OF_USER})
           and d.root = $2 and d.extension = $3 and m.id <> $4
         order by case m.folder when 'sent' then 0 when 'trash' then 2 else 1 end, m.id desc
         limit 1"
    );
    let row = sqlx::query(&sql)
        .bind(user_id)
        .bind(root)
        .bind(extension)
        .bind(except_id)
        .fetch_optional(&db.pool)
        .await?;
    row.map(|r| {
        Ok(Carrier {
            message_id: r.try_get("id")?,
            folder: r.try_get("folder")?,
            subject: r.try_get("subject")?,
            at: r.try_get("received_at")?,
        })
    })
    .transpose()
}

/// The documents recorded for a message, in the order they were recorded (for tests
/// and support).
pub async fn of_message<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    message_id: i64,
) -> sqlx::Result<Vec<CarriedDocument>> {
    let rows = sqlx::query(
        "select root, extension, code from message_documents where message_id = $1 order by id",
    )
    .bind(message_id)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(CarriedDocument {
                root: r.try_get("root")?,
                extension: r.try_get("extension")?,
                code: r.try_get("code")?,
            })
        })
        .collect()
}
