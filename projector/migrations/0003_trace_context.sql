-- 0003: change_log.trace_id, the W3C trace id of the command that wrote each event (NULL without one).

-- Nullable and without a default: instant on a large table, and events from before tracing keep NULL.
-- The check keeps the one spelling a trace backend is searched by: 32 lowercase hex digits.
ALTER TABLE change_log ADD COLUMN trace_id text CONSTRAINT change_log_trace_id_hex CHECK (trace_id ~ '^[0-9a-f]{32}$');
