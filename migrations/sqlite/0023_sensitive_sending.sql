-- Sending a sensitive record (docs/sensitive-records.md, "Sending").
-- The compose page's "Sensitive" choice, kept with the draft: '' (not sensitive),
-- 'part2', 'mental_health' or 'restricted' (src/sensitivity.rs `Law`).
alter table drafts add column sensitivity text not null default '';
-- 42 CFR Part 2 §2.32(b): the attachment that is the patient's consent, or a sentence
-- describing its scope; or, for a disclosure the rule allows without consent, which
-- exception and why.
alter table drafts add column consent_attachment_id integer;
alter table drafts add column consent_scope text not null default '';
alter table drafts add column no_consent_basis text not null default '';
alter table drafts add column no_consent_reason text not null default '';
-- Illinois 740 ILCS 110: the exception chosen for a patient who opted out of HIE
-- sharing ('treatment', 'care_coordination', 'public_health'), or ''.
alter table drafts add column opt_out_exception text not null default '';

-- Each sensitive record sent: the organization's "disclosures of restricted records"
-- report (who, what patient, to whom, why). Kept whatever happens to the messages.
create table disclosures (
    id integer primary key autoincrement,
    org_id integer references organizations (id) on delete cascade,
    mailbox_id integer references mailboxes (id) on delete set null,
    mailbox_address text not null,
    user_id integer references users (id) on delete set null,
    user_name text not null,
    outbound_id integer,
    sent_at integer not null,
    -- 'part2', 'mental_health' or 'restricted'
    law text not null,
    -- the patient as the message named them ('' when it did not)
    patient text not null,
    -- the recipients, comma separated
    recipients text not null,
    -- why: the purpose of use, and an exception when one was chosen
    purpose text not null,
    -- Part 2: the consent sent with it (its file name, or the scope sentence), or the
    -- exception under which it went without one
    consent text not null
);
create index disclosures_by_org on disclosures (org_id, sent_at, id);
