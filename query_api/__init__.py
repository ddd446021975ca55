"""Reads over HTTP: Redis first, PostgreSQL on a miss or when Redis is down; read-your-writes by token."""
