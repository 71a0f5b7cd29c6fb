-- Per-user API tokens for EHRs (Integrated Direct): only the SHA-256 of a token is
-- kept; the token is shown once.
create table api_tokens (
    id integer primary key,
    user_id integer not null references users (id) on delete cascade,
    name text not null,
    token_hash text not null unique,
    created_at integer not null,
    last_used_at integer,
    revoked_at integer
);
create index api_tokens_user on api_tokens (user_id);
