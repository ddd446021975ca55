"""The command side's runtime: the one submit path (``service``), the partition owners (``owner``: their queue,
restore and claim; ``group_commit``: dedupe, decide, fencing, append), routing over the commands topic and the
HTTP command routes. A command's body is checked by ``blackboard.domain.decoding``."""
