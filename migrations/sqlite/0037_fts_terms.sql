-- The full-text index's terms in order, one row per occurrence: search looks up the
-- few terms a word begins (seeking, reading one row each) and names them instead of
-- asking FTS5 for the prefix, which copies every matching entry first. A virtual
-- table over the index: it stores nothing, and nothing is rebuilt.
create virtual table messages_fts_terms using fts5vocab(messages_fts, instance);
