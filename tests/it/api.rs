//! The REST API for EHRs: bearer tokens, sending with attachments, reading,
//! authorization, JSON errors, audit, and the OpenAPI document.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::Value;

use crate::helpers::TestApp;

/// An organization on this HISP with a dev certificate, a user, a mailbox, a token.
pub(crate) async fn practice(
    app: &TestApp,
    org: &str,
    domain: &str,
    user: &str,
    mailbox: &str,
) -> String {
    app.practice(org, domain, user, mailbox).await;
    let out = app
        .cli(&["admin", "token", "create", "--user", user, "--name", "EHR"])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    assert_eq!(token.trim().lines().count(), 1, "the token alone on stdout");
    token.trim().to_owned()
}

pub(crate) async fn json(r: reqwest::Response) -> (StatusCode, Value) {
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
    let pdf = crate::helpers::pdf("Discharge summary");
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
        (
            vec![("to", "a@direct.x.test"), ("xdm", "maybe")],
            "invalid_field",
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

#[tokio::test]
async fn the_api_checks_attachments_like_the_page_and_holds_them_to_the_configured_size() {
    let app = TestApp::spawn_with(|c| c.max_message_mb = 1).await;
    let ana = practice(
        &app,
        "Lakeside Clinic",
        "direct.lakeside.test",
        "ana@direct.lakeside.test",
        "dr.ana@direct.lakeside.test",
    )
    .await;
    let http = reqwest::Client::new();
    let send = async |name: &str, declared: &str, bytes: Vec<u8>| {
        let form = Form::new()
            .text("to", "front@direct.hillside.test")
            .text("subject", "Files")
            .part(
                "attachment",
                Part::bytes(bytes)
                    .file_name(name.to_owned())
                    .mime_str(declared)
                    .unwrap(),
            );
        json(
            http.post(app.url("/api/v1/messages"))
                .bearer_auth(&ana)
                .multipart(form)
                .send()
                .await
                .unwrap(),
        )
        .await
    };
    let queued = || async {
        sqlx::query_scalar::<_, i64>("select count(*) from outbound_messages")
            .fetch_one(&app.state.db.pool)
            .await
            .unwrap()
    };
    // a Windows program declared as a PDF: refused by its content, nothing sent
    let (status, body) = send(
        "setup.pdf",
        "application/pdf",
        crate::webmail::windows_program(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "attachment_refused");
    assert!(
        body["message"].as_str().unwrap().contains("“setup.pdf”"),
        "{body}"
    );
    // a PDF that runs JavaScript when opened
    let mut scripted = crate::helpers::pdf("Open me");
    let at = scripted.len() - 6;
    scripted.splice(at..at, b"/JavaScript ".iter().copied());
    let (status, _) = send("x.pdf", "application/pdf", scripted).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // over DIRECTMAIL_MAX_MESSAGE_MB (1 MB here)
    let mut big = crate::helpers::pdf("Big scan");
    big.resize(1024 * 1024 + 10, b' ');
    let (status, body) = send("scan.pdf", "application/pdf", big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(body["message"].as_str().unwrap().contains("1 MB"), "{body}");
    assert_eq!(queued().await, 0, "nothing was queued");
    // a real PDF declared as something else is sent with the type its content shows
    let (status, body) = send(
        "summary.pdf",
        "application/x-msdownload",
        crate::helpers::pdf("Summary"),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let raw: Vec<u8> = sqlx::query_scalar(
        "select r.raw from messages m join message_raw r on r.message_id = m.id where m.outbound_id is not null",
    )
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.contains("application/pdf") && !text.contains("x-msdownload"),
        "{text}"
    );
}

#[tokio::test]
async fn a_send_repeated_with_its_idempotency_key_queues_the_message_once() {
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
    let send = async |token: &str, key: Option<reqwest::header::HeaderValue>| {
        let form = Form::new()
            .text("to", "front@direct.hillside.test")
            .text("subject", "Referral")
            .text("text", "Please see her this week.");
        let mut request = http
            .post(app.url("/api/v1/messages"))
            .bearer_auth(token)
            .multipart(form);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.unwrap();
        let replayed = response.headers().get("idempotent-replayed").is_some();
        let (status, body) = json(response).await;
        (status, body, replayed)
    };
    let key = |k: &str| Some(reqwest::header::HeaderValue::from_str(k).unwrap());
    let sent = async || -> i64 {
        sqlx::query_scalar("select count(*) from outbound_messages where kind = 'message'")
            .fetch_one(&app.state.db.pool)
            .await
            .unwrap()
    };
    let (status, first, replayed) = send(&ana, key("0b6f2c1e-referral-1")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert!(!replayed);
    // the answer was lost; the EHR sends the same request again
    let (status, again, replayed) = send(&ana, key("0b6f2c1e-referral-1")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert!(replayed, "marked as the earlier request's answer");
    assert_eq!(again, first, "the message first queued, not another");
    assert_eq!(sent().await, 1);
    // another key, no key, or the same key from another mailbox: another message
    for (token, k) in [
        (&ana, key("0b6f2c1e-referral-2")),
        (&ana, None),
        (&kim, key("0b6f2c1e-referral-1")),
    ] {
        let (status, other, replayed) = send(token, k).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{other}");
        assert!(!replayed);
        assert_ne!(other["outbound_id"], first["outbound_id"]);
    }
    assert_eq!(sent().await, 4);
    // keys that are not 1–255 visible ASCII characters are refused; nothing is sent
    for bad in [
        reqwest::header::HeaderValue::from_static(""),
        reqwest::header::HeaderValue::from_static("two words"),
        reqwest::header::HeaderValue::from_str(&"k".repeat(256)).unwrap(),
        reqwest::header::HeaderValue::from_bytes(b"na\xefve").unwrap(),
    ] {
        let (status, body, _) = send(&ana, Some(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["code"], "invalid_idempotency_key");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("nothing was sent")
        );
    }
    assert_eq!(sent().await, 4);
}
