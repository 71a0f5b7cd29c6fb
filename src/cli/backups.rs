//! `directmail admin backup FILE` and `directmail admin restore FILE`: SQLite only;
//! on PostgreSQL they name the `pg_dump`/`pg_restore` commands instead (README,
//! "Backups"). Neither opens the database the way the other commands do: restore must
//! not create the database it is about to put in place.

use std::path::{Path, PathBuf};

use anyhow::bail;
use serde_json::json;

use crate::audit::{self, Actor, AuditKey, Event};
use crate::backup::{self, Manifest};
use crate::clock::Clock;
use crate::config::{Config, DatabaseUrl};
use crate::db::Db;
use crate::secrets::{self, SecretKey};

/// The database file the configuration names, or why there is none to back up or
/// restore with these commands.
fn sqlite_file(config: &Config, postgres_instead: &str) -> anyhow::Result<PathBuf> {
    match config.database_url().sqlite_path() {
        Some(path) => Ok(path),
        None => bail!(
            "this portal runs on PostgreSQL: {postgres_instead} (see \u{201c}Backups\u{201d} in the README)"
        ),
    }
}

/// `admin backup FILE`.
pub async fn make(config: &Config, file: &Path) -> anyhow::Result<(String, serde_json::Value)> {
    let database = sqlite_file(
        config,
        "back it up with `pg_dump --format=custom --file=FILE DATABASE_URL`",
    )?;
    let Some((key, _)) = secrets::find(config)? else {
        bail!(
            "the key-encryption key is missing (DIRECTMAIL_SECRET_KEY, DIRECTMAIL_SECRET_KEY_FILE or <data dir>/secret.key); run the backup with the portal's own configuration"
        );
    };
    let manifest = backup::make(&database, &key, file, Clock::default().now()).await?;
    record(
        &config.database_url(),
        &key,
        Event::new("backup.make", file.display().to_string()).detail(format!(
            "audit head {}; key-encryption key {}",
            manifest.audit_head, manifest.key_fingerprint
        )),
    )
    .await?;
    Ok((
        format!(
            "Backed up {} to {}: {}. The key-encryption key is not in the backup: keep it apart, a restore needs it (fingerprint {}).",
            database.display(),
            file.display(),
            summary(&manifest),
            manifest.key_fingerprint
        ),
        json!({ "file": file, "database": database, "manifest": manifest }),
    ))
}

/// `admin restore FILE [--force]`.
pub async fn restore(
    config: &Config,
    file: &Path,
    force: bool,
) -> anyhow::Result<(String, serde_json::Value)> {
    let target = sqlite_file(
        config,
        "restore a `pg_dump` into a new database with `pg_restore --no-owner --dbname=NEW_DATABASE_URL FILE`",
    )?;
    let key = secrets::find(config)?.map(|(key, _)| key);
    let restored =
        backup::restore(file, &target, key.as_ref(), force, Clock::default().now()).await?;
    if let Some(key) = &key {
        let mut detail = format!(
            "made {}, audit head {}",
            restored.manifest.created_at, restored.manifest.audit_head
        );
        if let Some(aside) = &restored.moved_aside {
            detail.push_str(&format!(
                "; the database that was there is now {}",
                aside.display()
            ));
        }
        record(
            &DatabaseUrl(format!("sqlite://{}", target.display())),
            key,
            Event::new("backup.restore", file.display().to_string()).detail(detail),
        )
        .await?;
    }
    let mut text = format!(
        "Restored {} (made {}) as {}: {}; the audit log verifies ({} entries up to the backup's head).",
        file.display(),
        restored.manifest.created_at,
        target.display(),
        summary(&restored.manifest),
        restored.audit_entries
    );
    if let Some(from) = restored.migrated_from {
        text.push_str(&format!(
            " Its schema was brought from version {from} up to this version's."
        ));
    }
    if let Some(aside) = &restored.moved_aside {
        text.push_str(&format!(
            " The database that was there is now {}.",
            aside.display()
        ));
    }
    text.push_str(" Start the portal with the same key-encryption key.");
    Ok((
        text,
        json!({
            "file": file,
            "database": target,
            "manifest": restored.manifest,
            "moved_aside": restored.moved_aside,
            "migrated_from": restored.migrated_from,
            "audit_entries": restored.audit_entries,
        }),
    ))
}

/// Appends `event` to the audit log of the database at `url`, as the command line.
async fn record(url: &DatabaseUrl, key: &SecretKey, event: Event<'_>) -> anyhow::Result<()> {
    let db = Db::connect(url).await?;
    audit::install_key(&AuditKey::derive(key));
    let recorded = audit::record(&db, Clock::default().now(), &Actor::cli(), event).await;
    db.close().await;
    recorded?;
    Ok(())
}

/// The manifest in a few words: schema, messages, users, audit head.
fn summary(manifest: &Manifest) -> String {
    let count = |table: &str, one: &str| {
        let n = manifest.counts.get(table).copied().unwrap_or(0);
        format!("{n} {one}{}", if n == 1 { "" } else { "s" })
    };
    format!(
        "schema version {}, {}, {}, {}, audit head {}",
        manifest.schema_version,
        count("messages", "message"),
        count("users", "user"),
        count("organizations", "organization"),
        manifest.audit_head
    )
}
