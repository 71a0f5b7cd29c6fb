-- Sensitive records (docs/sensitive-records.md): whether a message is a restricted
-- record, read once when it is filed (src/sensitivity.rs). '' when it is not; else
-- 'restricted', 'mental_health' (740 ILCS 110) or 'part2' (42 CFR Part 2).
alter table messages add column restriction text not null default '';
-- why, one sentence per line (which document, which code)
alter table messages add column restriction_reasons text not null default '';
