//! The server cannot be aimed at its own network: what a certificate, a redirect or a
//! DNS answer names is fetched only from addresses the outbound-connection policy
//! allows (public ones, by default), and a slow server holds up only its own message.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use directmail::pki::fetch::Fetcher;
use directmail::store::inbound;
use directmail_net::Policy;

use crate::inbound::{outcome, send_over_smtp, with_mailbox};
use crate::revocation::{message, setup_with};

/// Sends `raw` from dr.smith to the front desk over SMTP; the new inbound id.
async fn arrive(s: &crate::revocation::Setup, from: &str, raw: &[u8]) -> i64 {
    let replies = send_over_smtp(s.app.smtp_addr, from, &["front@direct.lakeside.test"], raw).await;
    assert!(replies[5].starts_with("250"), "{replies:?}");
    sqlx::query_scalar("select max(id) from inbound_messages")
        .fetch_one(&s.app.state.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_certificate_pointing_inside_our_network_makes_the_server_fetch_nothing() {
    // the default policy: public addresses only; the certificates point at 127.0.0.1
    let s = setup_with(|c| c.allow_private_networks = None, None).await;
    with_mailbox(&s).await;
    let dir = s.app.data_dir.path().to_path_buf();
    // (setup's import of our own certificate fetched the intermediate, as the test)
    let fetched_by_setup = s.files.hits("int.cer");

    // the intermediate is missing and its AIA URL is on loopback: not fetched
    let id = arrive(
        &s,
        "dr.smith@direct.sender.test",
        &message(&dir, "sender", "dr.smith@direct.sender.test", false),
    )
    .await;
    assert_eq!(outcome(&s, id).await, "untrusted_anchor");
    let row = inbound::get(&s.app.state.db, id).await.unwrap().unwrap();
    let steps = row.steps.unwrap_or_default();
    assert!(
        steps.contains("127.0.0.1 is not a public address"),
        "the steps say why: {steps}"
    );
    assert_eq!(
        s.files.hits("int.cer"),
        fetched_by_setup,
        "nothing was asked of loopback"
    );

    // with the intermediate, the CRL on loopback is not fetched either (soft-fail)
    let id = arrive(
        &s,
        "dr.smith@direct.sender.test",
        &message(&dir, "sender", "dr.smith@direct.sender.test", true),
    )
    .await;
    assert_eq!(outcome(&s, id).await, "delivered");
    assert_eq!(s.files.hits("int.crl"), 0);
}

/// A web server on `ip` that redirects `/hop` to `to` and counts every request.
async fn server(ip: &str, to: Option<String>) -> (u16, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let (to, counted) = (to.clone(), counted.clone());
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            match to {
                Some(to) => (StatusCode::FOUND, [(header::LOCATION, to)]).into_response(),
                None => (StatusCode::OK, "not a certificate").into_response(),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind(format!("{ip}:0"))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, hits)
}

#[tokio::test]
async fn every_redirect_hop_and_every_resolved_address_is_checked() {
    // the operator allows one address of their own network, 127.0.0.1
    let policy = Policy::parse("127.0.0.1").unwrap();
    let fetcher = Fetcher::new(Duration::from_secs(5), policy, &[]).unwrap();
    let (inside_port, inside_hits) = server("127.0.0.2", None).await;
    let (port, hits) = server(
        "127.0.0.1",
        Some(format!("http://127.0.0.2:{inside_port}/int.cer")),
    )
    .await;
    let now = 1_800_000_000;

    // an allowed server that redirects to a refused one
    let e = fetcher
        .issuers(&format!("http://127.0.0.1:{port}/hop"), now)
        .await
        .unwrap_err();
    assert!(e.0.contains("127.0.0.2 is not a public address"), "{e}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_eq!(
        inside_hits.load(Ordering::SeqCst),
        0,
        "the hop was not followed"
    );

    // a refused address in the URL itself
    let e = fetcher
        .crl(&format!("http://127.0.0.2:{inside_port}/int.crl"), now)
        .await
        .unwrap_err();
    assert!(e.0.contains("127.0.0.2 is not a public address"), "{e}");
    // cloud metadata, named outright
    let e = fetcher
        .issuers("http://169.254.169.254/latest/meta-data/", now)
        .await
        .unwrap_err();
    assert!(
        e.0.contains("169.254.169.254 is not a public address"),
        "{e}"
    );
    assert_eq!(inside_hits.load(Ordering::SeqCst), 0);

    // a name is checked on what it resolves to: localhost is 127.0.0.1 (and ::1)
    let only_two = Fetcher::new(
        Duration::from_secs(5),
        Policy::parse("127.0.0.2").unwrap(),
        &[],
    )
    .unwrap();
    let e = only_two
        .issuers(&format!("http://localhost:{port}/int.cer"), now)
        .await
        .unwrap_err();
    assert!(e.0.contains("is not a public address"), "{e}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "localhost was not contacted"
    );
}

#[tokio::test]
async fn a_crl_server_that_never_answers_holds_up_only_its_own_message() {
    // a server that accepts connections and never says a word
    let tarpit = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tarpit_addr = tarpit.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = tarpit.accept().await {
            held.push(socket);
        }
    });
    let s = setup_with(
        |c| c.fetch_timeout_seconds = 120,
        Some(format!("http://{tarpit_addr}")),
    )
    .await;
    let mailbox = with_mailbox(&s).await;
    let dir = s.app.data_dir.path().to_path_buf();
    // the "lonely" signer's CRL is on the tarpit
    let stuck = arrive(
        &s,
        "dr.alone@direct.sender.test",
        &message(&dir, "lonely", "dr.alone@direct.sender.test", true),
    )
    .await;
    s.app.state.wake_processor.notify_one();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while inbound::get(&s.app.state.db, stuck)
        .await
        .unwrap()
        .unwrap()
        .state
        != "processing"
    {
        assert!(std::time::Instant::now() < deadline, "never claimed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // another message arrives and is delivered while the first still waits
    let next = arrive(
        &s,
        "dr.smith@direct.sender.test",
        &message(&dir, "sender", "dr.smith@direct.sender.test", true),
    )
    .await;
    assert_eq!(outcome(&s, next).await, "delivered");
    assert_eq!(
        inbound::get(&s.app.state.db, stuck)
            .await
            .unwrap()
            .unwrap()
            .state,
        "processing",
        "the first message is still waiting for its CRL"
    );
    assert_eq!(
        inbound::messages_in(&s.app.state.db, mailbox, "inbox", 10)
            .await
            .unwrap()
            .len(),
        1
    );
}
