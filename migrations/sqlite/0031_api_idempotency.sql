-- The Idempotency-Key an EHR sent a message with through the API: a request repeated
-- after its answer was lost (a dropped connection, an instance that died) gets the
-- message already queued back instead of sending it a second time.
alter table outbound_messages add column idempotency_key text;
create unique index outbound_messages_idempotency on outbound_messages (mailbox_id, idempotency_key)
    where idempotency_key is not null;
