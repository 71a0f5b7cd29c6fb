//! Backups that restore: `directmail admin backup` / `restore` on SQLite, `pg_dump` /
//! `pg_restore` on PostgreSQL (the README's commands), made while the portal serves.
//!
//! The file format of `admin backup` is SQLite's, so the tests of hostile backups and
//! of the key-encryption key run a SQLite portal on both lanes of the suite; the test
//! of a backup made while mail is sent uses the lane's database and its tool.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use directmail::audit::{self, Actor, Event};
use directmail::config::DatabaseUrl;
use directmail::outbound::Draft;
use directmail::store::inbound;
use serde_json::Value;
use sha2::Digest as _;

use crate::helpers::{TestApp, fresh_database, postgres_admin_url, run};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A portal on SQLite whichever lane runs: `admin backup FILE` is for SQLite.
async fn sqlite_portal() -> TestApp {
    TestApp::spawn_with(|c| {
        c.database_url = Some(DatabaseUrl(format!(
            "sqlite://{}",
            c.data_dir.join("portal.db").display()
        )))
    })
    .await
}

/// The portal's key-encryption key (the development key in its data directory).
fn key_of(app: &TestApp) -> String {
    std::fs::read_to_string(app.data_dir.path().join("secret.key")).expect("the development key")
}

/// `directmail admin ARGS` configured for the SQLite database `database` with the
/// key-encryption key `key` (none: the data directory holds no key either).
async fn admin_on(database: &Path, key: Option<&str>, args: &[&str]) -> Output {
    let data_dir = database.parent().expect("a directory");
    let mut command = Command::new(env!("CARGO_BIN_EXE_directmail"));
    command
        .env(
            "DIRECTMAIL_DATABASE_URL",
            format!("sqlite://{}", database.display()),
        )
        .env("DIRECTMAIL_DATA_DIR", data_dir)
        .env_remove("DIRECTMAIL_SECRET_KEY")
        .env_remove("DIRECTMAIL_SECRET_KEY_FILE")
        .arg("admin")
        .args(args);
    if let Some(key) = key {
        command.env("DIRECTMAIL_SECRET_KEY", key.trim());
    }
    run(command).await
}

fn stdout_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

/// The one-sentence refusal of a command that must fail.
fn refusal(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "refused: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The portal's audit log gains entries until the returned flag is set: a portal
/// writing while its backup is made.
fn keep_writing(app: &TestApp) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let (db, clock, done) = (app.state.db.clone(), app.state.clock.clone(), stop.clone());
    tokio::spawn(async move {
        while !done.load(Ordering::Relaxed) {
            audit::record(
                &db,
                clock.now(),
                &Actor::system(),
                Event::new("test.activity", "during the backup"),
            )
            .await
            .expect("an audit entry");
        }
    });
    stop
}

async fn send(app: &TestApp, from: &directmail::store::mailboxes::Mailbox, subject: &str) {
    let draft = Draft {
        to: vec!["front@direct.hillside.test".into()],
        subject: subject.into(),
        text: "Please see her this week.".into(),
        ..Default::default()
    };
    directmail::outbound::submit_draft(&app.state.db, from, "Dr. Ana Ruiz", &draft, app.now())
        .await
        .expect("submitted");
    app.state.wake_sender.notify_one();
}

async fn subjects(app: &TestApp, mailbox_id: i64, folder: &str) -> Vec<String> {
    inbound::messages_in(&app.state.db, mailbox_id, folder, 50)
        .await
        .expect("messages")
        .into_iter()
        .map(|m| m.subject)
        .collect()
}

