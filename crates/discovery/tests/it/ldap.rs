//! Discovery through LDAP servers named by SRV records, against real slapd
//! instances on loopback (DCDT DTS 505, 506, 507, 511, 515, 517, 520).

use directmail_discovery::responder::Records;
use directmail_discovery::{Binding, Method, RejectKind, Status};

use crate::harness::{
    Entry, Slapd, World, assert_no_step, assert_step, closed_port, pki, slapd_available, with_ldap,
};

fn bob<'a>(certs: Vec<&'a [u8]>) -> Entry<'a> {
    Entry {
        cn: "bob",
        mail: "bob@example.org",
        certs,
    }
}

fn domain<'a>(certs: Vec<&'a [u8]>) -> Entry<'a> {
    Entry {
        cn: "example.org",
        mail: "example.org",
        certs,
    }
}

#[tokio::test]
async fn a_valid_address_bound_certificate_in_ldap_is_found() {
    if !slapd_available() {
        return;
    }
    let pki = pki();
    let ldap = Slapd::start(&[bob(vec![&pki.ab]), domain(vec![&pki.db])]);
    let w = World::new(with_ldap(Records::new(), &[(0, 0, ldap.port)])).await;

    let out = w.discovery.lookup("bob@example.org").await.unwrap();

    assert_eq!(out.status, Status::Found, "{:#?}", out.steps);
    let found = out.certificate.unwrap();
    assert_eq!(found.der, pki.ab);
    assert_eq!(found.source.method, Method::Ldap);
    assert_eq!(found.source.binding, Binding::AddressBound);
    assert_eq!(out.summary, "certificate found via LDAP (address-bound)");
    let port = ldap.port;
    assert_step(
        &out.steps,
        &format!(
            "LDAP SRV _ldap._tcp.example.org: 1 server (ldap1.example.org:{port} priority 0 weight 0)"
        ),
    );
    assert_step(
        &out.steps,
        &format!("ldap1.example.org:{port} (127.0.0.1): connected, base DN dc=example,dc=org"),
    );
    assert_step(
        &out.steps,
        &format!("ldap1.example.org:{port}: (mail=bob@example.org): 1 entry, 1 certificate"),
    );
}

#[tokio::test]
async fn a_valid_domain_bound_certificate_in_ldap_is_found_under_mail_equals_domain() {
    if !slapd_available() {
        return;
    }
    let pki = pki();
    let ldap = Slapd::start(&[domain(vec![&pki.db])]);
    let w = World::new(with_ldap(Records::new(), &[(0, 0, ldap.port)])).await;

    let out = w.discovery.lookup("bob@example.org").await.unwrap();

    assert_eq!(out.status, Status::Found, "{:#?}", out.steps);
    let found = out.certificate.unwrap();
    assert_eq!(found.der, pki.db);
    assert_eq!(found.source.binding, Binding::DomainBound);
    assert_step(
        &out.steps,
        "(mail=bob@example.org): 0 entries, 0 certificates",
    );
    assert_step(&out.steps, "(mail=example.org): 1 entry, 1 certificate");
}

#[tokio::test]
async fn a_domain_bound_certificate_in_dns_wins_over_an_address_bound_one_in_ldap() {
    // DTS 501: DNS is asked first, address then domain, before LDAP
    if !slapd_available() {
        return;
    }
    let pki = pki();
    let ldap = Slapd::start(&[bob(vec![&pki.ab])]);
    let mut r = Records::new();
    r.add_cert("example.org", &pki.db, 600).unwrap();
    let w = World::new(with_ldap(r, &[(0, 0, ldap.port)])).await;

    let out = w.discovery.lookup("bob@example.org").await.unwrap();

    assert_eq!(out.certificate.unwrap().der, pki.db);
    assert_no_step(&out.steps, "LDAP SRV");
}

#[tokio::test]
async fn invalid_certificates_in_ldap_are_found_and_rejected() {
    if !slapd_available() {
        return;
    }
    let pki = pki();
    let ldap = Slapd::start(&[bob(vec![&pki.ab_untrusted]), domain(vec![&pki.db_expired])]);
    let w = World::new(with_ldap(Records::new(), &[(0, 0, ldap.port)])).await;

    let out = w.discovery.lookup("bob@example.org").await.unwrap();

    assert_eq!(out.status, Status::Rejected, "{:#?}", out.steps);
    assert_step(&out.steps, "rejected, does not chain to a trusted anchor");
    assert_step(&out.steps, "rejected, expired on 2021-01-01");
}

#[tokio::test]
async fn the_valid_certificate_of_two_in_one_ldap_entry_is_chosen() {
    if !slapd_available() {
        return;
    }
    let pki = pki();
    let ldap = Slapd::start(&[bob(vec![&pki.ab_revoked, &pki.ab])]);
    let w = World::new(with_ldap(Records::new(), &[(0, 0, ldap.port)])).await;

    let out = w.discovery.lookup("bob@example.org").await.unwrap();

    assert_eq!(out.status, Status::Found, "{:#?}", out.steps);
    assert_eq!(out.certificate.unwrap().der, pki.ab);
    assert_step(&out.steps, "1 entry, 2 certificates");
    assert_step(&out.steps, "rejected, revoked by its issuer (CRL)");
}

