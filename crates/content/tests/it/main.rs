//! The content crate's integration tests, in one binary (each file in `tests/` would be
//! its own link step).

mod cda;
