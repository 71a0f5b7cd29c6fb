//! Discovery through DNS CERT records served by the crate's responder on loopback
//! (DCDT DTS 500, 501, 502, 512 and the malformed-record cases).

use std::collections::HashMap;

use directmail_discovery::responder::Records;
use directmail_discovery::{Binding, Method, RejectKind, Status};

use crate::harness::{World, assert_no_step, assert_step, http_server, pki};

#[tokio::test]
async fn a_valid_address_bound_certificate_in_dns_is_chosen_over_the_domain_one() {
    let pki = pki();
    let mut r = Records::new();
    r.add_cert("bob@example.org", &pki.ab, 600).unwrap();
    r.add_cert("example.org", &pki.db, 600).unwrap();
    let w = World::new(r).await;

    let out = w.discovery.lookup("Bob@Example.org").await.unwrap();

    assert_eq!(out.status, Status::Found, "{:#?}", out.steps);
    let found = out.certificate.unwrap();
    assert_eq!(found.der, pki.ab);
    assert_eq!(found.source.method, Method::Dns);
    assert_eq!(found.source.binding, Binding::AddressBound);
    assert_eq!(out.summary, "certificate found via DNS (address-bound)");
    assert_eq!(
        out.steps[0], "DNS CERT at bob.example.org: 1 record (PKIX)",
        "{:#?}",
        out.steps
    );
    assert_step(&out.steps, "certificate 1 (PKIX): accepted, valid until ");
    // the domain-bound record was never needed
    assert_no_step(&out.steps, "DNS CERT at example.org");
}

#[tokio::test]
async fn a_valid_domain_bound_certificate_in_dns_is_found_when_the_address_has_none() {
    let pki = pki();
    let mut r = Records::new();
    r.add_cert("example.org", &pki.db, 600).unwrap();
    let w = World::new(r).await;

    let out = w.discovery.lookup("bob@example.org").await.unwrap();

    assert_eq!(out.status, Status::Found, "{:#?}", out.steps);
    let found = out.certificate.unwrap();
    assert_eq!(found.der, pki.db);
    assert_eq!(found.source.binding, Binding::DomainBound);
    assert_eq!(
        &out.steps[..2],
        [
            "DNS CERT at bob.example.org: none",
            "DNS CERT at example.org: 1 record (PKIX)"
        ]
    );
    assert_eq!(out.summary, "certificate found via DNS (domain-bound)");
}

#[tokio::test]
async fn a_cert_answer_over_512_bytes_is_fetched_over_tcp() {
    let pki = pki();
    assert!(pki.ab.len() > 512, "the test certificate must not fit UDP");
    let mut r = Records::new();
    r.add_cert("bob@example.org", &pki.ab, 600).unwrap();
    let w = World::new(r).await;

    let out = w.discovery.lookup("bob@example.org").await.unwrap();

    assert_eq!(out.certificate.unwrap().der, pki.ab);
    // truncated over UDP, then asked again over TCP
    assert!(w.dns.udp_queries() >= 1);
    assert!(w.dns.tcp_queries() >= 1, "no TCP query was made");
}

#[tokio::test]
async fn invalid_certificates_in_dns_are_found_and_rejected() {
    let pki = pki();
    let mut r = Records::new();
    // untrusted issuer: the validator refuses, which does not stop discovery
    r.add_cert("bob@example.org", &pki.ab_untrusted, 600)
        .unwrap();
    r.add_cert("example.org", &pki.db_expired, 600).unwrap();
    let w = World::new(r).await;

    let out = w.discovery.lookup("bob@example.org").await.unwrap();

    assert_eq!(out.status, Status::Rejected, "{:#?}", out.steps);
    assert!(out.certificate.is_none());
    assert_step(
        &out.steps,
        "certificate 1 (PKIX): rejected, does not chain to a trusted anchor",
    );
    assert_step(
        &out.steps,
        "certificate 2 (PKIX): rejected, expired on 2021-01-01",
    );
    assert_eq!(
        out.summary,
        "the 2 certificates found for bob@example.org were all rejected (first: does not chain to a trusted anchor); mail cannot be encrypted for this address"
    );
}

#[tokio::test]
async fn the_valid_certificate_of_two_is_chosen() {
    let pki = pki();
    let mut r = Records::new();
    r.add_cert("bob@example.org", &pki.ab_expired, 600).unwrap();
    r.add_cert("bob@example.org", &pki.ab, 600).unwrap();
    let w = World::new(r).await;

    let out = w.discovery.lookup("bob@example.org").await.unwrap();

    assert_eq!(out.status, Status::Found, "{:#?}", out.steps);
    assert_eq!(out.certificate.unwrap().der, pki.ab);
    assert_step(
        &out.steps,
        "DNS CERT at bob.example.org: 2 records (PKIX, PKIX)",
    );
    assert_step(&out.steps, "rejected, expired on 2021-01-01");
}

