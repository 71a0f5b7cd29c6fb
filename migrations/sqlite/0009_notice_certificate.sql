-- A failure notice goes to a sender this HISP does not trust, encrypted to the
-- certificate of their signature; it is kept with that one message only.
alter table outbound_messages add column recipient_cert text;
