"""Wildcard matching without re (shim/pattern.py), checked against fnmatch."""

import fnmatch
import random

import pytest

from shim import pattern


@pytest.mark.parametrize("name, pat, expected", [
    ("x86_64-linux-gnu-gcc", "*-gcc", True),
    ("gcc-12", "gcc-[0-9]*", True),
    ("gcc-ar", "gcc-[0-9]*", False),
    ("-march=native", "-march=*", True),
    ("-W", "-W*", True),
    ("a[b", "a[b", True),
    ("abc", "a?c", True),
    ("ac", "a?c", False),
    ("x", "[!a-c]", True),
    ("b", "[!a-c]", False),
])
def test_examples(name, pat, expected):
    assert pattern.match(name, pat) is expected


def test_agrees_with_fnmatchcase_on_random_inputs():
    rng = random.Random(20261124)
    for _ in range(20000):
        pat = "".join(rng.choice("ab*?[]!-c") for _ in range(rng.randint(0, 7)))
        name = "".join(rng.choice("abcz0-[]!") for _ in range(rng.randint(0, 8)))
        assert pattern.match(name, pat) == fnmatch.fnmatchcase(name, pat), (name, pat)
