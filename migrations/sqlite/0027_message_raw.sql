-- A message's raw MIME in a table of its own. Kept in the messages row, a large
-- message's blob sat before every column added since (SQLite stores them after it),
-- and reading any of those made SQLite follow the blob's chain of overflow pages:
-- about 13 ms for a 27 MB message, on every list and page view that reads its row.
create table message_raw (
    message_id integer primary key references messages (id) on delete cascade,
    raw blob not null
);
insert into message_raw (message_id, raw) select id, raw from messages;
alter table messages drop column raw;
