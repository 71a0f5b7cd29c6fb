-- A message's raw MIME in a table of its own (see the SQLite migration: there it kept
-- SQLite following a large blob's overflow pages to read the columns after it; here it
-- keeps one schema for both databases).
create table message_raw (
    message_id bigint primary key references messages (id) on delete cascade,
    raw bytea not null
);
insert into message_raw (message_id, raw) select id, raw from messages;
alter table messages drop column raw;
