-- Delivered on commit: a reader waiting for a position re-reads the offsets then.
SELECT pg_notify($1, $2)
