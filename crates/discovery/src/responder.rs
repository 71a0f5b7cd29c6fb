//! A small authoritative DNS responder (hickory-server) answering from a map of
//! records: CERT for publishing our own certificates, plus SRV and A/AAAA so the
//! test suite can stand up a whole partner domain on loopback.
//!
//! It answers only for the names it holds (NXDOMAIN otherwise), does no recursion
//! and no EDNS, so UDP answers over 512 bytes are truncated (TC) and the client
//! retries over TCP (RFC 1035 §4.2.1, RFC 7766). That also keeps its UDP answers
//! small, which matters for a server reachable from the internet (reflection).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::cert::{Algorithm, CertType};
use hickory_server::proto::rr::rdata::{A, AAAA, CERT, SRV};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::address::{AddressError, owner_name};

/// Records to serve, by owner name and type.
#[derive(Debug, Clone, Default)]
pub struct Records {
    by_name: HashMap<(LowerName, RecordType), Vec<Record>>,
    names: HashSet<LowerName>,
}

impl Records {
    /// No records.
    pub fn new() -> Self {
        Self::default()
    }

    fn add(&mut self, name: Name, ttl: u32, data: RData) {
        let lower = LowerName::new(&name);
        let rtype = data.record_type();
        self.names.insert(lower.clone());
        self.by_name
            .entry((lower, rtype))
            .or_default()
            .push(Record::from_rdata(name, ttl, data));
    }

    /// A CERT PKIX record holding `cert_der` (which is not checked: tests publish
    /// garbage on purpose) for `owner`, an address or a domain as in
    /// [`crate::cert_records`].
    pub fn add_cert(&mut self, owner: &str, cert_der: &[u8], ttl: u32) -> Result<(), AddressError> {
        self.add_cert_record(owner, 1, cert_der.to_vec(), ttl)
    }

    /// A CERT IPKIX record: `url` is where the certificate can be fetched.
    pub fn add_ipkix(&mut self, owner: &str, url: &str, ttl: u32) -> Result<(), AddressError> {
        self.add_cert_record(owner, 4, url.as_bytes().to_vec(), ttl)
    }

    /// A CERT record of any type (RFC 4398 §2.1) with key tag and algorithm 0.
    pub fn add_cert_record(
        &mut self,
        owner: &str,
        cert_type: u16,
        data: Vec<u8>,
        ttl: u32,
    ) -> Result<(), AddressError> {
        let name = owner_name(owner)?;
        let cert = CERT::new(CertType::from(cert_type), 0, Algorithm::from(0u8), data);
        self.add(name, ttl, RData::CERT(cert));
        Ok(())
    }

    /// An SRV record, e.g. `_ldap._tcp.example.org`.
    pub fn add_srv(
        &mut self,
        name: &str,
        priority: u16,
        weight: u16,
        port: u16,
        target: &str,
        ttl: u32,
    ) -> Result<(), AddressError> {
        let name = fqdn(name)?;
        let target = fqdn(target)?;
        self.add(
            name,
            ttl,
            RData::SRV(SRV::new(priority, weight, port, target)),
        );
        Ok(())
    }

