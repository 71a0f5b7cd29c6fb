//! The audit log: the keyed hash chain and its verification (also against an
//! exported head), scoping per organization, filters, CSV.

use directmail::app::Application;
use directmail::audit::{self, Actor, AuditKey, Entry, Event, Verification};
use directmail::clock::Clock;
use directmail::db::Db;
use directmail::domain::Role;
use reqwest::StatusCode;
use sha2::{Digest as _, Sha256};

use crate::cli::directmail;
use crate::helpers::{PASSWORD, TestApp, test_config};

fn key(app: &TestApp) -> AuditKey {
    AuditKey::derive(&app.state.secret)
}

async fn verify(app: &TestApp) -> Verification {
    audit::verify(&app.state.db, Some(&key(app)), None)
        .await
        .unwrap()
}

/// The plain SHA-256 an entry carried before the chain was keyed (the encoding of
/// `src/audit.rs`, written out again as an attacker reading the source would).
fn plain_hash(e: &Entry) -> String {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(e.prev_hash.as_bytes());
    field(&e.id.to_be_bytes());
    field(&e.at.to_be_bytes());
    field(
        e.org_id
            .map(|v| v.to_string())
            .unwrap_or_default()
            .as_bytes(),
    );
    field(
        e.actor_id
            .map(|v| v.to_string())
            .unwrap_or_default()
            .as_bytes(),
    );
    field(e.actor.as_bytes());
    field(e.action.as_bytes());
    field(e.object.as_bytes());
    field(e.ip.as_bytes());
    field(e.detail.as_bytes());
    hex::encode(h.finalize())
}

/// What someone who can write the database but lacks the key would do: change
/// entry `edit`'s detail, then recompute every plain SHA-256 link after it, through
/// entry `through` (the newest, and then the head too, when `None`). With
/// `mark_plain` the rewritten entries are also marked as not keyed.
async fn rewrite_with_plain_hashes(db: &Db, edit: i64, through: Option<i64>, mark_plain: bool) {
    let mut entries = audit::list(db, &Default::default(), 100_000).await.unwrap();
    entries.reverse();
    let mut prev = "0".repeat(64);
    for mut e in entries {
        if e.id >= edit && through.is_none_or(|t| e.id <= t) {
            if e.id == edit {
                e.detail = "nothing to see".into();
            }
            e.prev_hash = prev.clone();
            e.hash = plain_hash(&e);
            sqlx::query(
                "update audit_log set detail = $1, prev_hash = $2, hash = $3,
                 keyed = case when $4 = 1 then 0 else keyed end where id = $5",
            )
            .bind(&e.detail)
            .bind(&e.prev_hash)
            .bind(&e.hash)
            .bind(i64::from(mark_plain))
            .bind(e.id)
            .execute(&db.pool)
            .await
            .unwrap();
        }
        prev = e.hash;
    }
    if through.is_none() {
        sqlx::query("update audit_head set hash = $1 where id = 1")
            .bind(&prev)
            .execute(&db.pool)
            .await
            .unwrap();
    }
}

