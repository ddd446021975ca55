SELECT * FROM leases WHERE name = ANY($1::text[])
