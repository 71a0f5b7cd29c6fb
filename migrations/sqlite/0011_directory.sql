-- The provider directory: entries for practitioners, organizations and services, each
-- with one or more Direct addresses; hosted mailboxes listed automatically; shared,
-- organization and personal scopes; full-text search through FTS5.

-- 0 when a hosted mailbox asked not to be listed in the directory
alter table mailboxes add column directory_listed integer not null default 1;

create table directory_entries (
    id integer primary key,
    kind text not null check (kind in ('practitioner', 'organization', 'service')),
    -- 'public' (the HISP's shared directory), 'org' (one organization's contacts) or
    -- 'personal' (one user's address book)
    scope text not null check (scope in ('public', 'org', 'personal')),
    -- 'public', 'org:<id>' or 'user:<id>': uniqueness of NPIs, ids and addresses
    scope_key text not null,
    org_id integer references organizations (id) on delete cascade,
    owner_id integer references users (id) on delete cascade,
    -- set for entries generated from a hosted mailbox
    mailbox_id integer unique,
    name text not null,
    organization text not null default '',
    npi text,
    -- JSON array of {"code": NUCC taxonomy code, "label": its name}
    specialties text not null default '[]',
    address_line text not null default '',
    city text not null default '',
    state text not null default '',
    zip text not null default '',
    phone text not null default '',
    -- 'hosted', 'import:<file or url>', 'manual' or 'personal'
    source text not null,
    -- the FHIR resource this entry came from ('Practitioner/abc'), a re-import key
    fhir_id text,
    -- when the source last said this entry is right
    confirmed_at integer not null,
    created_at integer not null,
    updated_at integer not null,
    -- search columns: lowercase ASCII-folded tokens (src/directory/search.rs)
    search_name text not null,
    search_org text not null,
    search_specialty text not null,
    search_place text not null,
    search_ident text not null,
    -- the name's tokens sorted, for "exact name, any word order"
    name_key text not null,
    -- the folded name as typed, for ordering
    sort_name text not null
);
create unique index directory_entries_npi on directory_entries (scope_key, npi) where npi is not null;
create unique index directory_entries_fhir on directory_entries (scope_key, fhir_id) where fhir_id is not null;
create index directory_entries_name_key on directory_entries (name_key);
create index directory_entries_sort on directory_entries (sort_name, id);
create index directory_entries_org on directory_entries (org_id) where org_id is not null;
create index directory_entries_owner on directory_entries (owner_id) where owner_id is not null;
create index directory_entries_source on directory_entries (source);

create table directory_addresses (
    id integer primary key,
    entry_id integer not null references directory_entries (id) on delete cascade,
    scope_key text not null,
    address text not null,
    -- PEM certificate attached by an operator (or carried by an import); it takes
    -- precedence over certificate discovery
    cert_pem text,
    cert_subject text,
    cert_fingerprint text,
    cert_not_after integer,
    unique (scope_key, address)
);
create index directory_addresses_entry on directory_addresses (entry_id);
create index directory_addresses_address on directory_addresses (address);

create virtual table directory_fts using fts5 (
    search_name, search_org, search_specialty, search_place, search_ident,
    content = 'directory_entries', content_rowid = 'id',
    tokenize = 'ascii', prefix = '1 2 3'
);
create trigger directory_fts_insert after insert on directory_entries begin
    insert into directory_fts (rowid, search_name, search_org, search_specialty, search_place, search_ident)
    values (new.id, new.search_name, new.search_org, new.search_specialty, new.search_place, new.search_ident);
end;
create trigger directory_fts_delete after delete on directory_entries begin
    insert into directory_fts (directory_fts, rowid, search_name, search_org, search_specialty, search_place, search_ident)
    values ('delete', old.id, old.search_name, old.search_org, old.search_specialty, old.search_place, old.search_ident);
end;
create trigger directory_fts_update after update of search_name, search_org, search_specialty, search_place, search_ident on directory_entries begin
    insert into directory_fts (directory_fts, rowid, search_name, search_org, search_specialty, search_place, search_ident)
    values ('delete', old.id, old.search_name, old.search_org, old.search_specialty, old.search_place, old.search_ident);
    insert into directory_fts (rowid, search_name, search_org, search_specialty, search_place, search_ident)
    values (new.id, new.search_name, new.search_org, new.search_specialty, new.search_place, new.search_ident);
end;

-- hosted mailboxes whose directory entry must be brought up to date (filled by the
-- triggers below, emptied by src/store/directory.rs before each search)
create table directory_hosted_queue (
    mailbox_id integer primary key
);
insert into directory_hosted_queue (mailbox_id) select id from mailboxes;
create trigger directory_mailbox_insert after insert on mailboxes begin
    insert or ignore into directory_hosted_queue (mailbox_id) values (new.id);
end;
create trigger directory_mailbox_update after update on mailboxes begin
    insert or ignore into directory_hosted_queue (mailbox_id) values (new.id);
end;
create trigger directory_mailbox_delete after delete on mailboxes begin
    insert or ignore into directory_hosted_queue (mailbox_id) values (old.id);
end;
create trigger directory_org_rename after update of name on organizations begin
    insert or ignore into directory_hosted_queue (mailbox_id)
    select id from mailboxes where org_id = new.id;
end;

-- a file uploaded on the import page, kept between its preview and its confirmation
create table directory_uploads (
    id integer primary key,
    user_id integer not null references users (id) on delete cascade,
    file_name text not null,
    content text not null,
    org_id integer,
    created_at integer not null
);

-- scheduled refresh from DIRECTMAIL_DIRECTORY_SOURCES: one row per URL
create table directory_sources (
    url text primary key,
    last_attempt_at integer not null default 0,
    last_success_at integer,
    last_error text,
    entries integer not null default 0
);