#[tokio::test]
async fn an_unreachable_ldap_server_is_skipped_for_the_next_one() {
    // DTS 507: the priority-0 server is down
    if !slapd_available() {
        return;
    }
    let pki = pki();
    let ldap = Slapd::start(&[bob(vec![&pki.ab])]);
    let dead = closed_port();
    let w = World::new(with_ldap(
        Records::new(),
        &[(0, 0, dead), (1, 0, ldap.port)],
    ))
    .await;

    let out = w.discovery.lookup("bob@example.org").await.unwrap();

    assert_eq!(out.status, Status::Found, "{:#?}", out.steps);
    assert_eq!(out.certificate.unwrap().der, pki.ab);
    assert_step(&out.steps, &format!("ldap1.example.org:{dead} unreachable"));
    // the dead server is not tried again for the domain-bound search
    let dead_mentions = out
        .steps
        .iter()
        .filter(|s| s.starts_with(&format!("ldap1.example.org:{dead}")))
        .count();
    assert_eq!(dead_mentions, 1, "{:#?}", out.steps);
}

#[tokio::test]
async fn an_ldap_server_that_accepts_but_never_answers_times_out_and_is_skipped() {
    if !slapd_available() {
        return;
    }
    let pki = pki();
    let ldap = Slapd::start(&[bob(vec![&pki.ab])]);
    let silent = tokio::net::TcpListener::bind((crate::harness::LOOPBACK, 0))
        .await
        .unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    // accept and hold connections without ever answering
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let w = World::new(with_ldap(
        Records::new(),
        &[(0, 0, silent_port), (1, 0, ldap.port)],
    ))
    .await;

    let started = std::time::Instant::now();
    let out = w.discovery.lookup("bob@example.org").await.unwrap();

    assert_eq!(out.certificate.unwrap().der, pki.ab, "{:#?}", out.steps);
    assert_step(
        &out.steps,
        &format!("ldap1.example.org:{silent_port} unreachable"),
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[tokio::test]
async fn the_lower_srv_priority_value_is_tried_first() {
    // DTS 506
    if !slapd_available() {
        return;
    }
    let pki = pki();
    let first = Slapd::start(&[bob(vec![&pki.ab])]);
    let second = Slapd::start(&[bob(vec![&pki.ab2])]);
    // listed in DNS with the priority-1 server first
    let w = World::new(with_ldap(
        Records::new(),
        &[(1, 0, second.port), (0, 0, first.port)],
    ))
    .await;

    let out = w.discovery.lookup("bob@example.org").await.unwrap();

    assert_eq!(out.certificate.unwrap().der, pki.ab, "{:#?}", out.steps);
    let p = first.port;
    assert_step(
        &out.steps,
        &format!("(ldap2.example.org:{p} priority 0 weight 0, "),
    );
}

#[tokio::test]
async fn within_one_priority_the_heavier_weight_is_tried_first() {
    if !slapd_available() {
        return;
    }
    let pki = pki();
    let light = Slapd::start(&[bob(vec![&pki.ab2])]);
    let heavy = Slapd::start(&[bob(vec![&pki.ab])]);
    let w = World::new(with_ldap(
        Records::new(),
        &[(5, 10, light.port), (5, 90, heavy.port)],
    ))
    .await;

    let out = w.discovery.lookup("bob@example.org").await.unwrap();

    assert_eq!(out.certificate.unwrap().der, pki.ab, "{:#?}", out.steps);
}

#[tokio::test]
async fn an_entry_without_a_certificate_on_one_server_does_not_hide_the_next() {
    // DTS 517
    if !slapd_available() {
        return;
    }
    let pki = pki();
    let empty = Slapd::start(&[bob(vec![])]);
    let full = Slapd::start(&[bob(vec![&pki.ab])]);
    let w = World::new(with_ldap(
        Records::new(),
        &[(1, 0, empty.port), (1, 0, full.port)],
    ))
    .await;

    let out = w.discovery.lookup("bob@example.org").await.unwrap();

    assert_eq!(out.certificate.unwrap().der, pki.ab, "{:#?}", out.steps);
    assert_step(
        &out.steps,
        &format!(
            "ldap1.example.org:{}: (mail=bob@example.org): 1 entry, 0 certificates",
            empty.port
        ),
    );
}

#[tokio::test]
async fn an_expired_address_bound_certificate_in_ldap_stops_discovery() {
    if !slapd_available() {
        return;
    }
    let pki = pki();
    let ldap = Slapd::start(&[bob(vec![&pki.ab_expired]), domain(vec![&pki.db])]);
    let w = World::new(with_ldap(Records::new(), &[(0, 0, ldap.port)])).await;

    let out = w.discovery.lookup("bob@example.org").await.unwrap();

    assert_eq!(
        out.status,
        Status::Stopped(RejectKind::Expired),
        "{:#?}",
        out.steps
    );
    assert_no_step(&out.steps, "(mail=example.org)");
}

#[tokio::test]
async fn a_revoked_address_bound_certificate_in_ldap_stops_discovery() {
    if !slapd_available() {
        return;
    }
    let pki = pki();
    let ldap = Slapd::start(&[bob(vec![&pki.ab_revoked]), domain(vec![&pki.db])]);
    let w = World::new(with_ldap(Records::new(), &[(0, 0, ldap.port)])).await;

    let out = w.discovery.lookup("bob@example.org").await.unwrap();

    assert_eq!(
        out.status,
        Status::Stopped(RejectKind::Revoked),
        "{:#?}",
        out.steps
    );
    assert_no_step(&out.steps, "(mail=example.org)");
}

#[tokio::test]
async fn no_certificate_when_every_ldap_server_is_unreachable() {
    // DTS 511 with a dead directory
    let w = World::new(with_ldap(Records::new(), &[(0, 0, closed_port())])).await;

    let out = w.discovery.lookup("bob@example.org").await.unwrap();

    assert_eq!(out.status, Status::NotFound);
    assert_eq!(
        out.summary,
        "no certificate found (no CERT record, LDAP servers unreachable)"
    );
}

#[tokio::test]
async fn no_certificate_when_the_directory_has_no_entry() {
    if !slapd_available() {
        return;
    }
    let ldap = Slapd::start(&[]);
    let w = World::new(with_ldap(Records::new(), &[(0, 0, ldap.port)])).await;

    let out = w.discovery.lookup("bob@example.org").await.unwrap();

    assert_eq!(out.status, Status::NotFound, "{:#?}", out.steps);
    assert_eq!(
        out.summary,
        "no certificate found (no CERT record, no LDAP entry)"
    );
}

#[tokio::test]
async fn an_srv_target_of_dot_means_no_ldap_service() {
    let mut r = Records::new();
    r.add_srv("_ldap._tcp.example.org", 0, 0, 389, ".", 300)
        .unwrap();
    let w = World::new(r).await;

    let out = w.discovery.lookup("bob@example.org").await.unwrap();

    assert_eq!(out.status, Status::NotFound);
    assert_step(&out.steps, "the domain offers no LDAP service");
    assert_eq!(
        out.summary,
        "no certificate found (no CERT record, no LDAP server)"
    );
}

#[tokio::test]
async fn garbage_in_an_ldap_certificate_attribute_is_rejected() {
    if !slapd_available() {
        return;
    }
    let pki = pki();
    let ldap = Slapd::start(&[
        bob(vec![b"garbage, not a certificate"]),
        domain(vec![&pki.db]),
    ]);
    let w = World::new(with_ldap(Records::new(), &[(0, 0, ldap.port)])).await;

    let out = w.discovery.lookup("bob@example.org").await.unwrap();

    assert_eq!(out.certificate.unwrap().der, pki.db, "{:#?}", out.steps);
    assert_step(&out.steps, "rejected, not an X.509 certificate");
}

#[tokio::test]
async fn hostile_characters_in_the_address_cannot_widen_the_ldap_filter() {
    if !slapd_available() {
        return;
    }
    let pki = pki();
    let hostile = "*)(mail=*@example.org";
    let ldap = Slapd::start(&[
        bob(vec![&pki.ab]),
        // an entry whose mail literally is the hostile string, without certificate
        Entry {
            cn: "hostile",
            mail: hostile,
            certs: vec![],
        },
    ]);
    let w = World::new(with_ldap(Records::new(), &[(0, 0, ldap.port)])).await;

    let out = w.discovery.lookup(hostile).await.unwrap();

    // only the literal entry matched: bob's certificate was not returned
    assert_eq!(out.status, Status::NotFound, "{:#?}", out.steps);
    assert_step(
        &out.steps,
        "(mail=\\2a\\29\\28mail=\\2a@example.org): 1 entry, 0 certificates",
    );
    assert_no_step(&out.steps, "certificate 1");
}

#[tokio::test]
async fn ldap_servers_on_internal_addresses_are_not_contacted_by_default() {
    if !slapd_available() {
        return;
    }
    let pki = pki();
    let ldap = Slapd::start(&[bob(vec![&pki.ab])]);
    let w = World::with_config(with_ldap(Records::new(), &[(0, 0, ldap.port)]), |c| {
        c.network = directmail_net::Policy::public_only()
    })
    .await;

    let out = w.discovery.lookup("bob@example.org").await.unwrap();

    assert_eq!(out.status, Status::NotFound);
    assert_step(&out.steps, "skipped, 127.0.0.1 is not a public address");
}
