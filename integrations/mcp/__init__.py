"""MCP tools for LLM agents: Blackboard's reads, commands and run rollbacks, served by ``blackboard mcp``.

The tools act on a running Blackboard server over its HTTP API (``backend``), so validation, keys, limits
and rules stay the server's. Needs the ``mcp`` extra (``pip install 'blackboard-server[mcp]'``).
"""
