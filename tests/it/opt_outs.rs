//! The HIE opt-out list (issue #13, Illinois 740 ILCS 110): adding, paging and
//! searching; removals that need a reason and keep the row; CSV import (preview, then
//! apply; duplicates reported, wrong files and rows refused in sentences) and export;
//! who may see and change it; the audit trail without names; the match rule.

use directmail::domain::Role;
use directmail::store::opt_outs::{self as store, MatchInput, NewOptOut, Recorder};
use directmail::store::orgs::Org;
use reqwest::StatusCode;

use crate::helpers::{Browser, Page, TestApp};

async fn admin_of(app: &TestApp, name: &str, domain: &str, email: &str) -> (Org, Browser) {
    let org = app.org(name, domain).await;
    app.user(Some(&org), email, Role::OrgAdmin).await;
    (org, app.signed_in(email).await)
}

/// Lakeside's administrator, on the list page (for its CSRF token).
async fn lakeside(app: &TestApp) -> (Org, Browser) {
    let (org, mut b) = admin_of(
        app,
        "Lakeside",
        "direct.lakeside.test",
        "boss@lakeside.test",
    )
    .await;
    b.get(&format!("/orgs/{}/opt-outs", org.id)).await;
    (org, b)
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap()
}

fn entry(family: &str, given: &str, birth: &str, id: Option<(&str, &str)>) -> NewOptOut {
    NewOptOut {
        family_name: family.into(),
        given_name: given.into(),
        birth_date: birth.into(),
        identifier: id.map(|(a, i)| (a.into(), i.into())),
    }
}

/// Adds straight to the store (for lists longer than a page, and the match rule).
async fn insert(app: &TestApp, org: &Org, e: &NewOptOut) -> i64 {
    let by = Recorder {
        user_id: sqlx::query_scalar("select min(id) from users")
            .fetch_one(&app.state.db.pool)
            .await
            .unwrap(),
        display_name: "Seeder".into(),
    };
    let mut tx = app.state.db.begin().await.unwrap();
    let id = store::insert(&mut tx, org.id, e, &by, app.now())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    id
}

async fn add(b: &mut Browser, org: &Org, fields: &[(&str, &str)]) -> Page {
    b.post(&format!("/orgs/{}/opt-outs", org.id), fields).await
}

