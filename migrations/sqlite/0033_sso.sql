-- Single sign-on (issue 14): an organization's own OpenID provider, and EHRs that
-- launch the portal as a SMART app.

-- One identity provider or EHR of an organization.
create table sso_providers (
    id integer primary key,
    org_id integer not null references organizations (id),
    -- 'oidc' (an OpenID provider: issuer is its issuer URL) or 'smart' (an EHR:
    -- issuer is the FHIR base URL the EHR sends as `iss`)
    kind text not null,
    -- "Sign in with <name>"
    name text not null,
    issuer text not null,
    client_id text not null,
    -- sealed with the key-encryption key (secrets.rs); '' for a public client
    client_secret text not null default '',
    -- space-separated `amr` or `acr` values that count as two-step sign-in
    two_step_values text not null default '',
    -- 1: a sign-in whose subject is not linked makes a member account (from the
    -- id_token's verified e-mail address); 0: it is refused
    create_accounts integer not null default 0,
    created_at integer not null,
    -- an organization sets a provider up once
    unique (org_id, kind, issuer)
);
-- A launch's `iss` names one EHR registration (several organizations may share an
-- OpenID provider, such as Google's, each with its own client).
create unique index sso_providers_smart_issuer on sso_providers (issuer) where kind = 'smart';

-- An external subject linked to a portal user (one subject, one user).
create table sso_links (
    provider_id integer not null references sso_providers (id) on delete cascade,
    subject text not null,
    user_id integer not null references users (id),
    created_at integer not null,
    primary key (provider_id, subject)
);

-- Sign-ins under way: the browser went to the provider and has not come back.
-- Found by the SHA-256 of `state`; used once.
create table sso_pending (
    state_hash text primary key,
    provider_id integer not null references sso_providers (id) on delete cascade,
    -- SHA-256 of the random value in the browser's sign-in cookie: a callback from
    -- another browser (a link someone was sent) is refused
    binding_hash text not null,
    -- sealed: the nonce and the PKCE verifier
    secrets text not null,
    -- where to go after signing in (a local path)
    next text not null default '/',
    -- set when a signed-in user links their external account
    link_user_id integer references users (id),
    created_at integer not null
);
