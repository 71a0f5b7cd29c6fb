-- Certificates and private keys of hosted domains and addresses, trust anchors per
-- domain, and a small key/value table for instance-wide settings.

create table settings (
    key text primary key,
    value text not null
);

create table domain_certificates (
    id integer primary key,
    domain_id integer not null references domains (id),
    -- the Direct address of an address-bound certificate; null when domain-bound
    address text,
    subject text not null,
    issuer text not null,
    serial text not null,
    fingerprint text not null unique,
    not_before integer not null,
    not_after integer not null,
    -- PEM: the certificate, then the chain sent with signatures
    chain_pem text not null,
    -- PKCS#8 DER private key sealed with the key-encryption key (src/secrets.rs),
    -- bound to the fingerprint
    key_sealed text not null,
    created_at integer not null
);
create index domain_certificates_domain on domain_certificates (domain_id);

-- the anchors a hosted domain trusts for senders (inbound) and recipients (outbound)
create table trust_anchors (
    id integer primary key,
    domain_id integer not null references domains (id),
    subject text not null,
    issuer text not null,
    fingerprint text not null,
    not_before integer not null,
    not_after integer not null,
    cert_pem text not null,
    created_at integer not null,
    unique (domain_id, fingerprint)
);