async fn wait_for_subject(app: &TestApp, mailbox_id: i64, subject: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !subjects(app, mailbox_id, "inbox")
        .await
        .iter()
        .any(|s| s == subject)
    {
        assert!(Instant::now() < deadline, "{subject} was not delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Makes the lane's backup of `app` while it sends `subject` and writes to its audit
/// log; restores it into a new database (beside `dir`) and returns its URL.
async fn backup_and_restore_while_sending(
    app: &TestApp,
    ana_box: &directmail::store::mailboxes::Mailbox,
    subject: &str,
    dir: &Path,
) -> DatabaseUrl {
    let writing = keep_writing(app);
    send(app, ana_box, subject).await;
    match postgres_admin_url() {
        None => {
            let file = dir.join("portal-backup.zip");
            let made = stdout_json(
                &app.cli(&["admin", "backup", file.to_str().expect("path"), "--json"])
                    .await,
            );
            writing.store(true, Ordering::Relaxed);
            assert!(made["manifest"]["counts"]["messages"].as_i64() >= Some(2));
            let archive = zip::ZipArchive::new(std::fs::File::open(&file).expect("backup"))
                .expect("a zip archive");
            assert_eq!(
                archive.file_names().collect::<Vec<_>>(),
                ["manifest.json", "directmail.db"],
                "the key-encryption key is never in a backup"
            );
            let restored = dir.join("restored.db");
            let out = admin_on(
                &restored,
                Some(&key_of(app)),
                &["restore", file.to_str().expect("path")],
            )
            .await;
            let said = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && said.contains("the audit log verifies"),
                "{said}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            DatabaseUrl(format!("sqlite://{}", restored.display()))
        }
        Some(_) => {
            // `admin backup` is for SQLite, and says what to use instead
            let out = app.cli(&["admin", "backup", "any.zip"]).await;
            assert!(refusal(&out).contains("pg_dump --format=custom"));
            let dump = dir.join("portal.dump");
            let source = app.config.database_url();
            let dumped = run(pg(
                "pg_dump",
                &[
                    "--format=custom",
                    &format!("--file={}", dump.display()),
                    &format!("--dbname={}", source.as_str()),
                ],
            ))
            .await;
            writing.store(true, Ordering::Relaxed);
            assert!(
                dumped.status.success(),
                "{}",
                String::from_utf8_lossy(&dumped.stderr)
            );
            let target = fresh_database(dir).await;
            let restored = run(pg(
                "pg_restore",
                &[
                    "--no-owner",
                    "--exit-on-error",
                    &format!("--dbname={}", target.as_str()),
                    dump.to_str().expect("path"),
                ],
            ))
            .await;
            assert!(
                restored.status.success(),
                "{}",
                String::from_utf8_lossy(&restored.stderr)
            );
            target
        }
    }
}

fn pg(tool: &str, args: &[&str]) -> Command {
    let mut command = Command::new(Path::new(PG_BIN).join(tool));
    command.args(args);
    command
}

#[tokio::test]
async fn a_backup_made_while_the_portal_sends_mail_restores_into_a_new_database_whose_portal_shows_the_mail_and_verifies_its_audit_log()
 {
    let app = TestApp::spawn().await;
    let (ana_box, kim_box) = app.lakeside_and_hillside().await;
    send(&app, &ana_box, "Referral before the backup").await;
    wait_for_subject(&app, kim_box.id, "Referral before the backup").await;

    let dir = tempfile::tempdir().expect("temp dir");
    let url =
        backup_and_restore_while_sending(&app, &ana_box, "Referral during the backup", dir.path())
            .await;

    // a portal started on the restored database, with the same key-encryption key
    let key = key_of(&app);
    let restored = TestApp::spawn_with(|c| {
        c.database_url = Some(url);
        c.secret_key = Some(key.trim().parse().expect("key"));
    })
    .await;
    let mut kim = restored.signed_in("kim@direct.hillside.test").await;
    let inbox = kim.get(&format!("/mail/{}/inbox", kim_box.id)).await;
    assert!(
        inbox.body.contains("Referral before the backup"),
        "{}",
        inbox.body
    );
    // submitted before the copy began, so in it: sent, or on its way
    assert!(
        subjects(&restored, ana_box.id, "sent")
            .await
            .contains(&"Referral during the backup".to_owned())
    );
    // the backup command is in the portal's audit log, the restore in the restored
    // one's (after the backup's head, so the chain below still verifies); pg_dump and
    // pg_restore are not ours to audit
    let audited = match postgres_admin_url() {
        None => &[
            (&app.state.db, "backup.make"),
            (&restored.state.db, "backup.restore"),
        ][..],
        Some(_) => &[],
    };
    for &(db, action) in audited {
        let filter = audit::Filter {
            action: Some(action.into()),
            ..Default::default()
        };
        let entries = audit::list(db, &filter, 10).await.expect("audit log");
        assert!(
            entries.len() == 1 && entries[0].actor == "cli" && entries[0].object.ends_with(".zip"),
            "{action}: {entries:?}"
        );
    }
    let mut verify = restored.command();
    verify
        .env("DIRECTMAIL_SECRET_KEY", key.trim())
        .args(["admin", "audit", "verify"]);
    let out = run(verify).await;
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("intact"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A backup taken apart: its manifest, and its database in a file of `work`.
fn unpack(backup: &Path, work: &Path) -> (Value, PathBuf) {
    use std::io::Read as _;
    let mut archive =
        zip::ZipArchive::new(std::fs::File::open(backup).expect("backup")).expect("a zip archive");
    let manifest: Value =
        serde_json::from_reader(archive.by_name("manifest.json").expect("manifest")).expect("JSON");
    let mut bytes = Vec::new();
    archive
        .by_name("directmail.db")
        .expect("database")
        .read_to_end(&mut bytes)
        .expect("read");
    let database = work.join("directmail.db");
    std::fs::write(&database, &bytes).expect("write");
    (manifest, database)
}

/// Puts a backup together again as `to`; with `rehash`, the manifest's SHA-256 and
/// size follow the database (else they stay what they were).
fn pack(mut manifest: Value, database: &Path, to: &Path, rehash: bool) {
    use std::io::Write as _;
    let bytes = std::fs::read(database).expect("read");
    if rehash {
        manifest["database_sha256"] = hex::encode(sha2::Sha256::digest(&bytes)).into();
        manifest["database_bytes"] = bytes.len().into();
    }
    let mut zip = zip::ZipWriter::new(std::fs::File::create(to).expect("create"));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("manifest.json", options).expect("entry");
    zip.write_all(&serde_json::to_vec(&manifest).expect("JSON"))
        .expect("write");
    zip.start_file("directmail.db", options).expect("entry");
    zip.write_all(&bytes).expect("write");
    zip.finish().expect("zip");
}

/// Runs SQL on a SQLite file (a backup's database taken out of its archive).
async fn sql(database: &Path, statement: &str) {
    use sqlx::Connection as _;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", database.display()))
        .await
        .expect("open");
    sqlx::query(statement)
        .execute(&mut conn)
        .await
        .expect("SQL");
    conn.close().await.expect("close");
}

/// Files in `dir` other than the lock file: a refused restore leaves nothing behind.
fn left_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| !p.to_string_lossy().ends_with("-lock") && !p.ends_with("secret.key"))
        .collect()
}

/// A SQLite portal with an organization (created through the audited CLI), its backup
/// `portal.zip` in a directory of its own, and what `admin backup --json` said.
async fn backed_up_portal() -> (TestApp, tempfile::TempDir, Value) {
    let app = sqlite_portal().await;
    stdout_json(
        &app.cli(&["admin", "org", "create", "Lakeside Clinic", "--json"])
            .await,
    );
    let files = tempfile::tempdir().expect("temp dir");
    let file = files.path().join("portal.zip");
    let made = stdout_json(
        &app.cli(&["admin", "backup", file.to_str().expect("path"), "--json"])
            .await,
    );
    (app, files, made)
}

#[tokio::test]
async fn restore_refuses_a_truncated_foreign_altered_or_newer_backup_in_a_sentence_and_writes_nothing()
 {
    let (app, files, _) = backed_up_portal().await;
    let good = files.path().join("portal.zip");
    let key = key_of(&app);
    let target_dir = tempfile::tempdir().expect("temp dir");
    let target = target_dir.path().join("restored.db");
    // restoring `file` is refused with a sentence holding `words`, and leaves nothing
    let refused = |file: PathBuf, words: String| {
        let (target, key) = (target.clone(), key.clone());
        async move {
            let out = admin_on(
                &target,
                Some(&key),
                &["restore", file.to_str().expect("path")],
            )
            .await;
            assert!(left_in(target.parent().expect("dir")).is_empty());
            let said = refusal(&out);
            assert!(said.contains(&words), "{said}");
        }
    };
    let path = |name: &str| files.path().join(name);
    let work = tempfile::tempdir().expect("temp dir");
    let original = || unpack(&good, work.path());

    let bytes = std::fs::read(&good).expect("backup");
    for cut in [bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(path("truncated.zip"), &bytes[..cut]).expect("write");
        refused(
            path("truncated.zip"),
            "is a directmail backup, but it is truncated or damaged".into(),
        )
        .await;
    }

    std::fs::write(path("notes.txt"), "not a backup at all\n").expect("write");
    refused(path("notes.txt"), "is not a directmail backup".into()).await;
    let mut other = zip::ZipWriter::new(std::fs::File::create(path("other.zip")).expect("file"));
    other
        .start_file("README.txt", zip::write::SimpleFileOptions::default())
        .expect("entry");
    other.finish().expect("zip");
    refused(path("other.zip"), "is not a directmail backup".into()).await;

    let (mut manifest, db) = original();
    let orgs = manifest["counts"]["organizations"].as_i64().expect("count");
    manifest["counts"]["organizations"] = (orgs + 7).into();
    pack(manifest, &db, &path("counts.zip"), true);
    refused(
        path("counts.zip"),
        format!(
            "does not match its manifest: organizations has {orgs} rows, the manifest says {}",
            orgs + 7
        ),
    )
    .await;

    let (mut manifest, db) = original();
    manifest["audit_head"] = format!("1:{}", "ab".repeat(32)).into();
    pack(manifest, &db, &path("head.zip"), true);
    refused(
        path("head.zip"),
        "does not match its manifest: the audit log's head is".into(),
    )
    .await;

    // a row edited, the manifest unchanged
    let (manifest, db) = original();
    sql(&db, "update organizations set name = 'Someone Else'").await;
    pack(manifest, &db, &path("edited.zip"), false);
    refused(
        path("edited.zip"),
        "is damaged: its database is not the one its manifest describes".into(),
    )
    .await;

    // an audit entry deleted and the manifest made to agree: the chain finds it
    let (mut manifest, db) = original();
    sql(
        &db,
        "delete from audit_log where id = (select max(id) - 1 from audit_log)",
    )
    .await;
    let entries = manifest["counts"]["audit_log"].as_i64().expect("count");
    manifest["counts"]["audit_log"] = (entries - 1).into();
    pack(manifest, &db, &path("deleted.zip"), true);
    refused(
        path("deleted.zip"),
        "the audit log in the backup is broken".into(),
    )
    .await;

    // a newer schema, whether the manifest says so or not
    for says in [true, false] {
        let (mut manifest, db) = original();
        sql(
            &db,
            "insert into _sqlx_migrations (version, description, success, checksum, execution_time) values (9999, 'from the future', 1, x'00', 0)",
        )
        .await;
        if says {
            manifest["schema_version"] = 9999.into();
        }
        pack(manifest, &db, &path("newer.zip"), true);
        refused(
            path("newer.zip"),
            "made by a newer directmail (schema version 9999".into(),
        )
        .await;
    }

    let (mut manifest, db) = original();
    manifest["format_version"] = 2.into();
    manifest["database_sha256"] = Value::Null;
    pack(manifest, &db, &path("format.zip"), false);
    refused(
        path("format.zip"),
        "made by a newer directmail (backup format 2".into(),
    )
    .await;

    // and the backup itself restores
    let out = admin_on(
        &target,
        Some(&key),
        &["restore", good.to_str().expect("path"), "--json"],
    )
    .await;
    assert_eq!(
        stdout_json(&out)["manifest"]["counts"]["organizations"],
        orgs
    );
}

#[tokio::test]
async fn restore_says_when_the_key_encryption_key_is_missing_or_different_and_never_replaces_a_database_in_use()
 {
    let (app, files, made) = backed_up_portal().await;
    let file = files.path().join("portal.zip");
    let file = file.to_str().expect("path");
    let key = key_of(&app);
    assert!(
        !made.to_string().contains(key.trim()),
        "only the key's fingerprint"
    );
    assert!(
        refusal(&app.cli(&["admin", "backup", file]).await).contains("already exists"),
        "a backup never replaces a file"
    );

    let target_dir = tempfile::tempdir().expect("temp dir");
    let target = target_dir.path().join("restored.db");
    let said = refusal(&admin_on(&target, None, &["restore", file]).await);
    assert!(
        said.contains("the key-encryption key is missing")
            && said.contains(made["manifest"]["key_fingerprint"].as_str().expect("text")),
        "{said}"
    );
    assert!(
        !target_dir.path().join("secret.key").exists(),
        "a restore never makes a key of its own"
    );
    let other = "cd".repeat(32);
    let said = refusal(&admin_on(&target, Some(&other), &["restore", file]).await);
    assert!(
        said.contains("the key-encryption key is different from the one the backup was made with")
            && said.contains("private keys could not be opened"),
        "{said}"
    );
    assert!(!target.exists());

    // over the running portal's own database: refused, even with --force
    let live = app
        .config
        .database_url()
        .sqlite_path()
        .expect("a SQLite portal");
    for args in [vec!["restore", file], vec!["restore", file, "--force"]] {
        let said = refusal(&admin_on(&live, Some(&key), &args).await);
        assert!(said.contains("is in use by a running portal"), "{said}");
    }
    assert!(
        directmail::store::orgs::by_name(&app.state.db, "Lakeside Clinic")
            .await
            .expect("query")
            .is_some(),
        "the portal's database is untouched"
    );

    // into a new database; again over it only with --force, which keeps the old one
    stdout_json(&admin_on(&target, Some(&key), &["restore", file, "--json"]).await);
    let said = refusal(&admin_on(&target, Some(&key), &["restore", file]).await);
    assert!(said.contains("already holds a database"), "{said}");
    let again =
        stdout_json(&admin_on(&target, Some(&key), &["restore", file, "--force", "--json"]).await);
    let aside = again["moved_aside"].as_str().expect("moved aside");
    assert!(Path::new(aside).is_file() && target.is_file());
}
