-- The stored next offset of every partition of a topic.
SELECT partition, next_offset FROM projection_offsets WHERE projection = $1 AND topic = $2
