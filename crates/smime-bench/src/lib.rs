//! Nothing to use here: this crate carries `benches/vs_openssl.rs`, which
//! compares `directmail-smime` with OpenSSL in-process. See the README.
