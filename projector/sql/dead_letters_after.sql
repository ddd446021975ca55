-- The letters of one stream after a position of its partition, in log order, whatever their status.
SELECT id, status FROM dead_letters
WHERE projection = $1 AND topic = $2 AND stream = $3 AND partition = $4 AND "offset" > $5 ORDER BY "offset"
