//! Backups of a SQLite portal, made while it serves, and their restore. (PostgreSQL is
//! backed up with `pg_dump`; the README gives the commands.)
//!
//! A backup is one zip archive holding two entries, in this order:
//! - `manifest.json`: what the backup holds ([`Manifest`]): the schema version, row
//!   counts, the audit chain's head, the SHA-256 of the database copy, and the
//!   fingerprint of the key-encryption key it was made with (never the key);
//! - `directmail.db`: a consistent copy of the database made by SQLite's
//!   `VACUUM INTO` (one read transaction: the server keeps writing meanwhile).
//!
//! A restore checks the manifest against the copy and the configured key before the
//! copy takes the database's place by a rename, so a database is never half-written.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::audit::{self, AuditKey, Verification};
use crate::db::{Backend, Db};
use crate::secrets::{self, SecretKey};

/// What `format` says in every manifest.
pub const FORMAT: &str = "directmail-backup";
/// The layout of the archive and manifest this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
const MANIFEST: &str = "manifest.json";
const DATABASE: &str = "directmail.db";
/// A manifest is a few hundred bytes; more is not one.
const MANIFEST_LIMIT: u64 = 64 * 1024;

/// The tables whose rows a manifest counts (names from the migrations, never from a
/// file). Enough to see that the copy is the database the manifest describes.
const COUNTED: &[&str] = &[
    "organizations",
    "users",
    "mailboxes",
    "messages",
    "inbound_messages",
    "outbound_messages",
    "domain_certificates",
    "trust_anchors",
    "audit_log",
];

/// `manifest.json`: what a backup holds, for a restore to check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`] of the build that made it.
    pub format_version: u32,
    /// When the copy was made (RFC 3339, UTC).
    pub created_at: String,
    /// The directmail version that made it.
    pub directmail_version: String,
    /// The newest migration applied to the copy.
    pub schema_version: i64,
    /// Rows per table in the copy.
    pub counts: BTreeMap<String, i64>,
    /// The audit chain's head in the copy, `ID:HASH` as `admin audit head` prints it.
    pub audit_head: String,
    /// [`SecretKey::fingerprint`] of the key-encryption key the private keys in the
    /// copy are sealed with.
    pub key_fingerprint: String,
    /// SHA-256 (hex) and size of the `directmail.db` entry.
    pub database_sha256: String,
    pub database_bytes: u64,
}

/// Makes a backup of the SQLite database at `database` (a portal may be serving it)
/// into the new file `file`. `key` is the portal's key-encryption key: checked
/// against the copy, and only its fingerprint is written.
pub async fn make(
    database: &Path,
    key: &SecretKey,
    file: &Path,
    now: i64,
) -> anyhow::Result<Manifest> {
    if !database.is_file() {
        bail!("there is no SQLite database at {}", database.display());
    }
    if file.exists() {
        bail!(
            "{} already exists; choose a new file name for the backup",
            file.display()
        );
    }
    let work = tempfile::Builder::new()
        .prefix(".directmail-backup-")
        .tempdir_in(parent_dir(file))
        .with_context(|| format!("cannot write beside {}", file.display()))?;
    let copy = work.path().join(DATABASE);
    copy_running(database, &copy).await?;

    let db = Db::open_copy(&copy).await?;
    secrets::check_against_database(&db, key).await?;
    let facts = read_facts(&db).await;
    db.close().await;
    let (schema_version, counts, head) = facts?;

    let (database_sha256, database_bytes) = {
        let copy = copy.clone();
        tokio::task::spawn_blocking(move || hash_file(&copy)).await??
    };
    let manifest = Manifest {
        format: FORMAT.to_owned(),
        format_version: FORMAT_VERSION,
        created_at: crate::clock::format_rfc3339(now),
        directmail_version: env!("CARGO_PKG_VERSION").to_owned(),
        schema_version,
        counts,
        audit_head: head.to_string(),
        key_fingerprint: key.fingerprint(),
        database_sha256,
        database_bytes,
    };
    let archive = work.path().join("backup.zip");
    {
        let (manifest, archive, copy) = (manifest.clone(), archive.clone(), copy.clone());
        tokio::task::spawn_blocking(move || write_archive(&manifest, &copy, &archive)).await??;
    }
    // rename, never replace: a file that appeared meanwhile is kept
    std::fs::hard_link(&archive, file)
        .with_context(|| format!("cannot create the backup file {}", file.display()))?;
    sync_dir(parent_dir(file));
    Ok(manifest)
}

