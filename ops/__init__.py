"""Operator tools as small libraries the CLI renders: tail, stream, topics, lag, verify, doctor, dead letters.

Each tool takes what it reads (a started log, a pool on the live read models, the settings as
:class:`~blackboard.ops.settings.OpsSettings`) and returns a msgspec Struct the CLI prints as a table
or as one JSON document. Opening those from the configuration is the wiring's job (``blackboard.connect``).
"""
