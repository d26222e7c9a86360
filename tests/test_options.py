"""NAME=VALUE options and natural order (orgaseg.options)."""

from __future__ import annotations

import pytest

from orgaseg.errors import OrgasegError
from orgaseg.options import check_option_value, natural_sort_key, parse_assignments


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


@pytest.mark.parametrize("name, value, message", [
    ("n_init", "abc", "n_init must be a whole number >= 1, got 'abc'"),
    ("n_init", 0, "n_init must be a whole number >= 1"),
    ("stride", True, "stride must be a whole number >= 1"),
    ("hops", 1.5, "hops must be a whole number >= 0"),
    ("kappa", -1, "kappa must be a positive number"),
    ("superpixel_px", float("nan"), "superpixel_px must be a positive number"),
    ("adjacency", -0.5, "adjacency must be a number >= 0"),
    ("scales_nm", [10, "abc"], "scales_nm must be a list of positive numbers"),
    ("scales_nm", [], "scales_nm must be a list of positive numbers"),
    ("in_plane", "maybe", "in_plane must be true or false"),
])
def test_a_bad_option_value_is_a_clear_error(name, value, message):
    with pytest.raises(OrgasegError, match=message.replace("[", r"\[")):
        check_option_value(name, value)


def test_good_option_values_pass_through():
    import numpy as np

    assert check_option_value("n_init", 5) == 5
    assert check_option_value("stride", np.int64(40)) == 40
    assert check_option_value("hops", 0) == 0
    assert check_option_value("hops", 3.0) == 3.0  # a whole number written as a float, as plans hold it
    assert check_option_value("scales_nm", 20) == [20]
    assert check_option_value("scales_nm", (10.0, 20.0)) == (10.0, 20.0)
    assert check_option_value("in_plane", None) is None
    assert check_option_value("context", "100,400") == "100,400"  # checked by its stage


def test_the_stages_check_option_values_before_any_work():
    from orgaseg.pipeline.stages import resolve_stages

    with pytest.raises(OrgasegError, match="option n_init must be a whole number"):
        resolve_stages("baseline", options={"clusterer.n_init": "x"})