/// A consistent copy of a database in use: `VACUUM INTO` reads it in one transaction
/// (in WAL mode, writers carry on meanwhile) and writes a compact new file.
async fn copy_running(database: &Path, copy: &Path) -> anyhow::Result<()> {
    let source = Db::connect(&crate::config::DatabaseUrl(format!(
        "sqlite://{}",
        database.display()
    )))
    .await?;
    let copied = sqlx::query("vacuum into $1")
        .bind(copy.display().to_string())
        .execute(&source.pool)
        .await
        .with_context(|| format!("cannot copy the database {}", database.display()));
    source.close().await;
    copied.map(drop)
}

/// What a manifest records, read from a database.
async fn read_facts(db: &Db) -> anyhow::Result<(i64, BTreeMap<String, i64>, audit::Head)> {
    let schema = db.schema_version().await?;
    let mut counts = BTreeMap::new();
    for table in COUNTED {
        let n: i64 = sqlx::query_scalar(&format!("select count(*) from {table}"))
            .fetch_one(&db.pool)
            .await
            .with_context(|| format!("cannot count the rows of {table}"))?;
        counts.insert((*table).to_owned(), n);
    }
    let head = audit::head(db).await?;
    Ok((schema, counts, head))
}

fn write_archive(manifest: &Manifest, copy: &Path, archive: &Path) -> anyhow::Result<()> {
    use zip::write::SimpleFileOptions;
    let out = std::fs::File::create(archive)
        .with_context(|| format!("cannot write {}", archive.display()))?;
    let mut zip = zip::ZipWriter::new(out);
    // the manifest first and uncompressed, so `restore` can tell a truncated backup
    // from another kind of file by its first bytes
    zip.start_file(
        MANIFEST,
        SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored),
    )?;
    zip.write_all(&serde_json::to_vec_pretty(manifest)?)?;
    zip.start_file(
        DATABASE,
        SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .large_file(manifest.database_bytes >= u64::from(u32::MAX)),
    )?;
    let mut input =
        std::fs::File::open(copy).with_context(|| format!("cannot read {}", copy.display()))?;
    std::io::copy(&mut input, &mut zip)?;
    let out = zip.finish()?;
    out.sync_all()?;
    Ok(())
}

fn hash_file(path: &Path) -> anyhow::Result<(String, u64)> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Hashing::new(std::io::sink());
    let bytes = std::io::copy(&mut file, &mut hasher)?;
    Ok((hex::encode(hasher.digest.finalize()), bytes))
}

/// A writer that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    digest: Sha256,
}

impl<W> Hashing<W> {
    fn new(inner: W) -> Self {
        Hashing {
            inner,
            digest: Sha256::new(),
        }
    }
}

