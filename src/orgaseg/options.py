"""Small parsers shared by the command line and the readers: ``NAME=VALUE`` options, natural order."""

from __future__ import annotations

import json
import math
import numbers
import re
from typing import Any

from orgaseg.errors import ARGUMENTS, OrgasegError, arg


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


def _whole(value: Any, minimum: int) -> bool:
    # 3.0 counts (plans and provenance records may hold it), 2.5 does not
    whole = isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())
    return whole and not isinstance(value, bool) and value >= minimum


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(value)


#: What the value of each stage option must be: a description for the error and a test.
#: Options not listed (``context``, ``planes``, ``preset``, ``subspace``) are checked by their stage.
OPTION_VALUES: dict[str, tuple[str, Any]] = {
    **{name: ("a whole number >= 1", lambda v: _whole(v, 1))
       for name in ("n_init", "max_iter", "init_size", "batch_size", "keep", "stride", "radius", "steps")},
    "hops": ("a whole number >= 0", lambda v: _whole(v, 0)),
    **{name: ("a positive number", lambda v: _number(v) and 0 < v < float("inf"))
       for name in ("region_nm", "superpixel_px", "compactness", "kappa", "alpha")},
    **{name: ("a number >= 0", lambda v: _number(v) and 0 <= v < float("inf")) for name in ("adjacency", "trace_weight")},
    "scales_nm": ("a list of positive numbers of nm, e.g. [10,20,40]",
                  lambda v: isinstance(v, (list, tuple)) and len(v) > 0
                  and all(_number(s) and 0 < s < float("inf") for s in v)),
    "in_plane": ("true or false", lambda v: isinstance(v, bool) or v is None),
}


def check_whole_number(value: Any, name: str, minimum: int = 0) -> int:
    """``value`` as an int if it is a whole number >= ``minimum``, else a clear error naming ``name``.

    For the arguments that reach numpy's or scikit-learn's random generators and
    counts (``seed``, ``sample_size``), which otherwise fail deep inside them.

    Examples
    --------
    >>> check_whole_number(3, "seed")
    3
    >>> check_whole_number(-1, "seed")
    Traceback (most recent call last):
    ...
    orgaseg.errors.OrgasegError: seed=N must be a whole number >= 0, got -1
    """
    if not _whole(value, minimum):
        shown = arg(name) if name in ARGUMENTS else name  # seed=N from Python, --seed N on the command line
        raise OrgasegError(f"{shown} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def check_option_value(name: str, value: Any) -> Any:
    """``value`` if it suits stage option ``name`` (see :data:`OPTION_VALUES`), else a clear error.

    A single number given for ``scales_nm`` becomes a one-element list.

    Examples
    --------
    >>> check_option_value("scales_nm", 20)
    [20]
    >>> check_option_value("n_init", "abc")
    Traceback (most recent call last):
    ...
    orgaseg.errors.OrgasegError: option n_init must be a whole number >= 1, got 'abc'
    """
    if name == "scales_nm" and _number(value):
        value = [value]
    rule = OPTION_VALUES.get(name)
    if rule is not None and not rule[1](value):
        raise OrgasegError(f"option {name} must be {rule[0]}, got {value!r}")
    return value


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
