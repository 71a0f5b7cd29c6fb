-- Messages sent from this HISP (from a mailbox, or MDNs), the delivery queue, and
-- what the sender sees per recipient.

-- the plain RFC 5322 message as written; it is sealed per recipient domain when sent
create table outbound_messages (
    id integer primary key,
    mailbox_id integer references mailboxes (id),
    kind text not null check (kind in ('message', 'mdn')),
    from_addr text not null,
    message_id text not null,
    subject text not null,
    raw blob not null,
    created_at integer not null
);
create index outbound_messages_mid on outbound_messages (message_id);

-- one entry per recipient domain: the unit of delivery and retry
create table outbound_queue (
    id integer primary key,
    outbound_id integer not null references outbound_messages (id),
    domain text not null,
    -- the recipients on that domain, one per line
    recipients text not null,
    state text not null check (state in ('queued', 'sending', 'sent', 'failed')),
    attempts integer not null default 0,
    next_attempt_at integer not null,
    claimed_until integer not null default 0,
    last_error text,
    created_at integer not null,
    updated_at integer not null
);
create index outbound_queue_due on outbound_queue (state, next_attempt_at);

-- per recipient: queued -> sent -> processed -> dispatched, or failed; exactly one
-- final outcome (later notifications are recorded in `detail` but change nothing)
create table delivery_status (
    outbound_id integer not null references outbound_messages (id),
    recipient text not null,
    state text not null check (state in ('queued', 'sent', 'processed', 'dispatched', 'failed')),
    detail text not null default '',
    updated_at integer not null,
    primary key (outbound_id, recipient)
);

-- certificates learned from verified signers, to encrypt notifications back to them
create table known_certificates (
    address text primary key,
    cert_pem text not null,
    learned_at integer not null
);
