"""Process managers: the reactive and time-driven parts of Blackboard, as pure functions over the log.

Each manager folds the events it cares about into its own state and answers, for an event or a
clock tick, the commands that should follow. A runtime reads the events topic through the log
interface (so the managers run on both engines and in the embedded default) and sends those
commands back through the command side; it never writes a read model.
"""
