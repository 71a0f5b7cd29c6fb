-- Per-domain trust policy for hosted domains, and per-recipient-domain sending options.

-- what a hosted domain does when a sender's CRL cannot be fetched:
-- 'soft-fail' (deliver, record and show that revocation was not checked) or
-- 'fail-closed' (refuse as revocation_unknown)
alter table domains add column crl_unreachable text not null default 'soft-fail';

-- other HISPs' domains we send to, where they need something non-default
create table remote_domains (
    name text primary key,
    -- 'rsa-oaep-sha256' (default) or 'rsa-pkcs1v15' for HISPs that cannot read OAEP
    key_transport text not null default 'rsa-oaep-sha256',
    updated_at integer not null
);
