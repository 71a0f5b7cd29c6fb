//! The discovery crate's integration suite: one binary (each file under tests/ would
//! be its own link step). Every server it talks to runs on 127.0.0.1.

mod cache;
mod dns;
mod harness;
mod ldap;
