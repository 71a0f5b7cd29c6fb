//! Certificate discovery from the portal: a recipient on another HISP whose
//! certificate is published in DNS (a CERT record served on loopback) is found,
//! checked against this HISP's anchors, and shown on the compose page's chip; an
//! untrusted or missing one is refused with the reason.

use std::sync::Arc;
use std::time::SystemTime;

use der::Encode as _;
use directmail::domain::Role;
use directmail_discovery::responder::{Records, Responder};
use directmail_smime::DevCa;
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;

use crate::helpers::TestApp;

pub(crate) async fn check(b: &mut crate::helpers::Browser, address: &str) -> serde_json::Value {
    let r = b
        .client
        .get(format!(
            "{}/mail/check-address?address={}",
            b.base,
            url::form_urlencoded::byte_serialize(address.as_bytes()).collect::<String>()
        ))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    r.json().await.unwrap()
}

#[tokio::test]
async fn a_certificate_published_in_dns_is_found_checked_and_shown_on_the_chip() {
    // a DNS server on loopback for the other HISPs' names
    let (app, dns, _) = TestApp::spawn_with_dns().await;
    // the other HISP's certificate comes from a CA this HISP trusts (the development
    // CA, an anchor of the hosted domain); a stranger's CA is trusted by nobody here
    let ca = directmail::pki::dev_ca(&app.state.db, &app.state.secret, app.now())
        .await
        .unwrap();
    let trusted = ca
        .issue_address("dr.who@direct.elsewhere.test", SystemTime::now())
        .unwrap();
    let stranger = DevCa::generate("Stranger CA", SystemTime::now()).unwrap();
    let untrusted = stranger
        .issue_address("mallory@direct.elsewhere.test", SystemTime::now())
        .unwrap();
    let mut records = Records::new();
    records
        .add_cert(
            "dr.who@direct.elsewhere.test",
            &trusted.certificate().to_der().unwrap(),
            300,
        )
        .unwrap();
    records
        .add_cert(
            "mallory@direct.elsewhere.test",
            &untrusted.certificate().to_der().unwrap(),
            300,
        )
        .unwrap();
    dns.set_records(records);

    let mut ana = app.signed_in("ana@direct.lakeside.test").await;
    let found = check(&mut ana, "dr.who@direct.elsewhere.test").await;
    assert_eq!(found["ok"], true, "{found}");
    assert_eq!(found["note"], "certificate found via DNS");

    let refused = check(&mut ana, "mallory@direct.elsewhere.test").await;
    assert_eq!(refused["ok"], false, "{refused}");
    let note = refused["note"].as_str().unwrap();
    assert!(note.contains("mallory@direct.elsewhere.test"), "{note}");
    assert!(
        note.contains("trust anchor") || note.contains("rejected"),
        "{note}"
    );

    let nothing = check(&mut ana, "nobody@direct.elsewhere.test").await;
    assert_eq!(nothing["ok"], false, "{nothing}");
    assert!(
        nothing["note"]
            .as_str()
            .unwrap()
            .starts_with(directmail::recipients::NOT_DIRECT),
        "{nothing}"
    );
    assert!(dns.udp_queries() + dns.tcp_queries() > 0);

    // the operator sees every step of a lookup; a member may not run one
    assert_eq!(
        ana.get("/discovery?address=dr.who%40direct.elsewhere.test")
            .await
            .status,
        reqwest::StatusCode::FORBIDDEN
    );
    app.user(
        None,
        "hisp.ops@direct.localhost",
        directmail::domain::Role::Operator,
    )
    .await;
    let mut op = app.signed_in("hisp.ops@direct.localhost").await;
    let page = op
        .get("/discovery?address=mallory%40direct.elsewhere.test")
        .await;
    assert!(page.body.contains("DNS CERT at"), "{}", page.body);
    assert!(page.body.contains("id=\"steps\""));
    let page = op
        .get("/discovery?address=dr.who%40direct.elsewhere.test")
        .await;
    assert!(page.body.contains("SHA-256 fingerprint"), "{}", page.body);
    dns.shutdown().await;
}

