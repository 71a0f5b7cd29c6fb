-- Direct messages received over SMTP, and the messages delivered to mailboxes.

-- Each message accepted over SMTP is committed here before the 250 reply; it is
-- processed (decrypt, verify, route checks, delivery) afterwards, from this copy.
create table inbound_messages (
    id integer primary key,
    received_at integer not null,
    mail_from text not null,
    -- the SMTP RCPT TO addresses, one per line
    rcpt_to text not null,
    remote_ip text not null,
    helo text not null,
    tls integer not null default 0,
    raw blob not null,
    -- received -> processing -> delivered | quarantined
    state text not null check (state in ('received', 'processing', 'delivered', 'quarantined', 'discarded')),
    attempts integer not null default 0,
    -- a worker's claim on a message in 'processing' lapses at this time
    claimed_until integer not null default 0,
    -- the trust verdict's reason code and the operator's detail
    verdict text,
    detail text,
    -- lookup steps (AIA, CRL), one per line
    steps text,
    processed_at integer
);
create index inbound_messages_state on inbound_messages (state, id);

-- A message in a mailbox folder: the decrypted inner message and its trust facts.
create table messages (
    id integer primary key,
    mailbox_id integer not null references mailboxes (id),
    folder text not null default 'inbox',
    inbound_id integer references inbound_messages (id),
    -- the RFC 5322 Message-ID, for threading and delivery notifications
    message_id text,
    from_addr text not null,
    subject text not null,
    received_at integer not null,
    is_read integer not null default 0,
    -- the trust verdict's reason code and its sentence for the reader
    trust_code text not null,
    trust_sentence text not null,
    signer_subject text,
    signer_issuer text,
    -- 'checked', 'no-distribution-point' or why revocation could not be checked
    revocation text not null,
    raw blob not null
);
create index messages_mailbox on messages (mailbox_id, folder, id);
create unique index messages_once on messages (mailbox_id, inbound_id);
