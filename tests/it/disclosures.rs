//! The report "Disclosures of restricted records" (issue #13): an organization's
//! administrator sees the sensitive records its users sent in a range of days, paged,
//! and downloads them whole as CSV; nobody else does; wrong ranges are said beside
//! their field; every view and export is audited with the range, never a patient.

use directmail::clock::parse_date;
use directmail::domain::Role;
use directmail::store::disclosures::{self as store, Disclosure};
use directmail::store::orgs::Org;
use reqwest::StatusCode;

use crate::helpers::{Browser, Page, TestApp};

/// Noon (UTC) of a day.
fn noon(day: &str) -> i64 {
    parse_date(day).expect("a date") + 12 * 3600
}

fn disclosure(org: &Org, sent_at: i64, patient: &str) -> Disclosure {
    Disclosure {
        org_id: Some(org.id),
        mailbox_address: "dr.ana@direct.lakeside.test".into(),
        user_name: "Ana Diaz".into(),
        sent_at,
        law: "part2".into(),
        patient: patient.into(),
        recipients: "intake@direct.hillside.test, records@direct.hillside.test".into(),
        purpose: "Treatment".into(),
        consent: "consent-anna.pdf".into(),
        ..Disclosure::default()
    }
}

/// Records disclosures as the send path does, in one transaction; their ids.
async fn insert(app: &TestApp, rows: &[Disclosure]) -> Vec<i64> {
    let mut tx = app.state.db.begin().await.unwrap();
    let mut ids = Vec::new();
    for d in rows {
        ids.push(store::insert(&mut tx, d).await.unwrap());
    }
    tx.commit().await.unwrap();
    ids
}

/// Lakeside with its administrator signed in.
async fn lakeside(app: &TestApp) -> (Org, Browser) {
    let org = app.org("Lakeside", "direct.lakeside.test").await;
    app.user(Some(&org), "boss@lakeside.test", Role::OrgAdmin)
        .await;
    (org, app.signed_in("boss@lakeside.test").await)
}

fn report(org: &Org, query: &str) -> String {
    format!("/orgs/{}/disclosures?{query}", org.id)
}

fn export(org: &Org, query: &str) -> String {
    format!("/orgs/{}/disclosures.csv?{query}", org.id)
}

