-- The time zone a user reads times in (an IANA name from clock::TIME_ZONES); '' means
-- the browser's own zone.
alter table users add column time_zone text not null default '';
