-- 0009: agent runs are read from the change log without a scan.
--
-- A run's events: "what did run R change" walks this index in time order (partial: most events are
-- not sent by an agent run, so the index holds only those that were).
CREATE INDEX change_log_agent_run_idx ON change_log (agent_run_id, occurred_at, partition, "offset")
    WHERE agent_run_id IS NOT NULL;
-- What an event caused: the events appended by commands a process manager sent because of it carry
-- its event id as their causation id, and a run's effects follow them level by level.
CREATE INDEX change_log_causation_idx ON change_log (causation_id);
