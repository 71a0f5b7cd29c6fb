-- A Sent copy points at the outbound message, for its per-recipient delivery status.
alter table messages add column outbound_id integer references outbound_messages (id);
