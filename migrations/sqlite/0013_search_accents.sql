-- Search folds accents on PostgreSQL too (see the PostgreSQL migration of this
-- name). SQLite's FTS5 tokenizer already does (remove_diacritics 2): nothing to do.
select 1;
