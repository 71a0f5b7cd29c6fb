-- PostgreSQL only (directmail_fold's ASCII fast path); kept so both databases count
-- the same migrations.
select 1;
