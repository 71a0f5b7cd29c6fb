//! LDAP certificate lookup (AS §5.4): the order in which servers named by
//! `_ldap._tcp` SRV records are tried (RFC 2782), and one server's answer for
//! `(mail=<value>)` read from every naming context its rootDSE lists.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ldap3::asn1::StructureTag;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchOptions};
use rand::Rng;

/// How servers of equal SRV priority are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SrvOrder {
    /// RFC 2782: a weighted random order, so load spreads as the domain asked.
    #[default]
    WeightedRandom,
    /// Heaviest weight first (ties keep the DNS order): deterministic, for tests
    /// and for operators who want reproducible step logs.
    HeaviestFirst,
}

/// One `_ldap._tcp` SRV target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SrvTarget {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) priority: u16,
    pub(crate) weight: u16,
}

/// Servers in the order to try them: lowest priority first; within a priority,
/// RFC 2782's weighted random selection (or heaviest first).
pub(crate) fn order_targets(
    mut targets: Vec<SrvTarget>,
    order: SrvOrder,
    rng: &mut impl Rng,
) -> Vec<SrvTarget> {
    targets.sort_by_key(|t| t.priority);
    let mut out = Vec::with_capacity(targets.len());
    let mut rest = targets.as_slice();
    while let Some(first) = rest.first() {
        let same = rest
            .iter()
            .take_while(|t| t.priority == first.priority)
            .count();
        let mut group = rest[..same].to_vec();
        rest = &rest[same..];
        match order {
            SrvOrder::HeaviestFirst => {
                group.sort_by_key(|t| std::cmp::Reverse(t.weight));
                out.extend(group);
            }
            SrvOrder::WeightedRandom => {
                // RFC 2782: zero-weight entries first, then repeatedly pick the first
                // entry whose running weight sum reaches a random number in 0..=sum.
                group.sort_by_key(|t| t.weight != 0);
                while !group.is_empty() {
                    let sum: u32 = group.iter().map(|t| u32::from(t.weight)).sum();
                    let pick = rng.random_range(0..=sum);
                    let mut running = 0u32;
                    let mut chosen = group.len() - 1;
                    for (i, t) in group.iter().enumerate() {
                        running += u32::from(t.weight);
                        if running >= pick {
                            chosen = i;
                            break;
                        }
                    }
                    out.push(group.remove(chosen));
                }
            }
        }
    }
    out
}

/// An open connection to one LDAP server, with the naming contexts to search.
pub(crate) struct Connection {
    ldap: Ldap,
    pub(crate) addr: SocketAddr,
    pub(crate) bases: Vec<String>,
}

/// What one search found.
pub(crate) struct Found {
    /// Matching entries.
    pub(crate) entries: usize,
    /// Certificate values, in entry order, duplicates removed.
    pub(crate) certificates: Vec<Vec<u8>>,
}

/// Most entries read from one search; more than this for one mail value is not a
/// directory of Direct addresses (and a hostile server cannot make us hoard).
const MAX_ENTRIES: i32 = 20;
/// Most certificates taken from one search.
const MAX_CERTIFICATES: usize = 20;

/// Connect to the first of `ips` that answers and read its naming contexts.
pub(crate) async fn connect(
    ips: &[IpAddr],
    port: u16,
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<Connection, String> {
    let mut last = String::from("no address");
    for ip in ips {
        let addr = SocketAddr::new(*ip, port);
        let url = match ip {
            IpAddr::V4(v4) => format!("ldap://{v4}:{port}"),
            IpAddr::V6(v6) => format!("ldap://[{v6}]:{port}"),
        };
        let settings = LdapConnSettings::new().set_conn_timeout(connect_timeout);
        let opened = tokio::time::timeout(
            connect_timeout,
            LdapConnAsync::with_settings(settings, &url),
        )
        .await;
        let (conn, mut ldap) = match opened {
            Err(_) => {
                last = format!("{addr}: no answer within {}", secs(connect_timeout));
                continue;
            }
            Ok(Err(e)) => {
                last = format!("{addr}: {e}");
                continue;
            }
            Ok(Ok(pair)) => pair,
        };
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(error = %e, "LDAP connection ended");
            }
        });
        let bases = match naming_contexts(&mut ldap, timeout).await {
            Ok(b) => b,
            Err(e) => {
                last = format!("{addr}: {e}");
                continue;
            }
        };
        return Ok(Connection { ldap, addr, bases });
    }
    Err(last)
}

/// The rootDSE's `namingContexts` (RFC 4512 §5.1).
async fn naming_contexts(ldap: &mut Ldap, timeout: Duration) -> Result<Vec<String>, String> {
    let result = ldap
        .with_timeout(timeout)
        .search("", Scope::Base, "(objectClass=*)", vec!["namingContexts"])
        .await
        .map_err(|e| format!("reading the rootDSE failed: {e}"))?;
    let mut bases = Vec::new();
    for entry in result.0 {
        let Some((_, attrs)) = entry_attributes(entry.0) else {
            return Err("the rootDSE answer is malformed".into());
        };
        for (name, values) in attrs {
            if name.eq_ignore_ascii_case("namingContexts") {
                bases.extend(values.into_iter().filter_map(|v| String::from_utf8(v).ok()));
            }
        }
    }
    Ok(bases)
}

