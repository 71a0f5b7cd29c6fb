//! directmail: a Direct secure-messaging service (HISP) with a browser webmail.
//!
//! `main.rs` only parses the configuration and calls into here, so tests and tools
//! use the same code. Areas:
//! - [`config`]: flags and `DIRECTMAIL_*` variables;
//! - [`db`] and [`store`]: the SQLite/PostgreSQL facade and the records in it;
//! - [`domain`]: validated values (addresses, names, roles, passwords);
//! - [`auth`]: password hashing, tokens, TOTP; [`audit`]: the hash-chained log;
//! - [`app`]: building and serving the HTTP application; [`web`]: its pages;
//! - [`secrets`]: the key-encryption key; [`pki`]: hosted keys, certificates, anchors;
//! - [`accounts`]: account operations shared by the console and the CLI;
//! - [`alerts`]: alerts to ordinary e-mail (new mail, links), without PHI;
//! - [`webhooks`]: signed events for EHRs (new mail, delivery status), without PHI;
//! - [`recipients`]: finding the certificate to encrypt for a recipient;
//! - [`packaging`]: a message's documents as one XDM package;
//! - [`inbound`]: processing received Direct messages into mailboxes or quarantine;
//! - [`leases`]: claims on shared work (processing, delivery), renewed while held;
//! - [`metrics`]: the operator's figures (`/metrics` and the console's figures page);
//! - [`filing`]: what is read from a message once when it is filed (its patient, its
//!   clinical documents);
//! - [`smtp`]: the portal's side of the inbound SMTP listener (`crates/smtp`);
//! - [`directory`]: the provider directory (search, import, export, refresh);
//! - [`cli`]: `directmail admin …` provisioning from scripts; [`backup`]: backups of a
//!   SQLite portal and their restore.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::todo)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod accounts;
pub mod alerts;
pub mod app;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod bootstrap;
pub mod cli;
pub mod clock;
pub mod config;
pub mod db;
pub mod directory;
pub mod disclosures;
pub mod domain;
pub mod export;
pub mod filing;
pub mod inbound;
pub mod leases;
pub mod metrics;
pub mod opt_outs;
pub mod outbound;
pub mod packaging;
pub mod patient;
pub mod pki;
pub mod recipients;
pub mod records;
pub mod reporting;
pub mod requests;
pub mod secrets;
pub mod sensitive_send;
pub mod sensitivity;
pub mod smtp;
pub mod sso;
pub mod stages;
pub mod store;
pub mod web;
pub mod webhooks;

/// The allocator of every binary built on this crate (the portal, its tests and
/// benchmarks). glibc's malloc spent a quarter of a busy inbox's time allocating and
/// freeing the rows that SQLite's connection threads make and the async threads drop
/// (`malloc_consolidate`, cross-thread frees); mimalloc keeps per-thread heaps.
/// With its `override` feature the C code linked in (SQLite, which copies every
/// value of every row it hands to sqlx, and AWS-LC) allocates from it too: with
/// Rust's allocations alone moved, glibc's malloc was still a sixth of a busy SQLite
/// inbox's time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
