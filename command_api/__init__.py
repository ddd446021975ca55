"""The command side's runtime: validation of incoming commands, the one submit path, the partition owners
(restore, dedupe, group commit, fencing), routing over the commands topic and the HTTP command routes."""
