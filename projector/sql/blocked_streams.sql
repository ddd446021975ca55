-- Which of the given streams are held behind an unresolved dead letter.
SELECT DISTINCT stream FROM dead_letters
WHERE projection = $1 AND status IN ('open', 'held') AND stream = ANY($2::text[])
