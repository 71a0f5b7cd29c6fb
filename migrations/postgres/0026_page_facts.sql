-- What the message page reads from a message's MIME (recipients, whether it has an
-- HTML body, its text, its attachments as listed), as JSON, kept after the first view
-- so a large message is not parsed again on every view (web::message::PageFacts).
-- NULL until the message is first shown.
alter table messages add column page_facts text;
