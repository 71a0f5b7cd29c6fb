-- Alerts to ordinary e-mail, without PHI (issue 15): new-mail alerts to an address
-- the user verified, and invitation and password links e-mailed through the alert
-- relay. Nothing here holds a subject, a sender, a patient or any content.

-- A user's ordinary e-mail address for new-mail alerts.
create table alert_addresses (
    user_id integer primary key references users (id),
    email text not null,
    -- when the address was confirmed by its link; null until then, and again after
    -- the address changes
    verified_at integer,
    -- whether the user wants alerts (sent only once the address is verified)
    enabled integer not null default 0,
    updated_at integer not null
);

-- Single-use links confirming an alert address; only the SHA-256 of the token.
create table alert_verifications (
    token_hash text primary key,
    user_id integer not null references users (id),
    -- the address the link confirms: a link for an address since replaced is refused
    email text not null,
    expires_at integer not null,
    used_at integer,
    created_at integer not null
);

-- E-mails for the alert relay, sent by a background worker so that a relay that is
-- down never holds up mail delivery.
create table alert_jobs (
    id integer primary key,
    -- 'new-mail', 'verify', 'invite' or 'reset'
    kind text not null,
    user_id integer not null references users (id),
    -- for 'new-mail': the mailbox that has new mail
    mailbox_id integer references mailboxes (id),
    -- for links: where it goes, and the link sealed with the key-encryption key
    -- (emptied once sent or given up, so no usable link stays at rest)
    to_addr text not null default '',
    sealed_link text not null default '',
    -- 'pending', 'sending' (claimed by a worker), 'sent', 'failed' (given up) or
    -- 'dropped' (nothing to say any more: alerts turned off, the address changed, the
    -- messages already read)
    state text not null default 'pending',
    -- when it is tried next; a worker's claim moves it forward by a lease
    next_attempt_at integer not null,
    attempts integer not null default 0,
    -- the relay's answer to the last attempt, for the operator
    last_error text not null default '',
    created_at integer not null,
    updated_at integer not null
);
create index alert_jobs_due on alert_jobs (state, next_attempt_at);
create index alert_jobs_mailbox on alert_jobs (user_id, mailbox_id, state);
-- one waiting new-mail alert per user and mailbox: later messages join it
create unique index alert_jobs_one_waiting on alert_jobs (user_id, mailbox_id)
    where state = 'pending' and kind = 'new-mail';

-- Whether new-mail alerts may name the sender's organization (never the sender).
alter table organizations add column alerts_name_sender integer not null default 0;
