"""The language of Blackboard: msgspec Structs for the envelope, every command and every event.

This package imports nothing else of Blackboard and does no I/O. Event type names and their
fields are a storage format: new fields get defaults, a field's type never changes, and older
schema versions are upcast by small registered functions (see ``registry``).
"""
