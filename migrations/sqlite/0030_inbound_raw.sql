-- A received message's raw bytes in a table of its own. SQLite rewrites a whole row,
-- overflow pages included, on every update: kept in inbound_messages, a 115 KB
-- message was written three times (received, claimed, processed), and those writes
-- held the one write turn that every SMTP session and worker shares.
create table inbound_raw (
    inbound_id integer primary key references inbound_messages (id) on delete cascade,
    raw blob not null
);
insert into inbound_raw (inbound_id, raw) select id, raw from inbound_messages;
alter table inbound_messages drop column raw;
