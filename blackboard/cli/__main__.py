"""``python -m blackboard.cli``: the ``blackboard`` command."""

from blackboard.cli import main

main()
