-- Directory search by word prefix without collecting every match (issue #15). The
-- GIN index of 0011 held whole words, so "ma" or "family" (with `:*`) made
-- PostgreSQL gather every entry with a word starting so into a bitmap before the
-- first row came out (40-60 ms for a word in 100 000 entries), and `:*A` (names
-- only) rechecked each of them in the table.
--
-- search_prefixes holds, as lexemes, the first 1 to 8 characters of every token of the
-- five search columns, and the same of the name's tokens with a capital N in front
-- (tokens are lowercase, so `Nma` is "a word of the name starts with ma"). A query
-- word of up to eight characters is then one exact lexeme: GIN intersects exact
-- lexemes by skipping through the rarest, and the planner's statistics on them let
-- it read the table in order for a word in one entry of ten and stop at the first
-- matches. A longer word is looked up by its first eight characters and checked by a
-- LIKE on the row (src/store/directory.rs `compile`).
create function directmail_prefixes(name text, org text, specialty text, place text, ident text)
    returns tsvector language plpgsql immutable parallel safe strict as $$
declare
    words text[] := '{}';
    w text;
    i int;
begin
    foreach w in array string_to_array(concat_ws(' ', name, org, specialty, place, ident), ' ') loop
        for i in 1 .. least(length(w), 8) loop
            words := array_append(words, left(w, i));
        end loop;
    end loop;
    foreach w in array string_to_array(name, ' ') loop
        for i in 1 .. least(length(w), 8) loop
            words := array_append(words, 'N' || left(w, i));
        end loop;
    end loop;
    return array_to_tsvector(words);
end
$$;

-- the whole-word vector and its index are no longer read
alter table directory_entries drop column search_tsv;
alter table directory_entries add column search_prefixes tsvector generated always as (
    directmail_prefixes(search_name, search_org, search_specialty, search_place, search_ident)
) stored;
create index directory_entries_prefixes on directory_entries using gin (search_prefixes);