impl Connection {
    /// Search every naming context for `(mail=<value>)` and collect
    /// `userCertificate` / `userCertificate;binary` values.
    pub(crate) async fn search_mail(
        &mut self,
        value: &str,
        timeout: Duration,
    ) -> Result<Found, String> {
        let filter = mail_filter(value);
        let mut found = Found {
            entries: 0,
            certificates: Vec::new(),
        };
        for base in &self.bases {
            let result = self
                .ldap
                .with_timeout(timeout)
                .with_search_options(SearchOptions::new().sizelimit(MAX_ENTRIES))
                .search(
                    base,
                    Scope::Subtree,
                    &filter,
                    vec!["userCertificate;binary", "userCertificate"],
                )
                .await
                .map_err(|e| format!("search under {base} failed: {e}"))?;
            // rc 4 (sizeLimitExceeded) still delivers the entries read so far
            if result.1.rc != 0 && result.1.rc != 4 && result.0.is_empty() {
                return Err(format!(
                    "search under {base} failed: result code {} {}",
                    result.1.rc, result.1.text
                ));
            }
            for entry in result.0.into_iter().take(MAX_ENTRIES as usize) {
                let Some((_, attrs)) = entry_attributes(entry.0) else {
                    return Err(format!("an entry under {base} is malformed"));
                };
                found.entries += 1;
                for (name, values) in attrs {
                    let base_name = name.split(';').next().unwrap_or("");
                    if !base_name.eq_ignore_ascii_case("userCertificate") {
                        continue;
                    }
                    for v in values {
                        if found.certificates.len() < MAX_CERTIFICATES
                            && !found.certificates.contains(&v)
                        {
                            found.certificates.push(v);
                        }
                    }
                }
            }
        }
        Ok(found)
    }

    /// Say goodbye; errors do not matter any more.
    pub(crate) async fn close(mut self) {
        let _ = self.ldap.unbind().await;
    }
}

/// `(mail=<value>)` with the value escaped per RFC 4515 §3: `*`, `(`, `)`, `\` and
/// NUL become `\2a`, `\28`, `\29`, `\5c`, `\00`, so an address can never widen or
/// rewrite the filter.
pub(crate) fn mail_filter(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    out.push_str("(mail=");
    for c in value.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out.push(')');
    out
}

/// An attribute description and its values.
type Attribute = (String, Vec<Vec<u8>>);

/// A SearchResultEntry (RFC 4511 §4.5.2, `[APPLICATION 4]`) as its DN and attributes,
/// or `None` if it is malformed. Written here because `ldap3::SearchEntry::construct`
/// panics on malformed input, and the server is not ours.
fn entry_attributes(tag: StructureTag) -> Option<(String, Vec<Attribute>)> {
    let mut parts = tag.match_id(4)?.expect_constructed()?.into_iter();
    let dn = String::from_utf8(parts.next()?.expect_primitive()?).ok()?;
    let mut attrs = Vec::new();
    for attr in parts.next()?.expect_constructed()? {
        let mut pa = attr.expect_constructed()?.into_iter();
        let name = String::from_utf8(pa.next()?.expect_primitive()?).ok()?;
        let values = pa
            .next()?
            .expect_constructed()?
            .into_iter()
            .map(StructureTag::expect_primitive)
            .collect::<Option<Vec<_>>>()?;
        attrs.push((name, values));
    }
    Some((dn, attrs))
}

pub(crate) fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn t(host: &str, priority: u16, weight: u16) -> SrvTarget {
        SrvTarget {
            host: host.into(),
            port: 389,
            priority,
            weight,
        }
    }

    fn hosts(v: &[SrvTarget]) -> Vec<&str> {
        v.iter().map(|t| t.host.as_str()).collect()
    }

    #[test]
    fn the_filter_value_is_escaped_per_rfc_4515() {
        assert_eq!(
            mail_filter("*)(mail=*@example.org"),
            "(mail=\\2a\\29\\28mail=\\2a@example.org)"
        );
        assert_eq!(mail_filter("a\\b\0c"), "(mail=a\\5cb\\00c)");
        assert_eq!(mail_filter("bob@example.org"), "(mail=bob@example.org)");
        // the escaped filter parses as one equality match
        assert!(ldap3::parse_filter(mail_filter("*)(|(mail=*").as_str()).is_ok());
    }

    #[test]
    fn lower_priority_values_always_come_first() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..50 {
            let out = order_targets(
                vec![t("c", 20, 100), t("a", 0, 0), t("b", 10, 65535)],
                SrvOrder::WeightedRandom,
                &mut rng,
            );
            assert_eq!(hosts(&out), ["a", "b", "c"]);
        }
    }

    #[test]
    fn heaviest_first_is_deterministic_within_a_priority() {
        let out = order_targets(
            vec![
                t("light", 5, 1),
                t("heavy", 5, 90),
                t("mid", 5, 9),
                t("top", 1, 0),
            ],
            SrvOrder::HeaviestFirst,
            &mut StdRng::seed_from_u64(1),
        );
        assert_eq!(hosts(&out), ["top", "heavy", "mid", "light"]);
    }

    #[test]
    fn weighted_random_picks_the_heavier_target_first_in_proportion() {
        let mut rng = StdRng::seed_from_u64(42);
        let mut heavy_first = 0;
        for _ in 0..2000 {
            let out = order_targets(
                vec![t("light", 0, 10), t("heavy", 0, 90)],
                SrvOrder::WeightedRandom,
                &mut rng,
            );
            assert_eq!(out.len(), 2);
            if out[0].host == "heavy" {
                heavy_first += 1;
            }
        }
        // expected 90 % (RFC 2782); allow for chance
        assert!((1700..1900).contains(&heavy_first), "{heavy_first}");
    }

    #[test]
    fn zero_weight_targets_are_still_tried() {
        let mut rng = StdRng::seed_from_u64(3);
        let out = order_targets(
            vec![t("zero", 0, 0), t("some", 0, 5)],
            SrvOrder::WeightedRandom,
            &mut rng,
        );
        assert_eq!(out.len(), 2);
    }
}
