//! Integration tests of the SMTP engine over real sockets on 127.0.0.1.

mod helpers;
mod limits;
mod logging;
mod pipelining;
mod robustness;
mod shutdown;
mod tls;
mod transaction;