#[tokio::test]
async fn the_operator_sees_the_cert_records_to_publish_and_the_responder_answers_them() {
    // a free port, asked for and let go: a parallel test may take it (for UDP or TCP)
    // before the responder binds it, so a taken one is swapped for another
    let mut tries = 0;
    let app = loop {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        match TestApp::try_spawn_with(|c| {
            c.dns_cert_addr = Some(port);
            // discovery (and the "check the live DNS" button) asks the same server
            c.dns_resolver = Some(port);
        })
        .await
        {
            Ok(app) => break app,
            Err(e) if tries < 10 && e.to_string().contains("cannot answer DNS") => tries += 1,
            Err(e) => panic!("the application builds: {e:#}"),
        }
    };
    let mailbox = app
        .practice(
            "Lakeside Clinic",
            "direct.lakeside.test",
            "ana@direct.lakeside.test",
            "dr.ana@direct.lakeside.test",
        )
        .await;
    app.user(
        None,
        "hisp.ops@direct.localhost",
        directmail::domain::Role::Operator,
    )
    .await;
    let mut op = app.signed_in("hisp.ops@direct.localhost").await;
    let page = op
        .get(&format!(
            "/orgs/{}/domains/{}",
            mailbox.org_id, mailbox.domain_id
        ))
        .await;
    assert!(
        page.body
            .contains("direct.lakeside.test. 3600 IN CERT PKIX 0 0 "),
        "{}",
        page.body
    );
    // the responder reloads every 10 seconds; the development certificate was issued
    // after start-up, so wait for it to be served
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        op.post(
            &format!(
                "/orgs/{}/domains/{}/dns-check",
                mailbox.org_id, mailbox.domain_id
            ),
            &[],
        )
        .await;
        let page = op
            .get(&format!(
                "/orgs/{}/domains/{}",
                mailbox.org_id, mailbox.domain_id
            ))
            .await;
        if page.body.contains("direct.lakeside.test: published") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never published: {}",
            page.body
        );
        app.state.discovery.clear_cache();
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    // and another HISP's discovery finds it there
    let found = check(&mut op, "dr.ana@direct.lakeside.test").await;
    assert_eq!(found["ok"], true, "{found}");
}

/// A DNS forwarder on loopback that answers a query only when the test lets one
/// through (one permit a query): the lookup waits at each query until then.
async fn gated_dns(upstream: std::net::SocketAddr) -> (std::net::SocketAddr, Arc<Semaphore>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let permits = gate.clone();
    tokio::spawn(async move {
        let mut query = vec![0u8; 4096];
        while let Ok((n, from)) = socket.recv_from(&mut query).await {
            let Ok(permit) = permits.acquire().await else {
                return;
            };
            permit.forget();
            let up = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            up.send_to(&query[..n], upstream).await.unwrap();
            let mut answer = vec![0u8; 4096];
            if let Ok(m) = up.recv(&mut answer).await {
                let _ = socket.send_to(&answer[..m], from).await;
            }
        }
    });
    (addr, gate)
}

#[tokio::test]
async fn the_operators_lookup_shows_each_step_as_it_is_taken() {
    let dns = Responder::start("127.0.0.1:0".parse().unwrap(), Records::new())
        .await
        .unwrap();
    let (gated, gate) = gated_dns(dns.local_addr()).await;
    let app = TestApp::spawn_with(|c| c.dns_resolver = Some(gated)).await;
    app.user(None, "hisp.ops@direct.localhost", Role::Operator)
        .await;
    let op = app.signed_in("hisp.ops@direct.localhost").await;
    let mut page = op
        .client
        .get(app.url("/discovery?address=someone%40direct.nowhere.test"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), reqwest::StatusCode::OK);
    let mut body = String::new();
    // the page, up to its list of steps, comes while no DNS query has been answered
    while !body.contains("id=\"steps\"") {
        let chunk = page
            .chunk()
            .await
            .unwrap()
            .expect("the page up to its steps");
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(body.contains("Looking up someone@direct.nowhere.test"));
    assert!(!body.contains("id=\"outcome\""), "{body}");
    // one query answered: its step shows while the lookup waits on the next
    gate.add_permits(1);
    while !body.contains("<li>") {
        let chunk = page.chunk().await.unwrap().expect("a first step");
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        !body.contains("id=\"outcome\""),
        "the first step came with the outcome, not before it: {body}"
    );
    // the rest answered: the other steps and the outcome follow, and the page ends
    gate.add_permits(1000);
    while let Some(chunk) = page.chunk().await.unwrap() {
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    let steps = body.matches("<li>").count();
    assert!(steps >= 3, "CERT twice and LDAP: {body}");
    let outcome = body.find("id=\"outcome\"").expect("the outcome");
    assert!(body.rfind("<li>").unwrap() < outcome);
    assert!(body.trim_end().ends_with("</html>"));
    dns.shutdown().await;
}
