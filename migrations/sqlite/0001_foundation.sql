-- Organizations, their Direct domains, users, mailboxes, invites, sign-in throttling
-- and the hash-chained audit log. Times are unix seconds (integers) so that the same
-- statements run on SQLite and PostgreSQL.

create table organizations (
    id integer primary key,
    name text not null unique,
    -- minutes of inactivity before a session ends (1..=60)
    idle_timeout_minutes integer not null default 15,
    -- 1 when every user of the organization must use TOTP
    require_mfa integer not null default 0,
    created_at integer not null
);

create table domains (
    id integer primary key,
    -- null for the HISP's own domain until an operator assigns it
    org_id integer references organizations (id),
    name text not null unique,
    created_at integer not null
);

create table users (
    id integer primary key,
    -- null for HISP operators, who belong to no organization
    org_id integer references organizations (id),
    email text not null unique,
    display_name text not null,
    role text not null check (role in ('member', 'org-admin', 'operator')),
    -- argon2id PHC string; null until an invite is completed
    password_hash text,
    must_change_password integer not null default 0,
    disabled integer not null default 0,
    -- base32 TOTP secret, sealed with the data key; null when MFA is not enrolled
    totp_secret text,
    totp_enabled integer not null default 0,
    -- last accepted TOTP time step, so a code cannot be replayed
    totp_last_step integer not null default 0,
    -- bumped to end every session of the user (password change, sign out everywhere)
    session_epoch integer not null default 0,
    failed_logins integer not null default 0,
    locked_until integer not null default 0,
    last_login_at integer,
    created_at integer not null
);
create index users_org on users (org_id);

create table recovery_codes (
    id integer primary key,
    user_id integer not null references users (id) on delete cascade,
    -- sha-256 of the code; the code itself is shown once
    code_hash text not null,
    used_at integer
);
create index recovery_codes_user on recovery_codes (user_id);

-- single-use links: an invitation or a password reset
create table invites (
    id integer primary key,
    user_id integer not null references users (id) on delete cascade,
    purpose text not null check (purpose in ('invite', 'reset')),
    token_hash text not null unique,
    expires_at integer not null,
    used_at integer,
    created_by integer references users (id),
    created_at integer not null
);

create table mailboxes (
    id integer primary key,
    org_id integer not null references organizations (id),
    domain_id integer not null references domains (id),
    address text not null unique,
    kind text not null check (kind in ('personal', 'shared')),
    display_name text not null,
    created_at integer not null
);
create index mailboxes_org on mailboxes (org_id);

create table mailbox_members (
    mailbox_id integer not null references mailboxes (id) on delete cascade,
    user_id integer not null references users (id) on delete cascade,
    primary key (mailbox_id, user_id)
);

-- failed sign-ins per source address, for slowing down password guessing
create table login_throttle (
    ip text primary key,
    failures integer not null,
    window_start integer not null,
    blocked_until integer not null default 0
);

create table audit_log (
    id integer primary key,
    at integer not null,
    org_id integer,
    actor_id integer,
    -- who acted, as an e-mail address or 'system'
    actor text not null,
    action text not null,
    -- what was acted on, as an identifier (never message content)
    object text not null,
    ip text not null,
    detail text not null,
    prev_hash text not null,
    -- sha-256 over prev_hash and this row's fields, see src/audit.rs
    hash text not null
);
create index audit_log_org on audit_log (org_id, id);

-- the chain's head; updating it first serializes writers on both databases
create table audit_head (
    id integer primary key check (id = 1),
    last_id integer not null,
    hash text not null
);
insert into audit_head (id, last_id, hash)
values (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