impl<W: std::io::Write> std::io::Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digest.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn parent_dir(file: &Path) -> &Path {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Makes a rename in `dir` durable; best effort (not every platform can open a
/// directory).
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct Restored {
    pub manifest: Manifest,
    /// Where the database that was in the way was moved (with `--force`).
    pub moved_aside: Option<PathBuf>,
    /// The schema version of the backup when it was older and brought up to date.
    pub migrated_from: Option<i64>,
    /// Audit entries verified.
    pub audit_entries: i64,
}

/// Restores the backup `file` as the SQLite database `target`, after checking it
/// against its manifest and `key` (the configured key-encryption key; `None` when
/// none is configured). Refuses while a portal or admin command uses `target`, and
/// when `target` already holds a database, unless `force` (it is then moved aside).
pub async fn restore(
    file: &Path,
    target: &Path,
    key: Option<&SecretKey>,
    force: bool,
    now: i64,
) -> anyhow::Result<Restored> {
    let mut archive = open_archive(file)?;
    let manifest = read_manifest(file, &mut archive)?;
    newer_schema(manifest.schema_version)?;
    let key = check_key(&manifest, key)?;

    let dir = parent_dir(target);
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    let _lock = lock_out(target)?;
    // the newest writes of a database may still be in its -wal only
    let occupied = ["", "-wal"]
        .iter()
        .any(|part| std::fs::metadata(with_suffix(target, part)).is_ok_and(|m| m.len() > 0));
    if occupied && !force {
        bail!(
            "{} already holds a database; restore into a new DIRECTMAIL_DATABASE_URL, or add --force to move that database aside and restore in its place",
            target.display()
        );
    }

    let copy = tempfile::Builder::new()
        .prefix(".directmail-restore-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    let expected = (manifest.database_sha256.clone(), manifest.database_bytes);
    let (written, file_name) = (copy.path().to_path_buf(), file.to_path_buf());
    tokio::task::spawn_blocking(move || extract(&file_name, &mut archive, &written, expected))
        .await??;

    let db = Db::open_copy(copy.path()).await?;
    let checked = check_copy(&db, &manifest, &key).await;
    db.close().await;
    let (migrated_from, audit_entries) = checked?;

    let moved_aside = if occupied {
        Some(move_aside(target, now)?)
    } else {
        // empty leftovers of a removed database, which SQLite would read as the new one's
        for part in ["-wal", "-shm", ""] {
            let _ = std::fs::remove_file(with_suffix(target, part));
        }
        None
    };
    copy.persist(target)
        .with_context(|| format!("cannot put the restored database at {}", target.display()))?;
    sync_dir(dir);
    Ok(Restored {
        manifest,
        moved_aside,
        migrated_from,
        audit_entries,
    })
}

fn open_archive(file: &Path) -> anyhow::Result<zip::ZipArchive<std::fs::File>> {
    let mut handle =
        std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
    match zip::ZipArchive::new(handle.try_clone()?) {
        Ok(archive) => Ok(archive),
        Err(e) if starts_like_a_backup(&mut handle) => Err(anyhow!(
            "{} is a directmail backup, but it is truncated or damaged ({e}); use another copy of the backup",
            file.display()
        )),
        Err(_) => Err(anyhow!(
            "{} is not a directmail backup (make one with `directmail admin backup FILE`)",
            file.display()
        )),
    }
}

/// Whether a file begins as [`write_archive`] begins one: a zip entry named
/// `manifest.json`.
fn starts_like_a_backup(file: &mut std::fs::File) -> bool {
    use std::io::Seek as _;
    // local file header: signature, 22 bytes of fields, name length (2), extra
    // length (2), then the name
    let mut head = [0u8; 30 + MANIFEST.len()];
    file.seek(std::io::SeekFrom::Start(0)).is_ok()
        && file.read_exact(&mut head).is_ok()
        && head.starts_with(b"PK\x03\x04")
        && head[30..] == *MANIFEST.as_bytes()
}

fn read_manifest(
    file: &Path,
    archive: &mut zip::ZipArchive<std::fs::File>,
) -> anyhow::Result<Manifest> {
    let not_ours = || {
        anyhow!(
            "{} is not a directmail backup: it has no readable manifest.json",
            file.display()
        )
    };
    let entry = archive.by_name(MANIFEST).map_err(|_| not_ours())?;
    let mut text = Vec::new();
    entry
        .take(MANIFEST_LIMIT)
        .read_to_end(&mut text)
        .map_err(|e| {
            anyhow!(
                "the manifest of {} is damaged ({e}); use another copy of the backup",
                file.display()
            )
        })?;
    let manifest: Manifest = match serde_json::from_slice(&text) {
        Ok(m) => m,
        Err(_) => {
            // a newer format may have changed the fields: say so rather than "damaged"
            let value: serde_json::Value = serde_json::from_slice(&text).map_err(|_| not_ours())?;
            if value["format"] != FORMAT {
                return Err(not_ours());
            }
            match value["format_version"].as_u64() {
                Some(v) if v > u64::from(FORMAT_VERSION) => bail!(
                    "{} was made by a newer directmail (backup format {v}; this one reads {FORMAT_VERSION}); restore it with that version or a later one",
                    file.display()
                ),
                _ => bail!(
                    "the manifest of {} is incomplete; use another copy of the backup",
                    file.display()
                ),
            }
        }
    };
    if manifest.format != FORMAT {
        return Err(not_ours());
    }
    if manifest.format_version > FORMAT_VERSION {
        bail!(
            "{} was made by a newer directmail (backup format {}; this one reads {FORMAT_VERSION}); restore it with that version or a later one",
            file.display(),
            manifest.format_version
        );
    }
    Ok(manifest)
}

/// The configured key, if it is the one the backup was made with.
fn check_key(manifest: &Manifest, key: Option<&SecretKey>) -> anyhow::Result<SecretKey> {
    let Some(key) = key else {
        bail!(
            "the key-encryption key is missing: this backup's private keys were sealed with the key whose fingerprint is {}, which backups never contain; set DIRECTMAIL_SECRET_KEY or DIRECTMAIL_SECRET_KEY_FILE to that key (or put the development key back as secret.key in the data directory) and restore again",
            manifest.key_fingerprint
        );
    };
    if key.fingerprint() != manifest.key_fingerprint {
        bail!(
            "the key-encryption key is different from the one the backup was made with (fingerprint {}, the backup's {}); private keys could not be opened; set DIRECTMAIL_SECRET_KEY or DIRECTMAIL_SECRET_KEY_FILE to the original key and restore again",
            key.fingerprint(),
            manifest.key_fingerprint
        );
    }
    Ok(key.clone())
}

/// Holds the in-use lock of `target` exclusively: no portal or admin command has it
/// open, and none can open it until the restore is done.
fn lock_out(target: &Path) -> anyhow::Result<std::fs::File> {
    crate::db::lock_in_use(target, true)?.ok_or_else(|| {
        anyhow!(
            "the database {} is in use by a running portal or admin command; stop the portal before restoring over it, or restore into a new DIRECTMAIL_DATABASE_URL",
            target.display()
        )
    })
}

/// Copies the database entry out of the archive into `to`, checking it against the
/// manifest's size and SHA-256 (the zip's own CRC catches damage too).
fn extract(
    file: &Path,
    archive: &mut zip::ZipArchive<std::fs::File>,
    to: &Path,
    (sha256, bytes): (String, u64),
) -> anyhow::Result<()> {
    let damaged = |why: String| {
        anyhow!(
            "{} is damaged: {why}; use another copy of the backup",
            file.display()
        )
    };
    let mut entry = archive
        .by_name(DATABASE)
        .map_err(|_| damaged(format!("it holds no {DATABASE}")))?;
    let out =
        std::fs::File::create(to).with_context(|| format!("cannot write {}", to.display()))?;
    let mut hashing = Hashing::new(std::io::BufWriter::new(out));
    let copied = std::io::copy(&mut entry, &mut hashing)
        .map_err(|e| damaged(format!("its database cannot be read ({e})")))?;
    let digest = hex::encode(hashing.digest.finalize());
    if copied != bytes || digest != sha256 {
        return Err(damaged(
            "its database is not the one its manifest describes (size or SHA-256 differ)"
                .to_owned(),
        ));
    }
    let out = hashing
        .inner
        .into_inner()
        .map_err(|e| anyhow!("cannot write {}: {e}", to.display()))?;
    out.sync_all()?;
    Ok(())
}

/// Checks an extracted copy against its manifest and key, brings an older schema up
/// to date, and verifies the audit chain up to the manifest's head. Returns the
/// schema version it migrated from, if it did, and the entries verified.
async fn check_copy(
    db: &Db,
    manifest: &Manifest,
    key: &SecretKey,
) -> anyhow::Result<(Option<i64>, i64)> {
    let integrity: String = sqlx::query_scalar("pragma integrity_check")
        .fetch_one(&db.pool)
        .await
        .context("the backup's database cannot be read")?;
    if integrity != "ok" {
        bail!("the backup's database is damaged: {integrity}");
    }
    // before reading anything else: a newer schema may have other tables
    newer_schema(db.schema_version().await?)?;
    let (schema, counts, head) = read_facts(db).await?;
    if schema != manifest.schema_version {
        bail!(
            "the backup's database does not match its manifest: schema version {schema}, the manifest says {}",
            manifest.schema_version
        );
    }
    for (table, n) in &counts {
        let said = manifest.counts.get(table);
        if said != Some(n) {
            bail!(
                "the backup's database does not match its manifest: {table} has {n} rows, the manifest says {}",
                said.map_or("nothing".to_owned(), i64::to_string)
            );
        }
    }
    if head.to_string() != manifest.audit_head {
        bail!(
            "the backup's database does not match its manifest: the audit log's head is {head}, the manifest says {}",
            manifest.audit_head
        );
    }
    // the manifest's fingerprint could be forged; the database's own check cannot
    secrets::check_against_database(db, key).await?;
    let migrated_from = if schema < crate::db::known_schema_version(Backend::Sqlite) {
        db.migrate().await?;
        Some(schema)
    } else {
        None
    };
    let audit_key = AuditKey::derive(key);
    match audit::verify(db, Some(&audit_key), Some(&head)).await? {
        Verification::Intact { entries, .. } => Ok((migrated_from, entries)),
        Verification::Broken { problem, .. } => {
            bail!("the audit log in the backup is broken: {problem}")
        }
    }
}

/// Refuses a schema version this build does not know.
fn newer_schema(schema: i64) -> anyhow::Result<()> {
    let known = crate::db::known_schema_version(Backend::Sqlite);
    if schema > known {
        bail!(
            "the backup was made by a newer directmail (schema version {schema}; this one knows up to {known}); restore it with that version or a later one"
        );
    }
    Ok(())
}

/// Moves the database at `target` (with its `-wal` and `-shm`, so it stays whole) to
/// `<target>.before-restore-<now>`.
fn move_aside(target: &Path, now: i64) -> anyhow::Result<PathBuf> {
    let aside = with_suffix(target, &format!(".before-restore-{now}"));
    if aside.exists() {
        bail!("{} already exists; move it away first", aside.display());
    }
    for part in ["-wal", "-shm", ""] {
        let from = with_suffix(target, part);
        if from.exists() {
            let to = with_suffix(&aside, part);
            std::fs::rename(&from, &to)
                .with_context(|| format!("cannot move {} to {}", from.display(), to.display()))?;
        }
    }
    Ok(aside)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}
