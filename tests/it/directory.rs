//! The provider directory: search tolerance and ranking, NPI check digits, CSV and
//! FHIR imports (dry run, all or nothing, re-import), exports, hosted mailboxes,
//! address books and organization contacts kept apart, the CLI, and the scheduled
//! refresh from a URL on loopback.

use std::sync::{Arc, Mutex};

use directmail::audit::Actor;
use directmail::directory::{self, EntryInput, Scope, Viewer};
use directmail::domain::Role;
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::Value;

use crate::cli::{directmail, json};
use crate::helpers::{Browser, Page, TestApp};

pub(crate) const HEADER: &str =
    "kind,name,organization,npi,specialties,city,state,zip,phone,direct_addresses";

/// A CSV with three good rows.
fn good_csv() -> String {
    format!(
        "{HEADER}\n\
         practitioner,José Müller-Smith,Lakeside Cardiology,1234567893,207RC0000X Cardiovascular Disease,Springfield,IL,62701,(217) 555-0100,jose.muller@direct.lakeside.test\n\
         practitioner,Anna Lee,Hillside Family Practice,1000000004,207Q00000X Family Medicine,Peoria,IL,61602,,anna.lee@direct.hillside.test\n\
         service,Hillside Lab,Hillside Family Practice,,,Peoria,IL,61602,,lab@direct.hillside.test; results@direct.hillside.test\n"
    )
}

async fn operator(app: &TestApp) -> Browser {
    app.user(None, "op@hisp.test", Role::Operator).await;
    app.signed_in("op@hisp.test").await
}

async fn entry_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from directory_entries where mailbox_id is null")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap()
}

/// Posts a file to the import page; the preview page comes back.
async fn upload(b: &mut Browser, name: &str, bytes: Vec<u8>) -> Page {
    let form = Form::new()
        .text("_csrf", b.csrf.clone())
        .part("file", Part::bytes(bytes).file_name(name.to_owned()));
    let r = b
        .client
        .post(format!("{}/directory/import", b.base))
        .multipart(form)
        .send()
        .await
        .unwrap();
    Page {
        status: r.status(),
        headers: r.headers().clone(),
        body: r.text().await.unwrap(),
    }
}

