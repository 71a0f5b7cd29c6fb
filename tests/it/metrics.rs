//! `/metrics` on its own address: off unless configured, and figures that move as
//! messages are sent, received, quarantined and pages are served, without naming
//! anyone.

use directmail::store::outbound;

use crate::helpers::TestApp;
use crate::inbound::{send_over_smtp, with_mailbox};
use crate::outbound::wait_for;
use crate::revocation::{message, setup_with};

/// One sample line: its name, its labels, its value.
type Sample = (String, Vec<(String, String)>, f64);

/// The samples of one scrape.
struct Scrape {
    text: String,
    samples: Vec<Sample>,
}

impl Scrape {
    /// Reads the OpenMetrics text: `name{a="x",b="y"} value` lines; `#` lines skipped.
    fn parse(text: String) -> Scrape {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("a sample line");
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => {
                        let rest = rest.strip_suffix('}').expect("closed labels");
                        let labels = rest
                            .split("\",")
                            .filter(|p| !p.is_empty())
                            .map(|pair| {
                                let (k, v) = pair.split_once('=').expect("label=value");
                                (k.to_owned(), v.trim_matches('"').to_owned())
                            })
                            .collect();
                        (name.to_owned(), labels)
                    }
                    None => (series.to_owned(), Vec::new()),
                };
                (name, labels, value.parse::<f64>().expect("a number"))
            })
            .collect();
        Scrape { text, samples }
    }

    /// The samples of `name` that carry every label in `labels`.
    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = f64> + 'a {
        self.samples
            .iter()
            .filter(move |(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| *v)
    }

    /// The sum of the samples of `name` that carry every label in `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).sum()
    }

    /// Whether any sample of `name` carries every label in `labels`.
    fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.matching(name, labels).next().is_some()
    }
}

async fn scrape(app: &TestApp) -> Scrape {
    let addr = app.metrics_addr.expect("the metrics listener is on");
    let response = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("scrape");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let kind = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    let text = response.text().await.expect("body");
    assert!(text.ends_with("# EOF\n"), "{text}");
    Scrape::parse(text)
}

fn with_metrics(c: &mut directmail::config::Config) {
    c.metrics_addr = Some("127.0.0.1:0".parse().expect("address"));
}

#[tokio::test]
async fn metrics_are_served_only_when_an_address_is_configured() {
    let app = TestApp::spawn().await;
    assert!(app.metrics_addr.is_none(), "no metrics listener by default");
    // and never on the portal's own address
    let portal = reqwest::get(app.url("/metrics")).await.unwrap();
    assert_eq!(portal.status(), reqwest::StatusCode::NOT_FOUND);

    let app = TestApp::spawn_with(with_metrics).await;
    let addr = app.metrics_addr.expect("bound");
    assert_ne!(addr.port(), app.addr.port());
    // the listener serves GET /metrics and nothing else
    let client = reqwest::Client::new();
    let other = client.get(format!("http://{addr}/")).send().await.unwrap();
    assert_eq!(other.status(), reqwest::StatusCode::NOT_FOUND);
    let post = client
        .post(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), reqwest::StatusCode::METHOD_NOT_ALLOWED);
    let portal = reqwest::get(app.url("/metrics")).await.unwrap();
    assert_eq!(portal.status(), reqwest::StatusCode::NOT_FOUND);
    scrape(&app).await;

    // an address already taken stops the start with the variable to change
    let refused = TestApp::try_spawn_with(|c| c.metrics_addr = Some(addr)).await;
    let error = format!("{:#}", refused.err().expect("the port is taken"));
    assert!(
        error.contains(&format!("cannot listen for metrics on {addr}"))
            && error.contains("DIRECTMAIL_METRICS_ADDR"),
        "{error}"
    );
}

