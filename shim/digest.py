"""Stable short fingerprints of text, and checksummed marshal for state files, without
hashlib (a shared library to load).

A polynomial hash modulo the Mersenne prime 2**61-1, computed by C-level bignum
operations (`int.from_bytes`, a few folds of a long number, then `%`), so a 4 KB file
costs microseconds.
Not cryptographic: it tells argv's and paths apart, and a damaged file from the one
shim wrote, nothing more. The same text gives the same fingerprint on every machine and
run (unlike `hash()`).

Why state files are sealed: `marshal.loads` sizes a tuple, list, set or int by the
4-byte count in the data before reading a single item, so five damaged bytes, `(null`,
have it fill 14 GiB (a tuple of 1.8 billion items: a step OOM-killed on any small
runner) and `[null` spend 3 s. Only data whose checksum holds reaches it, and that is
data marshal.dumps wrote.
"""

import marshal

_PRIME = (1 << 61) - 1
_MAGIC = b"\0shim-sealed 1\n"
_HEAD = len(_MAGIC) + 8


def fingerprint(text: str) -> str:
    """16 hex digits for *text*."""
    return "%016x" % _sum(text.encode("utf-8", "surrogateescape"))


def _sum(data: bytes) -> int:
    """The polynomial hash of *data* modulo the prime. A long number is first folded: 2**61
    is 1 modulo the prime, so its high and low parts, split at a multiple of 61 bits, add up
    to the same remainder (a 4 KB toolchain cache: 6.6 us, where `%` alone, a long
    division, takes 17); a short one, a key or a command line, goes straight to `%`."""
    n = int.from_bytes(data, "little") + len(data)
    while n.bit_length() > 1220:
        k = n.bit_length() // 122 * 61
        n = (n >> k) + (n & ((1 << k) - 1))
    return n % _PRIME


def pack(value) -> bytes:
    """*value* marshalled behind a header: magic, then the checksum of what follows."""
    data = marshal.dumps(value)
    return _MAGIC + _sum(data).to_bytes(8, "little") + data


def unpack(data: bytes):
    """The value pack() gave *data*; ValueError when *data* is not that, whole (another
    format, truncated, a byte changed), before marshal sees any of it."""
    body = data[_HEAD:]
    if data[:len(_MAGIC)] != _MAGIC or data[len(_MAGIC):_HEAD] != _sum(body).to_bytes(8, "little"):
        raise ValueError("not a state file shim wrote, or damaged")
    return marshal.loads(body)
