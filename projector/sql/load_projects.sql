SELECT * FROM projects WHERE id = ANY($1::text[])
