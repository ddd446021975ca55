"""The projection: events of the log folded into PostgreSQL read models and Redis documents.

``migrate`` owns the read-model schema and ``tables`` declares every read model. ``runtime`` is
the follow loop: each batch of records decoded, then, in one transaction with its offsets, handed to
``rows`` (the rows loaded, folded by ``fold`` without I/O, and written with the change log and dead
letters), with ``poison`` bisecting a batch a record of which PostgreSQL refuses. ``dead_letters``
holds every statement on the records set aside, for the projector and the operator alike; the SQL
of all of them is in ``sql/`` (``statements``). ``documents`` turns rows into the documents the
query API serves, and ``cache`` writes those documents to Redis, guarded by version. ``replay``
rebuilds a generation from offset 0 (``follower``, ``replay_workers``, ``bulk_load``) and swaps it in.
"""
