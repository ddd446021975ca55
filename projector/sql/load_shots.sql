-- Every shot of the given projects.
SELECT * FROM shots WHERE project_id = ANY($1::text[])
