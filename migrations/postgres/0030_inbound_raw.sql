-- A received message's raw bytes in a table of its own (see the SQLite migration:
-- there it keeps every state change from rewriting the message; here it keeps one
-- schema for both databases).
create table inbound_raw (
    inbound_id bigint primary key references inbound_messages (id) on delete cascade,
    raw bytea not null
);
insert into inbound_raw (inbound_id, raw) select id, raw from inbound_messages;
alter table inbound_messages drop column raw;
