-- The clinical documents a message carries, by their identifier (ClinicalDocument/id),
-- read once when the message is filed (src/filing.rs): every CDA attachment and every
-- CDA document in an XDM package, received or in the Sent copy of one written here.
-- A Reportability Response looks up the case report (eICR) it answers here, to link
-- to the message that carried it. Documents without an identifier, and documents that
-- cannot be read, are not recorded. Messages filed before this migration have no rows:
-- they are not read again (no backfill), so an RR answering an eICR sent before it
-- says the case report is not here.
create table message_documents (
    id integer primary key,
    message_id integer not null references messages (id) on delete cascade,
    -- the identifier's root, lower case (an OID or a UUID), or '' when it has none
    root text not null,
    -- the identifier's extension as written, or '' when it has none
    extension text not null,
    -- the document type (LOINC, such as 55751-2 for an eICR), or '' when it gives none
    code text not null default ''
);
create index message_documents_id on message_documents (root, extension);
create index message_documents_message on message_documents (message_id, id);