#[tokio::test]
async fn an_expired_address_bound_certificate_stops_discovery_without_domain_fallback() {
    let pki = pki();
    let mut r = Records::new();
    r.add_cert("bob@example.org", &pki.ab_expired, 600).unwrap();
    r.add_cert("example.org", &pki.db, 600).unwrap();
    let w = World::new(r).await;

    let out = w.discovery.lookup("bob@example.org").await.unwrap();

    assert_eq!(out.status, Status::Stopped(RejectKind::Expired));
    assert!(out.certificate.is_none());
    assert_eq!(
        out.summary,
        "the certificate found for bob@example.org is expired; mail cannot be encrypted for this address"
    );
    assert_step(
        &out.steps,
        "certificate 1 (PKIX): rejected, expired on 2021-01-01",
    );
    assert_no_step(&out.steps, "DNS CERT at example.org");
    assert_no_step(&out.steps, "LDAP");
}

#[tokio::test]
async fn a_revoked_address_bound_certificate_stops_discovery() {
    let pki = pki();
    let mut r = Records::new();
    r.add_cert("bob@example.org", &pki.ab_revoked, 600).unwrap();
    r.add_cert("example.org", &pki.db, 600).unwrap();
    let w = World::new(r).await;

    let out = w.discovery.lookup("bob@example.org").await.unwrap();

    assert_eq!(
        out.status,
        Status::Stopped(RejectKind::Revoked),
        "{:#?}",
        out.steps
    );
    assert_eq!(
        out.summary,
        "the certificate found for bob@example.org is revoked; mail cannot be encrypted for this address"
    );
    assert_step(&out.steps, "rejected, revoked by its issuer (CRL)");
    assert_no_step(&out.steps, "DNS CERT at example.org");
}

#[tokio::test]
async fn a_certificate_for_another_address_is_not_bound_and_the_domain_one_is_used() {
    let pki = pki();
    let mut r = Records::new();
    r.add_cert("bob@example.org", &pki.ab_other, 600).unwrap();
    r.add_cert("example.org", &pki.db, 600).unwrap();
    let w = World::new(r).await;

    let out = w.discovery.lookup("bob@example.org").await.unwrap();

    assert_eq!(out.certificate.unwrap().der, pki.db);
    assert_step(
        &out.steps,
        "rejected, not bound to bob@example.org (it names email alice@example.org)",
    );
}

#[tokio::test]
async fn a_dot_in_the_local_part_is_looked_up_as_one_label() {
    let pki = pki();
    let mut r = Records::new();
    // stored at the single label `john.doe` under example.org
    r.add_cert("john.doe@example.org", &pki.ab_dotted, 600)
        .unwrap();
    let w = World::new(r).await;

    let out = w.discovery.lookup("john.doe@example.org").await.unwrap();

    assert_eq!(out.status, Status::Found, "{:#?}", out.steps);
    assert_eq!(out.certificate.unwrap().der, pki.ab_dotted);
    assert_eq!(
        out.steps[0],
        "DNS CERT at john\\.doe.example.org: 1 record (PKIX)"
    );
}

#[tokio::test]
async fn a_cert_record_with_garbage_data_is_rejected_and_discovery_goes_on() {
    let pki = pki();
    let mut r = Records::new();
    r.add_cert("bob@example.org", b"\x30\x82\xff\xffnot DER at all", 600)
        .unwrap();
    // a type this crate does not use is reported and skipped
    r.add_cert_record("bob@example.org", 3, b"PGP key".to_vec(), 600)
        .unwrap();
    r.add_cert("example.org", &pki.db, 600).unwrap();
    let w = World::new(r).await;

    let out = w.discovery.lookup("bob@example.org").await.unwrap();

    assert_eq!(out.certificate.unwrap().der, pki.db, "{:#?}", out.steps);
    assert_step(
        &out.steps,
        "certificate 1 (PKIX): rejected, not an X.509 certificate",
    );
    assert_step(&out.steps, "CERT record of type PGP ignored");
}

