//! The integration suite: the real server over real HTTP, on SQLite or (with
//! `DIRECTMAIL_TEST_POSTGRES_URL`) PostgreSQL. One binary, many modules.

mod accounts;
mod alerts;
mod api;
mod audit_chain;
mod backup;
mod browser;
mod browser_day;
mod browser_mail;
mod bundles;
mod cli;
mod clinical;
mod console;
mod credentials;
mod directory;
mod disclosures;
mod discovery;
mod helpers;
mod inbound;
mod limits;
mod mail;
mod metrics;
mod network;
mod opt_outs;
mod outbound;
mod packaging;
mod patient;
mod pki;
mod records;
mod reportability;
mod revocation;
mod security;
mod sender_binding;
mod sensitive;
mod sensitive_send;
mod webmail;
