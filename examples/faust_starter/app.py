"""A faust app of your own beside Blackboard: charge a project a fixed cost for every task created for it.

It reads Blackboard's events topic, reacts to ``task.created`` events whose task payload names a
project (``{"project": "p-1"}``) and sends ``project.add_cost`` for that project. The command id is
``faust:<event_id>``, so the events faust replays after a crash repeat commands Blackboard has
already decided: the project is charged once per task, however often the worker restarts.

Run it (Blackboard up, on Kafka/Redpanda)::

    BLACKBOARD_KAFKA_BOOTSTRAP_SERVERS=localhost:9092 BLACKBOARD_URL=http://localhost:8080 \\
        python examples/faust_starter/app.py worker -l info

Configuration, all from the environment:

* ``BLACKBOARD_KAFKA_BOOTSTRAP_SERVERS``, ``BLACKBOARD_TOPIC_PREFIX``: the same as Blackboard's own.
* ``BLACKBOARD_URL`` (default ``http://127.0.0.1:8080``), ``BLACKBOARD_API_KEY`` (optional, needs ``rw``).
* ``STARTER_APP_ID`` (default ``blackboard-task-costs``): faust's app id, and so the consumer group.
* ``STARTER_TASK_COST`` (default ``1.00``): what one task costs, in the project's currency.
* ``FAUST_*``: any faust setting by its environment name, e.g. ``FAUST_BROKER_SESSION_TIMEOUT``.
"""

from __future__ import annotations

import logging
import os

import faust

from blackboard.config import Settings
from blackboard.integrations.faust import BlackboardEvent, CommandClient, broker_credentials, events_topic
from blackboard.schemas.project import AddCost
from blackboard.schemas.task import TaskCreated

log = logging.getLogger(__name__)

settings = Settings()
BOOTSTRAP = (settings.kafka_bootstrap_servers or "localhost:9092").split(",")
BLACKBOARD_URL = os.environ.get("BLACKBOARD_URL", "http://127.0.0.1:8080")
TASK_COST = os.environ.get("STARTER_TASK_COST", "1.00")

app = faust.App(
    os.environ.get("STARTER_APP_ID", "blackboard-task-costs"),
    broker=[f"kafka://{server.strip()}" for server in BOOTSTRAP],
    # The same SASL and TLS settings (BLACKBOARD_KAFKA_SECURITY_PROTOCOL, ..._SASL_*, ..._SSL_*) as the server's.
    broker_credentials=broker_credentials(settings.kafka_client_options()),
    # FAUST_BROKER_SESSION_TIMEOUT=… and the like override any setting without editing this file.
    env_prefix="FAUST_",
    # No tables: the state this app needs (was this task charged?) is Blackboard's, found by command id.
    store="memory://",
)
events = events_topic(app, settings)


def project_of(event: BlackboardEvent) -> str | None:
    """The project a created task is for, when its payload names one."""
    if not isinstance(event.payload, TaskCreated):
        return None
    project = event.payload.payload.get("project")
    return project if isinstance(project, str) and project else None


@app.agent(events)
async def charge_tasks(stream: faust.StreamT[BlackboardEvent]) -> None:
    # Retry for ever while Blackboard is unavailable: skipping an event would lose its charge.
    async with CommandClient(BLACKBOARD_URL, api_key=os.environ.get("BLACKBOARD_API_KEY"), retries=None) as client:
        async for event in stream:
            project = project_of(event)
            if project is None:
                continue
            cost = AddCost(amount=TASK_COST, reason=f"task {event.stream}")
            result = await client.react(event, "project.add_cost", f"project:{project}", cost)
            if result.outcome == "rejected":
                # Final: the same command id would be refused again. A real app might alert here.
                log.warning("cost of %s refused by %s: %s", event.stream, result.code, result.message)
            else:
                # "again": a replay after a restart, answered from the first outcome; nothing was charged twice.
                log.info("charged %s for %s%s", result.stream, event.stream, " again" if result.replayed else "")


if __name__ == "__main__":
    app.main()