    /// An A or AAAA record.
    pub fn add_address(&mut self, name: &str, ip: IpAddr, ttl: u32) -> Result<(), AddressError> {
        let name = fqdn(name)?;
        let data = match ip {
            IpAddr::V4(v4) => RData::A(A(v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
        };
        self.add(name, ttl, data);
        Ok(())
    }
}

fn fqdn(name: &str) -> Result<Name, AddressError> {
    let n = name.trim_end_matches('.');
    Name::from_ascii(format!("{n}.")).map_err(|e| AddressError::new(format!("{name:?}: {e}")))
}

/// Queries answered, by transport.
#[derive(Debug, Default)]
struct Counters {
    udp: AtomicUsize,
    tcp: AtomicUsize,
}

struct Handler {
    records: Arc<RwLock<Records>>,
    counters: Arc<Counters>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        match request.protocol() {
            Protocol::Udp => self.counters.udp.fetch_add(1, Ordering::Relaxed),
            _ => self.counters.tcp.fetch_add(1, Ordering::Relaxed),
        };
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        let builder = MessageResponseBuilder::from_message_request(request);
        let query = match request.queries.queries() {
            [q] if request.metadata.op_code == OpCode::Query => q,
            _ => {
                let code = if request.metadata.op_code == OpCode::Query {
                    ResponseCode::FormErr
                } else {
                    ResponseCode::NotImp
                };
                let response = builder.error_msg(&request.metadata, code);
                return send(&mut response_handle, response, metadata).await;
            }
        };
        // clone out of the lock: no guard may live across the await below
        let (answers, known) = {
            let records = self
                .records
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let answers = records
                .by_name
                .get(&(query.name().clone(), query.query_type()))
                .cloned()
                .unwrap_or_default();
            (answers, records.names.contains(query.name()))
        };
        if !known {
            metadata.response_code = ResponseCode::NXDomain;
        }
        let response = builder.build(metadata, answers.iter(), [], [], []);
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "DNS responder could not answer");
                failed(metadata)
            }
        }
    }
}

async fn send<'a, R: ResponseHandler>(
    handle: &mut R,
    response: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    metadata: Metadata,
) -> ResponseInfo {
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(_) => failed(metadata),
    }
}

fn failed(mut metadata: Metadata) -> ResponseInfo {
    metadata.response_code = ResponseCode::ServFail;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

/// A running responder on one UDP and one TCP socket (same port). Stops when
/// dropped or on [`Responder::shutdown`].
pub struct Responder {
    addr: SocketAddr,
    records: Arc<RwLock<Records>>,
    counters: Arc<Counters>,
    server: Server<Handler>,
}

impl Responder {
    /// Bind UDP and TCP on `addr` (port 0: a free port, the same for both) and
    /// start answering from `records`. Needs a Tokio runtime.
    pub async fn start(addr: SocketAddr, records: Records) -> std::io::Result<Responder> {
        let (udp, tcp) = bind_pair(addr).await?;
        let addr = udp.local_addr()?;
        let records = Arc::new(RwLock::new(records));
        let counters = Arc::new(Counters::default());
        let mut server = Server::new(Handler {
            records: records.clone(),
            counters: counters.clone(),
        });
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(10), 64 * 1024);
        Ok(Responder {
            addr,
            records,
            counters,
            server,
        })
    }

    /// Where it listens (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replace the records served from now on.
    pub fn set_records(&self, records: Records) {
        *self
            .records
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = records;
    }

    /// Queries received over UDP so far.
    pub fn udp_queries(&self) -> usize {
        self.counters.udp.load(Ordering::Relaxed)
    }

    /// Queries received over TCP so far.
    pub fn tcp_queries(&self) -> usize {
        self.counters.tcp.load(Ordering::Relaxed)
    }

    /// Stop answering and wait for the sockets to close.
    pub async fn shutdown(mut self) {
        if let Err(e) = self.server.shutdown_gracefully().await {
            tracing::debug!(error = %e, "DNS responder stopped with an error");
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.server.shutdown_token().cancel();
    }
}

/// A UDP socket and a TCP listener on the same address and port.
async fn bind_pair(
    addr: SocketAddr,
) -> std::io::Result<(tokio::net::UdpSocket, tokio::net::TcpListener)> {
    if addr.port() != 0 {
        let udp = tokio::net::UdpSocket::bind(addr).await?;
        let tcp = tokio::net::TcpListener::bind(addr).await?;
        return Ok((udp, tcp));
    }
    // port 0: take a free UDP port, then the same TCP port; retry if TCP's is taken
    let mut last = None;
    for _ in 0..20 {
        let udp = tokio::net::UdpSocket::bind(addr).await?;
        let bound = udp.local_addr()?;
        match tokio::net::TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free port")))
}
