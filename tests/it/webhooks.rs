//! Webhooks for EHRs (issue 14): registration and its refusals, signed events that
//! carry no PHI, a receiver that is down or answers 500 (retried, delivered once), a
//! redirect never followed, giving up, and sending again from the account page.
//! The receiver is an HTTPS server on loopback with the test CA's certificate, which
//! the portal trusts (`DIRECTMAIL_HTTPS_ROOTS`), as for bundle and directory fetches.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::response::IntoResponse;
use axum::routing::post;
use hmac::{Hmac, Mac as _};
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::api::{json as read_json, practice};
use crate::helpers::{TestApp, serve_https_while};
use crate::outbound::wait_for;

const KIM_BOX: &str = "front@direct.hillside.test";

/// What the receiver got: the headers that matter and the body.
#[derive(Clone, Debug)]
struct Received {
    signature: String,
    event_id: String,
    body: String,
    raw: String,
}

impl Received {
    fn event(&self) -> Value {
        serde_json::from_str(&self.body).expect("the event is JSON")
    }
}

/// An EHR's webhook endpoint: keeps every request, answers the scripted statuses
/// first (a 302 points at `/elsewhere`), then 200.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
    elsewhere: Arc<AtomicUsize>,
    up: Arc<AtomicBool>,
    port: u16,
}

impl Receiver {
    async fn start(up: bool, script: &[u16]) -> Receiver {
        let mut r = Receiver {
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
            up: Arc::new(AtomicBool::new(up)),
            ..Receiver::default()
        };
        let app = axum::Router::new()
            .route("/hook", post(hook))
            .route("/elsewhere", post(elsewhere))
            .route("/hang", post(std::future::pending::<()>))
            .with_state(r.clone());
        r.port = serve_https_while(app, r.up.clone()).await;
        r
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/hook", self.port)
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    fn of_type(&self, kind: &str) -> Vec<Received> {
        self.got()
            .into_iter()
            .filter(|r| r.event()["type"] == kind)
            .collect()
    }
}

async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: String) -> impl IntoResponse {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let raw = format!("{headers:?}\n{body}");
    r.got.lock().unwrap().push(Received {
        signature: header("directmail-signature"),
        event_id: header("directmail-event-id"),
        body,
        raw,
    });
    let status = r.script.lock().unwrap().pop_front().unwrap_or(200);
    let status = AxumStatus::from_u16(status).unwrap();
    (status, [("location", "/elsewhere")], "")
}

async fn elsewhere(State(r): State<Receiver>) -> AxumStatus {
    r.elsewhere.fetch_add(1, Ordering::SeqCst);
    AxumStatus::OK
}

/// Checks the signature as a receiver would: HMAC-SHA256 keyed with the secret over
/// `<t>.<body>`, and `t` within the five-minute window of the portal's clock.
fn assert_signed(secret: &str, r: &Received, now: i64) {
    let (t, v1) = r
        .signature
        .strip_prefix("t=")
        .and_then(|s| s.split_once(",v1="))
        .unwrap_or_else(|| panic!("a signature header: {:?}", r.signature));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{}", r.body).as_bytes());
    mac.verify_slice(&hex::decode(v1).unwrap())
        .expect("the signature verifies with the secret");
    let t: i64 = t.parse().unwrap();
    assert!((now - t).abs() <= 300, "signed at {t}, now {now}");
    let mut wrong = Hmac::<sha2::Sha256>::new_from_slice(b"whsec_wrong").unwrap();
    wrong.update(format!("{t}.{}", r.body).as_bytes());
    assert!(wrong.verify_slice(&hex::decode(v1).unwrap()).is_err());
}

