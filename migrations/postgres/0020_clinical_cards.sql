-- What the message page says about a message's clinical attachments (src/web/clinical/
-- xdm.rs: each XDM package's card, each CDA's link), as JSON: made on the first view and
-- kept, so a large package is not inflated, hashed and checked on every view. Null when
-- not made yet; a value that no longer reads is made again.
alter table messages add column clinical_cards text;
