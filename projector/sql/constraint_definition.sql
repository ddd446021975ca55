-- The definition of a schema's constraint on a table, by name.
SELECT pg_get_constraintdef(k.oid) FROM pg_constraint k JOIN pg_namespace n ON n.oid = k.connamespace
WHERE n.nspname = $1 AND k.conrelid = to_regclass($2) AND k.conname = $3
