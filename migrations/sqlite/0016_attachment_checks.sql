-- Why a received attachment that a browser could show must only be downloaded (it
-- fails the checks an upload gets): one line per such attachment, "<index>\t<reason>";
-- empty when every attachment passed; null when not checked yet (checked on first view).
alter table messages add column attachment_checks text;
