-- PostgreSQL only (a received message's bytes stored uncompressed); kept so both
-- databases count the same migrations.
select 1;
