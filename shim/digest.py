"""Stable short fingerprints of text, without hashlib (a shared library to load).

A polynomial hash modulo the Mersenne prime 2**61-1, computed by one C-level bignum
operation (`int.from_bytes` then `%`), so a 2 KB command line costs microseconds.
Not cryptographic: it tells argv's and paths apart, nothing more. The same text
gives the same fingerprint on every machine and run (unlike `hash()`).
"""

_PRIME = (1 << 61) - 1


def fingerprint(text: str) -> str:
    """16 hex digits for *text*."""
    data = text.encode("utf-8", "surrogateescape")
    return "%016x" % ((int.from_bytes(data, "little") + len(data)) % _PRIME)