/// Some sign-ins and sign-outs, so the log has a few entries of its own.
async fn activity(app: &TestApp) {
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    app.user(Some(&org), "ana@direct.lakeside.test", Role::Member)
        .await;
    let mut b = app.signed_in("ana@direct.lakeside.test").await;
    b.post("/logout", &[]).await;
    b.sign_in("ana@direct.lakeside.test", "wrong wrong wrong")
        .await;
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn rewriting_an_entry_and_recomputing_the_plain_sha256_chain_is_found_without_the_key() {
    let app = TestApp::spawn().await;
    activity(&app).await;
    let Verification::Intact { keyed_from, .. } = verify(&app).await else {
        panic!("a fresh chain verifies");
    };
    assert_eq!(
        keyed_from,
        Some(1),
        "a new log is keyed from its first entry"
    );
    let out = directmail(&app, &["admin", "audit", "verify"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("every entry is keyed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // every link after the edit recomputed as the unkeyed chain computed them: the
    // log still links up, but the edited entry's hash is no HMAC under the key
    rewrite_with_plain_hashes(&app.state.db, 3, None, false).await;
    let out = directmail(&app, &["admin", "audit", "verify"]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("entry 3 was changed"),
        "{}",
        stderr(&out)
    );

    // marking the rewritten entries as written before keying does not help either
    rewrite_with_plain_hashes(&app.state.db, 3, None, true).await;
    match verify(&app).await {
        Verification::Broken { entry_id, problem } => {
            assert_eq!(entry_id, 3);
            assert!(
                problem.contains("plain hash after keyed entries"),
                "{problem}"
            );
        }
        other => panic!("rewrite not found: {other:?}"),
    }
    let out = directmail(&app, &["admin", "audit", "verify"]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("entry 3 carries a plain hash"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn a_log_truncated_after_its_head_was_exported_is_found_by_verify_with_that_head() {
    let app = TestApp::spawn().await;
    activity(&app).await;
    let out = directmail(&app, &["admin", "audit", "head"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let exported = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (id, hash) = exported.split_once(':').expect("ID:HASH");
    let exported_id: i64 = id.parse().unwrap();
    assert_eq!(hash.len(), 64, "{exported}");
    assert!(exported_id >= 5, "{exported}");

    // more happens; the exported head is still in the chain, unchanged
    app.signed_in("ana@direct.lakeside.test").await;
    let out = directmail(&app, &["admin", "audit", "verify", "--head", &exported]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("exported head"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // someone deletes the newest entries, the exported one among them, and points the
    // head at what is left: the chain alone still links up
    let keep = exported_id - 2;
    let kept_hash: String = sqlx::query_scalar("select hash from audit_log where id = $1")
        .bind(keep)
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    sqlx::query("delete from audit_log where id > $1")
        .bind(keep)
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    sqlx::query("update audit_head set last_id = $1, hash = $2 where id = 1")
        .bind(keep)
        .bind(&kept_hash)
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    assert!(matches!(verify(&app).await, Verification::Intact { .. }));
    let out = directmail(&app, &["admin", "audit", "verify"]).await;
    assert!(out.status.success(), "{}", stderr(&out));

    // but not the head that was exported
    let out = directmail(&app, &["admin", "audit", "verify", "--head", &exported]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("before the exported head (entry {exported_id})")),
        "{}",
        stderr(&out)
    );
    let out = directmail(&app, &["admin", "audit", "verify", "--head", "12:nonsense"]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("1234:<64 hex digits>"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn a_log_written_before_keying_still_verifies_and_its_first_keyed_entry_pins_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path()).await;
    // a database as the earlier version left it: entries with plain hashes, no key
    let db = Db::connect(&config.database_url()).await.unwrap();
    db.migrate().await.unwrap();
    for n in 0..3 {
        audit::record(
            &db,
            1,
            &Actor::system(),
            Event::new("old.entry", format!("n{n}")),
        )
        .await
        .unwrap();
    }
    // the first start-up of this version keys the chain from the next entry on
    let application = Application::build_with_clock(config.clone(), Clock::default())
        .await
        .unwrap();
    let key = AuditKey::derive(&application.state.secret);
    match audit::verify(&db, Some(&key), None).await.unwrap() {
        Verification::Intact {
            entries,
            keyed_from,
        } => {
            assert_eq!(keyed_from, Some(4));
            assert!(entries >= 4);
        }
        other => panic!("{other:?}"),
    }
    let marker = audit::list(&db, &Default::default(), 1000).await.unwrap();
    let marker = marker.iter().find(|e| e.id == 4).unwrap();
    assert_eq!(marker.action, "audit.keyed");
    assert!(
        marker.detail.contains("entries 1 to 3"),
        "{}",
        marker.detail
    );

    // the plain part rewritten with its plain hashes recomputed no longer links to
    // the first keyed entry, whose HMAC covers the last plain hash
    rewrite_with_plain_hashes(&db, 2, Some(3), false).await;
    match audit::verify(&db, Some(&key), None).await.unwrap() {
        Verification::Broken { entry_id, problem } => {
            assert_eq!(entry_id, 4);
            assert!(problem.contains("does not link"), "{problem}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_chain_verifies_and_an_edited_or_deleted_row_is_found() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    app.user(Some(&org), "ana@direct.lakeside.test", Role::Member)
        .await;
    let mut b = app.signed_in("ana@direct.lakeside.test").await;
    b.post("/logout", &[]).await;
    b.sign_in("ana@direct.lakeside.test", "wrong wrong wrong")
        .await;
    let Verification::Intact { entries, .. } = verify(&app).await else {
        panic!("a fresh chain verifies");
    };
    assert!(entries >= 5);

    // someone edits a row directly in the database
    sqlx::query("update audit_log set detail = 'nothing to see' where id = 3")
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    match verify(&app).await {
        Verification::Broken { entry_id, problem } => {
            assert_eq!(entry_id, 3);
            assert!(
                problem.contains("changed after it was written"),
                "{problem}"
            );
        }
        other => panic!("edit not found: {other:?}"),
    }
    // the command line says the same and fails
    // (with the data directory: checking a keyed chain needs the key it holds)
    let out = directmail(&app, &["admin", "audit", "verify"]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("entry 3 was changed"), "{stderr}");
}

#[tokio::test]
async fn deleting_a_row_or_the_newest_rows_breaks_the_chain() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    app.user(Some(&org), "ana@direct.lakeside.test", Role::Member)
        .await;
    app.signed_in("ana@direct.lakeside.test").await;
    app.signed_in("ana@direct.lakeside.test").await;
    let last: i64 = sqlx::query_scalar("select max(id) from audit_log")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    sqlx::query("delete from audit_log where id = $1")
        .bind(last)
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    match verify(&app).await {
        Verification::Broken { problem, .. } => {
            assert!(problem.contains("newest entries were deleted"), "{problem}")
        }
        other => panic!("{other:?}"),
    }
    sqlx::query("delete from audit_log where id = 2")
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    match verify(&app).await {
        Verification::Broken { entry_id, problem } => {
            assert_eq!(entry_id, 2);
            assert!(problem.contains("missing"), "{problem}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn concurrent_writers_keep_one_linear_chain() {
    let app = TestApp::spawn().await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let db = app.state.db.clone();
        tasks.push(tokio::spawn(async move {
            audit::record(
                &db,
                1,
                &audit::Actor::system(),
                audit::Event::new("test.concurrent", format!("n{i}")),
            )
            .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert!(matches!(verify(&app).await, Verification::Intact { .. }));
}

#[tokio::test]
async fn an_office_manager_reads_filters_and_exports_only_their_organizations_log() {
    let app = TestApp::spawn().await;
    let ours = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    let theirs = app.org("Hillside Care", "direct.hillside.test").await;
    app.user(Some(&ours), "boss@direct.lakeside.test", Role::OrgAdmin)
        .await;
    app.user(Some(&ours), "ana@direct.lakeside.test", Role::Member)
        .await;
    app.user(Some(&theirs), "bob@direct.hillside.test", Role::Member)
        .await;
    app.signed_in("ana@direct.lakeside.test").await;
    app.signed_in("bob@direct.hillside.test").await;
    app.browser()
        .sign_in("ana@direct.lakeside.test", "wrong wrong wrong")
        .await;
    let mut boss = app.signed_in("boss@direct.lakeside.test").await;

    let page = boss.get(&format!("/orgs/{}/audit", ours.id)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("ana@direct.lakeside.test"));
    assert!(
        !page.body.contains("bob@direct.hillside.test"),
        "another organization's entries are hidden"
    );

    let page = boss
        .get(&format!("/orgs/{}/audit?action=signin.fail", ours.id))
        .await;
    assert!(page.body.contains("signin.fail"));
    assert!(!page.body.contains("<code>signin</code>"));
    let page = boss
        .get(&format!(
            "/orgs/{}/audit?user=boss%40direct.lakeside.test",
            ours.id
        ))
        .await;
    assert!(!page.body.contains("<td>ana@direct.lakeside.test</td>"));
    let page = boss
        .get(&format!(
            "/orgs/{}/audit?from=2001-01-01&until=2001-01-02",
            ours.id
        ))
        .await;
    assert!(page.body.contains("No entry matches"));
    // a date that cannot be read: said beside the filter, which keeps what was typed
    let page = boss
        .get(&format!(
            "/orgs/{}/audit?user=ana%40direct.lakeside.test&action=signin&from=yesterday",
            ours.id
        ))
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        page.by_id("filter-error").as_deref(),
        Some("The from date must look like 2026-01-31.")
    );
    assert_eq!(
        page.by_id("user").as_deref(),
        Some("ana@direct.lakeside.test")
    );
    assert_eq!(page.by_id("action").as_deref(), Some("signin"));
    assert_eq!(page.by_id("from").as_deref(), Some("yesterday"));
    assert!(!page.body.contains("<tbody>"), "nothing is listed");

    let r = boss
        .client
        .get(app.url(&format!("/orgs/{}/audit.csv", ours.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("attachment")
    );
    let csv = r.text().await.unwrap();
    assert!(csv.starts_with("id,time,organization,actor,action,object,ip,detail,hash"));
    assert!(csv.contains("ana@direct.lakeside.test"));
    assert!(!csv.contains("bob@direct.hillside.test"));
    // audit entries never carry passwords
    assert!(!csv.contains(PASSWORD) && !csv.contains("wrong wrong wrong"));
}

#[tokio::test]
async fn operators_read_the_whole_log() {
    let app = TestApp::spawn().await;
    let a = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    let b = app.org("Hillside Care", "direct.hillside.test").await;
    app.user(None, "op@hisp.test", Role::Operator).await;
    app.user(Some(&a), "ana@direct.lakeside.test", Role::Member)
        .await;
    app.user(Some(&b), "bob@direct.hillside.test", Role::Member)
        .await;
    app.signed_in("ana@direct.lakeside.test").await;
    app.signed_in("bob@direct.hillside.test").await;
    let mut op = app.signed_in("op@hisp.test").await;
    let page = op.get("/audit").await;
    assert!(
        page.body.contains("ana@direct.lakeside.test")
            && page.body.contains("bob@direct.hillside.test")
    );
    let csv = op
        .client
        .get(app.url("/audit.csv"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(csv.contains("bob@direct.hillside.test"));
}

#[tokio::test]
async fn entries_recorded_at_the_same_moment_are_each_numbered_once_and_chained_in_order() {
    let app = TestApp::spawn().await;
    let before = audit::head(&app.state.db).await.unwrap().id;
    // many readers at once: their entries are appended together, in batches
    let readers = (0..40).map(|i| {
        let db = app.state.db.clone();
        async move {
            let actor = Actor {
                user_id: None,
                label: format!("reader{i}@direct.lakeside.test"),
                org_id: None,
                ip: "127.0.0.1".into(),
            };
            audit::record(
                &db,
                1_800_000_000,
                &actor,
                Event::new("message.read", format!("message:{i}")),
            )
            .await
            .unwrap()
        }
    });
    let mut ids = futures_util::future::join_all(readers).await;
    ids.sort_unstable();
    assert_eq!(ids, ((before + 1)..=(before + 40)).collect::<Vec<_>>());
    let entries = audit::list(&app.state.db, &Default::default(), 100)
        .await
        .unwrap();
    for i in 0..40 {
        let mine: Vec<_> = entries
            .iter()
            .filter(|e| e.actor == format!("reader{i}@direct.lakeside.test"))
            .collect();
        assert_eq!(mine.len(), 1, "reader {i} has one entry");
        assert_eq!(mine[0].object, format!("message:{i}"));
    }
    assert!(matches!(verify(&app).await, Verification::Intact { .. }));
}

/// `record` writes together the entries of callers that queued for the write turn:
/// one transaction (one move of the head row) for all of them, not one each.
#[tokio::test]
async fn callers_queued_behind_the_write_turn_are_written_in_one_transaction() {
    const CALLERS: i64 = 8;
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path()).await;
    let db = Db::connect(&config.database_url()).await.unwrap();
    db.migrate().await.unwrap();
    let postgres = crate::helpers::postgres_admin_url().is_some();
    // every update of the head row is noted: each transaction that appends moves its
    // last id once
    let note_moves = if postgres {
        "create table head_moves (from_id bigint not null, to_id bigint not null);
         create function note_head_move() returns trigger language plpgsql as $$
         begin insert into head_moves values (old.last_id, new.last_id); return new; end $$;
         create trigger head_moves after update on audit_head
         for each row execute function note_head_move();"
    } else {
        "create table head_moves (from_id integer not null, to_id integer not null);
         create trigger head_moves after update on audit_head
         begin insert into head_moves values (old.last_id, new.last_id); end;"
    };
    sqlx::raw_sql(note_moves).execute(&db.pool).await.unwrap();
    let before = audit::head(&db).await.unwrap().id;

    // the turn is held: on SQLite its one write turn; on PostgreSQL, which has none,
    // the head row's lock, so the first caller's write waits inside the turn it took
    let sqlite_turn = db.write_turn().await;
    let mut head_lock = None;
    if postgres {
        let mut tx = db.pool.begin().await.unwrap();
        sqlx::query("select last_id from audit_head where id = 1 for update")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        head_lock = Some(tx);
    }
    let actor = Actor::system();
    let mut callers: Vec<_> = (0..CALLERS)
        .map(|i| {
            Box::pin(audit::record(
                &db,
                1,
                &actor,
                Event::new("test.queued", format!("n{i}")),
            ))
        })
        .collect();
    // each caller runs until it waits: its entry is queued, and it waits for the turn
    for caller in &mut callers {
        let first = std::future::poll_fn(|cx| std::task::Poll::Ready(caller.as_mut().poll(cx)));
        assert!(
            first.await.is_pending(),
            "a caller finished while the turn was held"
        );
    }
    drop(sqlite_turn);
    if let Some(tx) = head_lock {
        tx.rollback().await.unwrap();
    }
    let mut ids: Vec<i64> = futures_util::future::join_all(callers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ((before + 1)..=(before + CALLERS)).collect::<Vec<_>>());

    // (the head's hash is set in the same transaction: that update does not move it)
    let moves: Vec<(i64, i64)> = sqlx::query_as(
        "select from_id, to_id from head_moves where to_id <> from_id order by to_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let advances: Vec<i64> = moves.iter().map(|(from, to)| to - from).collect();
    assert_eq!(advances.iter().sum::<i64>(), CALLERS, "{advances:?}");
    // one transaction for everyone who queued behind the turn (on PostgreSQL the
    // first caller may have taken the turn, with only its own entry, before the
    // others queued)
    assert!(
        advances.len() <= 2 && advances.last().is_some_and(|n| *n >= CALLERS - 1),
        "{CALLERS} callers queued for the turn, and the head moved once per transaction: {advances:?}"
    );
    assert!(matches!(
        audit::verify(&db, None, None).await.unwrap(),
        Verification::Intact { .. }
    ));
}
