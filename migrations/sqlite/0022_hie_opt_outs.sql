-- The HIE opt-out list (Illinois 740 ILCS 110 §9.5–9.11; docs/sensitive-records.md):
-- per organization, the patients who opted out of further HIE disclosure. A removal
-- keeps the row (removed_at, who, why); nothing is deleted by the product.
create table hie_opt_outs (
    id integer primary key,
    org_id integer not null references organizations (id) on delete cascade,
    family_name text not null,
    given_name text not null,
    -- YYYY-MM-DD
    birth_date text not null,
    -- the identifier's assigning authority (an OID) and the identifier, or both null
    id_authority text,
    id_value text,
    -- family and given names folded (src/directory/search.rs `folded`): lowercase
    -- ASCII tokens, for matching and search without regard to case or accents
    match_family text not null,
    match_given text not null,
    -- "family given" folded, for ordering and search
    sort_name text not null,
    recorded_at integer not null,
    recorded_by_id integer references users (id) on delete set null,
    recorded_by_name text not null,
    removed_at integer,
    removed_by_id integer references users (id) on delete set null,
    removed_by_name text,
    removal_reason text
);
create index hie_opt_outs_list on hie_opt_outs (org_id, sort_name, id);
create index hie_opt_outs_name on hie_opt_outs (org_id, match_family, match_given, birth_date);
create index hie_opt_outs_ident on hie_opt_outs (org_id, id_authority, id_value) where id_value is not null;

-- a CSV uploaded on the opt-out page, kept between its preview and its confirmation
create table hie_opt_out_uploads (
    id integer primary key,
    org_id integer not null references organizations (id) on delete cascade,
    user_id integer not null references users (id) on delete cascade,
    content text not null,
    created_at integer not null
);
