"""What an event changed: the difference of two states as JSON Pointer changes, and its inverse.

Pure, and over plain JSON-able data (``msgspec.to_builtins`` of a state), so that the history of
any stream, a dry run of any command and a test can all say "which fields changed from what to what"
in the same words.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from blackboard.schemas.views import FieldChange

_ABSENT: Any = object()


def escape(key: str) -> str:
    """``key`` as one JSON Pointer (RFC 6901) reference token: ``~`` → ``~0``, ``/`` → ``~1``."""
    return key.replace("~", "~0").replace("/", "~1")


def unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def diff(before: Any, after: Any) -> list[FieldChange]:
    """The leaves that differ between two builtins values (``msgspec.to_builtins`` output).

    Objects are walked key by key (paths are JSON Pointers, ``/shots/s-1/fields/status``); lists and
    scalars are leaves compared as whole values. A key only in ``after`` is listed leaf by leaf
    under it (``op`` ``add``, ``from`` null); a key only in ``before`` is one ``remove`` at the key
    with its whole old value (``to`` null), since removing its leaves one by one would leave an
    empty object behind. The result is sorted by path; :func:`apply_changes` of it to ``before``
    gives ``after``.

    Note: values compare as JSON does: ``true`` is not ``1`` and ``1.0`` is not ``1``, although
    Python's ``==`` says they are.
    """
    changes: list[FieldChange] = []
    _walk("", before, after, changes)
    return changes


def _walk(path: str, before: Any, after: Any, out: list[FieldChange]) -> None:
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted({*before, *after}, key=str):
            _walk(f"{path}/{escape(str(key))}", before.get(key, _ABSENT), after.get(key, _ABSENT), out)
    elif isinstance(after, dict) and after and before is _ABSENT:
        for key in sorted(after, key=str):
            _walk(f"{path}/{escape(str(key))}", _ABSENT, after[key], out)
    elif before is _ABSENT:
        out.append(FieldChange(path, "add", None, after))
    elif after is _ABSENT:
        out.append(FieldChange(path, "remove", before, None))
    elif not same(before, after):
        out.append(FieldChange(path, "replace", before, after))


def same(a: Any, b: Any) -> bool:
    """JSON equality of two builtins values (types must match: ``True`` is not ``1``)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def apply_changes(value: Any, changes: Iterable[FieldChange]) -> Any:
    """``value`` with ``changes`` applied (a new value; ``value`` is not modified).

    Objects missing on the way to an ``add`` are created; the root path ``""`` replaces the whole.
    """
    result = _copy(value)
    for change in changes:
        if change.path == "":
            result = None if change.op == "remove" else _copy(change.to)
            continue
        *parents, leaf = [unescape(t) for t in change.path.split("/")[1:]]
        node = result
        for token in parents:
            node = node.setdefault(token, {})
        if change.op == "remove":
            node.pop(leaf, None)
        else:
            node[leaf] = _copy(change.to)
    return result


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def under(changes: Iterable[FieldChange], prefix: str) -> list[FieldChange]:
    """The changes at ``prefix`` (a JSON Pointer) or below it."""
    return [c for c in changes if c.path == prefix or c.path.startswith(prefix + "/")]
