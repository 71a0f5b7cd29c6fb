-- The audit chain is keyed from one entry on: HMAC-SHA-256 under a key derived from
-- the key-encryption key, so that writing to the database is not enough to rewrite
-- the log and recompute its hashes (see src/audit.rs). Entries written before the
-- switch keep their plain SHA-256 hashes and still verify.

-- 1: `hash` is HMAC-SHA-256 under the audit key; 0: plain SHA-256 (before keying)
alter table audit_log add column keyed integer not null default 0;

-- a public name for the audit key (an HMAC of a fixed label under it, never the key);
-- null until the first start-up that keys the chain
alter table audit_head add column key_id text;