fn apply_path(preview: &Page) -> String {
    let re = regex::Regex::new(r#"action="(/orgs/\d+/opt-outs/import/\d+/apply)""#).unwrap();
    re.captures(&preview.body).expect("a confirm form")[1].to_owned()
}

#[tokio::test]
async fn an_administrator_adds_lists_pages_and_searches() {
    let app = TestApp::spawn().await;
    let (org, mut b) = lakeside(&app).await;
    let overview = b.get(&format!("/orgs/{}", org.id)).await;
    assert!(
        overview
            .body
            .contains(&format!("/orgs/{}/opt-outs", org.id)),
        "the organization page links the list"
    );
    let list = b.get(&format!("/orgs/{}/opt-outs", org.id)).await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.by_id("no-entries").is_some(), "{}", list.body);

    let done = add(
        &mut b,
        &org,
        &[
            ("family_name", "Müller"),
            ("given_name", "José"),
            ("birth_date", "1970-03-12"),
            ("identifier", "2.16.840.1.113883.19.5:MRN-1"),
        ],
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let list = b.get(&format!("/orgs/{}/opt-outs", org.id)).await;
    assert!(list.body.contains("Müller"), "{}", list.body);
    assert!(list.body.contains("2.16.840.1.113883.19.5:MRN-1"));
    assert!(list.body.contains("by boss"), "who recorded it is shown");

    // the same patient again (other case and accents): refused, nothing added
    let again = add(
        &mut b,
        &org,
        &[
            ("family_name", "MULLER"),
            ("given_name", "jose"),
            ("birth_date", "1970-03-12"),
        ],
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(
        again
            .by_id("add-error")
            .unwrap()
            .contains("already on the list")
    );
    // wrong fields: each said in a sentence, the typed values kept
    let wrong = add(
        &mut b,
        &org,
        &[
            ("family_name", "Lee"),
            ("given_name", ""),
            ("birth_date", "1970-02-30"),
            ("identifier", "MRN-2"),
        ],
    )
    .await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    assert!(
        wrong
            .by_id("birth_date-error")
            .unwrap()
            .contains("not a real date")
    );
    assert!(wrong.by_id("given_name-error").is_some());
    assert!(wrong.by_id("identifier-error").unwrap().contains("OID:id"));
    assert_eq!(wrong.by_id("family_name").as_deref(), Some("Lee"));
    assert_eq!(count(&app, "select count(*) from hie_opt_outs").await, 1);

    // 55 more: pages of 50, in name order, continued by keyset
    for i in 0..55 {
        insert(
            &app,
            &org,
            &entry(&format!("Patient{i:02}"), "Pat", "1980-01-01", None),
        )
        .await;
    }
    let first = b.get(&format!("/orgs/{}/opt-outs", org.id)).await;
    assert_eq!(first.body.matches("<tr id=\"opt-out-").count(), 50);
    let next = regex::Regex::new(r#"href="([^"]*after=\d+)" rel="next" id="next-page""#)
        .unwrap()
        .captures(&first.body)
        .expect("a next link")[1]
        .replace("&amp;", "&");
    let second = b.get(&next).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.body.matches("<tr id=\"opt-out-").count(), 6);
    assert!(second.body.contains("Patient54"));
    assert!(!second.body.contains("Patient00"));
    assert!(second.by_id("next-page").is_none());

    // search by name, without regard to case or accents, in any word order
    let found = b
        .get(&format!("/orgs/{}/opt-outs?q=jose%20MULLER", org.id))
        .await;
    assert_eq!(found.body.matches("<tr id=\"opt-out-").count(), 1);
    assert!(found.body.contains("Müller"));
    let none = b.get(&format!("/orgs/{}/opt-outs?q=nobody", org.id)).await;
    assert_eq!(none.body.matches("<tr id=\"opt-out-").count(), 0);
}

#[tokio::test]
async fn a_removal_needs_a_reason_and_keeps_the_row() {
    let app = TestApp::spawn().await;
    let (org, mut b) = lakeside(&app).await;
    let id = insert(&app, &org, &entry("Jones", "Anna", "1970-03-12", None)).await;
    let path = format!("/orgs/{}/opt-outs/{id}/remove", org.id);
    let confirm = b.get(&path).await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(confirm.body.contains("Why is the entry removed?"));

    let refused = b.post(&path, &[("reason", "   ")]).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(
        refused
            .by_id("remove-error")
            .unwrap()
            .contains("Say why the entry is removed")
    );
    assert_eq!(
        count(
            &app,
            "select count(*) from hie_opt_outs where removed_at is null"
        )
        .await,
        1
    );

    let done = b
        .post(
            &path,
            &[("reason", "The patient revoked the opt-out in writing.")],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let kept = store::get(&app.state.db, org.id, id)
        .await
        .unwrap()
        .expect("the row is kept");
    assert!(kept.removed_at.is_some());
    assert_eq!(kept.removed_by_name.as_deref(), Some("boss"));
    assert_eq!(
        kept.removal_reason.as_deref(),
        Some("The patient revoked the opt-out in writing.")
    );
    let list = b.get(&format!("/orgs/{}/opt-outs", org.id)).await;
    assert!(list.by_id(&format!("opt-out-{id}")).is_none());
    assert!(
        list.by_id(&format!("removed-{id}")).is_some(),
        "{}",
        list.body
    );
    assert!(list.body.contains("revoked the opt-out in writing"));

    let twice = b.post(&path, &[("reason", "again")]).await;
    assert_eq!(twice.status, StatusCode::CONFLICT);
    // a removed entry no longer holds anything back, and can be recorded anew
    let m = MatchInput {
        identifier: None,
        family: "Jones".into(),
        given: "Anna".into(),
        birth_date: "1970-03-12".into(),
    };
    assert!(
        store::find_match(&app.state.db, org.id, &m)
            .await
            .unwrap()
            .is_none()
    );
    let again = add(
        &mut b,
        &org,
        &[
            ("family_name", "Jones"),
            ("given_name", "Anna"),
            ("birth_date", "1970-03-12"),
        ],
    )
    .await;
    assert_eq!(again.status, StatusCode::SEE_OTHER);
    assert_eq!(count(&app, "select count(*) from hie_opt_outs").await, 2);
}

#[tokio::test]
async fn a_csv_import_previews_then_adds_and_reports_duplicates() {
    let app = TestApp::spawn().await;
    let (org, mut b) = lakeside(&app).await;
    insert(
        &app,
        &org,
        &entry("Jones", "Anna", "1970-03-12", Some(("1.2.3", "A1"))),
    )
    .await;
    b.get(&format!("/orgs/{}/opt-outs", org.id)).await;
    let csv = "\u{feff}family_name,given_name,birth_date,identifier\n\
               Lee,Sam,1981-05-06,\n\
               Jönes,ANNA,1970-03-12,\n\
               Other,Name,1990-01-01,1.2.3:A1\n\
               Park,Min,1975-12-31,2.16.840.1.113883.19.5:77\n\
               park,min,1975-12-31,\n";
    let import = format!("/orgs/{}/opt-outs/import", org.id);
    let preview = b
        .upload(&import, &[("list.csv", "text/csv", csv.as_bytes())], false)
        .await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
    let summary = preview.by_id("summary").unwrap();
    assert!(
        summary.contains("2 patients to add, 3 already on the list"),
        "{summary}"
    );
    assert!(preview.body.contains("The same patient as row 5"));
    assert_eq!(
        count(&app, "select count(*) from hie_opt_outs").await,
        1,
        "a preview adds nothing"
    );
    let done = b.post(&apply_path(&preview), &[]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(count(&app, "select count(*) from hie_opt_outs").await, 3);
    let detail: String = sqlx::query_scalar(
        "select detail from audit_log where action = 'opt_out.import' and object = $1",
    )
    .bind(format!("org:{}", org.id))
    .fetch_one(&app.state.db.pool)
    .await
    .unwrap();
    assert_eq!(detail, "2 added, 3 already listed");
    // the same preview cannot be applied twice
    let twice = b.post(&apply_path(&preview), &[]).await;
    assert_eq!(twice.status, StatusCode::BAD_REQUEST);
    assert_eq!(count(&app, "select count(*) from hie_opt_outs").await, 3);
}

#[tokio::test]
async fn wrong_csv_files_and_rows_are_refused_in_sentences_and_import_nothing() {
    let app = TestApp::spawn().await;
    let (org, mut b) = lakeside(&app).await;
    let import = format!("/orgs/{}/opt-outs/import", org.id);
    let oversized = format!(
        "family_name,given_name,birth_date\n{}",
        "Jones,Anna,1970-03-12\n".repeat(600 * 1024 / 22)
    );
    let whole: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "missing.csv",
            b"family_name,given_name\nJones,Anna\n".to_vec(),
            "The header has no \u{201c}birth_date\u{201d} column",
        ),
        (
            "unknown.csv",
            b"family_name,given_name,birth_date,ssn\nJones,Anna,1970-03-12,1\n".to_vec(),
            "The column \u{201c}ssn\u{201d} is not one the opt-out list knows",
        ),
        (
            "latin1.csv",
            b"family_name,given_name,birth_date\nJ\xf6nes,Anna,1970-03-12\n".to_vec(),
            "not UTF-8 text",
        ),
        (
            "big.csv",
            oversized.into_bytes(),
            "the opt-out list imports files of at most 512 KB",
        ),
        ("empty.csv", b"\n \n".to_vec(), "The file is empty."),
    ];
    for (name, bytes, expected) in whole {
        let page = b
            .upload(&import, &[(name, "text/csv", &bytes)], false)
            .await;
        assert_eq!(
            page.status,
            StatusCode::BAD_REQUEST,
            "{name}: {}",
            page.body
        );
        let shown = page.by_id("import-error").unwrap_or_default();
        assert!(shown.contains(expected), "{name}: {shown}");
    }
    let rows = "family_name,given_name,birth_date,identifier\n\
                Good,Row,1970-03-12,\n\
                Bad,Date,1970-13-01,\n\
                Future,Date,2999-01-01,\n\
                =HYPERLINK(\"http://x.test\"),Anna,1970-03-12,\n\
                Lee,@SUM(1),1970-03-12,\n\
                No,Authority,1970-03-12,MRN-9\n\
                Too,Many,1970-03-12,1.2.3:4,extra\n";
    let preview = b
        .upload(&import, &[("rows.csv", "text/csv", rows.as_bytes())], false)
        .await;
    assert_eq!(preview.status, StatusCode::UNPROCESSABLE_ENTITY);
    let errors = preview.by_id("row-errors");
    assert!(errors.is_some(), "{}", preview.body);
    for expected in [
        "<td>3</td>",
        "The birth date is not a real date; write it as YYYY-MM-DD.",
        "<td>4</td>",
        "The birth date is in the future.",
        "<td>5</td>",
        "The family_name cell starts with =, +, - or @",
        "<td>6</td>",
        "The given_name cell starts with =, +, - or @",
        "<td>7</td>",
        "Write the identifier with its assigning authority",
        "<td>8</td>",
        "It has 5 cells but the header names 4 columns.",
    ] {
        assert!(
            preview.body.contains(expected),
            "{expected}: {}",
            preview.body
        );
    }
    assert!(
        !preview.body.contains("/apply"),
        "no way to apply a wrong file"
    );
    assert_eq!(count(&app, "select count(*) from hie_opt_outs").await, 0);
    assert_eq!(
        count(&app, "select count(*) from hie_opt_out_uploads").await,
        0,
        "a file that cannot be applied is not kept"
    );
    assert_eq!(
        count(
            &app,
            "select count(*) from audit_log where action like 'opt_out.%'"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn only_the_organizations_administrator_or_an_operator_reaches_the_list() {
    let app = TestApp::spawn().await;
    let (org, mut admin) = admin_of(
        &app,
        "Lakeside",
        "direct.lakeside.test",
        "boss@lakeside.test",
    )
    .await;
    let (other, mut stranger) = admin_of(
        &app,
        "Hillside",
        "direct.hillside.test",
        "boss@hillside.test",
    )
    .await;
    app.user(Some(&org), "clerk@lakeside.test", Role::Member)
        .await;
    let mut member = app.signed_in("clerk@lakeside.test").await;
    app.user(None, "op@hisp.test", Role::Operator).await;
    let mut operator = app.signed_in("op@hisp.test").await;
    let id = insert(&app, &org, &entry("Jones", "Anna", "1970-03-12", None)).await;

    let list = format!("/orgs/{}/opt-outs", org.id);
    let remove = format!("/orgs/{}/opt-outs/{id}/remove", org.id);
    let export = format!("/orgs/{}/opt-outs/export.csv", org.id);
    let import = format!("/orgs/{}/opt-outs/import", org.id);
    let fields = [
        ("family_name", "Lee"),
        ("given_name", "Sam"),
        ("birth_date", "1981-05-06"),
    ];
    let csv: &[u8] = b"family_name,given_name,birth_date\nLee,Sam,1981-05-06\n";
    for (who, b, status) in [
        ("member", &mut member, StatusCode::FORBIDDEN),
        ("other admin", &mut stranger, StatusCode::NOT_FOUND),
    ] {
        b.get("/").await;
        assert_eq!(b.get(&list).await.status, status, "{who}");
        assert_eq!(b.get(&remove).await.status, status, "{who}");
        assert_eq!(b.get(&export).await.status, status, "{who}");
        assert_eq!(b.post(&list, &fields).await.status, status, "{who}");
        assert_eq!(
            b.post(&remove, &[("reason", "because")]).await.status,
            status,
            "{who}"
        );
        let up = b
            .upload(&import, &[("x.csv", "text/csv", csv)], false)
            .await;
        assert_eq!(up.status, status, "{who}");
    }
    // another organization's entry id through one's own organization: 404
    let own = stranger
        .get(&format!("/orgs/{}/opt-outs/{id}/remove", other.id))
        .await;
    assert_eq!(own.status, StatusCode::NOT_FOUND);

    // without the CSRF token: refused, nothing changed
    let no_token = admin
        .post_raw(
            &list,
            "family_name=Lee&given_name=Sam&birth_date=1981-05-06".into(),
        )
        .await;
    assert_eq!(no_token.status, StatusCode::FORBIDDEN);
    let no_token = admin.post_raw(&remove, "reason=revoked".into()).await;
    assert_eq!(no_token.status, StatusCode::FORBIDDEN);
    assert_eq!(count(&app, "select count(*) from hie_opt_outs").await, 1);
    assert_eq!(
        count(
            &app,
            "select count(*) from hie_opt_outs where removed_at is null"
        )
        .await,
        1
    );

    // an operator runs any organization's list
    assert_eq!(operator.get(&list).await.status, StatusCode::OK);
    let added = operator.post(&list, &fields).await;
    assert_eq!(added.status, StatusCode::SEE_OTHER);
    assert_eq!(count(&app, "select count(*) from hie_opt_outs").await, 2);
}

#[tokio::test]
async fn every_change_and_export_is_audited_by_id_without_names() {
    let app = TestApp::spawn().await;
    let (org, mut b) = lakeside(&app).await;
    let added = add(
        &mut b,
        &org,
        &[
            ("family_name", "Zabriskie"),
            ("given_name", "Quentin"),
            ("birth_date", "1970-03-12"),
            ("identifier", "1.2.3:MRN-77"),
        ],
    )
    .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER);
    let id: i64 = sqlx::query_scalar("select id from hie_opt_outs")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    let removed = b
        .post(
            &format!("/orgs/{}/opt-outs/{id}/remove", org.id),
            &[("reason", "=HYPERLINK(\"http://x.test\") Zabriskie asked")],
        )
        .await;
    assert_eq!(removed.status, StatusCode::SEE_OTHER);
    let preview = b
        .upload(
            &format!("/orgs/{}/opt-outs/import", org.id),
            &[(
                "l.csv",
                "text/csv",
                b"family_name,given_name,birth_date\nYellowhorse,Wanda,1960-01-02\n",
            )],
            false,
        )
        .await;
    assert_eq!(
        b.post(&apply_path(&preview), &[]).await.status,
        StatusCode::SEE_OTHER
    );
    let export = b
        .get(&format!("/orgs/{}/opt-outs/export.csv", org.id))
        .await;
    assert_eq!(export.status, StatusCode::OK);
    assert!(
        export
            .body
            .starts_with("family_name,given_name,birth_date,identifier,")
    );
    assert!(export.body.contains("Yellowhorse,Wanda,1960-01-02,,"));
    assert!(export.body.contains("1.2.3:MRN-77"));
    // the reason starts like a formula: written so that spreadsheets do not run it
    assert!(export.body.contains("\"'=HYPERLINK("), "{}", export.body);

    let rows: Vec<(String, String, String, Option<i64>)> = sqlx::query_as(
        "select action, object, detail, org_id from audit_log
         where action like 'opt_out.%' order by id",
    )
    .fetch_all(&app.state.db.pool)
    .await
    .unwrap();
    let actions: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        actions,
        [
            "opt_out.add",
            "opt_out.remove",
            "opt_out.import",
            "opt_out.export"
        ]
    );
    assert_eq!(rows[0].1, format!("opt_out:{id}"));
    assert_eq!(rows[1].1, format!("opt_out:{id}"));
    assert_eq!(rows[2].1, format!("org:{}", org.id));
    assert_eq!(rows[3].1, format!("org:{}", org.id));
    assert_eq!(rows[3].2, "2 entries");
    for (action, object, detail, org_id) in &rows {
        assert_eq!(*org_id, Some(org.id), "{action}");
        for name in [
            "Zabriskie",
            "Quentin",
            "Yellowhorse",
            "Wanda",
            "MRN-77",
            "1970-03-12",
        ] {
            assert!(
                !object.contains(name) && !detail.contains(name),
                "{action} names the patient: {object} {detail}"
            );
        }
    }
}

#[tokio::test]
async fn the_match_rule_takes_the_identifier_first_then_names_and_birth_date() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside", "direct.lakeside.test").await;
    let other = app.org("Hillside", "direct.hillside.test").await;
    app.user(Some(&org), "boss@lakeside.test", Role::OrgAdmin)
        .await;
    let by_id = insert(
        &app,
        &org,
        &entry("Jones", "Anna", "1970-03-12", Some(("1.2.3", "MRN-1"))),
    )
    .await;
    let by_name = insert(
        &app,
        &org,
        &entry("Müller-Smith", "José", "1980-01-01", None),
    )
    .await;
    let removed = insert(&app, &org, &entry("Gone", "Gary", "1990-01-01", None)).await;
    {
        let mut tx = app.state.db.begin().await.unwrap();
        let by = Recorder {
            user_id: sqlx::query_scalar("select min(id) from users")
                .fetch_one(&app.state.db.pool)
                .await
                .unwrap(),
            display_name: "x".into(),
        };
        assert!(
            store::remove(&mut tx, removed, &by, "revoked", app.now())
                .await
                .unwrap()
        );
        tx.commit().await.unwrap();
    }
    let find = |org_id: i64, m: MatchInput| {
        let db = app.state.db.clone();
        async move {
            store::find_match(&db, org_id, &m)
                .await
                .unwrap()
                .map(|e| e.id)
        }
    };
    let m = |id: Option<(&str, &str)>, family: &str, given: &str, birth: &str| MatchInput {
        identifier: id.map(|(a, i)| (a.into(), i.into())),
        family: family.into(),
        given: given.into(),
        birth_date: birth.into(),
    };
    // the identifier alone, whatever the name says
    assert_eq!(
        find(
            org.id,
            m(Some(("1.2.3", "MRN-1")), "Smith", "Bob", "2000-01-01")
        )
        .await,
        Some(by_id)
    );
    // the same identifier in another authority: not the patient
    assert_eq!(
        find(
            org.id,
            m(Some(("1.2.4", "MRN-1")), "Smith", "Bob", "2000-01-01")
        )
        .await,
        None
    );
    // identifiers are exact
    assert_eq!(
        find(org.id, m(Some(("1.2.3", "mrn-1")), "", "", "")).await,
        None
    );
    // names and birth date, without regard to case, accents and punctuation
    assert_eq!(
        find(org.id, m(None, "MULLER SMITH", "jose", "1980-01-01")).await,
        Some(by_name)
    );
    // an identifier that matches nothing still leaves names and birth date
    assert_eq!(
        find(org.id, m(Some(("9.9", "X")), "Jones", "ANNA", "1970-03-12")).await,
        Some(by_id)
    );
    // near misses: another birth date, another given name, a missing part
    assert_eq!(
        find(org.id, m(None, "Müller-Smith", "José", "1980-01-02")).await,
        None
    );
    assert_eq!(
        find(org.id, m(None, "Müller-Smith", "Josef", "1980-01-01")).await,
        None
    );
    assert_eq!(find(org.id, m(None, "Jones", "Anna", "")).await, None);
    // removed entries and other organizations' entries never match
    assert_eq!(
        find(org.id, m(None, "Gone", "Gary", "1990-01-01")).await,
        None
    );
    assert_eq!(
        find(
            other.id,
            m(Some(("1.2.3", "MRN-1")), "Jones", "Anna", "1970-03-12")
        )
        .await,
        None
    );
}
