"""What works with Blackboard from outside it: ``blackboard.integrations.faust`` for users' faust-streaming
processors, ``blackboard.integrations.mcp`` for LLM agents (served by ``blackboard mcp``).

The service's roles never import this room (only the CLI does, for ``blackboard mcp``); each integration
needs its extra (``pip install 'blackboard-server[faust]'``, ``[mcp]``).
"""
