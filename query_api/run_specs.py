"""The list of agent runs, declared for the list machinery (``blackboard.query_api.lists``).

Note: a run is not a row of its own: the list groups the change log's events by their agent run id,
reading only the partial ``change_log_agent_run_idx`` (events no run sent are not in it). The grouping
costs time linear in the runs' events per page; a filter on time narrows what is grouped.

A run is its tenant's: the events grouped are those of the caller's tenant's streams only (the scope value is
the tenant), so two tenants using one run id see two runs.
"""

from __future__ import annotations

from blackboard.query_api.list_specs import Filter, ListSpec, SortKey

RUNS = ListSpec(
    resource="runs",
    source="""(SELECT agent_run_id AS id, min(agent_model) AS model, min(prompt_hash) AS prompt_hash,
                      min(actor) AS principal, min(occurred_at) AS first_at, max(occurred_at) AS last_at,
                      count(*) AS events, count(DISTINCT command_id) AS commands
               FROM change_log WHERE agent_run_id IS NOT NULL AND tenant = $1
               GROUP BY agent_run_id) AS runs""",
    # $1: the caller's tenant, in ``source`` (``change_log.tenant``: the tenant of each event's stream).
    scope="TRUE",
    scope_params=1,
    sort_keys={
        "id": SortKey("id", "text"),
        "first_at": SortKey("first_at", "timestamp"),
        "last_at": SortKey("last_at", "timestamp"),
        "events": SortKey("events", "int"),
    },
    filters={
        "model": Filter("model", "=", "text"),
        "principal": Filter("principal", "=", "text"),
        "prompt_hash": Filter("prompt_hash", "=", "text"),
        # A run overlaps [since, until] when it ended at or after since and began at or before until.
        "since": Filter("last_at", ">=", "timestamp"),
        "until": Filter("first_at", "<=", "timestamp"),
    },
    id_key="id",
    default_sort="-last_at",
    fields=frozenset({"id", "model", "prompt_hash", "principal", "first_at", "last_at", "events", "commands"}),
)
