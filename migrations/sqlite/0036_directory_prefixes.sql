-- PostgreSQL only (word-prefix lexemes for directory search); kept so both databases
-- count the same migrations.
select 1;