#[tokio::test]
async fn an_ipkix_record_is_fetched_over_http() {
    let pki = pki();
    let port = http_server(HashMap::from([("/bob.cer".to_owned(), pki.ab.clone())])).await;
    let url = format!("http://certs.example.org:{port}/bob.cer");
    let mut r = Records::new();
    r.add_ipkix("bob@example.org", &url, 600).unwrap();
    r.add_address("certs.example.org", crate::harness::LOOPBACK, 600)
        .unwrap();
    let w = World::new(r).await;

    let out = w.discovery.lookup("bob@example.org").await.unwrap();

    assert_eq!(out.status, Status::Found, "{:#?}", out.steps);
    assert_eq!(out.certificate.unwrap().der, pki.ab);
    assert_step(
        &out.steps,
        &format!("certificate 1 (IPKIX {url}): accepted"),
    );
}

#[tokio::test]
async fn an_oversized_ipkix_answer_is_not_read_to_the_end() {
    let pki = pki();
    let huge = vec![0x41u8; 4 * 1024 * 1024];
    let port = http_server(HashMap::from([("/huge".to_owned(), huge)])).await;
    let mut r = Records::new();
    r.add_ipkix(
        "bob@example.org",
        &format!("http://127.0.0.1:{port}/huge"),
        600,
    )
    .unwrap();
    r.add_cert("example.org", &pki.db, 600).unwrap();
    let w = World::new(r).await;

    let out = w.discovery.lookup("bob@example.org").await.unwrap();

    assert_step(&out.steps, "larger than 65536 bytes, not fetched");
    assert_eq!(out.certificate.unwrap().der, pki.db);
}

#[tokio::test]
async fn an_ipkix_url_pointing_inside_the_network_is_refused_by_default() {
    let pki = pki();
    let port = http_server(HashMap::from([("/bob.cer".to_owned(), pki.ab.clone())])).await;
    let mut r = Records::new();
    r.add_ipkix(
        "bob@example.org",
        &format!("http://127.0.0.1:{port}/bob.cer"),
        600,
    )
    .unwrap();
    let w = World::with_config(r, |c| c.network = directmail_net::Policy::public_only()).await;

    let out = w.discovery.lookup("bob@example.org").await.unwrap();

    assert_eq!(out.status, Status::Rejected, "{:#?}", out.steps);
    assert_step(&out.steps, "refused, 127.0.0.1 is not a public address");
}

#[tokio::test]
async fn an_ipkix_url_of_another_scheme_is_not_fetched() {
    let mut r = Records::new();
    r.add_ipkix("bob@example.org", "file:///etc/passwd", 600)
        .unwrap();
    let w = World::new(r).await;

    let out = w.discovery.lookup("bob@example.org").await.unwrap();

    assert_eq!(out.status, Status::Rejected);
    assert_step(&out.steps, "only http:// URLs are fetched");
}

#[tokio::test]
async fn no_certificate_anywhere_says_so() {
    let w = World::new(Records::new()).await;

    let out = w.discovery.lookup("bob@example.org").await.unwrap();

    assert_eq!(out.status, Status::NotFound);
    assert!(!out.incomplete);
    assert_eq!(
        out.summary,
        "no certificate found (no CERT record, no LDAP server)"
    );
    assert_eq!(
        out.steps,
        [
            "DNS CERT at bob.example.org: none",
            "DNS CERT at example.org: none",
            "LDAP SRV _ldap._tcp.example.org: none",
        ]
    );
}

#[tokio::test]
async fn a_dns_server_that_does_not_answer_makes_the_outcome_incomplete() {
    // a UDP port nobody reads, and a closed TCP port
    let silent = std::net::UdpSocket::bind((crate::harness::LOOPBACK, 0)).unwrap();
    let addr = silent.local_addr().unwrap();
    let cfg = directmail_discovery::Config {
        dns_timeout: std::time::Duration::from_millis(300),
        ..crate::harness::config(addr)
    };
    let d = directmail_discovery::Discovery::new(cfg, crate::harness::validator()).unwrap();

    let out = d.lookup("bob@example.org").await.unwrap();

    assert_eq!(out.status, Status::NotFound);
    assert!(out.incomplete);
    assert_step(&out.steps, "DNS CERT at bob.example.org: lookup failed");
    assert_eq!(
        out.summary,
        "no certificate found (DNS CERT lookup failed, LDAP SRV lookup failed)"
    );
}

#[tokio::test]
async fn malformed_addresses_are_refused_before_any_lookup() {
    let w = World::new(Records::new()).await;
    for bad in ["bob", "bob@", "bob@ex ample.org", "bob@[127.0.0.1]"] {
        assert!(w.discovery.lookup(bad).await.is_err(), "{bad}");
    }
    assert_eq!(w.dns.udp_queries() + w.dns.tcp_queries(), 0);
}
