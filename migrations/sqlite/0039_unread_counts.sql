-- Unread messages by mailbox and folder, kept by triggers on messages, so the
-- sidebar of every page reads a handful of rows instead of counting the unread
-- entries of each folder (see the PostgreSQL migration of the same number). Every
-- writer of messages goes through the triggers, so no caller has to remember it.
create table unread_counts (
    mailbox_id integer not null references mailboxes (id) on delete cascade,
    folder text not null,
    n integer not null,
    primary key (mailbox_id, folder)
) without rowid;

insert into unread_counts (mailbox_id, folder, n)
    select mailbox_id, folder, count(*) from messages where is_read = 0 group by mailbox_id, folder;

create trigger messages_unread_insert after insert on messages when new.is_read = 0
begin
    insert into unread_counts (mailbox_id, folder, n) values (new.mailbox_id, new.folder, 1)
        on conflict (mailbox_id, folder) do update set n = n + 1;
end;

create trigger messages_unread_update after update of is_read, folder, mailbox_id on messages
    when old.is_read <> new.is_read or old.folder <> new.folder or old.mailbox_id <> new.mailbox_id
begin
    update unread_counts set n = n - 1
        where old.is_read = 0 and mailbox_id = old.mailbox_id and folder = old.folder;
    insert into unread_counts (mailbox_id, folder, n) select new.mailbox_id, new.folder, 1
        where new.is_read = 0
        on conflict (mailbox_id, folder) do update set n = n + 1;
end;

create trigger messages_unread_delete after delete on messages when old.is_read = 0
begin
    update unread_counts set n = n - 1 where mailbox_id = old.mailbox_id and folder = old.folder;
end;
