-- Webmail: what the message list shows and searches, folders a user creates, drafts
-- kept on the server, and who handled a message in a shared mailbox.

-- Filled from the message when it is filed (and for older rows at start-up).
alter table messages add column from_name text not null default '';
alter table messages add column to_addrs text not null default '';
alter table messages add column snippet text not null default '';
alter table messages add column body_text text not null default '';
alter table messages add column attachment_names text not null default '';
alter table messages add column has_attachments integer not null default 0;
-- 0 for rows filed before these columns existed, until start-up fills them
alter table messages add column indexed integer not null default 1;
-- when the message was moved to Trash (emptied after the retention period)
alter table messages add column trashed_at integer;
-- "Read by Ana Ruiz", "Replied by …": the latest action, for shared mailboxes
alter table messages add column last_activity text not null default '';
update messages set indexed = 0;

create index messages_unread on messages (mailbox_id, folder) where is_read = 0;
create index messages_trash on messages (trashed_at) where trashed_at is not null;

-- Full-text search over sender, recipients, subject, body and attachment names.
create virtual table messages_fts using fts5(
    sender, recipients, subject, body, attachments,
    content = '', contentless_delete = 1, tokenize = 'unicode61 remove_diacritics 2'
);
create trigger messages_fts_insert after insert on messages begin
    insert into messages_fts (rowid, sender, recipients, subject, body, attachments)
    values (new.id, new.from_name || ' ' || new.from_addr, new.to_addrs, new.subject, new.body_text, new.attachment_names);
end;
create trigger messages_fts_update after update of from_name, from_addr, to_addrs, subject, body_text, attachment_names on messages begin
    delete from messages_fts where rowid = old.id;
    insert into messages_fts (rowid, sender, recipients, subject, body, attachments)
    values (new.id, new.from_name || ' ' || new.from_addr, new.to_addrs, new.subject, new.body_text, new.attachment_names);
end;
create trigger messages_fts_delete after delete on messages begin
    delete from messages_fts where rowid = old.id;
end;
insert into messages_fts (rowid, sender, recipients, subject, body, attachments)
    select id, from_name || ' ' || from_addr, to_addrs, subject, body_text, attachment_names from messages;

-- Folders a user creates in a mailbox; messages in one have folder = 'f' || id.
create table folders (
    id integer primary key,
    mailbox_id integer not null references mailboxes (id),
    name text not null,
    created_at integer not null,
    unique (mailbox_id, name)
);

-- Who read, replied to, forwarded or moved a message (shown on shared mailboxes).
create table message_activity (
    id integer primary key,
    message_id integer not null references messages (id) on delete cascade,
    user_id integer not null references users (id),
    action text not null,
    at integer not null
);
create index message_activity_message on message_activity (message_id, id);

-- Messages being written, saved as the user types; they survive a session timeout.
create table drafts (
    id integer primary key,
    mailbox_id integer not null references mailboxes (id),
    user_id integer not null references users (id),
    to_addrs text not null default '',
    cc_addrs text not null default '',
    subject text not null default '',
    body text not null default '',
    in_reply_to text,
    refs text,
    created_at integer not null,
    updated_at integer not null
);
create index drafts_mailbox on drafts (mailbox_id, id);

create table draft_attachments (
    id integer primary key,
    draft_id integer not null references drafts (id) on delete cascade,
    name text not null,
    content_type text not null,
    size integer not null,
    data blob not null
);
create index draft_attachments_draft on draft_attachments (draft_id, id);