/// The upload id in a preview page's confirmation form.
fn apply_path(preview: &Page) -> String {
    let re = regex::Regex::new(r#"action="(/directory/import/\d+/apply)""#).unwrap();
    re.captures(&preview.body).expect("a confirm form")[1].to_owned()
}

async fn import_through_the_page(app: &TestApp, b: &mut Browser, name: &str, csv: &str) {
    b.get("/directory/import").await;
    let preview = upload(b, name, csv.as_bytes().to_vec()).await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
    let applied = b.post(&apply_path(&preview), &[]).await;
    assert_eq!(applied.status, StatusCode::SEE_OTHER, "{}", applied.body);
    assert!(entry_count(app).await > 0);
}

/// `directmail admin directory import FILE --json`, which must succeed.
pub(crate) async fn cli_import(app: &TestApp, file: &std::path::Path) -> Value {
    json(
        &directmail(
            app,
            &[
                "admin",
                "directory",
                "import",
                file.to_str().unwrap(),
                "--json",
            ],
        )
        .await,
    )
}

async fn suggest(b: &mut Browser, q: &str) -> Vec<Value> {
    let r = b
        .client
        .get(format!("{}/directory/suggest", b.base))
        .query(&[("q", q)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json::<Vec<Value>>().await.unwrap()
}

fn names(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn search_ignores_case_accents_and_word_order_and_ranks_names_first() {
    let app = TestApp::spawn().await;
    let mut op = operator(&app).await;
    let csv = format!(
        "{}practitioner,Lee Brown,Clinic of Anna Lee Smith,1111111112,,Chicago,IL,60601,,lee.brown@direct.other.test\n\
         practitioner,Annabel Leeds,,,,Chicago,IL,60601,,annabel@direct.other.test\n",
        good_csv()
    );
    import_through_the_page(&app, &mut op, "people.csv", &csv).await;
    let org = app.org("Viewer Clinic", "direct.viewer.test").await;
    app.user(Some(&org), "member@viewer.test", Role::Member)
        .await;
    let mut member = app.signed_in("member@viewer.test").await;

    for q in [
        "jose",
        "JOSÉ",
        "muller",
        "Müller smith",
        "smith jose",
        "MULLER-SMITH",
    ] {
        let found = suggest(&mut member, q).await;
        assert_eq!(
            names(&found),
            vec!["José Müller-Smith"],
            "query {q:?} finds the entry"
        );
    }
    let first = &suggest(&mut member, "jose").await[0];
    assert_eq!(first["address"], "jose.muller@direct.lakeside.test");
    assert_eq!(
        first["detail"],
        "Lakeside Cardiology \u{b7} Cardiovascular Disease \u{b7} Springfield, IL"
    );
    assert_eq!(first["has_certificate"], false);

    // the exact name in any order first, then names starting with the words, then
    // matches elsewhere (Lee Brown's organization)
    let ranked = names(&suggest(&mut member, "lee anna").await);
    assert_eq!(ranked, vec!["Anna Lee", "Annabel Leeds", "Lee Brown"]);

    // the search page, by specialty, place and NPI
    let page = member.get("/directory?specialty=cardio").await;
    assert!(page.body.contains("José Müller-Smith"));
    assert!(!page.body.contains("Anna Lee"));
    let page = member.get("/directory?place=peoria").await;
    assert!(page.body.contains("Anna Lee") && page.body.contains("Hillside Lab"));
    assert!(!page.body.contains("Müller"));
    let page = member.get("/directory?q=1000000004").await;
    assert!(page.body.contains("Anna Lee") && !page.body.contains("Hillside Lab"));
    let page = member.get("/directory?q=hillside+family").await;
    assert!(page.body.contains("Anna Lee") && page.body.contains("Hillside Lab"));
    // htmx gets the results alone
    let partial = member
        .client
        .get(format!("{}/directory?q=anna", member.base))
        .header("hx-request", "true")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(partial.contains("directory-list") && !partial.contains("<html"));
}

#[tokio::test]
async fn a_csv_dry_run_lists_every_wrong_row_and_imports_nothing() {
    let app = TestApp::spawn().await;
    let mut op = operator(&app).await;
    op.get("/directory/import").await;
    let bad = format!(
        "{}practitioner,Bad Npi,,1234567890,,,,,,bad.npi@direct.x.test\n\
         practitioner,Bad Address,,,,,,,,not-an-address\n\
         practitioner,Bad Place,,,,Springfield,Illinois,6270,,place@direct.x.test\n\
         practitioner,Too,Many,Cells,,,,,,,,x@direct.x.test\n\
         practitioner,Twice,,,,,,,,anna.lee@direct.hillside.test\n",
        good_csv()
    );
    let preview = upload(&mut op, "bad.csv", bad.into_bytes()).await;
    assert_eq!(preview.status, StatusCode::UNPROCESSABLE_ENTITY);
    let errors = preview.by_id("row-errors").is_some();
    assert!(errors, "{}", preview.body);
    for expected in [
        "<td>5</td>",
        "fails its check digit",
        "<td>6</td>",
        "not a valid address",
        "<td>7</td>",
        "not a US state",
        "not a ZIP code",
        "<td>8</td>",
        "It has 12 cells but the header names 10 columns.",
        "<td>9</td>",
        "It describes the same entry as row 3",
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
    assert_eq!(entry_count(&app).await, 0, "a dry run changes nothing");

    // a good file: the preview says what will change, then it is applied whole
    let preview = upload(&mut op, "good.csv", good_csv().into_bytes()).await;
    assert_eq!(preview.status, StatusCode::OK);
    assert!(
        preview
            .by_id("summary")
            .unwrap()
            .contains("3 new entries, 0 to update"),
        "{}",
        preview.body
    );
    assert_eq!(entry_count(&app).await, 0, "nothing before confirmation");
    let done = op.post(&apply_path(&preview), &[]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert_eq!(entry_count(&app).await, 3);
    let audit: i64 =
        sqlx::query_scalar("select count(*) from audit_log where action = 'directory.import'")
            .fetch_one(&app.state.db.pool)
            .await
            .unwrap();
    assert_eq!(audit, 1);
}

#[tokio::test]
async fn files_that_are_not_the_directory_are_refused_whole_with_a_reason() {
    let app = TestApp::spawn().await;
    let mut op = operator(&app).await;
    op.get("/directory/import").await;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "columns.csv",
            b"name,email\nAnna,anna@x.test\n".to_vec(),
            "The column \u{201c}email\u{201d} is not one the directory knows",
        ),
        (
            "latin1.csv",
            b"name,direct_addresses\nJos\xe9,jose@direct.x.test\n".to_vec(),
            "not UTF-8 text",
        ),
        (
            "broken.json",
            b"{\"resourceType\": \"Bundle\", ".to_vec(),
            "not valid JSON",
        ),
        (
            "patient.json",
            br#"{"resourceType": "Patient", "id": "p1"}"#.to_vec(),
            "is a FHIR Patient, not a Bundle",
        ),
    ];
    for (name, bytes, expected) in cases {
        let page = upload(&mut op, name, bytes).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{name}");
        let shown = page.by_id("import-error").unwrap_or_default();
        assert!(shown.contains(expected), "{name}: {shown}");
    }
    // more than the page accepts: refused by the upload limit, nothing saved
    let page = upload(&mut op, "huge.csv", vec![b'a'; 2 * 1024 * 1024]).await;
    assert_eq!(page.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(entry_count(&app).await, 0);
}

#[tokio::test]
async fn re_importing_updates_entries_instead_of_duplicating_them() {
    let app = TestApp::spawn().await;
    let mut op = operator(&app).await;
    import_through_the_page(&app, &mut op, "v1.csv", &good_csv()).await;
    let ids: Vec<i64> = sqlx::query_scalar("select id from directory_entries order by id")
        .fetch_all(&app.state.db.pool)
        .await
        .unwrap();
    // same NPIs (and, for the lab, the same address) with changed details
    let v2 = good_csv()
        .replace("(217) 555-0100", "(217) 555-0199")
        .replace("Hillside Lab,", "Hillside Laboratory,");
    op.get("/directory/import").await;
    let preview = upload(&mut op, "v2.csv", v2.into_bytes()).await;
    assert!(
        preview
            .by_id("summary")
            .unwrap()
            .contains("0 new entries, 3 to update"),
        "{}",
        preview.body
    );
    op.post(&apply_path(&preview), &[]).await;
    let after: Vec<i64> = sqlx::query_scalar("select id from directory_entries order by id")
        .fetch_all(&app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(ids, after);
    let viewer = Viewer {
        user_id: 0,
        org_id: None,
    };
    let found = directory::suggest(&app.state.db, &viewer, "laboratory", 5)
        .await
        .unwrap();
    assert_eq!(found.len(), 2, "both of the lab's addresses");
    let phone: String =
        sqlx::query_scalar("select phone from directory_entries where npi = '1234567893'")
            .fetch_one(&app.state.db.pool)
            .await
            .unwrap();
    assert_eq!(phone, "(217) 555-0199");
}

/// A national-directory-shaped bundle: a practitioner with a role at an organization,
/// the organization itself, each with a Direct endpoint, and a practitioner without one.
fn bundle(cert_b64: Option<&str>) -> String {
    let ext = cert_b64
        .map(|c| {
            format!(
                r#","extension":[{{"url":"http://hl7.org/fhir/us/ndh/StructureDefinition/base-ext-secureExchangeArtifacts","extension":[{{"url":"certificate","valueBase64Binary":"{c}"}}]}}]"#
            )
        })
        .unwrap_or_default();
    format!(
        r#"{{"resourceType":"Bundle","type":"collection","entry":[
  {{"fullUrl":"https://ndh.example/fhir/Practitioner/p1","resource":{{"resourceType":"Practitioner","id":"p1",
    "identifier":[{{"system":"http://hl7.org/fhir/sid/us-npi","value":"1222222220"}}],
    "name":[{{"family":"Ortiz","given":["María"],"prefix":["Dr."]}}],
    "address":[{{"line":["1 Main St"],"city":"Evanston","state":"IL","postalCode":"60201"}}]}}}},
  {{"resource":{{"resourceType":"Practitioner","id":"p2","name":[{{"text":"No Endpoint"}}]}}}},
  {{"resource":{{"resourceType":"Organization","id":"o1","name":"Northshore Pediatrics",
    "identifier":[{{"system":"http://hl7.org/fhir/sid/us-npi","value":"1333333338"}}],
    "endpoint":[{{"reference":"Endpoint/e2"}}]}}}},
  {{"resource":{{"resourceType":"PractitionerRole","id":"r1",
    "practitioner":{{"reference":"Practitioner/p1"}},"organization":{{"reference":"Organization/o1"}},
    "specialty":[{{"coding":[{{"system":"http://nucc.org/provider-taxonomy","code":"208000000X","display":"Pediatrics"}}]}}],
    "endpoint":[{{"reference":"Endpoint/e1"}}]}}}},
  {{"resource":{{"resourceType":"Endpoint","id":"e1","status":"active",
    "connectionType":{{"system":"http://terminology.hl7.org/CodeSystem/endpoint-connection-type","code":"direct-project"}},
    "payloadType":[{{"text":"Direct"}}],"address":"mailto:maria.ortiz@direct.northshore.test"{ext}}}}},
  {{"resource":{{"resourceType":"Endpoint","id":"e2","status":"active",
    "connectionType":{{"system":"http://terminology.hl7.org/CodeSystem/endpoint-connection-type","code":"direct-project"}},
    "payloadType":[{{"text":"Direct"}}],"address":"mailto:frontdesk@direct.northshore.test"}}}}
]}}"#
    )
}

/// A development-CA certificate for an address on another HISP, as base64 DER and PEM.
async fn foreign_certificate(app: &TestApp, address: &str) -> (String, String) {
    use base64::Engine as _;
    let ca = directmail::pki::dev_ca(&app.state.db, &app.state.secret, app.now())
        .await
        .unwrap();
    let id = ca
        .issue_address(address, std::time::SystemTime::now())
        .unwrap();
    let der = der::Encode::to_der(id.certificate()).unwrap();
    let pem = der::EncodePem::to_pem(id.certificate(), der::pem::LineEnding::LF).unwrap();
    (base64::engine::general_purpose::STANDARD.encode(der), pem)
}

#[tokio::test]
async fn a_fhir_bundle_imports_exports_and_imports_again_unchanged() {
    let app = TestApp::spawn().await;
    let (cert, _) = foreign_certificate(&app, "maria.ortiz@direct.northshore.test").await;
    let file = app.data_dir.path().join("ndh.json");
    std::fs::write(&file, bundle(Some(&cert))).unwrap();
    let out = cli_import(&app, &file).await;
    assert_eq!(out["format"], "Fhir");
    assert_eq!(out["added"], 2);
    assert_eq!(
        out["skipped"], 1,
        "the practitioner without a Direct endpoint"
    );
    let viewer = Viewer {
        user_id: 0,
        org_id: None,
    };
    let maria = directory::suggest(&app.state.db, &viewer, "maria ortiz", 5)
        .await
        .unwrap();
    assert_eq!(maria[0].name, "Dr. María Ortiz");
    assert_eq!(
        maria[0].detail,
        "Northshore Pediatrics \u{b7} Pediatrics \u{b7} Evanston, IL"
    );
    assert!(maria[0].has_certificate);
    let der = directory::certificate_for(&app.state.db, "maria.ortiz@direct.northshore.test")
        .await
        .unwrap()
        .expect("the imported certificate");
    use base64::Engine as _;
    assert_eq!(base64::engine::general_purpose::STANDARD.encode(der), cert);

    // export, then import the export: nothing new, both updated
    let exported = directmail(&app, &["admin", "directory", "export", "--format", "fhir"]).await;
    assert!(exported.status.success());
    let bundle: Value = serde_json::from_slice(&exported.stdout).unwrap();
    assert_eq!(bundle["resourceType"], "Bundle");
    let kinds: Vec<&str> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["resourceType"].as_str().unwrap())
        .collect();
    for k in [
        "Practitioner",
        "PractitionerRole",
        "Organization",
        "Endpoint",
    ] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    let endpoint = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"]["address"] == "mailto:maria.ortiz@direct.northshore.test")
        .unwrap();
    assert_eq!(
        endpoint["resource"]["connectionType"]["code"],
        "direct-project"
    );
    let again = app.data_dir.path().join("export.json");
    std::fs::write(&again, &exported.stdout).unwrap();
    let out = cli_import(&app, &again).await;
    assert_eq!(
        (out["added"].as_i64(), out["updated"].as_i64()),
        (Some(0), Some(2))
    );

    // into another portal, the export gives the same entries
    let other = TestApp::spawn().await;
    let out = cli_import(&other, &again).await;
    assert_eq!(out["added"], 2);
    let copy = directory::suggest(&other.state.db, &viewer, "ortiz", 5)
        .await
        .unwrap();
    assert_eq!(copy, maria);
}

#[tokio::test]
async fn hosted_mailboxes_are_listed_until_their_administrator_unlists_them() {
    let app = TestApp::spawn().await;
    let mailbox = app
        .practice(
            "Lakeside Clinic",
            "direct.lakeside.test",
            "nurse@lakeside.test",
            "dr.ruiz@direct.lakeside.test",
        )
        .await;
    let org_id = mailbox.org_id;
    let boss = app
        .user(
            Some(
                &directmail::store::orgs::get(&app.state.db, org_id)
                    .await
                    .unwrap()
                    .unwrap(),
            ),
            "boss@lakeside.test",
            Role::OrgAdmin,
        )
        .await;
    let other = app.org("Far Clinic", "direct.far.test").await;
    app.user(Some(&other), "far@far.test", Role::Member).await;
    let mut far = app.signed_in("far@far.test").await;
    let name_of = async |address: &str| {
        directory::names_for(&app.state.db, &[address])
            .await
            .unwrap()
            .get(&address.to_ascii_lowercase())
            .cloned()
    };
    // a list page's names bring the directory up to date themselves, before any search
    assert_eq!(
        name_of("Dr.Ruiz@direct.lakeside.test").await,
        Some("Desk".to_owned())
    );

    let found = suggest(&mut far, "desk").await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["address"], "dr.ruiz@direct.lakeside.test");
    assert_eq!(found[0]["detail"], "Lakeside Clinic");
    assert_eq!(
        found[0]["has_certificate"], true,
        "the domain's own certificate"
    );

    // a member of another organization cannot unlist it; its administrator can
    let refused = far
        .post(
            &format!("/directory/mailboxes/{}/listing", mailbox.id),
            &[("listed", "0")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);
    let mut boss_b = app.signed_in(&boss.email).await;
    let page = boss_b.get(&format!("/directory/orgs/{org_id}")).await;
    assert!(page.body.contains("dr.ruiz@direct.lakeside.test"));
    let done = boss_b
        .post(
            &format!("/directory/mailboxes/{}/listing", mailbox.id),
            &[("listed", "0")],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert_eq!(name_of("dr.ruiz@direct.lakeside.test").await, None);
    assert!(suggest(&mut far, "desk").await.is_empty());
    // listed again from the command line
    json(
        &directmail(
            &app,
            &[
                "admin",
                "directory",
                "listing",
                "dr.ruiz@direct.lakeside.test",
                "--listed",
                "true",
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(suggest(&mut far, "desk").await.len(), 1);
    // an import cannot take over a hosted address
    let csv = format!("{HEADER}\npractitioner,Impostor,,,,,,,,dr.ruiz@direct.lakeside.test\n");
    let file = app.data_dir.path().join("impostor.csv");
    std::fs::write(&file, csv).unwrap();
    let out = directmail(
        &app,
        &["admin", "directory", "import", file.to_str().unwrap()],
    )
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a mailbox hosted here"));
}

#[tokio::test]
async fn an_address_book_is_private_to_its_owner_even_by_url() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    app.user(Some(&org), "ana@lakeside.test", Role::Member)
        .await;
    app.user(Some(&org), "ben@lakeside.test", Role::OrgAdmin)
        .await;
    app.user(None, "op@hisp.test", Role::Operator).await;
    let mut ana = app.signed_in("ana@lakeside.test").await;
    ana.get("/directory/address-book").await;
    // the webmail's "add sender" form, with a way back
    let added = ana
        .post(
            "/directory/address-book",
            &[
                ("address", "Cousin.Vinny@direct.far.test"),
                ("name", "Vinny Gambini"),
                ("next", "/mail"),
            ],
        )
        .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER);
    assert_eq!(added.location(), "/mail");
    // htmx gets a fragment; adding again renames
    let again = ana
        .client
        .post(format!("{}/directory/address-book", ana.base))
        .header("hx-request", "true")
        .header("x-csrf-token", ana.csrf.clone())
        .form(&[
            ("address", "cousin.vinny@direct.far.test"),
            ("name", "Vincent Gambini"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert!(
        again
            .text()
            .await
            .unwrap()
            .contains("already in your address book")
    );
    // without the CSRF token nothing is added
    let forged = ana
        .post_raw(
            "/directory/address-book",
            crate::helpers::serde_urlencode(&[("address", "forged@direct.far.test")]),
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    let found = suggest(&mut ana, "vinc").await;
    assert_eq!(names(&found), vec!["Vincent Gambini"]);
    let id: i64 = sqlx::query_scalar("select id from directory_entries where scope = 'personal'")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    for who in ["ben@lakeside.test", "op@hisp.test"] {
        let mut other = app.signed_in(who).await;
        assert!(suggest(&mut other, "vinny").await.is_empty(), "{who}");
        assert!(
            !other
                .get("/directory?q=gambini")
                .await
                .body
                .contains("Gambini")
        );
        assert_eq!(
            other.get(&format!("/directory/entries/{id}")).await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            other
                .get(&format!("/directory/entries/{id}/edit"))
                .await
                .status,
            StatusCode::NOT_FOUND
        );
        let edit = other
            .post(
                &format!("/directory/entries/{id}/edit"),
                &[
                    ("name", "Hacked"),
                    ("addresses", "cousin.vinny@direct.far.test"),
                ],
            )
            .await;
        assert_eq!(edit.status, StatusCode::NOT_FOUND, "{who}");
        let delete = other
            .post(&format!("/directory/entries/{id}/delete"), &[])
            .await;
        assert_eq!(delete.status, StatusCode::NOT_FOUND, "{who}");
    }
    assert_eq!(
        names(&suggest(&mut ana, "gambini").await),
        vec!["Vincent Gambini"]
    );
    // and private names never leak into the message list
    assert_eq!(
        directory::names_for(&app.state.db, &["cousin.vinny@direct.far.test"])
            .await
            .unwrap()
            .get("cousin.vinny@direct.far.test")
            .cloned(),
        None
    );
}

#[tokio::test]
async fn organization_contacts_are_seen_by_its_users_and_edited_by_its_administrator() {
    let app = TestApp::spawn().await;
    let lake = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    let hill = app.org("Hillside Care", "direct.hillside.test").await;
    app.user(Some(&lake), "boss@lakeside.test", Role::OrgAdmin)
        .await;
    app.user(Some(&lake), "ana@lakeside.test", Role::Member)
        .await;
    app.user(Some(&hill), "hal@hillside.test", Role::OrgAdmin)
        .await;
    let mut boss = app.signed_in("boss@lakeside.test").await;
    boss.get(&format!("/directory/entries/new?scope=org&org={}", lake.id))
        .await;
    let created = boss
        .post(
            "/directory/entries",
            &[
                ("scope", "org"),
                ("org", &lake.id.to_string()),
                ("kind", "service"),
                ("name", "County Referral Desk"),
                ("addresses", "referrals@direct.county.test"),
                ("npi", ""),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    let path = created.location();
    // a bad NPI is refused with the reason, nothing saved
    let bad = boss
        .post(
            "/directory/entries",
            &[
                ("scope", "org"),
                ("org", &lake.id.to_string()),
                ("name", "X"),
                ("addresses", "x@direct.county.test"),
                ("npi", "1234567890"),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.by_id("form-errors").is_some());
    assert!(
        bad.body
            .contains("The NPI 1234567890 fails its check digit")
    );

    let mut ana = app.signed_in("ana@lakeside.test").await;
    assert_eq!(
        names(&suggest(&mut ana, "referral").await),
        vec!["County Referral Desk"]
    );
    assert_eq!(ana.get(&path).await.status, StatusCode::OK);
    let edit = ana
        .post(
            &format!("{path}/edit"),
            &[
                ("name", "Mine now"),
                ("addresses", "referrals@direct.county.test"),
            ],
        )
        .await;
    assert_eq!(edit.status, StatusCode::FORBIDDEN);
    let adding = ana
        .post(
            "/directory/entries",
            &[
                ("scope", "org"),
                ("name", "Y"),
                ("addresses", "y@direct.county.test"),
            ],
        )
        .await;
    assert_eq!(adding.status, StatusCode::FORBIDDEN);

    let mut hal = app.signed_in("hal@hillside.test").await;
    assert!(suggest(&mut hal, "referral").await.is_empty());
    assert_eq!(hal.get(&path).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        hal.get(&format!("/directory/orgs/{}", lake.id))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let edit = hal
        .post(
            &format!("{path}/edit"),
            &[
                ("name", "Hijacked"),
                ("addresses", "referrals@direct.county.test"),
            ],
        )
        .await;
    assert_eq!(edit.status, StatusCode::NOT_FOUND);

    let changed = boss
        .post(
            &format!("{path}/edit"),
            &[
                ("kind", "service"),
                ("name", "County Referrals"),
                ("addresses", "referrals@direct.county.test"),
            ],
        )
        .await;
    assert_eq!(changed.status, StatusCode::SEE_OTHER, "{}", changed.body);
    assert_eq!(
        names(&suggest(&mut ana, "referral").await),
        vec!["County Referrals"]
    );
    let actions: Vec<String> = sqlx::query_scalar(
        "select action from audit_log where action like 'directory.%' and org_id = $1 order by id",
    )
    .bind(lake.id)
    .fetch_all(&app.state.db.pool)
    .await
    .unwrap();
    assert_eq!(actions, vec!["directory.create", "directory.update"]);
}

#[tokio::test]
async fn the_cli_imports_with_a_dry_run_refuses_wrong_files_whole_and_attaches_certificates() {
    let app = TestApp::spawn().await;
    let dir = app.data_dir.path();
    let good = dir.join("good.csv");
    std::fs::write(&good, good_csv()).unwrap();
    let dry = directmail(
        &app,
        &[
            "admin",
            "directory",
            "import",
            good.to_str().unwrap(),
            "--dry-run",
        ],
    )
    .await;
    assert!(dry.status.success());
    assert!(String::from_utf8_lossy(&dry.stdout).contains("would add 3"));
    assert_eq!(entry_count(&app).await, 0);

    let bad = dir.join("bad.csv");
    std::fs::write(
        &bad,
        format!(
            "{}practitioner,Bad,,1234567890,,,,,,bad@direct.x.test\n",
            good_csv()
        ),
    )
    .unwrap();
    let out = directmail(
        &app,
        &["admin", "directory", "import", bad.to_str().unwrap()],
    )
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("row 5: The NPI 1234567890 fails its check digit"),
        "{stderr}"
    );
    assert!(stderr.contains("Nothing was imported"), "{stderr}");
    assert_eq!(
        entry_count(&app).await,
        0,
        "the good rows were not imported either"
    );

    let huge = dir.join("huge.csv");
    std::fs::write(&huge, vec![b'a'; directory::MAX_IMPORT_BYTES + 1]).unwrap();
    let out = directmail(
        &app,
        &["admin", "directory", "import", huge.to_str().unwrap()],
    )
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at most 32 MB"));

    let out = cli_import(&app, &good).await;
    assert_eq!(out["added"], 3);
    assert_eq!(out["applied"], true);

    // a certificate attached by hand, then used ahead of discovery
    let (_, pem) = foreign_certificate(&app, "anna.lee@direct.hillside.test").await;
    let cert = dir.join("anna.pem");
    std::fs::write(&cert, &pem).unwrap();
    let wrong = directmail(
        &app,
        &[
            "admin",
            "directory",
            "cert",
            "lab@direct.hillside.test",
            cert.to_str().unwrap(),
        ],
    )
    .await;
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("is not for lab@direct.hillside.test"));
    let missing = directmail(
        &app,
        &[
            "admin",
            "directory",
            "cert",
            "nobody@direct.hillside.test",
            cert.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("No entry of the shared directory has the address")
    );
    let out = json(
        &directmail(
            &app,
            &[
                "admin",
                "directory",
                "cert",
                "anna.lee@direct.hillside.test",
                cert.to_str().unwrap(),
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(out["address"], "anna.lee@direct.hillside.test");
    let der = directory::certificate_for(&app.state.db, "anna.lee@direct.hillside.test")
        .await
        .unwrap()
        .unwrap();
    let parsed = directmail_smime::parse_certificates(pem.as_bytes()).unwrap();
    assert_eq!(der, der::Encode::to_der(&parsed[0]).unwrap());
    assert_eq!(
        directory::certificate_for(&app.state.db, "lab@direct.hillside.test")
            .await
            .unwrap(),
        None
    );
    // the entry page shows it to operators, with the form to replace it
    let mut op = operator(&app).await;
    let id: i64 = sqlx::query_scalar(
        "select entry_id from directory_addresses where address = 'anna.lee@direct.hillside.test'",
    )
    .fetch_one(&app.state.db.pool)
    .await
    .unwrap();
    let page = op.get(&format!("/directory/entries/{id}")).await;
    assert!(page.body.contains("valid until"), "{}", page.body);
    assert!(page.body.contains("Attach a certificate"));
}

#[tokio::test]
async fn the_csv_export_cannot_run_formulas_and_imports_back() {
    let app = TestApp::spawn().await;
    let input = EntryInput {
        name: "=HYPERLINK(\"http://evil.test\",\"Click\")".into(),
        organization: "@SUM(A1:A9)".into(),
        phone: "+1 312 555 0100".into(),
        addresses: vec!["formula@direct.x.test".into()],
        ..EntryInput::default()
    };
    let data = input.validate(app.now()).unwrap();
    directory::create(
        &app.state.db,
        &Actor::system(),
        Scope::Public,
        &data,
        app.now(),
    )
    .await
    .unwrap();
    let op = operator(&app).await;
    let r = op
        .client
        .get(format!("{}/directory/export.csv", op.base))
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
    let body = r.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let row = reader.records().next().unwrap().unwrap();
    for cell in row.iter() {
        assert!(
            !cell.starts_with(['=', '+', '-', '@']),
            "unsafe cell {cell:?}"
        );
    }
    assert_eq!(&row[1], "'=HYPERLINK(\"http://evil.test\",\"Click\")");
    assert_eq!(&row[9], "'+1 312 555 0100");
    // members may not export the directory
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    app.user(Some(&org), "ana@lakeside.test", Role::Member)
        .await;
    let mut ana = app.signed_in("ana@lakeside.test").await;
    assert_eq!(
        ana.get("/directory/export.csv").await.status,
        StatusCode::FORBIDDEN
    );
    // the export imports back as the same entry
    let file = app.data_dir.path().join("export.csv");
    std::fs::write(&file, &body).unwrap();
    let out = cli_import(&app, &file).await;
    assert_eq!(
        (out["added"].as_i64(), out["updated"].as_i64()),
        (Some(0), Some(1))
    );
    let name: String = sqlx::query_scalar("select name from directory_entries")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(name, "=HYPERLINK(\"http://evil.test\",\"Click\")");
}

/// A loopback HTTPS server answering every request with the current (status, body)
/// (directory sources are fetched over HTTPS only; every test portal trusts it).
async fn serve(content: Arc<Mutex<(u16, String)>>) -> String {
    let app = axum::Router::new().fallback(move || {
        let content = content.clone();
        async move {
            let (status, body) = content.lock().unwrap().clone();
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                [(axum::http::header::CONTENT_TYPE, "text/csv")],
                body,
            )
        }
    });
    let port = crate::helpers::serve_https(app).await;
    format!("https://127.0.0.1:{port}/directory.csv")
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..120 {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn the_directory_refreshes_from_a_url_and_keeps_its_entries_when_a_refresh_fails() {
    let content = Arc::new(Mutex::new((200, good_csv())));
    let url = serve(content.clone()).await;
    let app = TestApp::spawn_with(|c| {
        c.directory_sources = vec![url.parse().unwrap()];
        c.directory_refresh_minutes = 1;
    })
    .await;
    wait_for("the first refresh", async || entry_count(&app).await == 3).await;
    let source: String = sqlx::query_scalar(
        "select distinct source from directory_entries where mailbox_id is null",
    )
    .fetch_one(&app.state.db.pool)
    .await
    .unwrap();
    assert_eq!(source, format!("import:{url}"));

    // the source drops a row and changes another: the next refresh follows it
    *content.lock().unwrap() = (
        200,
        good_csv()
            .replace("Hillside Lab", "Hillside Laboratory")
            .lines()
            .take(3)
            .collect::<Vec<_>>()
            .join("\n"),
    );
    app.state.clock.advance(61);
    wait_for("the second refresh", async || entry_count(&app).await == 2).await;

    // a broken file, then a server error: nothing changes, the problem is recorded
    *content.lock().unwrap() = (
        200,
        format!("{HEADER}\npractitioner,Bad,,1234567890,,,,,,b@direct.x.test\n"),
    );
    app.state.clock.advance(61);
    let last_error = async || -> Option<String> {
        sqlx::query_scalar("select last_error from directory_sources")
            .fetch_one(&app.state.db.pool)
            .await
            .unwrap()
    };
    wait_for("the failed refresh", async || last_error().await.is_some()).await;
    assert!(
        last_error()
            .await
            .unwrap()
            .contains("fails its check digit")
    );
    assert_eq!(entry_count(&app).await, 2);
    *content.lock().unwrap() = (500, "down".into());
    app.state.clock.advance(61);
    wait_for("the refused refresh", async || {
        last_error().await.is_some_and(|e| e.contains("500"))
    })
    .await;
    assert_eq!(entry_count(&app).await, 2, "the previous entries are kept");
    let mut op = operator(&app).await;
    let page = op.get("/directory/import").await;
    assert!(page.by_id("source-list").is_some());
    assert!(page.body.contains("500"));
}

#[tokio::test]
async fn a_broad_search_still_offers_the_users_own_contacts_and_pages_the_rest() {
    let app = TestApp::spawn().await;
    let mut csv = format!("{HEADER}\n");
    let count = directmail::store::directory::CANDIDATES + 50;
    for n in 0..count {
        csv.push_str(&format!(
            "practitioner,Marlow Public {n},,,,,,,,marlow{n}@direct.public.test\n"
        ));
    }
    let options = directory::import::Options {
        scope: Scope::Public,
        source: "import:many.csv".into(),
        dry_run: false,
        prune: false,
    };
    let outcome = directory::import::run(
        &app.state.db,
        &Actor::system(),
        csv.as_bytes(),
        &options,
        app.now(),
    )
    .await
    .unwrap();
    assert_eq!(outcome.added as i64, count);
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    app.user(Some(&org), "ana@lakeside.test", Role::Member)
        .await;
    let mut ana = app.signed_in("ana@lakeside.test").await;
    ana.get("/directory/address-book").await;
    ana.post(
        "/directory/address-book",
        &[("address", "zed@direct.far.test"), ("name", "Marzipan Zed")],
    )
    .await;
    // her own entry sorts after every Marlow, and was added last of all
    let found = names(&suggest(&mut ana, "mar").await);
    assert!(found.contains(&"Marzipan Zed".to_owned()), "{found:?}");
    let page = ana.get("/directory?q=mar").await;
    assert!(page.body.contains("rel=\"next\""));
    let next = ana.get("/directory?q=mar&specialty=&place=&page=2").await;
    assert_eq!(next.status, StatusCode::OK);
    assert!(next.body.contains("Marlow Public"));
}

/// Word prefixes longer than PostgreSQL's index keeps (eight letters) still match
/// whole; names filling a page keep the matches elsewhere after them, on the next.
#[tokio::test]
async fn long_words_match_whole_and_names_come_before_matches_elsewhere_on_every_page() {
    use directmail::store::directory::{Query, search};
    let app = TestApp::spawn().await;
    let mut csv = format!("{HEADER}\n");
    for n in 0..30 {
        csv.push_str(&format!(
            "practitioner,Wespermann {n},,,,,,,,w{n}@direct.names.test\n"
        ));
    }
    csv.push_str(
        "organization,Wesperburg Clinic,,,,,,,,clinic@direct.wesperburg.test\n\
         practitioner,Ana Wesley,Wesperburg Clinic,,,,,,,ana@direct.wesley.test\n\
         practitioner,Bo Lind,Wesperburg Clinic,,,,,,,bo@direct.lind.test\n",
    );
    let options = directory::import::Options {
        scope: Scope::Public,
        source: "import:wesper.csv".into(),
        dry_run: false,
        prune: false,
    };
    directory::import::run(
        &app.state.db,
        &Actor::system(),
        csv.as_bytes(),
        &options,
        app.now(),
    )
    .await
    .unwrap();
    let viewer = Viewer {
        user_id: 0,
        org_id: None,
    };
    let db = &app.state.db;
    let find = |text: &'static str, offset: i64| async move {
        let q = Query {
            text: text.into(),
            ..Query::default()
        };
        search(db, &viewer, &q, 26, offset)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect::<Vec<_>>()
    };
    let all_of = |text: &'static str| async move {
        let mut names = find(text, 0).await;
        names.extend(find(text, 26).await);
        names
    };

    // longer than eight letters: the whole word counts, not its first eight
    let mann = all_of("wespermann").await;
    assert_eq!(mann.len(), 30, "{mann:?}");
    assert!(
        mann.iter().all(|n| n.starts_with("Wespermann ")),
        "{mann:?}"
    );
    assert_eq!(all_of("WESPERM").await.len(), 30);
    let burg = all_of("wesperburg").await;
    assert_eq!(burg, ["Wesperburg Clinic", "Ana Wesley", "Bo Lind"]);
    assert_eq!(all_of("ana wesperburg").await, ["Ana Wesley"]);
    assert!(all_of("wespermanns").await.is_empty());

    // 31 names start with "wesper": the first page is names only, the second the
    // last five names, then the entries of the Wesperburg Clinic (by name)
    let first = find("wesper", 0).await;
    assert_eq!(first.len(), 26);
    assert_eq!(first[0], "Wesperburg Clinic");
    assert!(first[1..].iter().all(|n| n.starts_with("Wespermann ")));
    let second = find("wesper", 26).await;
    assert_eq!(second.len(), 7, "{second:?}");
    assert!(second[..5].iter().all(|n| n.starts_with("Wespermann ")));
    assert_eq!(second[5..], ["Ana Wesley", "Bo Lind"]);
    let mut seen: Vec<&String> = first.iter().chain(&second).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 33, "every entry once");
}

#[tokio::test]
async fn a_directory_source_over_plain_http_is_refused_and_never_asked() {
    let hits = Arc::new(Mutex::new(0usize));
    let counted = hits.clone();
    let app = axum::Router::new().fallback(move || {
        *counted.lock().unwrap() += 1;
        async { good_csv() }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("http://127.0.0.1:{port}/directory.csv");
    let app = TestApp::spawn_with(|c| c.directory_sources = vec![url.parse().unwrap()]).await;
    let last_error = async || -> Option<String> {
        sqlx::query_scalar("select last_error from directory_sources")
            .fetch_optional(&app.state.db.pool)
            .await
            .unwrap()
            .flatten()
    };
    wait_for("the refused refresh", async || last_error().await.is_some()).await;
    assert!(
        last_error().await.unwrap().contains("HTTPS only"),
        "{:?}",
        last_error().await
    );
    assert_eq!(*hits.lock().unwrap(), 0);
    assert_eq!(entry_count(&app).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_attached_to_an_entry_is_used_only_when_it_chains_to_an_anchor() {
    let app = TestApp::spawn().await;
    // a hosted domain whose development CA is this HISP's anchor
    app.org("Lakeside Clinic", "direct.lakeside.test").await;
    let domain = directmail::store::orgs::domain_by_name(&app.state.db, "direct.lakeside.test")
        .await
        .unwrap()
        .unwrap();
    directmail::pki::issue_dev_certificate(
        &app.state.db,
        &app.state.secret,
        &domain,
        None,
        app.now(),
        &Actor::system(),
    )
    .await
    .unwrap();
    let dir = app.data_dir.path().to_path_buf();
    let good = dir.join("good.csv");
    std::fs::write(&good, good_csv()).unwrap();
    cli_import(&app, &good).await;
    let anna = "anna.lee@direct.hillside.test";
    let attach = async |pem: &str| {
        let file = dir.join("attached.pem");
        std::fs::write(&file, pem).unwrap();
        let out = directmail(
            &app,
            &["admin", "directory", "cert", anna, file.to_str().unwrap()],
        )
        .await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let lookup = || async {
        directmail::recipients::foreign(&app.state.db, &app.state.discovery, anna, app.now())
            .await
            .unwrap()
    };

    // bound to the address and within its dates, but from a CA nobody here trusts
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("set -e
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=Stranger-CA -keyout sca.key -out sca.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=anna -keyout anna.key -out anna.csr 2>/dev/null
printf 'basicConstraints=CA:FALSE\\nkeyUsage=critical,digitalSignature,keyEncipherment\\nextendedKeyUsage=emailProtection\\nsubjectAltName=email:{anna}\\n' > anna.ext
openssl x509 -req -in anna.csr -CA sca.pem -CAkey sca.key -CAcreateserial -days 20 -sha256 -extfile anna.ext -out stranger-anna.pem 2>/dev/null"))
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    attach(&std::fs::read_to_string(dir.join("stranger-anna.pem")).unwrap()).await;
    let found = lookup().await;
    assert!(found.certificate.is_none(), "not used: {}", found.sentence);
    assert!(
        found.sentence.contains("attached to the directory entry")
            && found.sentence.contains("trust anchor"),
        "{}",
        found.sentence
    );

    // one from the anchored CA is used
    let (_, pem) = foreign_certificate(&app, anna).await;
    attach(&pem).await;
    let found = lookup().await;
    assert!(found.certificate.is_some(), "{}", found.sentence);
    assert_eq!(
        found.sentence,
        "certificate attached to the directory entry"
    );
}
