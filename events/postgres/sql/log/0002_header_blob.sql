-- 0002: a record's headers in one value (a msgpack array of [name, value] pairs) instead of two
-- arrays. Reading a record then costs one field to send and decode, not two arrays of a dozen
-- elements each, which was most of the cost of reading the log. Records written before keep
-- their arrays (and no blob); readers take whichever the row has. Every row already has the
-- arrays form, so the check need not scan them (NOT VALID): the migration is instant on any log.

ALTER TABLE records
    ADD COLUMN headers bytea,
    ALTER COLUMN header_keys DROP NOT NULL,
    ALTER COLUMN header_values DROP NOT NULL,
    ADD CONSTRAINT records_headers_one_form CHECK ((headers IS NULL) <> (header_keys IS NULL AND header_values IS NULL)) NOT VALID;
