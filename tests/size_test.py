"""Sizes in toolchain.toml and on the command line (shim/size.py)."""

import pytest

from shim import size


@pytest.mark.parametrize("text, expected", [
    ("4GiB", 4 << 30), ("4G", 4 << 30), ("512M", 512 << 20), ("512mib", 512 << 20),
    ("1.5GiB", 3 << 29), ("300MB", 300 * 10**6), ("2KB", 2000), ("1024B", 1024), (" 7 K ", 7 << 10),
    (0, 0), ("1048576", 1 << 20), ("2_000_000", 2000000), (3 << 20, 3 << 20), ("1TiB", 1 << 40),
])
def test_sizes(text, expected):
    assert size.parse(text) == expected


def test_percentages_need_a_total():
    assert size.parse("75%", total=1000) == 750
    with pytest.raises(ValueError, match="not allowed here"):
        size.parse("75%")
    with pytest.raises(ValueError, match=r"\(0, 100\]"):
        size.parse("150%", total=1)


@pytest.mark.parametrize("bad", ["", "G", "12 parsecs", "-1G", "nanG", "infM", True, 1.5, [1], -3])
def test_bad_sizes_say_why(bad):
    with pytest.raises(ValueError):
        size.parse(bad)


@pytest.mark.parametrize("slip", ["512", 512, "1_000", "1048575"])
def test_a_bare_number_below_one_mib_is_taken_for_a_forgotten_unit(slip):
    with pytest.raises(ValueError, match="did you mean %sMiB" % slip):
        size.parse(slip)


@pytest.mark.parametrize("huge", ["1e300", "2048TiB", "1048577TiB", 1 << 51, "9" * 400])
def test_sizes_above_one_pib_are_refused_with_a_reason(huge):
    with pytest.raises(ValueError, match="too large"):
        size.parse(huge)


def test_format():
    assert [size.format(n) for n in (0, 1023, 1536, 5 << 30, None)] == ["0B", "1023B", "1.5KiB", "5.0GiB", "-"]
