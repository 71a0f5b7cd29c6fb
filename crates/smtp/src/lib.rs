//! Inbound ESMTP server engine for directmail: the transport half of a Direct HISP.
//!
//! This crate speaks SMTP (RFC 5321) with the extensions SIZE (RFC 1870), 8BITMIME
//! (RFC 6152), PIPELINING (RFC 2920), ENHANCEDSTATUSCODES (RFC 2034) and STARTTLS
//! (RFC 3207). It knows nothing about mailboxes, databases or S/MIME: the portal plugs
//! those in through the [`Backend`] trait, which decides on recipients and durably stores
//! each accepted message before the session answers `250` (RFC 5321 §6.1: once the
//! server has said "OK" it has taken responsibility for the message).
//!
//! Start it with [`serve`], on a listener bound by the caller (port 0 in tests).

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::todo)]
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::todo)
)]

mod backend;
mod config;
mod io;
mod server;
mod session;

pub use backend::{Backend, DeliverError, Envelope, RcptDecision, SessionEvent};
pub use config::{Config, TlsConfigError, tls_config_from_pem};
pub use server::serve;
