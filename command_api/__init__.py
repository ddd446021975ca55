"""The command side: pure deciders (decide/evolve per aggregate), validation of incoming commands,
the partition-owner runtime (restore, dedupe, group commit, fencing) and the HTTP command endpoint."""
