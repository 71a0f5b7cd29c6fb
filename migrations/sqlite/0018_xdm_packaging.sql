-- XDM packaging on sending (docs/clinical.md, "Sending a package").
-- A directory entry whose recipient wants a message's documents as an XDM package:
-- every message to one of its addresses is packaged, whatever the sender ticked.
alter table directory_entries add column wants_xdm integer not null default 0;
-- The compose page's "Send the attachments as an XDM package" box, kept with the draft.
alter table drafts add column as_xdm integer not null default 0;
