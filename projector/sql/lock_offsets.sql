-- The stored next offset of a batch's partitions, locked until commit (in partition order: no deadlock).
SELECT partition, next_offset FROM projection_offsets
WHERE projection = $1 AND topic = $2 AND partition = ANY($3::integer[])
ORDER BY partition FOR UPDATE
