-- The patient a message is about, read once when it is filed (src/patient.rs): from
-- its Direct Context block, else an XDM package's metadata, else the first clinical
-- document's recordTarget. Empty strings when there is none (also for every message
-- filed before this migration).
alter table messages add column patient_name text not null default '';
-- the identifier as shown: "12345 (1.2.840.114350)"
alter table messages add column patient_id text not null default '';
-- YYYY-MM-DD, YYYY-MM or YYYY
alter table messages add column patient_birth_date text not null default '';
-- in words: Female, Male, Unknown, Other, or the sender's own word
alter table messages add column patient_sex text not null default '';
-- where it came from: 'context', 'xdm' or 'cda'
alter table messages add column patient_source text not null default '';
-- the name's parts, to start a reply's patient block with
alter table messages add column patient_given text not null default '';
alter table messages add column patient_family text not null default '';

-- The patient block of a draft, as typed (checked only when it is sent), sent as a
-- Direct Context part.
alter table drafts add column patient_given text not null default '';
alter table drafts add column patient_family text not null default '';
alter table drafts add column patient_birth_date text not null default '';
alter table drafts add column patient_sex text not null default '';
alter table drafts add column patient_id text not null default '';
-- treatment, payment, operations, emergency or research
alter table drafts add column patient_purpose text not null default 'treatment';

-- Search finds a message by its patient's name or identifier: the FTS5 table gains
-- a column, so it is rebuilt with its triggers and filled again.
drop trigger messages_fts_insert;
drop trigger messages_fts_update;
drop trigger messages_fts_delete;
drop table messages_fts;
create virtual table messages_fts using fts5(
    sender, recipients, subject, body, attachments, patient,
    content = '', contentless_delete = 1, tokenize = 'unicode61 remove_diacritics 2'
);
create trigger messages_fts_insert after insert on messages begin
    insert into messages_fts (rowid, sender, recipients, subject, body, attachments, patient)
    values (new.id, new.from_name || ' ' || new.from_addr, new.to_addrs, new.subject, new.body_text,
            new.attachment_names, new.patient_name || ' ' || new.patient_id);
end;
create trigger messages_fts_update after update of from_name, from_addr, to_addrs, subject, body_text,
        attachment_names, patient_name, patient_id on messages begin
    delete from messages_fts where rowid = old.id;
    insert into messages_fts (rowid, sender, recipients, subject, body, attachments, patient)
    values (new.id, new.from_name || ' ' || new.from_addr, new.to_addrs, new.subject, new.body_text,
            new.attachment_names, new.patient_name || ' ' || new.patient_id);
end;
create trigger messages_fts_delete after delete on messages begin
    delete from messages_fts where rowid = old.id;
end;
insert into messages_fts (rowid, sender, recipients, subject, body, attachments, patient)
    select id, from_name || ' ' || from_addr, to_addrs, subject, body_text, attachment_names,
           patient_name || ' ' || patient_id
    from messages;

-- "Messages about this patient" (src/web/patient.rs) looks messages up by identifier.
create index messages_patient on messages (patient_id, id) where patient_id <> '';
