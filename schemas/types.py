"""Constrained scalar types shared by commands and events."""

from __future__ import annotations

from typing import Annotated

import msgspec

#: An identifier inside a stream name or a field: letters, digits, ``.``, ``_`` and ``-``.
Identifier = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$",
        description="1-128 characters: letters, digits, '.', '_' and '-', starting with a letter or digit",
    ),
]

#: Money on the wire: a non-negative decimal string with at most 4 decimals ("12.50").
#: Never a JSON number: floats cannot represent cents exactly.
MoneyText = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^(0|[1-9][0-9]{0,14})(\.[0-9]{1,4})?$",
        description="a non-negative decimal string with at most 15 integer digits and 4 decimals",
        examples=["12.50"],
    ),
]

#: ISO 4217 alphabetic currency code.
Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$", examples=["EUR"])]

#: A short human text (titles, names, reasons).
ShortText = Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]

#: A version a command expects; 0 means "does not exist yet".
ExpectedVersion = Annotated[int, msgspec.Meta(ge=0, le=2**53)]

#: Task priority: higher runs first.
Priority = Annotated[int, msgspec.Meta(ge=-1000, le=1000)]
