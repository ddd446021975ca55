-- An offset row, starting at 0, for each partition that has none.
INSERT INTO projection_offsets (projection, topic, partition, next_offset)
SELECT $1, $2, p, 0 FROM unnest($3::integer[]) AS p
ON CONFLICT (projection, topic, partition) DO NOTHING
