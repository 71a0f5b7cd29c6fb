-- Organization names are unique whatever their case ("Lakeside Clinic" and
-- "lakeside clinic" are one organization), as the console already checks.
create unique index organizations_name_ci on organizations (lower(name));
