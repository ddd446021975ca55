"""Constrained scalar types shared by commands and events."""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

# Patterns end in ``(?!\n)$``: in Python's ``re`` (which msgspec uses) a bare ``$`` also matches
# before a final newline, so "EUR\n" would pass; the lookahead closes that and stays valid
# ECMA-262, the dialect of the exported JSON Schema.

#: An identifier inside a stream name or a field: letters, digits, ``.``, ``_`` and ``-``.
Identifier = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*(?!\n)$",
        description="1-128 characters: letters, digits, '.', '_' and '-', starting with a letter or digit",
    ),
]

#: A skill a task requires and a worker offers ("gpu", "ffmpeg-6"): an identifier of at most 64 characters.
#: The length is in the pattern too, so that its description (the error text) differs from ``Identifier``'s.
Skill = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}(?!\n)$",
        description="1-64 characters: letters, digits, '.', '_' and '-', starting with a letter or digit",
    ),
]

#: Money on the wire: a non-negative decimal string with at most 4 decimals ("12.50").
#: Never a JSON number: floats cannot represent cents exactly.
MoneyText = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^(0|[1-9][0-9]{0,14})(\.[0-9]{1,4})?(?!\n)$",
        description="a non-negative decimal string with at most 15 integer digits and 4 decimals",
        examples=["12.50"],
    ),
]

#: Money that must be more than zero ("0.01"; never "0" or "0.00").
PositiveMoneyText = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^(?!0(\.0+)?$)(0|[1-9][0-9]{0,14})(\.[0-9]{1,4})?(?!\n)$",
        description="a decimal string greater than 0 with at most 15 integer digits and 4 decimals",
        examples=["12.50"],
    ),
]

#: ISO 4217 alphabetic currency code.
Currency = Annotated[
    str,
    msgspec.Meta(pattern=r"^[A-Z]{3}(?!\n)$", description="an ISO 4217 code: three capital letters", examples=["EUR"]),
]

#: A short human text (titles, names, reasons).
ShortText = Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]

#: A version a command expects; 0 means "does not exist yet".
ExpectedVersion = Annotated[int, msgspec.Meta(ge=0, le=2**53)]

#: Task priority: higher runs first.
Priority = Annotated[int, msgspec.Meta(ge=-1000, le=1000)]


_SURROGATE = re.compile("[\ud800-\udfff]")


def unstorable_text(text: str) -> str | None:
    """Why PostgreSQL text (UTF-8) cannot hold ``text``, or ``None`` when it can.

    Note: the API's text is Unicode scalar values only. A NUL or a lone surrogate is refused where it
    enters (a command field, a filter, a cursor), so no stored value, cursor or JSON answer holds one.
    """
    if "\x00" in text:
        return "text contains NUL (U+0000), which PostgreSQL cannot store"
    if _SURROGATE.search(text):
        return "text contains a lone surrogate (not a Unicode character)"
    return None

