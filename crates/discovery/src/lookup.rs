//! One uncached lookup: the order of places to look (AS §5; DCDT DTS 500–520), the
//! choice among the certificates found, the step log and the summary.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use hickory_resolver::proto::rr::Name;
use hickory_resolver::proto::rr::rdata::cert::CertType;

use crate::address::Recipient;
use crate::certs::{Binding, RejectKind, Rejection, local_checks};
use crate::dns::{self, Answer, FetchLimits};
use crate::ldap::{self, Connection, SrvTarget};
use crate::{Discovered, Discovery, Method, Outcome, Source, Status, human_name};

/// A certificate candidate: its bytes, or why there are none (an IPKIX fetch failed).
struct Candidate {
    what: String,
    der: Result<Vec<u8>, String>,
}

enum Verdict {
    Chosen(Vec<u8>, String),
    Stop(Rejection),
    Continue,
}

/// What happened at LDAP, for the summary.
#[derive(Default)]
struct LdapSeen {
    srv: Option<bool>,
    srv_failed: bool,
    reached: usize,
    entries: usize,
}

enum ServerState {
    Untried,
    Dead,
    Open(Connection),
}

struct Run<'a> {
    d: &'a Discovery,
    r: &'a Recipient,
    now: SystemTime,
    steps: Vec<String>,
    counter: usize,
    incomplete: bool,
    dns_failed: bool,
    rejected: Vec<String>,
    ldap: LdapSeen,
    /// Told each step as it is taken (the operator's lookup page shows them live).
    progress: Option<Progress>,
}

/// Where a watched lookup sends its steps as they are taken.
pub type Progress = tokio::sync::mpsc::UnboundedSender<String>;

pub(crate) async fn run(
    d: &Discovery,
    r: &Recipient,
    now: SystemTime,
    progress: Option<Progress>,
) -> Outcome {
    let mut run = Run {
        d,
        r,
        now,
        progress,
        steps: Vec::new(),
        counter: 0,
        incomplete: false,
        dns_failed: false,
        rejected: Vec::new(),
        ldap: LdapSeen::default(),
    };
    let ended = run.search().await;
    run.finish(ended)
}

/// How the search ended: the chosen certificate (with the TTL to cache it for), or
/// a stop, or nothing.
enum Ended {
    Found(Discovered, Duration),
    Stopped(Rejection),
    Nothing,
}

