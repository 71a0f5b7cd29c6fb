-- Retrieving records from FHIR servers (issue 14): the document sources an operator
-- configures for an organization, the portal's signing keys for SMART Backend Services
-- (the private key sealed with the key-encryption key, the public half published as a
-- JWKS), and the documents a member retrieved, kept for that member to view, file or
-- forward.

create table document_sources (
    id integer primary key,
    org_id integer not null references organizations (id),
    name text not null,
    -- the FHIR R4 base URL, without a trailing slash
    base_url text not null,
    -- the token endpoint; '' when it is read from {base}/.well-known/smart-configuration
    token_url text not null default '',
    client_id text not null,
    scopes text not null,
    created_at integer not null,
    unique (org_id, name)
);

create table signing_keys (
    id integer primary key,
    -- the JWK thumbprint (RFC 7638), published as `kid`
    kid text not null unique,
    -- PKCS#8, sealed (secrets.rs) with the kid as associated data
    private_key text not null,
    -- the public JWK as published
    public_jwk text not null,
    created_at integer not null
);

create table record_retrievals (
    id integer primary key,
    user_id integer not null references users (id),
    source_id integer not null references document_sources (id) on delete cascade,
    patient_ref text not null,
    patient_label text not null,
    document_ref text not null,
    title text not null,
    -- the content type the server declared
    declared_type text not null,
    purpose text not null,
    data blob not null,
    retrieved_at integer not null
);
create index record_retrievals_user on record_retrievals (user_id, retrieved_at);
