//! The audit log: hash chain verification, scoping per organization, filters, CSV.

use directmail::audit::{self, Verification};
use directmail::domain::Role;
use reqwest::StatusCode;

use crate::helpers::{PASSWORD, TestApp};

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
    let Verification::Intact { entries } = audit::verify(&app.state.db).await.unwrap() else {
        panic!("a fresh chain verifies");
    };
    assert!(entries >= 5);

    // someone edits a row directly in the database
    sqlx::query("update audit_log set detail = 'nothing to see' where id = 3")
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    match audit::verify(&app.state.db).await.unwrap() {
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
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_directmail"))
        .args(["admin", "audit", "verify"])
        .env(
            "DIRECTMAIL_DATABASE_URL",
            app.config.database_url().as_str(),
        )
        .output()
        .unwrap();
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
    match audit::verify(&app.state.db).await.unwrap() {
        Verification::Broken { problem, .. } => {
            assert!(problem.contains("newest entries were deleted"), "{problem}")
        }
        other => panic!("{other:?}"),
    }
    sqlx::query("delete from audit_log where id = 2")
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    match audit::verify(&app.state.db).await.unwrap() {
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
    assert!(matches!(
        audit::verify(&app.state.db).await.unwrap(),
        Verification::Intact { .. }
    ));
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
    let page = boss
        .get(&format!("/orgs/{}/audit?from=yesterday", ours.id))
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("must look like 2026-01-31"));

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