#[tokio::test]
async fn received_messages_quarantine_smtp_fetches_and_pages_are_counted_without_names() {
    let s = setup_with(with_metrics, None).await;
    let mailbox = with_mailbox(&s).await;
    let before = scrape(&s.app).await;
    assert_eq!(before.sum("directmail_quarantined_messages", &[]), 0.0);
    assert_eq!(
        before.sum(
            "directmail_inbound_messages_total",
            &[("outcome", "delivered")]
        ),
        0.0
    );
    // the hosted certificate and the domain's anchor, each with its days left
    for kind in ["hosted", "anchor"] {
        let left = before.sum(
            "directmail_certificate_days_left",
            &[("kind", kind), ("domain", "direct.lakeside.test")],
        );
        assert!(
            left > 25.0 && left <= 30.0,
            "{kind}: {left}\n{}",
            before.text
        );
    }

    // a trusted message over SMTP whose intermediate comes through its AIA, and one
    // whose envelope sender is not its From (quarantined)
    let dir = s.app.data_dir.path();
    let trusted = message(dir, "sender", "dr.smith@direct.sender.test", false);
    let replies = send_over_smtp(
        s.app.smtp_addr,
        "dr.smith@direct.sender.test",
        &["nobody@direct.lakeside.test", "front@direct.lakeside.test"],
        &trusted,
    )
    .await;
    assert!(replies[6].starts_with("250"), "{replies:?}");
    let mismatched = message(dir, "sender", "dr.smith@direct.sender.test", true);
    let replies = send_over_smtp(
        s.app.smtp_addr,
        "someone.else@direct.sender.test",
        &["front@direct.lakeside.test"],
        &mismatched,
    )
    .await;
    assert!(replies[5].starts_with("250"), "{replies:?}");
    s.app.state.wake_processor.notify_one();
    wait_for("both messages processed", async || {
        scrape(&s.app)
            .await
            .sum("directmail_inbound_messages_total", &[])
            == 2.0
    })
    .await;
    let after = scrape(&s.app).await;
    assert_eq!(
        after.sum(
            "directmail_inbound_messages_total",
            &[("outcome", "delivered"), ("reason", "trusted")]
        ),
        1.0
    );
    assert_eq!(
        after.sum(
            "directmail_inbound_messages_total",
            &[
                ("outcome", "quarantined"),
                ("reason", "envelope_sender_mismatch")
            ]
        ),
        1.0,
        "{}",
        after.text
    );
    assert_eq!(after.sum("directmail_quarantined_messages", &[]), 1.0);
    assert_eq!(
        after.sum("directmail_inbound_queue_messages", &[]),
        0.0,
        "nothing waits"
    );
    assert_eq!(
        after.sum("directmail_smtp_sessions_total", &[("result", "accepted")]),
        2.0
    );
    assert_eq!(
        after.sum("directmail_smtp_messages_total", &[("result", "stored")]),
        2.0
    );
    assert_eq!(
        after.sum("directmail_smtp_recipients_total", &[("result", "unknown")]),
        1.0
    );
    assert_eq!(
        after.sum(
            "directmail_smtp_recipients_total",
            &[("result", "accepted")]
        ),
        2.0
    );
    wait_for("the sessions to close", async || {
        scrape(&s.app)
            .await
            .sum("directmail_smtp_sessions_open", &[])
            == 0.0
    })
    .await;
    // the CRL was fetched once, then read from the cache; the intermediate through AIA
    assert!(
        after.sum(
            "directmail_pki_fetches_total",
            &[("kind", "crl"), ("result", "fetched")]
        ) >= 1.0,
        "{}",
        after.text
    );
    assert!(
        after.sum(
            "directmail_pki_fetches_total",
            &[("kind", "aia"), ("result", "fetched")]
        ) >= 1.0,
        "{}",
        after.text
    );
    assert_eq!(
        after.sum("directmail_pki_fetches_total", &[("result", "failed")]),
        0.0
    );
    assert_eq!(
        inbound_count(&s.app, mailbox).await,
        1,
        "the trusted one was delivered"
    );

    // pages by route template and status, never by the path with its ids
    app_pages(&s.app).await;
    let pages = scrape(&s.app).await;
    assert_eq!(
        pages.sum(
            "directmail_http_request_duration_seconds_count",
            &[("method", "GET"), ("route", "/healthz"), ("status", "200")]
        ),
        2.0,
        "{}",
        pages.text
    );
    assert!(pages.has(
        "directmail_http_request_duration_seconds_bucket",
        &[("route", "/healthz"), ("le", "+Inf")]
    ));
    assert_eq!(
        pages.sum(
            "directmail_http_request_duration_seconds_count",
            &[("route", "/quarantine/{id}"), ("status", "200")]
        ),
        1.0,
        "{}",
        pages.text
    );
    assert_eq!(
        pages.sum(
            "directmail_http_request_duration_seconds_count",
            &[("route", "unmatched"), ("status", "404")]
        ),
        1.0,
        "{}",
        pages.text
    );

    // static files under one route, not one series per file
    assert_eq!(
        pages.sum(
            "directmail_http_request_duration_seconds_count",
            &[("route", "/static/{file}"), ("status", "200")]
        ),
        1.0,
        "{}",
        pages.text
    );
    assert!(!pages.text.contains("app.css"), "{}", pages.text);
    // no subject, address, person or path with an id in any label
    for secret in [
        "Referral",
        "Please see",
        "dr.smith",
        "someone.else",
        "front@",
        "direct.sender.test",
        "nothing-here-4711",
        "/quarantine/1",
    ] {
        assert!(!pages.text.contains(secret), "{secret} in\n{}", pages.text);
    }
}

