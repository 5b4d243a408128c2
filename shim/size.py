"""Byte sizes as people write them: `4GiB`, `512M`, `1.5G`, `300MB`, `75%`, `1048576`.

K, M, G, T (with or without `iB`) are binary (1024-based), as for RAM; `KB`, `MB`,
`GB`, `TB` are decimal. A percentage is a fraction of a total the caller supplies.

Sizes are bounded: at most 1 PiB, and a bare number (no unit, so bytes) below 1 MiB is
refused as a slip of the pen ("did you mean 512MiB?"): no build step fits in 512 bytes.
"""

MAX = 1 << 50               # 1 PiB: more than any machine shim will run on
BARE_MIN = 1 << 20          # a bare number below this is almost surely a forgotten unit

_UNITS = {
    "": 1, "b": 1,
    "k": 1 << 10, "kib": 1 << 10, "kb": 10**3,
    "m": 1 << 20, "mib": 1 << 20, "mb": 10**6,
    "g": 1 << 30, "gib": 1 << 30, "gb": 10**9,
    "t": 1 << 40, "tib": 1 << 40, "tb": 10**12,
}


def parse(text, total=None) -> int:
    """Bytes meant by *text* (a str or a non-negative int); ValueError with a reason if bad.

    `N%` needs *total* (the figure it is a percentage of).
    """
    if isinstance(text, bool):
        raise ValueError("expected a size such as \"4GiB\", got a boolean")
    if isinstance(text, int):
        if text < 0:
            raise ValueError("a size cannot be negative")
        return _bounded(text, text, bare=True)
    if not isinstance(text, str):
        raise ValueError("expected a size such as \"4GiB\", got %s" % type(text).__name__)
    s = text.strip().replace("_", "")
    if s.endswith("%"):
        if total is None:
            raise ValueError("a percentage is not allowed here: %r" % text)
        number = _number(s[:-1].strip(), text)
        if not 0 < number <= 100:
            raise ValueError("a percentage must be in (0, 100]: %r" % text)
        return _bounded(int(total * number / 100), text)
    i = len(s)
    while i and not (s[i - 1].isdigit() or s[i - 1] == "."):
        i -= 1
    unit = s[i:].strip().lower()
    if unit not in _UNITS:
        raise ValueError("unknown size unit %r in %r (use B, KiB, MiB, GiB, TiB, or KB, MB, GB)"
                         % (s[i:].strip(), text))
    return _bounded(int(_number(s[:i].strip(), text) * _UNITS[unit]), text, bare=not unit)


def _bounded(value: int, text, bare: bool = False) -> int:
    if value > MAX:
        raise ValueError("%r is too large (at most 1PiB)" % text)
    if bare and 0 < value < BARE_MIN:
        raise ValueError("%r is %d bytes: did you mean %sMiB? (a size without a unit is in bytes)"
                         % (text, value, text))
    return value


def _number(digits: str, text) -> float:
    try:
        value = float(digits)
    except ValueError:
        raise ValueError("not a size: %r (expected e.g. \"4GiB\", \"512M\", \"75%%\")" % text) from None
    if value < 0 or value != value:
        raise ValueError("not a size: %r" % text)
    if value > MAX:
        raise ValueError("%r is too large (at most 1PiB)" % text)
    return value


def format(n) -> str:  # noqa: A001 - mirrors parse()
    """`1536` -> `1.5KiB`: the shortest binary unit that keeps the number under 1024."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return ("%d%s" % (value, unit)) if unit == "B" else ("%.1f%s" % (value, unit))
        value /= 1024
    return "%dB" % n
