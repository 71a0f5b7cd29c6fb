-- Credentials that end when they should (issue 11).

-- API tokens expire, and die with the owner's sessions: `session_epoch` is the
-- owner's epoch when the token was made; a password change, a reset, disabling or
-- "sign out everywhere" moves the user's epoch, and a token of an older epoch is
-- refused. Tokens made before this migration get 90 days from the upgrade.
alter table api_tokens add column expires_at integer;
alter table api_tokens add column session_epoch integer not null default 0;
update api_tokens set
    expires_at = cast(strftime('%s', 'now') as integer) + 90 * 86400,
    session_epoch = (select session_epoch from users where users.id = api_tokens.user_id);

-- Session ids that were signed out (or replaced at sign-in). A request still in
-- flight may save its copy of the session after sign-out; the session store refuses
-- to load (or save) an id listed here. Kept until the session could have expired.
create table ended_sessions (
    id text primary key,
    -- when the row may go: the end of the longest session lifetime
    expires_at integer not null
);

-- Failed sign-ins against addresses that have no account, counted like an account's
-- (users.failed_logins / locked_until), so that a lock says nothing about whether
-- the account exists. Keyed by the SHA-256 of the lowercased address.
create table unknown_signin_failures (
    email_hash text primary key,
    failures integer not null,
    locked_until integer not null default 0,
    last_at integer not null
);

-- Refused sign-ins (address paused, account locked) per source address: the first
-- one in a window is audited, later ones are only counted here, and the count is
-- audited as one summary when the window closes.
create table signin_refusals (
    ip text primary key,
    window_start integer not null,
    -- refusals after the first, not yet audited
    suppressed integer not null default 0
);
