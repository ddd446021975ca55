"""The log: one partitioned-log interface, two engines (Kafka and a PostgreSQL table).

Knows the envelope and nothing of the domain.
"""
