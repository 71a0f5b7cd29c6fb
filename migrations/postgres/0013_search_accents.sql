-- Search folds accents on PostgreSQL too, as SQLite's FTS5 tokenizer does
-- (remove_diacritics): "cafe" finds "café" and "Muller" finds "Müller". unaccent is
-- not immutable, so a generated column cannot use it; directmail_fold maps each
-- accented Latin letter (what NFD splits into an ASCII letter and marks, in
-- U+00C0–U+024F, plus ø ł đ ı) to its base letter. `store::messages::fold_letter`
-- folds query words the same way; a unit test checks that the two agree.
create function directmail_fold(t text) returns text
    language sql immutable parallel safe strict
    as $$ select translate(t,
        'ÀÁÂÃÄÅÇÈÉÊËÌÍÎÏÑÒÓÔÕÖÙÚÛÜÝàáâãäåçèéêëìíîïñòóôõöùúûüýÿĀāĂăĄąĆćĈĉĊċČčĎďĒēĔĕĖėĘęĚěĜĝĞğĠġĢģĤĥĨĩĪīĬĭĮįİĴĵĶķĹĺĻļĽľŃńŅņŇňŌōŎŏŐőŔŕŖŗŘřŚśŜŝŞşŠšŢţŤťŨũŪūŬŭŮůŰűŲųŴŵŶŷŸŹźŻżŽžƠơƯưǍǎǏǐǑǒǓǔǕǖǗǘǙǚǛǜǞǟǠǡǦǧǨǩǪǫǬǭǰǴǵǸǹǺǻȀȁȂȃȄȅȆȇȈȉȊȋȌȍȎȏȐȑȒȓȔȕȖȗȘșȚțȞȟȦȧȨȩȪȫȬȭȮȯȰȱȲȳøØłŁđĐı',
        'AAAAAACEEEEIIIINOOOOOUUUUYaaaaaaceeeeiiiinooooouuuuyyAaAaAaCcCcCcCcDdEeEeEeEeEeGgGgGgGgHhIiIiIiIiIJjKkLlLlLlNnNnNnOoOoOoRrRrRrSsSsSsSsTtTtUuUuUuUuUuUuWwYyYZzZzZzOoUuAaIiOoUuUuUuUuUuAaAaGgKkOoOojGgNnAaAaAaEeEeIiIiOoOoRrRrUuUuSsTtHhAaEeOoOoOoOoYyoOlLdDi') $$;

drop index messages_search;
alter table messages drop column search;
alter table messages add column search tsvector generated always as (
    to_tsvector('simple',
        translate(directmail_fold(from_name || ' ' || from_addr || ' ' || to_addrs || ' ' || subject || ' ' || body_text || ' ' || attachment_names),
                  '@._-/:', '      '))
) stored;
create index messages_search on messages using gin (search);

-- A broad search ("referral") matches most of a mailbox; the GIN index cannot give
-- matches newest first, so `store::messages::search` first looks through the
-- mailbox's newest messages in id order, which this index serves.
create index messages_newest on messages (mailbox_id, id);
