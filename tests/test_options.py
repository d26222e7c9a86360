"""NAME=VALUE options and natural order (orgaseg.options)."""

from __future__ import annotations

import pytest

from orgaseg.errors import OrgasegError
from orgaseg.options import natural_sort_key, parse_assignments


def test_values_are_json_when_they_parse_and_strings_otherwise():
    items = ["keep=16", "ratio=0.75", "fast=true", "slow=false", "scales=[1, 2.5]", "mode=stride",
             "name=\"16\"", "expr=a=b", "empty="]
    assert parse_assignments(items, "--model-option") == {
        "keep": 16, "ratio": 0.75, "fast": True, "slow": False, "scales": [1, 2.5], "mode": "stride",
        "name": "16", "expr": "a=b", "empty": "",
    }


def test_a_later_item_overrides_an_earlier_one():
    assert parse_assignments(["k=4", "k=6"], "--option") == {"k": 6}


@pytest.mark.parametrize("item", ["keep", "=16", " =1"])
def test_malformed_item_names_the_option(item):
    with pytest.raises(OrgasegError, match=r"--model-option expects NAME=VALUE"):
        parse_assignments([item], "--model-option")


def test_natural_sort_key_orders_numbers_by_value_and_ignores_case():
    names = ["10.png", "2.png", "1.png", "img_20.tif", "IMG_3.tif", "crop100", "crop9"]
    assert sorted(names, key=natural_sort_key) == [
        "1.png", "2.png", "10.png", "crop9", "crop100", "IMG_3.tif", "img_20.tif",
    ]
