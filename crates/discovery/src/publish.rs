//! Publishing our own certificates for others to discover: zone-file lines for a
//! CERT record, and a check that live DNS answers with a given certificate.

use base64::Engine;
use hickory_resolver::proto::rr::rdata::cert::CertType;

use crate::address::{AddressError, owner_name, zone_file_name};
use crate::dns::{self, Answer};
use crate::{Discovery, human_name};

/// A zone-file line publishing `cert_der` as a CERT PKIX record (RFC 4398 §2.1) for
/// `owner`, which is an address (`bob@example.org`, address-bound: the record lives at
/// `bob.example.org.`) or a domain (`example.org`, domain-bound). Key tag and algorithm
/// are 0, as Direct deployments publish them. A dot in the local part is escaped
/// (`john\.doe.example.org.`) because the local part is a single DNS label.
///
/// ```
/// let line = directmail_discovery::cert_records("bob@example.org", &[0x30, 0x03, 2, 1, 1], 3600).unwrap();
/// assert_eq!(line, "bob.example.org. 3600 IN CERT PKIX 0 0 MAMCAQE=\n");
/// ```
pub fn cert_records(owner: &str, cert_der: &[u8], ttl: u32) -> Result<String, AddressError> {
    let name = owner_name(owner)?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(cert_der);
    Ok(format!(
        "{} {ttl} IN CERT PKIX 0 0 {b64}\n",
        zone_file_name(&name)
    ))
}

/// Whether live DNS publishes a certificate, as [`Discovery::check_published`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// A CERT PKIX record at the owner name carries exactly this certificate.
    pub published: bool,
    /// What DNS answered, in plain words for the operator.
    pub detail: String,
}

impl Discovery {
    /// Ask DNS (the configured resolver; discovery's resolver keeps no cache) whether `owner` (an
    /// address or a domain, as for [`cert_records`]) has a CERT PKIX record holding
    /// exactly `cert_der`. Use after publishing, to confirm that partners will find it.
    pub async fn check_published(
        &self,
        owner: &str,
        cert_der: &[u8],
    ) -> Result<Publication, AddressError> {
        let name = owner_name(owner)?;
        let shown = human_name(&name);
        let out = match dns::cert_records(&self.resolver, &name).await {
            Answer::None => Publication {
                published: false,
                detail: format!("{shown} has no CERT record"),
            },
            Answer::Failed(e) => Publication {
                published: false,
                detail: format!("the CERT lookup for {shown} failed: {e}"),
            },
            Answer::Records(records, ttl) => {
                let hit = records
                    .iter()
                    .any(|r| r.cert_type == CertType::PKIX && r.cert_data == cert_der);
                if hit {
                    Publication {
                        published: true,
                        detail: format!("{shown} answers with this certificate (TTL {ttl} s)"),
                    }
                } else {
                    Publication {
                        published: false,
                        detail: format!(
                            "{shown} has {} CERT record(s), none with this certificate",
                            records.len()
                        ),
                    }
                }
            }
        };
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dot_in_the_local_part_is_escaped_in_the_owner() {
        let line = cert_records("John.Doe@Example.org", b"\x30\x00", 600).unwrap();
        assert_eq!(line, "john\\.doe.example.org. 600 IN CERT PKIX 0 0 MAA=\n");
        let domain = cert_records("example.org", b"\x30\x00", 86400).unwrap();
        assert_eq!(domain, "example.org. 86400 IN CERT PKIX 0 0 MAA=\n");
        assert!(cert_records("not an owner", b"", 1).is_err());
    }
}
