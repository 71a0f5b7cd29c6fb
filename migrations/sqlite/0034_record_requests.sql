-- Requesting records over Direct and public-health reporting (issue 14).

-- The Direct Context of a message, read when it is filed: its `type` (a records
-- request is `request/records`) and its `id` (a reply with documents carries the
-- request's). Empty for messages without a readable block, and for messages filed
-- before this migration.
alter table messages add column context_type text not null default '';
alter table messages add column context_id text not null default '';

-- Records requested from another practice by Direct, per mailbox.
create table record_requests (
    id integer primary key,
    mailbox_id integer not null references mailboxes (id),
    -- who sent it
    user_id integer not null references users (id),
    outbound_id integer not null,
    -- the Sent copy
    sent_message_id integer,
    -- the request's Message-ID without angle brackets; also its Direct Context id
    message_key text not null,
    recipient text not null,
    -- the patient in words ("Ana Lopez, born 1970-03-12, 1.2.3:12345"), for the list
    patient text not null,
    -- what is needed: keys of crate::requests::NEEDS, comma separated
    needed text not null,
    date_from text not null default '',
    date_to text not null default '',
    purpose text not null,
    urgency text not null,
    -- open, answered or cancelled (overdue is an open request past the setting)
    status text not null default 'open',
    created_at integer not null,
    answered_at integer,
    -- the received message that answered it
    answer_message_id integer,
    cancelled_at integer,
    reminders integer not null default 0,
    reminded_at integer
);
create index record_requests_mailbox on record_requests (mailbox_id, status, id);
create index record_requests_key on record_requests (message_key);
create index record_requests_sent on record_requests (sent_message_id);

-- Public-health reporting routes the operator configures: where documents of the
-- listed types go for a jurisdiction (for eCR, the AIMS address).
create table reporting_routes (
    id integer primary key,
    jurisdiction text not null unique,
    address text not null,
    -- LOINC document type codes sent on this route, comma separated (55751-2: eICR)
    document_types text not null,
    created_at integer not null
);
