"""Blackboard: an event-sourced state store for multi-agent pipelines.

The rooms are separate packages: ``blackboard.schemas`` (the language), ``blackboard.events``
(the log), ``blackboard.command_api`` (deciders and command endpoints), ``blackboard.projector``
(read models) and ``blackboard.query_api`` (reads). This package is the thin wiring: settings,
the CLI and process start-up.
"""

__version__ = "0.1.0"
