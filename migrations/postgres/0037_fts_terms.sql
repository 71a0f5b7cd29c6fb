-- SQLite only (the full-text index's vocabulary for mail search); kept so both
-- databases count the same migrations.
select 1;
