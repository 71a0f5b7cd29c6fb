//! Integration tests: interop with the real `openssl` command line, both ways,
//! and one test per verdict code. One binary, one module per area.

mod bundle;
mod crl;
mod devpki;
mod inbound;
mod keys;
mod negative;
mod outbound;
mod pki;
mod roundtrip;
mod unwrap;
