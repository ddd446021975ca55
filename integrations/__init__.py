"""What users' own processes import to work with Blackboard: ``blackboard.integrations.faust`` for faust-streaming.

Nothing of the service imports this room; each integration needs its extra (``pip install
'blackboard-server[faust]'``).
"""