async fn inbound_count(app: &TestApp, mailbox: i64) -> usize {
    directmail::store::inbound::messages_in(&app.state.db, mailbox, "inbox", 10)
        .await
        .unwrap()
        .len()
}

/// Two health checks, the operator reading a quarantined message, and a page that
/// does not exist.
async fn app_pages(app: &TestApp) {
    for _ in 0..2 {
        let r = reqwest::get(app.url("/healthz")).await.unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::OK);
    }
    let r = reqwest::get(app.url("/static/app.css")).await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    app.user(None, "op@hisp.test", directmail::domain::Role::Operator)
        .await;
    let mut op = app.signed_in("op@hisp.test").await;
    let id: i64 =
        sqlx::query_scalar("select max(id) from inbound_messages where state = 'quarantined'")
            .fetch_one(&app.state.db.pool)
            .await
            .unwrap();
    let page = op.get(&format!("/quarantine/{id}")).await;
    assert_eq!(page.status, reqwest::StatusCode::OK);
    let missing = op.get("/nothing-here-4711").await;
    assert_eq!(missing.status, reqwest::StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_message_between_two_practices_is_counted_sent_and_timed_to_its_processed_notification() {
    let app = TestApp::spawn_with(with_metrics).await;
    let (ana, _kim) = app.lakeside_and_hillside().await;
    let id = app.send_referral(&ana).await;
    wait_for("dispatched", async || {
        outbound::statuses(&app.state.db, id).await.unwrap()[0].1 == "dispatched"
    })
    .await;
    // both notifications came back and were recorded; the first was timed once
    wait_for("the notifications counted", async || {
        scrape(&app).await.sum(
            "directmail_inbound_messages_total",
            &[("outcome", "notification")],
        ) == 2.0
    })
    .await;
    let figures = scrape(&app).await;
    assert_eq!(
        figures.sum("directmail_outbound_send_to_processed_seconds_count", &[]),
        1.0,
        "{}",
        figures.text
    );
    assert!(figures.has(
        "directmail_outbound_send_to_processed_seconds_bucket",
        &[("le", "+Inf")]
    ));
    assert_eq!(
        figures.sum(
            "directmail_outbound_deliveries_total",
            &[("kind", "message"), ("outcome", "sent")]
        ),
        1.0
    );
    assert_eq!(
        figures.sum(
            "directmail_outbound_deliveries_total",
            &[("kind", "mdn"), ("outcome", "sent")]
        ),
        2.0,
        "processed and dispatched went back: {}",
        figures.text
    );
    assert_eq!(
        figures.sum(
            "directmail_inbound_messages_total",
            &[("outcome", "delivered")]
        ),
        1.0
    );
    // nothing waits; nothing is in quarantine
    assert_eq!(
        figures.sum("directmail_outbound_queue_entries", &[]),
        0.0,
        "{}",
        figures.text
    );
    assert_eq!(figures.sum("directmail_quarantined_messages", &[]), 0.0);
    for secret in ["Referral", "Diaz", "dr.ana", "front@", "Ana Ruiz"] {
        assert!(
            !figures.text.contains(secret),
            "{secret} in\n{}",
            figures.text
        );
    }
}