/// The ids of the rows a page shows, in order.
fn shown(page: &Page) -> Vec<i64> {
    regex::Regex::new(r#"<tr id="disclosure-(\d+)""#)
        .unwrap()
        .captures_iter(&page.body)
        .map(|c| c[1].parse().unwrap())
        .collect()
}

/// The href of the link with this id, entities decoded.
fn link(page: &Page, id: &str) -> Option<String> {
    let re = regex::Regex::new(&format!(r#"<a href="([^"]*)"[^>]*\bid="{id}""#)).unwrap();
    re.captures(&page.body).map(|c| {
        c[1].replace("&#38;", "&")
            .replace("&amp;", "&")
            .replace("&#x2f;", "/")
    })
}

#[tokio::test]
async fn an_administrator_sees_her_organizations_disclosures_of_the_range_only() {
    let app = TestApp::spawn().await;
    let (org, mut b) = lakeside(&app).await;
    let other = app.org("Hillside", "direct.hillside.test").await;
    let march = parse_date("2025-03-01").unwrap();
    let april = parse_date("2025-04-01").unwrap();
    let ids = insert(
        &app,
        &[
            disclosure(&org, march, "Anna Jones"),
            Disclosure {
                law: "mental_health".into(),
                ..disclosure(&org, april - 1, "Ben Okafor")
            },
            // a second too late, a second too early, another organization's
            disclosure(&org, april, "Late Patient"),
            disclosure(&org, march - 1, "Early Patient"),
            disclosure(&other, noon("2025-03-15"), "Hillside Patient"),
        ],
    )
    .await;

    let overview = b.get(&format!("/orgs/{}", org.id)).await;
    assert!(
        overview
            .body
            .contains(&format!("href=\"/orgs/{}/disclosures\"", org.id)),
        "the organization's page links the report"
    );
    let page = b.get(&report(&org, "from=2025-03-01&to=2025-03-31")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(shown(&page), [ids[1], ids[0]], "newest first");
    for absent in ["Late Patient", "Early Patient", "Hillside Patient"] {
        assert!(!page.body.contains(absent), "{absent} is not shown");
    }
    assert!(page.body.contains("2025-03-31 23:59 UTC"));
    assert!(page.body.contains("Ana Diaz"));
    assert!(
        page.body
            .contains("intake@direct.hillside.test, records@direct.hillside.test")
    );
    assert!(page.body.contains("Substance use disorder (42 CFR Part 2)"));
    assert!(page.body.contains("Mental health (740 ILCS 110)"));
    assert!(page.body.contains("consent-anna.pdf"));
    assert_eq!(page.by_id("from").as_deref(), Some("2025-03-01"));
    assert_eq!(page.by_id("to").as_deref(), Some("2025-03-31"));
    assert_eq!(
        link(&page, "download-csv"),
        Some(export(&org, "from=2025-03-01&to=2025-03-31"))
    );

    // part of the patient's name, case ignored
    let jones = b
        .get(&report(&org, "from=2025-03-01&to=2025-03-31&patient=JON"))
        .await;
    assert_eq!(shown(&jones), [ids[0]]);
    assert_eq!(jones.by_id("patient").as_deref(), Some("JON"));
    let nobody = b
        .get(&report(
            &org,
            "from=2025-03-01&to=2025-03-31&patient=nobody",
        ))
        .await;
    assert!(shown(&nobody).is_empty());
    assert!(nobody.by_id("no-disclosures").is_some(), "{}", nobody.body);

    // without a range: the last 30 days up to today
    let now = app.now();
    let recent = insert(
        &app,
        &[
            disclosure(&org, now - 3600, "Recent Patient"),
            disclosure(&org, now - 40 * 86_400, "Old Patient"),
        ],
    )
    .await;
    let default = b.get(&report(&org, "")).await;
    assert_eq!(default.status, StatusCode::OK);
    assert_eq!(shown(&default), [recent[0]]);
    let from = default.by_id("from").unwrap();
    assert!(
        parse_date(&from).is_some(),
        "the form shows the start: {from}"
    );
}

#[tokio::test]
async fn older_rows_are_on_the_next_pages_and_the_links_keep_the_range() {
    let app = TestApp::spawn().await;
    let (org, mut b) = lakeside(&app).await;
    // 55 in March, pairs of them sent in the same second (paging goes by time and id)
    let rows: Vec<Disclosure> = (0..55)
        .map(|i| {
            disclosure(
                &org,
                noon("2025-03-01") + (i / 2) * 60,
                &format!("Patient {i:02}"),
            )
        })
        .collect();
    let ids = insert(&app, &rows).await;
    insert(
        &app,
        &[disclosure(&org, noon("2025-04-02"), "April Patient")],
    )
    .await;

    let first = b.get(&report(&org, "from=2025-03-01&to=2025-03-31")).await;
    let first_ids = shown(&first);
    assert_eq!(first_ids.len(), 50);
    assert_eq!(first_ids[0], ids[54]);
    let older = link(&first, "older-page").expect("an Older link");
    assert!(
        older.contains("from=2025-03-01&to=2025-03-31&before="),
        "{older}"
    );
    let second = b.get(&older).await;
    assert_eq!(second.status, StatusCode::OK);
    let second_ids = shown(&second);
    assert_eq!(second_ids, [ids[4], ids[3], ids[2], ids[1], ids[0]]);
    assert!(link(&second, "older-page").is_none());
    assert!(!second.body.contains("April Patient"));
    let mut all: Vec<i64> = first_ids.into_iter().chain(second_ids).collect();
    all.sort();
    assert_eq!(all, ids, "every row once");
}

#[tokio::test]
async fn the_csv_holds_every_row_of_the_range_with_formulas_neutralised() {
    let app = TestApp::spawn().await;
    let (org, mut b) = lakeside(&app).await;
    let mut rows: Vec<Disclosure> = (0..59)
        .map(|i| disclosure(&org, noon("2025-03-02") + i, "Anna Jones"))
        .collect();
    rows.push(Disclosure {
        purpose: "Payment".into(),
        ..disclosure(
            &org,
            noon("2025-03-10"),
            "=HYPERLINK(\"http://x.test\",\"Jones\")",
        )
    });
    rows.push(disclosure(&org, noon("2025-04-01"), "Outside Range"));
    insert(&app, &rows).await;

    let csv = b.get(&export(&org, "from=2025-03-01&to=2025-03-31")).await;
    assert_eq!(csv.status, StatusCode::OK, "{}", csv.body);
    assert_eq!(
        csv.headers["content-disposition"],
        "attachment; filename=\"disclosures-2025-03-01-2025-03-31.csv\""
    );
    assert!(
        csv.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let lines: Vec<&str> = csv.body.lines().collect();
    assert_eq!(
        lines[0],
        "sent_at,sender,mailbox,patient,recipients,kind,purpose,consent"
    );
    assert_eq!(lines.len(), 1 + 60, "every row, more than a page");
    assert_eq!(
        lines[1],
        "2025-03-10T12:00:00Z,Ana Diaz,dr.ana@direct.lakeside.test,\
         \"'=HYPERLINK(\"\"http://x.test\"\",\"\"Jones\"\")\",\
         \"intake@direct.hillside.test, records@direct.hillside.test\",\
         Substance use disorder (42 CFR Part 2),Payment,consent-anna.pdf"
    );
    assert!(!csv.body.contains("Outside Range"));

    // the patient filter narrows the file too
    let one = b
        .get(&export(
            &org,
            "from=2025-03-01&to=2025-03-31&patient=hyperlink",
        ))
        .await;
    assert_eq!(one.body.lines().count(), 2);
}

#[tokio::test]
async fn members_and_other_organizations_administrators_are_refused() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside", "direct.lakeside.test").await;
    insert(&app, &[disclosure(&org, app.now() - 60, "Anna Jones")]).await;
    app.user(Some(&org), "clerk@lakeside.test", Role::Member)
        .await;
    let other = app.org("Hillside", "direct.hillside.test").await;
    app.user(Some(&other), "boss@hillside.test", Role::OrgAdmin)
        .await;
    app.user(None, "op@hisp.test", Role::Operator).await;
    let page = report(&org, "");
    let csv = export(&org, "");

    for (who, status) in [
        ("clerk@lakeside.test", StatusCode::FORBIDDEN),
        ("boss@hillside.test", StatusCode::NOT_FOUND),
    ] {
        let mut b = app.signed_in(who).await;
        let refused = b.get(&page).await;
        assert_eq!(refused.status, status, "{who}");
        assert!(!refused.body.contains("Anna Jones"), "{who}");
        let refused = b.get(&csv).await;
        assert_eq!(refused.status, status, "{who}");
        assert!(!refused.body.contains("Anna Jones"), "{who}");
    }
    // Hillside's administrator reads Hillside's report, not Lakeside's rows
    let mut hillside = app.signed_in("boss@hillside.test").await;
    let own = hillside.get(&report(&other, "")).await;
    assert_eq!(own.status, StatusCode::OK);
    assert!(!own.body.contains("Anna Jones"));

    let mut operator = app.signed_in("op@hisp.test").await;
    let seen = operator.get(&page).await;
    assert_eq!(seen.status, StatusCode::OK);
    assert!(seen.body.contains("Anna Jones"));
    assert_eq!(operator.get(&csv).await.status, StatusCode::OK);
}

#[tokio::test]
async fn wrong_ranges_are_said_beside_their_field_and_keep_what_was_typed() {
    let app = TestApp::spawn().await;
    let (org, mut b) = lakeside(&app).await;
    insert(&app, &[disclosure(&org, noon("2025-03-10"), "Anna Jones")]).await;

    let not_a_date = b
        .get(&report(&org, "from=2025-02-30&to=2025-03-31&patient=Jones"))
        .await;
    assert_eq!(not_a_date.status, StatusCode::BAD_REQUEST);
    assert!(
        not_a_date
            .by_id("from-error")
            .unwrap()
            .contains("not a date")
    );
    assert_eq!(not_a_date.by_id("from").as_deref(), Some("2025-02-30"));
    assert_eq!(not_a_date.by_id("to").as_deref(), Some("2025-03-31"));
    assert_eq!(not_a_date.by_id("patient").as_deref(), Some("Jones"));
    assert!(shown(&not_a_date).is_empty());
    assert!(link(&not_a_date, "download-csv").is_none());

    let bad_end = b
        .get(&report(&org, "from=2025-03-01&to=31%2F03%2F2025"))
        .await;
    assert_eq!(bad_end.status, StatusCode::BAD_REQUEST);
    assert!(bad_end.by_id("to-error").is_some());
    assert_eq!(bad_end.by_id("to").as_deref(), Some("31/03/2025"));

    let reversed = b.get(&report(&org, "from=2025-04-01&to=2025-03-01")).await;
    assert_eq!(reversed.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reversed.by_id("from-error").as_deref(),
        Some("The start date, 2025-04-01, is after the end date, 2025-03-01.")
    );
    assert_eq!(reversed.by_id("from").as_deref(), Some("2025-04-01"));
    assert_eq!(reversed.by_id("to").as_deref(), Some("2025-03-01"));

    let too_long = b.get(&report(&org, "from=2015-03-01&to=2025-03-31")).await;
    assert_eq!(too_long.status, StatusCode::BAD_REQUEST);
    assert!(
        too_long
            .by_id("from-error")
            .unwrap()
            .contains("longer than 10 years")
    );
    let ten_years = b.get(&report(&org, "from=2015-04-01&to=2025-03-31")).await;
    assert_eq!(ten_years.status, StatusCode::OK);
    assert_eq!(shown(&ten_years).len(), 1);

    let csv = b.get(&export(&org, "from=2025-04-01&to=2025-03-01")).await;
    assert_eq!(csv.status, StatusCode::BAD_REQUEST);
    assert!(!csv.body.contains("Anna Jones"));

    // nothing was shown, so nothing was audited but the one good view
    let audited: i64 =
        sqlx::query_scalar("select count(*) from audit_log where action like 'disclosures.%'")
            .fetch_one(&app.state.db.pool)
            .await
            .unwrap();
    assert_eq!(audited, 1);
}

#[tokio::test]
async fn views_and_exports_are_audited_with_the_range_and_no_patient() {
    let app = TestApp::spawn().await;
    let (org, mut b) = lakeside(&app).await;
    insert(
        &app,
        &[
            disclosure(&org, noon("2025-03-10"), "Zabriskie Quentin"),
            disclosure(&org, noon("2025-03-11"), "Yellowhorse Wanda"),
        ],
    )
    .await;
    let page = b.get(&report(&org, "from=2025-03-01&to=2025-03-31")).await;
    assert_eq!(page.status, StatusCode::OK);
    let csv = b
        .get(&export(
            &org,
            "from=2025-03-01&to=2025-03-31&patient=zabriskie",
        ))
        .await;
    assert_eq!(csv.status, StatusCode::OK);

    let rows: Vec<(String, String, String, String, Option<i64>)> = sqlx::query_as(
        "select actor, action, object, detail, org_id from audit_log
         where action like 'disclosures.%' order by id",
    )
    .fetch_all(&app.state.db.pool)
    .await
    .unwrap();
    let object = format!("org:{}", org.id);
    assert_eq!(
        rows,
        [
            (
                "boss@lakeside.test".to_owned(),
                "disclosures.view".to_owned(),
                object.clone(),
                "2025-03-01 to 2025-03-31; 2 rows".to_owned(),
                Some(org.id)
            ),
            (
                "boss@lakeside.test".to_owned(),
                "disclosures.export".to_owned(),
                object,
                "2025-03-01 to 2025-03-31, filtered by patient; 1 row".to_owned(),
                Some(org.id)
            ),
        ]
    );
    let everything: Vec<String> = sqlx::query_scalar("select detail from audit_log")
        .fetch_all(&app.state.db.pool)
        .await
        .unwrap();
    assert!(
        everything
            .iter()
            .all(|d| !d.to_lowercase().contains("zabriskie") && !d.contains("Yellowhorse")),
        "no patient in the audit log: {everything:?}"
    );
}
