-- Webhooks for EHRs (issue 14): an API token registers an HTTPS URL; new messages in
-- its owner's mailboxes and delivery-status changes of messages they sent are posted
-- to it as small signed JSON events. Nothing here holds a subject, an address of a
-- correspondent or patient, a body or a file name: an event names ids and a status.

create table webhooks (
    id integer primary key,
    -- the token that registered it: a revoked, expired or ended token's webhooks get
    -- no more events
    token_id integer not null references api_tokens (id),
    user_id integer not null references users (id),
    url text not null,
    -- the signing secret (shown once at registration), sealed with the
    -- key-encryption key and bound to this token and URL
    sealed_secret text not null,
    created_at integer not null
);
create index webhooks_token on webhooks (token_id);
create index webhooks_user on webhooks (user_id);

-- One event for one webhook: the queue the webhook worker sends from, and what the
-- account page shows (and can send again).
create table webhook_deliveries (
    id integer primary key,
    webhook_id integer not null references webhooks (id),
    -- 'message.received' or 'message.status'
    event_type text not null,
    -- the message in the owner's mailbox the event is about (the Inbox copy, or the
    -- Sent copy of a message sent), and for a status change the outbound message
    message_id integer,
    outbound_id integer,
    mailbox_id integer not null references mailboxes (id),
    -- for 'message.status': sent, processed, dispatched or failed
    status text not null default '',
    occurred_at integer not null,
    -- 'pending', 'sending' (claimed by a worker until next_attempt_at), 'delivered'
    -- or 'failed' (given up, or the webhook can no longer be used)
    state text not null default 'pending',
    next_attempt_at integer not null,
    attempts integer not null default 0,
    -- the last attempt's outcome in a sentence (never the receiver's body)
    last_error text not null default '',
    delivered_at integer,
    updated_at integer not null
);
create index webhook_deliveries_due on webhook_deliveries (state, next_attempt_at);
create index webhook_deliveries_webhook on webhook_deliveries (webhook_id, id);

-- a status event names the Sent copy of the outbound message (found by this)
create index messages_outbound on messages (outbound_id);
