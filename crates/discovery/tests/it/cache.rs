//! Caching by DNS TTL, a fixed time for LDAP, briefly for failures; and publishing.

use std::time::{Duration, SystemTime};

use directmail_discovery::responder::Records;
use directmail_discovery::{Status, cert_records};

use crate::harness::{Entry, Slapd, World, pki, slapd_available, with_ldap};

#[tokio::test]
async fn a_dns_result_is_cached_for_the_smallest_ttl_of_its_records() {
    let pki = pki();
    let mut r = Records::new();
    r.add_cert("bob@example.org", &pki.ab_expired, 900).unwrap();
    r.add_cert("bob@example.org", &pki.ab, 300).unwrap();
    let w = World::new(r).await;
    let t0 = SystemTime::now();

    let first = w.discovery.lookup_at("bob@example.org", t0).await.unwrap();
    assert_eq!(first.status, Status::Found);
    assert!(!first.from_cache);
    assert_eq!(first.expires_at, t0 + Duration::from_secs(300));

    // the record goes away, but the cached answer stands until the TTL runs out
    w.dns.set_records(Records::new());
    let cached = w
        .discovery
        .lookup_at("BOB@example.org", t0 + Duration::from_secs(299))
        .await
        .unwrap();
    assert!(cached.from_cache);
    assert_eq!(cached.certificate, first.certificate);

    let fresh = w
        .discovery
        .lookup_at("bob@example.org", t0 + Duration::from_secs(301))
        .await
        .unwrap();
    assert!(!fresh.from_cache);
    assert_eq!(fresh.status, Status::NotFound);
}

#[tokio::test]
async fn a_failure_is_cached_for_a_minute_only() {
    let pki = pki();
    let w = World::new(Records::new()).await;
    let t0 = SystemTime::now();

    let first = w.discovery.lookup_at("bob@example.org", t0).await.unwrap();
    assert_eq!(first.status, Status::NotFound);
    assert_eq!(first.expires_at, t0 + Duration::from_secs(60));

    let mut r = Records::new();
    r.add_cert("bob@example.org", &pki.ab, 300).unwrap();
    w.dns.set_records(r);
    let cached = w
        .discovery
        .lookup_at("bob@example.org", t0 + Duration::from_secs(59))
        .await
        .unwrap();
    assert!(cached.from_cache);
    assert_eq!(cached.status, Status::NotFound);

    let later = w
        .discovery
        .lookup_at("bob@example.org", t0 + Duration::from_secs(61))
        .await
        .unwrap();
    assert_eq!(later.status, Status::Found);

    // forget() drops an entry at once
    w.dns.set_records(Records::new());
    w.discovery.forget("bob@example.org");
    let after = w
        .discovery
        .lookup_at("bob@example.org", t0 + Duration::from_secs(62))
        .await
        .unwrap();
    assert_eq!(after.status, Status::NotFound);
}

#[tokio::test]
async fn an_ldap_result_is_cached_for_an_hour() {
    if !slapd_available() {
        return;
    }
    let pki = pki();
    let ldap = Slapd::start(&[Entry {
        cn: "bob",
        mail: "bob@example.org",
        certs: vec![&pki.ab],
    }]);
    let w = World::new(with_ldap(Records::new(), &[(0, 0, ldap.port)])).await;
    let t0 = SystemTime::now();

    let out = w.discovery.lookup_at("bob@example.org", t0).await.unwrap();

    assert_eq!(out.status, Status::Found, "{:#?}", out.steps);
    assert_eq!(out.expires_at, t0 + Duration::from_secs(3600));
    drop(ldap);
    let cached = w
        .discovery
        .lookup_at("bob@example.org", t0 + Duration::from_secs(3599))
        .await
        .unwrap();
    assert!(cached.from_cache);
    assert_eq!(cached.certificate.unwrap().der, pki.ab);
}

#[tokio::test]
async fn a_published_certificate_is_confirmed_in_live_dns() {
    let pki = pki();
    let line = cert_records("bob@example.org", &pki.ab, 3600).unwrap();
    assert!(
        line.starts_with("bob.example.org. 3600 IN CERT PKIX 0 0 MII"),
        "{line}"
    );
    assert!(line.ends_with('\n') && !line.trim_end().contains('\n'));

    let w = World::new(Records::new()).await;
    let before = w
        .discovery
        .check_published("bob@example.org", &pki.ab)
        .await
        .unwrap();
    assert!(!before.published);
    assert_eq!(before.detail, "bob.example.org has no CERT record");

    let mut r = Records::new();
    r.add_cert("bob@example.org", &pki.ab, 3600).unwrap();
    w.dns.set_records(r);
    let after = w
        .discovery
        .check_published("bob@example.org", &pki.ab)
        .await
        .unwrap();
    assert!(after.published, "{}", after.detail);
    assert_eq!(
        after.detail,
        "bob.example.org answers with this certificate (TTL 3600 s)"
    );

    let other = w
        .discovery
        .check_published("bob@example.org", &pki.ab2)
        .await
        .unwrap();
    assert!(!other.published);
    assert_eq!(
        other.detail,
        "bob.example.org has 1 CERT record(s), none with this certificate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_run_in_spawned_tasks_side_by_side() {
    // tokio::spawn needs a `Send + 'static` future: this is what a web handler needs
    let pki = pki();
    let mut r = Records::new();
    r.add_cert("bob@example.org", &pki.ab, 300).unwrap();
    let World { dns, discovery } = World::new(r).await;
    let discovery = std::sync::Arc::new(discovery);
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let d = discovery.clone();
            tokio::spawn(async move { d.lookup("bob@example.org").await })
        })
        .collect();
    for t in tasks {
        let out = t.await.unwrap().unwrap();
        assert_eq!(out.status, Status::Found, "{:#?}", out.steps);
    }
    drop(dns);
}