impl Run<'_> {
    async fn search(&mut self) -> Ended {
        for binding in [Binding::AddressBound, Binding::DomainBound] {
            match self.dns(binding).await {
                Ended::Nothing => {}
                ended => return ended,
            }
        }
        self.ldap().await
    }

    fn step(&mut self, s: String) {
        if let Some(progress) = &self.progress {
            // a watcher that went away stops nothing
            let _ = progress.send(s.clone());
        }
        self.steps.push(s);
    }

    async fn dns(&mut self, binding: Binding) -> Ended {
        let owner = match binding {
            Binding::AddressBound => self.r.address_owner(),
            Binding::DomainBound => self.r.domain_owner(),
        };
        let Some(owner) = owner else {
            self.step(format!(
                "DNS CERT for {}: skipped (the local part is longer than one DNS label)",
                self.r.address
            ));
            return Ended::Nothing;
        };
        let shown = human_name(&owner);
        let (records, ttl) = match dns::cert_records(&self.d.resolver, &owner).await {
            Answer::None => {
                self.step(format!("DNS CERT at {shown}: none"));
                return Ended::Nothing;
            }
            Answer::Failed(e) => {
                self.step(format!("DNS CERT at {shown}: lookup failed ({e})"));
                self.incomplete = true;
                self.dns_failed = true;
                return Ended::Nothing;
            }
            Answer::Records(records, ttl) => (records, ttl),
        };
        let kinds: Vec<String> = records.iter().map(|c| type_name(c.cert_type)).collect();
        self.step(format!(
            "DNS CERT at {shown}: {} ({})",
            count(records.len(), "record"),
            kinds.join(", ")
        ));
        let limits = FetchLimits {
            timeout: self.d.config.http_timeout,
            max_bytes: self.d.config.max_fetch_bytes,
            network: self.d.config.network.clone(),
        };
        let mut candidates = Vec::new();
        for record in records {
            match record.cert_type {
                CertType::PKIX => candidates.push(Candidate {
                    what: "PKIX".into(),
                    der: Ok(record.cert_data),
                }),
                CertType::IPKIX => {
                    let url = String::from_utf8_lossy(&record.cert_data).into_owned();
                    let der = dns::fetch_ipkix(&self.d.resolver, &record.cert_data, &limits)
                        .await
                        .map_err(|e| format!("could not be fetched: {e}"));
                    candidates.push(Candidate {
                        what: format!("IPKIX {}", url.trim_matches(char::from(0)).trim()),
                        der,
                    });
                }
                other => self.step(format!(
                    "CERT record of type {} ignored (only PKIX and IPKIX hold X.509 certificates)",
                    type_name(other)
                )),
            }
        }
        let ttl = Duration::from_secs(u64::from(ttl)).min(self.d.config.max_dns_cache_ttl);
        match self.evaluate(candidates, binding).await {
            Verdict::Chosen(der, not_after) => Ended::Found(
                Discovered {
                    der,
                    source: Source {
                        method: Method::Dns,
                        binding,
                    },
                    not_after,
                },
                ttl,
            ),
            Verdict::Stop(r) => Ended::Stopped(r),
            Verdict::Continue => Ended::Nothing,
        }
    }

    async fn ldap(&mut self) -> Ended {
        let srv_name = format!("_ldap._tcp.{}.", self.r.domain);
        let shown = srv_name.trim_end_matches('.').to_owned();
        let Ok(name) = Name::from_ascii(&srv_name) else {
            self.step(format!("LDAP SRV {shown}: not a DNS name"));
            return Ended::Nothing;
        };
        let records = match dns::srv_records(&self.d.resolver, &name).await {
            Answer::None => {
                self.ldap.srv = Some(false);
                self.step(format!("LDAP SRV {shown}: none"));
                return Ended::Nothing;
            }
            Answer::Failed(e) => {
                self.ldap.srv_failed = true;
                self.incomplete = true;
                self.step(format!("LDAP SRV {shown}: lookup failed ({e})"));
                return Ended::Nothing;
            }
            Answer::Records(records, _) => records,
        };
        let targets: Vec<SrvTarget> = records
            .iter()
            .map(|s| SrvTarget {
                host: s.target.to_ascii().trim_end_matches('.').to_owned(),
                port: s.port,
                priority: s.priority,
                weight: s.weight,
            })
            // RFC 2782: a target of "." means the service is decidedly not available
            .filter(|t| !t.host.is_empty())
            .collect();
        if targets.is_empty() {
            self.ldap.srv = Some(false);
            self.step(format!(
                "LDAP SRV {shown}: the domain offers no LDAP service (target \".\")"
            ));
            return Ended::Nothing;
        }
        self.ldap.srv = Some(true);
        let targets = ldap::order_targets(targets, self.d.config.srv_order, &mut rand::rng());
        let listed: Vec<String> = targets
            .iter()
            .map(|t| {
                format!(
                    "{}:{} priority {} weight {}",
                    t.host, t.port, t.priority, t.weight
                )
            })
            .collect();
        self.step(format!(
            "LDAP SRV {shown}: {} ({})",
            count(targets.len(), "server"),
            listed.join(", ")
        ));
        let mut servers: Vec<ServerState> = targets.iter().map(|_| ServerState::Untried).collect();
        let mut ended = Ended::Nothing;
        'levels: for binding in [Binding::AddressBound, Binding::DomainBound] {
            let value = match binding {
                Binding::AddressBound => self.r.address.clone(),
                Binding::DomainBound => self.r.domain.clone(),
            };
            for (i, target) in targets.iter().enumerate() {
                let server = format!("{}:{}", target.host, target.port);
                if let ServerState::Untried = servers[i] {
                    servers[i] = self.open(target, &server).await;
                }
                let ServerState::Open(conn) = &mut servers[i] else {
                    continue;
                };
                let found = match conn.search_mail(&value, self.d.config.ldap_timeout).await {
                    Ok(f) => f,
                    Err(e) => {
                        self.incomplete = true;
                        self.step(format!("{server}: {e}"));
                        continue;
                    }
                };
                self.ldap.entries += found.entries;
                self.step(format!(
                    "{server}: {}: {}, {}",
                    ldap::mail_filter(&value),
                    count(found.entries, "entry"),
                    count(found.certificates.len(), "certificate")
                ));
                let candidates = found
                    .certificates
                    .into_iter()
                    .map(|der| Candidate {
                        what: format!("LDAP {server}"),
                        der: Ok(der),
                    })
                    .collect();
                match self.evaluate(candidates, binding).await {
                    Verdict::Chosen(der, not_after) => {
                        ended = Ended::Found(
                            Discovered {
                                der,
                                source: Source {
                                    method: Method::Ldap,
                                    binding,
                                },
                                not_after,
                            },
                            self.d.config.ldap_cache_ttl,
                        );
                        break 'levels;
                    }
                    Verdict::Stop(r) => {
                        ended = Ended::Stopped(r);
                        break 'levels;
                    }
                    // DTS 517: an entry without a usable certificate on one server
                    // does not hide a good one on the next
                    Verdict::Continue => {}
                }
            }
        }
        for s in servers {
            if let ServerState::Open(conn) = s {
                conn.close().await;
            }
        }
        ended
    }

    /// Resolve and connect to one SRV target, logging why not.
    async fn open(&mut self, target: &SrvTarget, server: &str) -> ServerState {
        let Ok(host) = Name::from_ascii(format!("{}.", target.host)) else {
            self.step(format!("{server}: not a host name, skipped"));
            return ServerState::Dead;
        };
        let ips = match dns::addresses(&self.d.resolver, &host).await {
            Ok(ips) => ips,
            Err(e) => {
                self.step(format!("{server}: unreachable ({e})"));
                return ServerState::Dead;
            }
        };
        let allowed: Vec<IpAddr> = ips
            .iter()
            .copied()
            .filter(|ip| self.d.config.network.permits(*ip))
            .collect();
        if allowed.is_empty() {
            let first = ips.first().map(|i| i.to_string()).unwrap_or_default();
            self.step(format!(
                "{server}: skipped, {first} is not a public address"
            ));
            return ServerState::Dead;
        }
        match ldap::connect(
            &allowed,
            target.port,
            self.d.config.ldap_connect_timeout,
            self.d.config.ldap_timeout,
        )
        .await
        {
            Ok(conn) if conn.bases.is_empty() => {
                self.step(format!(
                    "{server} ({}): reachable but lists no naming contexts, skipped",
                    conn.addr.ip()
                ));
                conn.close().await;
                ServerState::Dead
            }
            Ok(conn) => {
                self.ldap.reached += 1;
                self.step(format!(
                    "{server} ({}): connected, base DN {}",
                    conn.addr.ip(),
                    conn.bases.join("; ")
                ));
                ServerState::Open(conn)
            }
            Err(e) => {
                self.step(format!("{server} unreachable ({e})"));
                ServerState::Dead
            }
        }
    }

    /// Check candidates in order; the first that passes is chosen. At the
    /// address-bound level, if none passes and one was expired or revoked, stop.
    async fn evaluate(&mut self, candidates: Vec<Candidate>, binding: Binding) -> Verdict {
        let mut stop: Option<Rejection> = None;
        for c in candidates {
            self.counter += 1;
            let n = self.counter;
            let checked = match &c.der {
                Err(e) => Err(Rejection::other(e.clone())),
                Ok(der) => self.check(der, binding).await,
            };
            match (checked, c.der) {
                (Ok(not_after), Ok(der)) => {
                    self.step(format!(
                        "certificate {n} ({}): accepted, valid until {not_after}",
                        c.what
                    ));
                    return Verdict::Chosen(der, not_after);
                }
                (Ok(_), Err(_)) => {}
                (Err(rej), _) => {
                    self.step(format!(
                        "certificate {n} ({}): rejected, {}",
                        c.what, rej.reason
                    ));
                    self.rejected.push(rej.reason.clone());
                    if binding == Binding::AddressBound
                        && matches!(rej.kind, RejectKind::Expired | RejectKind::Revoked)
                        && stop.is_none()
                    {
                        stop = Some(rej);
                    }
                }
            }
        }
        match stop {
            Some(r) => {
                self.step(format!(
                    "stopped: the address-bound certificate is {}, so no domain-bound certificate is used instead",
                    kind_word(r.kind)
                ));
                Verdict::Stop(r)
            }
            None => Verdict::Continue,
        }
    }

    /// This crate's checks, then the caller's trust check.
    async fn check(&self, der: &[u8], binding: Binding) -> Result<String, Rejection> {
        let not_after = local_checks(der, binding, &self.r.address, &self.r.domain, self.now)?;
        self.d
            .validator
            .check(der, &self.r.address, self.now)
            .await?;
        Ok(not_after)
    }

    fn finish(self, ended: Ended) -> Outcome {
        let address = self.r.address.clone();
        let (status, certificate, summary, ttl) = match ended {
            Ended::Found(found, ttl) => {
                let how = match found.source.method {
                    Method::Dns => "DNS",
                    Method::Ldap => "LDAP",
                };
                let bound = match found.source.binding {
                    Binding::AddressBound => "address-bound",
                    Binding::DomainBound => "domain-bound",
                };
                (
                    Status::Found,
                    Some(found),
                    format!("certificate found via {how} ({bound})"),
                    ttl,
                )
            }
            Ended::Stopped(r) => (
                Status::Stopped(r.kind),
                None,
                format!(
                    "the certificate found for {address} is {}; mail cannot be encrypted for this address",
                    kind_word(r.kind)
                ),
                self.d.config.failure_cache_ttl,
            ),
            Ended::Nothing if !self.rejected.is_empty() => {
                let summary = if self.rejected.len() == 1 {
                    format!(
                        "the certificate found for {address} was rejected ({}); mail cannot be encrypted for this address",
                        self.rejected[0]
                    )
                } else {
                    format!(
                        "the {} certificates found for {address} were all rejected (first: {}); mail cannot be encrypted for this address",
                        self.rejected.len(),
                        self.rejected[0]
                    )
                };
                (
                    Status::Rejected,
                    None,
                    summary,
                    self.d.config.failure_cache_ttl,
                )
            }
            Ended::Nothing => (
                Status::NotFound,
                None,
                format!("no certificate found ({})", self.nothing_found()),
                self.d.config.failure_cache_ttl,
            ),
        };
        Outcome {
            address,
            status,
            certificate,
            steps: self.steps,
            summary,
            incomplete: self.incomplete,
            looked_up_at: self.now,
            expires_at: self.now + ttl,
            from_cache: false,
        }
    }

    /// Why nothing was found, in a few words per method.
    fn nothing_found(&self) -> String {
        let dns = if self.dns_failed {
            "DNS CERT lookup failed"
        } else {
            "no CERT record"
        };
        let ldap = if self.ldap.srv_failed {
            "LDAP SRV lookup failed"
        } else if self.ldap.srv != Some(true) {
            "no LDAP server"
        } else if self.ldap.reached == 0 {
            "LDAP servers unreachable"
        } else if self.ldap.entries == 0 {
            "no LDAP entry"
        } else {
            "LDAP entries without certificate"
        };
        format!("{dns}, {ldap}")
    }
}

fn kind_word(kind: RejectKind) -> &'static str {
    match kind {
        RejectKind::Expired => "expired",
        RejectKind::Revoked => "revoked",
        RejectKind::Other => "not usable",
    }
}

fn type_name(t: CertType) -> String {
    match t {
        CertType::PKIX => "PKIX".into(),
        CertType::IPKIX => "IPKIX".into(),
        CertType::SPKI => "SPKI".into(),
        CertType::PGP => "PGP".into(),
        CertType::ISPKI => "ISPKI".into(),
        CertType::IPGP => "IPGP".into(),
        CertType::ACPKIX => "ACPKIX".into(),
        CertType::IACPKIX => "IACPKIX".into(),
        CertType::URI => "URI".into(),
        CertType::OID => "OID".into(),
        other => format!("{}", u16::from(other)),
    }
}

fn count(n: usize, what: &str) -> String {
    let plural = match (n, what) {
        (1, _) => what.to_owned(),
        (_, "entry") => "entries".to_owned(),
        _ => format!("{what}s"),
    };
    format!("{n} {plural}")
}
