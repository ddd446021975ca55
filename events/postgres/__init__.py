"""The PostgreSQL log engine: the log in ``log``, its group membership in ``membership``, the schema runner
every PostgreSQL schema of the project is made with in ``schema``, and the blob store in ``blobs``."""

from blackboard.events.postgres.log import PostgresLog, PostgresLogReader
from blackboard.events.postgres.membership import PostgresMembership

__all__ = ["PostgresLog", "PostgresLogReader", "PostgresMembership"]
