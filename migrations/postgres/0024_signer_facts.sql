-- The trust verdict people can read (docs/webmail.md, "Reading"): the signer's
-- certificate as it was judged when the message arrived (serial, validity, SHA-256
-- fingerprint, the anchor it chained to, the signer's address), as JSON; '' for
-- messages filed before, and for unsigned ones.
alter table messages add column signer_facts text not null default '';
-- 1 when the anchor is a development or test CA: the message is trusted, but not
-- for real patient data, and never shown with the plain "Trusted" badge.
alter table messages add column test_anchor integer not null default 0;