async fn register(app: &TestApp, token: &str, body: Value) -> (StatusCode, Value) {
    read_json(
        reqwest::Client::new()
            .post(app.url("/api/v1/webhooks"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// Registers `url` for the token; the webhook's id and its secret.
async fn registered(app: &TestApp, token: &str, url: &str) -> (i64, String) {
    let (status, body) = register(app, token, json!({ "url": url })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (
        body["id"].as_i64().unwrap(),
        body["secret"].as_str().unwrap().to_owned(),
    )
}

/// Ana's practice and Kim's on one portal, each with an API token.
async fn two_practices(app: &TestApp) -> (String, String) {
    let ana = ana_practice(app).await;
    let kim = kim_practice(app).await;
    (ana, kim)
}

/// Ana's EHR sends Kim a message full of PHI; the `id` and `outbound_id` returned.
async fn ana_sends(app: &TestApp, ana: &str) -> (i64, i64) {
    let form = Form::new()
        .text("to", KIM_BOX)
        .text("subject", "Biopsy Quixotic-7731 for Mrs Quartermaine")
        .text(
            "text",
            "Malignant melanoma confirmed; call Zebulon Quartermaine (MRN QZ-99812).",
        )
        .part(
            "attachment",
            Part::bytes(crate::helpers::pdf("Pathology report"))
                .file_name("Quartermaine-pathology.pdf")
                .mime_str("application/pdf")
                .unwrap(),
        );
    let (status, body) = read_json(
        reqwest::Client::new()
            .post(app.url("/api/v1/messages"))
            .bearer_auth(ana)
            .multipart(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    (
        body["id"].as_i64().unwrap(),
        body["outbound_id"].as_i64().unwrap(),
    )
}

/// (id, state, attempts, last error) of the `message.received` delivery of
/// `webhook_id`.
async fn delivery(app: &TestApp, webhook_id: i64) -> Option<(i64, String, i64, String)> {
    sqlx::query_as::<_, (i64, String, i64, String)>(
        "select id, state, attempts, last_error from webhook_deliveries
         where webhook_id = $1 and event_type = 'message.received' order by id limit 1",
    )
    .bind(webhook_id)
    .fetch_optional(&app.state.db.pool)
    .await
    .unwrap()
}

/// Waits for that delivery to be as `check` wants (given it as in [`delivery`]).
async fn until(
    app: &TestApp,
    webhook_id: i64,
    what: &str,
    check: impl Fn(&(i64, String, i64, String)) -> bool,
) {
    wait_for(what, async || {
        delivery(app, webhook_id).await.is_some_and(|d| check(&d))
    })
    .await;
}

/// Kim's practice: Hillside Care, its front desk, and an API token.
async fn kim_practice(app: &TestApp) -> String {
    practice(
        app,
        "Hillside Care",
        "direct.hillside.test",
        "kim@direct.hillside.test",
        KIM_BOX,
    )
    .await
}

/// Ana's practice: Lakeside Clinic, her mailbox, and an API token.
async fn ana_practice(app: &TestApp) -> String {
    practice(
        app,
        "Lakeside Clinic",
        "direct.lakeside.test",
        "ana@direct.lakeside.test",
        "dr.ana@direct.lakeside.test",
    )
    .await
}

/// The Inbox of the token's owner, read through the API.
async fn inbox(app: &TestApp, token: &str) -> Value {
    read_json(
        reqwest::Client::new()
            .get(app.url("/api/v1/messages"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap(),
    )
    .await
    .1
}

/// Moves time past any backoff and wakes the webhook worker.
fn retry_now(app: &TestApp) {
    app.state.clock.advance(2 * 3600);
    app.state.wake_webhooks.notify_one();
}

#[tokio::test]
async fn registration_refuses_plain_http_hostile_and_internal_urls_with_a_sentence() {
    // the operator allows public addresses only (the default)
    let app = TestApp::spawn_with(|c| {
        c.allow_private_networks = Some(directmail_net::Policy::public_only());
    })
    .await;
    let token = ana_practice(&app).await;
    let long = format!("https://ehr.example.org/{}", "a".repeat(2100));
    for (url, says) in [
        ("http://ehr.example.org/hook", "only over HTTPS"),
        ("ftp://ehr.example.org/hook", "only to https://"),
        ("javascript:alert(1)", "only to https://"),
        (
            "https://admin:secret@ehr.example.org/hook",
            "user name or password",
        ),
        ("https://ehr.example.org/hook#x", "#fragment"),
        ("https://127.0.0.1/hook", "not a public address"),
        ("https://127.1:8443/hook", "not a public address"),
        ("https://[::1]/hook", "not a public address"),
        ("https://[::ffff:10.0.0.1]/hook", "not a public address"),
        (
            "https://169.254.169.254/latest/meta-data",
            "not a public address",
        ),
        ("https://192.168.1.20/hook", "not a public address"),
        // a name is resolved: localhost is loopback
        (
            "https://localhost:8443/hook",
            "resolves to an address that is not allowed",
        ),
        ("https://ehr example.org/", "spaces"),
        ("https://[::1/hook", "not a URL"),
        ("", "Give the webhook's address"),
        (long.as_str(), "longer than 2000"),
    ] {
        let (status, body) = register(&app, &token, json!({ "url": url })).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
        assert_eq!(body["code"], "invalid_url", "{url}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(says), "{url}: {message}");
        assert!(!message.contains("secret"), "{url}: {message}");
    }
    for (body, code) in [
        (json!(["https://ehr.example.org/"]), "unreadable_request"),
        (json!({ "url": 42 }), "invalid_url"),
        (
            json!({ "url": "https://93.184.216.34/", "events": ["all"] }),
            "unknown_field",
        ),
    ] {
        let (status, answer) = register(&app, &token, body.clone()).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{body}: {answer}"
        );
    }
    let http = reqwest::Client::new();
    let (status, answer) = read_json(
        http.post(app.url("/api/v1/webhooks"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("Send JSON such as")
    );
    let (status, answer) = read_json(
        http.post(app.url("/api/v1/webhooks"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(format!("{{\"url\": \"{}\"}}", "a".repeat(20_000)))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    let (status, _) = read_json(
        http.post(app.url("/api/v1/webhooks"))
            .json(&json!({ "url": "https://93.184.216.34/" }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a token is needed");

    // a public address on an unusual port is fine; the secret is shown once
    let (status, body) = register(
        &app,
        &token,
        json!({ "url": "https://93.184.216.34:8443/directmail/events?practice=7" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_i64().unwrap();
    let secret = body["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_") && secret.len() > 40, "{body}");
    let (_, list) = read_json(
        http.get(app.url("/api/v1/webhooks"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(list["webhooks"][0]["id"], id);
    assert_eq!(
        list["webhooks"][0]["url"],
        "https://93.184.216.34:8443/directmail/events?practice=7"
    );
    assert!(list.get("secret").is_none() && !list.to_string().contains(&secret));
    // the secret is sealed at rest
    let stored: String = sqlx::query_scalar("select sealed_secret from webhooks where id = $1")
        .bind(id)
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    assert!(stored.starts_with("v1:") && !stored.contains(&secret[6..]));

    // at most five per token
    for _ in 0..4 {
        registered(&app, &token, "https://93.184.216.34/hook").await;
    }
    let (status, body) = register(&app, &token, json!({ "url": "https://93.184.216.34/" })).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("too_many_webhooks"))
    );

    // deleting: another token's or a missing webhook is not found
    let other = kim_practice(&app).await;
    let delete = |token: String, path: String| {
        let http = http.clone();
        let url = app.url(&path);
        async move {
            http.delete(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let path = format!("/api/v1/webhooks/{id}");
    assert_eq!(
        delete(other.clone(), path.clone()).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        delete(token.clone(), "/api/v1/webhooks/nope".into()).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        delete(token.clone(), path.clone()).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(delete(token.clone(), path).await, StatusCode::NOT_FOUND);
    let entries = directmail::audit::list(&app.state.db, &Default::default(), 100)
        .await
        .unwrap();
    for action in ["webhook.create", "webhook.delete"] {
        assert!(
            entries.iter().any(|e| e.action == action),
            "{action} audited"
        );
    }
}

#[tokio::test]
async fn a_name_that_resolves_to_a_private_address_is_refused_at_delivery_too() {
    // registered when the operator allowed loopback; the operator has since narrowed
    // the policy: the worker's client resolves the name and refuses the address
    let app = TestApp::spawn_with(|c| {
        c.allow_private_networks = Some(directmail_net::Policy::public_only());
        c.webhook_max_attempts = 1;
    })
    .await;
    ana_practice(&app).await;
    let receiver = Receiver::start(true, &[]).await;
    let url = format!("https://localhost:{}/hook", receiver.port);
    let user = directmail::store::users::by_email(&app.state.db, "ana@direct.lakeside.test")
        .await
        .unwrap()
        .unwrap();
    let token_id = directmail::store::tokens::of_user(&app.state.db, user.id)
        .await
        .unwrap()[0]
        .id;
    let mailbox = directmail::store::mailboxes::of_user(&app.state.db, user.id)
        .await
        .unwrap()[0]
        .id;
    let sealed = app
        .state
        .secret
        .seal(
            b"whsec_x",
            &directmail::webhooks::secret_aad(token_id, &url),
        )
        .unwrap();
    let mut tx = app.state.db.begin().await.unwrap();
    let id =
        directmail::store::webhooks::create(&mut tx, token_id, user.id, &url, &sealed, app.now())
            .await
            .unwrap()
            .unwrap();
    let queued = directmail::store::webhooks::message_received(&mut tx, mailbox, -1, app.now())
        .await
        .unwrap();
    assert_eq!(queued, 1);
    tx.commit().await.unwrap();
    app.state.wake_webhooks.notify_one();
    until(&app, id, "the delivery to be given up", |d| d.1 == "failed").await;
    let (_, _, attempts, why) = delivery(&app, id).await.unwrap();
    assert!(why.contains("not a public address"), "{why}");
    assert_eq!(attempts, 1);
    assert!(receiver.got().is_empty(), "nothing reached the receiver");
}

#[tokio::test]
async fn events_are_signed_and_carry_ids_and_status_but_no_phi() {
    let app = TestApp::spawn().await;
    let (ana, kim) = two_practices(&app).await;
    let ana_receiver = Receiver::start(true, &[]).await;
    let kim_receiver = Receiver::start(true, &[]).await;
    let (_, ana_secret) = registered(&app, &ana, &ana_receiver.url()).await;
    let (_, kim_secret) = registered(&app, &kim, &kim_receiver.url()).await;

    let (sent_id, outbound_id) = ana_sends(&app, &ana).await;
    wait_for("Kim's EHR to hear of the new message", async || {
        !kim_receiver.of_type("message.received").is_empty()
    })
    .await;
    wait_for("Ana's EHR to hear that it was dispatched", async || {
        ana_receiver
            .of_type("message.status")
            .iter()
            .any(|r| r.event()["status"] == "dispatched")
    })
    .await;

    // Kim's EHR: the message in Kim's Inbox, readable through the API with its token
    let received = &kim_receiver.of_type("message.received")[0];
    assert_signed(&kim_secret, received, app.now());
    let event = received.event();
    assert_eq!(event["mailbox"], KIM_BOX);
    assert_eq!(received.event_id, event["id"].as_str().unwrap());
    let inbox = inbox(&app, &kim).await;
    assert_eq!(event["message_id"], inbox["messages"][0]["id"], "{event}");

    // Ana's EHR: each status of the one recipient, about the message it sent
    let statuses: Vec<Value> = ana_receiver
        .of_type("message.status")
        .iter()
        .map(|r| {
            assert_signed(&ana_secret, r, app.now());
            r.event()
        })
        .collect();
    for status in ["sent", "dispatched"] {
        assert!(
            statuses.iter().any(|e| e["status"] == status),
            "{status}: {statuses:?}"
        );
    }
    for e in &statuses {
        assert_eq!(e["message_id"], sent_id);
        assert_eq!(e["outbound_id"], outbound_id);
        assert_eq!(e["mailbox"], "dr.ana@direct.lakeside.test");
    }
    // an event is ids, a type, a time, a mailbox and a status: nothing else
    for e in statuses.iter().chain([&event]) {
        let mut keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        let allowed = [
            "id",
            "mailbox",
            "message_id",
            "occurred_at",
            "outbound_id",
            "status",
            "type",
        ];
        assert!(keys.iter().all(|k| allowed.contains(k)), "{e}");
    }

    // no PHI in anything either receiver got, headers included
    let everything: String = ana_receiver
        .got()
        .iter()
        .chain(kim_receiver.got().iter())
        .map(|r| r.raw.clone())
        .collect();
    for phi in [
        "Biopsy",
        "Quixotic",
        "Quartermaine",
        "Zebulon",
        "melanoma",
        "Malignant",
        "QZ-99812",
        "pathology",
        ".pdf",
    ] {
        assert!(
            !everything.contains(phi),
            "{phi} reached a receiver:\n{everything}"
        );
    }
    // and no correspondent's address: Ana's EHR is not told Kim's, nor Kim's Ana's
    let ana_got: String = ana_receiver.got().iter().map(|r| r.raw.clone()).collect();
    let kim_got: String = kim_receiver.got().iter().map(|r| r.raw.clone()).collect();
    assert!(!ana_got.contains("hillside"), "{ana_got}");
    assert!(!kim_got.contains("lakeside"), "{kim_got}");
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_the_event_once_when_it_is_back() {
    let app = TestApp::spawn().await;
    let (ana, kim) = two_practices(&app).await;
    let receiver = Receiver::start(false, &[]).await;
    let (hook, secret) = registered(&app, &kim, &receiver.url()).await;
    ana_sends(&app, &ana).await;
    until(&app, hook, "a failed attempt", |d| d.2 >= 1).await;
    let (_, state, _, why) = delivery(&app, hook).await.unwrap();
    assert_eq!(state, "pending", "retried later");
    assert!(
        why.contains("could not be reached") || why.contains("failed"),
        "{why}"
    );
    assert!(receiver.got().is_empty());

    receiver.up.store(true, Ordering::SeqCst);
    retry_now(&app);
    until(&app, hook, "the event to be delivered", |d| {
        d.1 == "delivered"
    })
    .await;
    let (_, _, attempts, why) = delivery(&app, hook).await.unwrap();
    assert!(attempts >= 2, "{attempts}");
    assert_eq!(why, "");
    let got = receiver.of_type("message.received");
    assert_eq!(got.len(), 1, "delivered once: {got:?}");
    assert_signed(&secret, &got[0], app.now());
}

#[tokio::test]
async fn a_receiver_answering_500_gets_the_same_event_again_after_backoff() {
    let app = TestApp::spawn().await;
    let (ana, kim) = two_practices(&app).await;
    let receiver = Receiver::start(true, &[500]).await;
    let (hook, secret) = registered(&app, &kim, &receiver.url()).await;
    ana_sends(&app, &ana).await;
    until(&app, hook, "the first attempt", |d| d.2 == 1).await;
    let (id, state, _, why) = delivery(&app, hook).await.unwrap();
    assert_eq!(state, "pending");
    assert_eq!(why, "The receiver answered 500 instead of a 2xx status.");
    let next: i64 =
        sqlx::query_scalar("select next_attempt_at from webhook_deliveries where id = $1")
            .bind(id)
            .fetch_one(&app.state.db.pool)
            .await
            .unwrap();
    assert!(
        next >= app.now() + 20,
        "backed off: {next} vs {}",
        app.now()
    );

    retry_now(&app);
    until(&app, hook, "the retry to be delivered", |d| {
        d.1 == "delivered"
    })
    .await;
    let got = receiver.got();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].body, got[1].body, "the same event");
    assert_eq!(got[0].event_id, got[1].event_id);
    assert_signed(&secret, &got[1], app.now());
}

#[tokio::test]
async fn a_redirect_is_never_followed_and_the_event_is_given_up_after_the_last_attempt() {
    let app = TestApp::spawn_with(|c| c.webhook_max_attempts = 2).await;
    let (ana, kim) = two_practices(&app).await;
    let receiver = Receiver::start(true, &[302, 307, 302]).await;
    let (hook, _) = registered(&app, &kim, &receiver.url()).await;
    ana_sends(&app, &ana).await;
    until(&app, hook, "the first attempt", |d| d.2 == 1).await;
    retry_now(&app);
    until(&app, hook, "the event to be given up", |d| d.1 == "failed").await;
    let (_, _, attempts, why) = delivery(&app, hook).await.unwrap();
    assert_eq!(attempts, 2);
    assert!(why.contains("never follow redirects"), "{why}");
    assert!(why.contains("Given up after 2 attempts"), "{why}");
    assert_eq!(receiver.elsewhere.load(Ordering::SeqCst), 0, "not followed");
    assert_eq!(receiver.got().len(), 2);
}

#[tokio::test]
async fn the_owner_sees_deliveries_and_sends_one_again_from_the_account_page() {
    let app = TestApp::spawn().await;
    let (ana, kim) = two_practices(&app).await;
    let receiver = Receiver::start(true, &[503]).await;
    let (hook, secret) = registered(&app, &kim, &receiver.url()).await;
    ana_sends(&app, &ana).await;
    until(&app, hook, "the first attempt", |d| d.2 == 1).await;
    let (id, ..) = delivery(&app, hook).await.unwrap();

    let mut kim_page = app.signed_in("kim@direct.hillside.test").await;
    let page = kim_page.get("/account/webhooks").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(&receiver.url()), "{}", page.body);
    assert!(page.body.contains("New message"), "{}", page.body);
    assert!(
        page.body
            .contains("The receiver answered 503 instead of a 2xx status."),
        "{}",
        page.body
    );
    assert!(page.body.contains("Waiting to retry at"), "{}", page.body);
    let replay = format!("/account/webhooks/deliveries/{id}/replay");
    assert!(!page.body.contains(&replay), "no replay while it is queued");
    let early = kim_page.post(&replay, &[]).await;
    assert_eq!(early.status, StatusCode::SEE_OTHER);
    assert!(
        kim_page
            .get("/account/webhooks")
            .await
            .body
            .contains("already waiting to be sent")
    );

    retry_now(&app);
    until(&app, hook, "the retry to be delivered", |d| {
        d.1 == "delivered"
    })
    .await;
    // (two hours passed: the session has timed out)
    let mut kim_page = app.signed_in("kim@direct.hillside.test").await;
    let page = kim_page.get("/account/webhooks").await;
    assert!(page.body.contains("Delivered"), "{}", page.body);
    assert!(page.body.contains(&replay), "{}", page.body);

    // only the owner, and only with the form's CSRF token
    let mut ana_page = app.signed_in("ana@direct.lakeside.test").await;
    ana_page.get("/account/webhooks").await;
    let other = ana_page.post(&replay, &[]).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    let forged = kim_page
        .client
        .post(format!("{}{replay}", kim_page.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("_csrf=forged")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert_eq!(receiver.got().len(), 2);

    kim_page.get("/account/webhooks").await;
    let done = kim_page.post(&replay, &[]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    wait_for("the replay to reach the receiver", async || {
        receiver.got().len() == 3
    })
    .await;
    let got = receiver.got();
    assert_eq!(
        got[2].event_id, got[0].event_id,
        "the same event, sent again"
    );
    assert_eq!(got[2].body, got[0].body);
    assert_signed(&secret, &got[2], app.now());
    until(&app, hook, "the replay to be recorded", |d| {
        d.1 == "delivered"
    })
    .await;
    let entries = directmail::audit::list(&app.state.db, &Default::default(), 100)
        .await
        .unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e.action == "webhook.replay" && e.object == format!("webhook delivery:{id}")),
        "the replay is audited"
    );

    // sixty more deliveries: the page shows the newest fifty and pages back to the rest
    sqlx::query(
        "insert into webhook_deliveries (webhook_id, event_type, mailbox_id, status, occurred_at,
                                         state, next_attempt_at, attempts, updated_at)
         select webhook_id, 'message.status', mailbox_id, 'processed', occurred_at + $2,
                'delivered', next_attempt_at, 1, updated_at
         from webhook_deliveries where id = $1",
    )
    .bind(id)
    .bind(1)
    .execute(&app.state.db.pool)
    .await
    .unwrap();
    for _ in 0..59 {
        sqlx::query(
            "insert into webhook_deliveries (webhook_id, event_type, mailbox_id, status, occurred_at,
                                             state, next_attempt_at, attempts, updated_at)
             select webhook_id, event_type, mailbox_id, status, occurred_at, state,
                    next_attempt_at, attempts, updated_at
             from webhook_deliveries where id = (select max(id) from webhook_deliveries)",
        )
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    }
    let rows = |body: &str| body.matches(r#"<tr id="delivery-"#).count();
    let first = kim_page.get("/account/webhooks").await;
    assert_eq!(rows(&first.body), 50, "{}", first.body);
    assert!(!first.body.contains(&format!(r#"id="delivery-{id}""#)));
    let older = first
        .body
        .split(r#"href="/account/webhooks?before="#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("an Older link")
        .to_owned();
    let second = kim_page
        .get(&format!("/account/webhooks?before={older}"))
        .await;
    assert_eq!(rows(&second.body), 11, "{}", second.body);
    assert!(
        second.body.contains(&format!(r#"id="delivery-{id}""#)),
        "the first delivery is on the second page"
    );
    assert!(!second.body.contains(r#"id="older-deliveries""#));

    // the owner can delete a webhook on the page (another user cannot)
    let remove = format!("/account/webhooks/{hook}/delete");
    ana_page.get("/account/webhooks").await;
    assert_eq!(
        ana_page.post(&remove, &[]).await.status,
        StatusCode::NOT_FOUND
    );
    kim_page.get("/account/webhooks").await;
    let gone = kim_page.post(&remove, &[]).await;
    assert_eq!(gone.status, StatusCode::SEE_OTHER, "{}", gone.body);
    let page = kim_page.get("/account/webhooks").await;
    assert!(page.body.contains("id=\"no-webhooks\""), "{}", page.body);
    assert!(
        delivery(&app, hook).await.is_none(),
        "its deliveries went with it"
    );
}

#[tokio::test]
async fn a_queued_event_survives_a_restart_and_the_next_start_delivers_it() {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (app, serving) = TestApp::spawn_until(|_| {}, async move {
        let _ = stopped.await;
    })
    .await;
    let (ana, kim) = two_practices(&app).await;
    let receiver = Receiver::start(false, &[]).await;
    let (hook, secret) = registered(&app, &kim, &receiver.url()).await;
    ana_sends(&app, &ana).await;
    until(&app, hook, "a failed attempt", |d| {
        d.2 >= 1 && d.1 == "pending"
    })
    .await;
    stop.send(()).unwrap();
    serving.await.unwrap().unwrap();

    // the receiver is back; the portal starts again on the same database
    receiver.up.store(true, Ordering::SeqCst);
    let restarted =
        directmail::app::Application::build_with_clock(app.config.clone(), app.state.clock.clone())
            .await
            .expect("starts again on the same database");
    let state = restarted.state.clone();
    tokio::spawn(restarted.run_until(std::future::pending()));
    app.state.clock.advance(2 * 3600);
    state.wake_webhooks.notify_one();
    until(&app, hook, "the next start to deliver the event", |d| {
        d.1 == "delivered"
    })
    .await;
    let got = receiver.of_type("message.received");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_signed(&secret, &got[0], app.now());
}

#[tokio::test]
async fn a_receiver_that_never_answers_is_timed_out_and_mail_flows_meanwhile() {
    let app = TestApp::spawn_with(|c| c.webhook_timeout_seconds = 1).await;
    let (ana, kim) = two_practices(&app).await;
    let receiver = Receiver::start(true, &[]).await;
    let url = format!("https://127.0.0.1:{}/hang", receiver.port);
    let (hook, _) = registered(&app, &kim, &url).await;
    ana_sends(&app, &ana).await;
    until(&app, hook, "an attempt that timed out", |d| d.2 >= 1).await;
    let (_, state, _, why) = delivery(&app, hook).await.unwrap();
    assert_eq!(state, "pending");
    assert!(why.contains("did not answer within 1 s"), "{why}");
    // the message itself was filed, and the next one is too
    ana_sends(&app, &ana).await;
    wait_for("both messages in Kim's Inbox", async || {
        let inbox = inbox(&app, &kim).await;
        inbox["messages"].as_array().is_some_and(|m| m.len() == 2)
    })
    .await;
}

#[tokio::test]
async fn a_revoked_tokens_webhook_hears_nothing_more() {
    let app = TestApp::spawn().await;
    let (ana, kim) = two_practices(&app).await;
    let receiver = Receiver::start(false, &[]).await;
    let (hook, _) = registered(&app, &kim, &receiver.url()).await;
    ana_sends(&app, &ana).await;
    until(&app, hook, "a failed attempt", |d| {
        d.2 >= 1 && d.1 == "pending"
    })
    .await;

    let kim_user = directmail::store::users::by_email(&app.state.db, "kim@direct.hillside.test")
        .await
        .unwrap()
        .unwrap();
    let mut tx = app.state.db.begin().await.unwrap();
    let token_id: i64 = sqlx::query_scalar("select token_id from webhooks where id = $1")
        .bind(hook)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert!(
        directmail::store::tokens::revoke(&mut tx, kim_user.id, token_id, app.now())
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();

    // what was queued is given up, with the reason; nothing reaches the receiver
    receiver.up.store(true, Ordering::SeqCst);
    retry_now(&app);
    until(&app, hook, "the queued event to be given up", |d| {
        d.1 == "failed"
    })
    .await;
    let (_, _, _, why) = delivery(&app, hook).await.unwrap();
    assert!(why.contains("no longer works"), "{why}");
    // and new mail queues nothing for it
    ana_sends(&app, &ana).await;
    wait_for("the second message in Kim's Inbox", async || {
        directmail::store::alerts::unread(&app.state.db, kim_mailbox(&app, kim_user.id).await)
            .await
            .unwrap()
            == 2
    })
    .await;
    let queued: i64 =
        sqlx::query_scalar("select count(*) from webhook_deliveries where webhook_id = $1")
            .bind(hook)
            .fetch_one(&app.state.db.pool)
            .await
            .unwrap();
    assert_eq!(queued, 1);
    assert!(receiver.got().is_empty());
}

async fn kim_mailbox(app: &TestApp, user_id: i64) -> i64 {
    directmail::store::mailboxes::of_user(&app.state.db, user_id)
        .await
        .unwrap()[0]
        .id
}
