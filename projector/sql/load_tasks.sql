SELECT * FROM tasks WHERE id = ANY($1::text[])
