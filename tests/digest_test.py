"""Sealed state (shim/digest.py): what pack() wrote comes back; nothing else reaches marshal."""

import marshal

import pytest

from shim import digest

VALUES = [
    {"cc\0out1.o": ([13168640, 2 << 30], "0671eed20c7866d2", 1796324173.449432)},
    ("ident\0with\0nul", [("/a/toolchain.toml", (1, 2, 3, 4))], {"tools": {"cc": ["gcc"]}, "memory": None}),
    {}, None, 2 ** 70, "ü\udc80",
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_what_pack_wrote_unpacks_to_the_same_value(value):
    assert digest.unpack(digest.pack(value)) == value


def test_every_truncation_and_every_changed_byte_is_refused():
    data = digest.pack(VALUES[1])
    for n in range(len(data)):
        with pytest.raises(ValueError):
            digest.unpack(data[:n])
        for bit in (0x01, 0x80):
            changed = bytearray(data)
            changed[n] ^= bit
            with pytest.raises(ValueError):
                digest.unpack(bytes(changed))
    with pytest.raises(ValueError):
        digest.unpack(data + b"\0")              # a zero byte more changes no little-endian number


@pytest.mark.parametrize("data", [b"(null", b"[null]\n", b"<\xff\xff\xff\x7f", b"l\xff\xff\xff\x7f", b"",
                                  marshal.dumps({"an": "unsealed", "older": "file"})])
def test_unsealed_data_is_refused_before_marshal_reads_it(data, monkeypatch):
    def loads(_):
        raise AssertionError("marshal.loads was called")
    monkeypatch.setattr(digest.marshal, "loads", loads)
    with pytest.raises(ValueError):
        digest.unpack(data)


def test_the_fingerprint_of_a_text_did_not_change():
    # Estimates shards and toolchain cache names are chosen by it: a change would orphan them.
    # (The values the function gave before state files were sealed.)
    assert digest.fingerprint("cc\0out1.o") == "0e3174756f0066e5"
    assert digest.fingerprint("gcc\0src/\u00fc.o") == "0f63727679d9498c"


@pytest.mark.parametrize("size", [0, 1, 7, 8, 61, 800, 4334])
def test_the_seals_folded_sum_is_the_remainder_modulo_the_prime(size):
    import random
    rng = random.Random(size)
    for data in (bytes(size), b"\xff" * size, bytes(rng.randrange(256) for _ in range(size))):
        assert digest._sum(data) == (int.from_bytes(data, "little") + len(data)) % ((1 << 61) - 1)
