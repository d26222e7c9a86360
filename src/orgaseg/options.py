"""Small parsers shared by the command line and the readers: ``NAME=VALUE`` options, natural order."""

from __future__ import annotations

import json
import re
from typing import Any

from orgaseg.errors import OrgasegError


def parse_assignments(items: list[str], option: str) -> dict[str, Any]:
    """Parse ``NAME=VALUE`` items into a dict.

    Parameters
    ----------
    items : list of str
        Each ``NAME=VALUE``; the value may itself contain ``=``. A later item
        overrides an earlier one of the same name.
    option : str
        The option the items came from (e.g. ``"--model-option"``), named in
        errors.

    Returns
    -------
    dict
        Names to values. A value that parses as JSON (numbers, ``true``,
        ``false``, ``null``, lists, objects, quoted strings) becomes that
        value; any other stays the string as written, so ``mode=stride``
        needs no quotes.

    Raises
    ------
    OrgasegError
        For an item without ``=`` or with an empty name.

    Examples
    --------
    >>> parse_assignments(["keep=16", "mode=stride", "scales=[1, 2]", "fast=true"], "--model-option")
    {'keep': 16, 'mode': 'stride', 'scales': [1, 2], 'fast': True}
    """
    values = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise OrgasegError(f"{option} expects NAME=VALUE, got {item!r}")
        try:
            values[name] = json.loads(text)
        except ValueError:
            values[name] = text
    return values


def natural_sort_key(name: str) -> tuple:
    """Sort key that orders runs of digits by value and ignores case: ``img2`` before ``img10``.

    Examples
    --------
    >>> sorted(["crop10", "crop2", "Crop1"], key=natural_sort_key)
    ['Crop1', 'crop2', 'crop10']
    """
    # re.split with a group alternates text, number, text, ...: positions
    # always hold the same type, so the tuples compare.
    parts = re.split(r"(\d+)", name.lower())
    return tuple(int(part) if i % 2 else part for i, part in enumerate(parts))


def lookup(table: dict, name: str, what: str):
    """``table[name]``, or a clear error naming ``what`` and the known names (for the stage tables)."""
    try:
        return table[name]
    except KeyError:
        raise OrgasegError(f"unknown {what} {name!r}; known: {', '.join(table)}") from None
