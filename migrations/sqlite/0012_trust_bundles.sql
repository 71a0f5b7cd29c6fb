-- Trust bundles: sets of anchors published by a trust community (a `.p7b`, maybe in a
-- signed CMS wrapper), imported from a file or refreshed from a URL, and assigned to
-- hosted domains for receiving, sending or both.

create table trust_bundles (
    id integer primary key,
    name text not null unique,
    -- where the anchors are read from: the URL refreshed on a schedule, or null for a
    -- bundle imported from a file (replaced only by importing a new file)
    url text,
    -- PEM of the certificate that must have signed the bundle; null when the bundle is
    -- accepted without a signature check against a known signer
    signer_pem text,
    refresh_hours integer not null,
    created_at integer not null,
    -- the last refresh attempt, and its error sentence (null when it succeeded)
    last_attempt_at integer,
    last_error text,
    -- the last refresh that replaced the anchors
    last_success_at integer,
    -- when the scheduled refresh is due (instances claim it by moving it forward)
    next_refresh_at integer
);

-- the current anchors of each bundle
create table trust_bundle_anchors (
    bundle_id integer not null references trust_bundles (id) on delete cascade,
    fingerprint text not null,
    subject text not null,
    issuer text not null,
    not_before integer not null,
    not_after integer not null,
    cert_pem text not null,
    primary key (bundle_id, fingerprint)
);

-- every import and refresh, successful or not, with what it changed
create table trust_bundle_refreshes (
    id integer primary key,
    bundle_id integer not null references trust_bundles (id) on delete cascade,
    at integer not null,
    -- null when the refresh succeeded
    error text,
    -- JSON arrays of {subject, fingerprint, not_after}: anchors added and removed by
    -- this refresh, and anchors of the new set expiring within 30 days
    added text not null default '[]',
    removed text not null default '[]',
    expiring text not null default '[]',
    -- how many anchors the bundle held after this refresh
    anchor_count integer not null
);
create index trust_bundle_refreshes_bundle on trust_bundle_refreshes (bundle_id, id);

-- which hosted domains trust which bundles: for judging inbound senders (receiving)
-- and for checking recipients' discovered certificates (sending)
create table domain_trust_bundles (
    domain_id integer not null references domains (id),
    bundle_id integer not null references trust_bundles (id) on delete cascade,
    for_receiving integer not null default 0,
    for_sending integer not null default 0,
    primary key (domain_id, bundle_id)
);
create index domain_trust_bundles_bundle on domain_trust_bundles (bundle_id);
