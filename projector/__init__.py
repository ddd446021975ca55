"""The projection: events of the log folded into PostgreSQL read models and Redis documents.

``migrate`` owns the read-model schema, ``runtime`` folds batches of records into it (rows,
change log and offsets in one transaction), ``documents`` turns rows into the documents the
query API serves, and ``cache`` writes those documents to Redis, guarded by version.
"""
