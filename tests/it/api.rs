//! The REST API for EHRs: bearer tokens, sending with attachments, reading,
//! authorization, JSON errors, audit, and the OpenAPI document.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::Value;

use crate::helpers::TestApp;

/// An organization on this HISP with a dev certificate, a user, a mailbox, a token.
async fn practice(app: &TestApp, org: &str, domain: &str, user: &str, mailbox: &str) -> String {
    app.practice(org, domain, user, mailbox).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_directmail"))
        .args(["admin", "token", "create", "--user", user, "--name", "EHR"])
        .env(
            "DIRECTMAIL_DATABASE_URL",
            app.config.database_url().as_str(),
        )
        .env("DIRECTMAIL_DATA_DIR", app.data_dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    assert_eq!(token.trim().lines().count(), 1, "the token alone on stdout");
    token.trim().to_owned()
}

async fn json(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_ehr_sends_with_an_attachment_and_the_recipient_reads_it_through_the_api() {
    let app = TestApp::spawn().await;
    let ana = practice(
        &app,
        "Lakeside Clinic",
        "direct.lakeside.test",
        "ana@direct.lakeside.test",
        "dr.ana@direct.lakeside.test",
    )
    .await;
    let kim = practice(
        &app,
        "Hillside Care",
        "direct.hillside.test",
        "kim@direct.hillside.test",
        "front@direct.hillside.test",
    )
    .await;
    let http = reqwest::Client::new();
    let pdf = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n".to_vec();
    let form = Form::new()
        .text("to", "front@direct.hillside.test")
        .text("subject", "Referral")
        .text("text", "Please see the attached summary.")
        .part(
            "attachment",
            Part::bytes(pdf.clone())
                .file_name("summary.pdf")
                .mime_str("application/pdf")
                .unwrap(),
        );
    let (status, body) = json(
        http.post(app.url("/api/v1/messages"))
            .bearer_auth(&ana)
            .multipart(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let sent_id = body["id"].as_i64().unwrap();

    // the recipient's EHR finds it, trusted, with the attachment
    let deadline = Instant::now() + Duration::from_secs(120);
    let list = loop {
        let (_, list) = json(
            http.get(app.url("/api/v1/messages?folder=inbox"))
                .bearer_auth(&kim)
                .send()
                .await
                .unwrap(),
        )
        .await;
        if !list["messages"].as_array().unwrap().is_empty() {
            break list;
        }
        assert!(Instant::now() < deadline, "not delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(list["mailbox"], "front@direct.hillside.test");
    let id = list["messages"][0]["id"].as_i64().unwrap();
    let (status, message) = json(
        http.get(app.url(&format!("/api/v1/messages/{id}")))
            .bearer_auth(&kim)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(message["subject"], "Referral");
    assert_eq!(message["trust"]["code"], "trusted");
    assert!(
        message["text"]
            .as_str()
            .unwrap()
            .contains("attached summary")
    );
    assert_eq!(message["attachments"][0]["name"], "summary.pdf");
    assert_eq!(message["attachments"][0]["content_type"], "application/pdf");
    let file = http
        .get(app.url(&format!("/api/v1/messages/{id}/attachments/0")))
        .bearer_auth(&kim)
        .send()
        .await
        .unwrap();
    assert_eq!(file.headers()["content-type"], "application/pdf");
    assert_eq!(file.bytes().await.unwrap().to_vec(), pdf);

    // the sender sees the delivery status reach dispatched
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, sent) = json(
            http.get(app.url(&format!("/api/v1/messages/{sent_id}")))
                .bearer_auth(&ana)
                .send()
                .await
                .unwrap(),
        )
        .await;
        if sent["delivery"][0]["status"] == "dispatched" {
            break;
        }
        assert!(Instant::now() < deadline, "no dispatched status: {sent}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // one practice cannot read the other's messages
    let (status, body) = json(
        http.get(app.url(&format!("/api/v1/messages/{id}")))
            .bearer_auth(&ana)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, _) = json(
        http.get(app.url(&format!("/api/v1/messages/{id}/attachments/0")))
            .bearer_auth(&ana)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = json(
        http.get(app.url("/api/v1/messages?mailbox=front@direct.hillside.test"))
            .bearer_auth(&ana)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("no_such_mailbox"))
    );

    let entries = directmail::audit::list(&app.state.db, &Default::default(), 100)
        .await
        .unwrap();
    for action in [
        "message.send",
        "message.read",
        "attachment.download",
        "token.create",
    ] {
        assert!(
            entries.iter().any(|e| e.action == action),
            "{action} audited"
        );
    }
}

#[tokio::test]
async fn the_api_refuses_missing_revoked_and_forged_tokens_and_bad_input_with_json_errors() {
    let app = TestApp::spawn().await;
    let token = practice(
        &app,
        "Lakeside Clinic",
        "direct.lakeside.test",
        "ana@direct.lakeside.test",
        "dr.ana@direct.lakeside.test",
    )
    .await;
    let http = reqwest::Client::new();
    let (status, body) = json(http.get(app.url("/api/v1/messages")).send().await.unwrap()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let (status, _) = json(
        http.get(app.url("/api/v1/messages"))
            .bearer_auth("forged-token")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for (fields, code) in [
        (
            vec![("to", "not an address"), ("subject", "x")],
            "invalid_address",
        ),
        (vec![("subject", "nobody")], "no_recipient"),
        (
            vec![("to", "a@direct.x.test"), ("bcc", "b@direct.x.test")],
            "unknown_field",
        ),
    ] {
        let mut form = Form::new();
        for (k, v) in fields {
            form = form.text(k, v);
        }
        let (status, body) = json(
            http.post(app.url("/api/v1/messages"))
                .bearer_auth(&token)
                .multipart(form)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{body}"
        );
        assert!(!body["message"].as_str().unwrap().is_empty());
    }
    let (status, body) = json(
        http.post(app.url("/api/v1/messages"))
            .bearer_auth(&token)
            .body("not multipart")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(status.is_client_error(), "{status} {body}");

    // the user revokes the token in the browser; it stops working
    let mut browser = app.signed_in("ana@direct.lakeside.test").await;
    let page = browser.get("/account/tokens").await;
    assert!(page.body.contains("EHR") && page.body.contains("Active"));
    let id: i64 = sqlx::query_scalar("select id from api_tokens")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    let r = browser
        .post(&format!("/account/tokens/{id}/revoke"), &[])
        .await;
    assert_eq!(r.location(), "/account/tokens");
    let (status, _) = json(
        http.get(app.url("/api/v1/messages"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // a token made in the browser is shown once, after the redirect
    browser.get("/account/tokens").await;
    let r = browser
        .post(
            "/account/tokens",
            &[
                ("name", "Billing system"),
                ("current", crate::helpers::PASSWORD),
            ],
        )
        .await;
    let page = browser.get(&r.location()).await;
    let new = page.by_id("new-token").expect("shown once");
    assert!(
        browser
            .get("/account/tokens")
            .await
            .by_id("new-token")
            .is_none()
    );
    let (status, _) = json(
        http.get(app.url("/api/v1/messages"))
            .bearer_auth(&new)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // a browser session cannot post to the API without a token
    let r = browser
        .client
        .post(app.url("/api/v1/messages"))
        .multipart(Form::new().text("to", "a@b.test"))
        .send()
        .await
        .unwrap();
    assert!(r.status() == StatusCode::FORBIDDEN || r.status() == StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_openapi_document_is_served_and_describes_every_route() {
    let app = TestApp::spawn().await;
    let (status, doc) = json(reqwest::get(app.url("/api/v1/openapi.json")).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    for (method, path) in directmail::web::api::ROUTES {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
        // and the route exists: without a token it answers 401, not 404/405
        if *path != "/api/v1/openapi.json" {
            let url = app.url(&path.replace("{id}", "1").replace("{n}", "0"));
            let r = reqwest::Client::new()
                .request(method.to_uppercase().parse().unwrap(), url)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        }
    }
}
