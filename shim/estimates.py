"""Expected peak memory of a step, learned from the ledger.

Key: tool id + primary output (build-dir relative, so a CI cache of `.shim/` works
on the next machine), or tool id + unit for cargo's rustc steps (crate, type, target,
profile: their file names change with every flag). Value: the peaks of the last observations (spawned steps
only: exec'd steps cannot be measured) with the argv fingerprint and time of the
newest. The estimate is a high percentile (p90) of those peaks, which for fewer
than ten observations is their maximum.

The index lives beside the ledger in SHARDS small marshal files, so a step reads
one file of a few KB, never the ledger. Each spawned step updates it (observe), so it
outlives the ledger's bounded history; rebuild() makes one from a ledger only where
there is none. A step whose key is missing falls back to toolchain.toml's
`step.<kind>.memory` prior, then to PRIORS.
"""

import marshal

from shim import digest, host, rundir
from shim.host import osapi

DIRNAME = "memory-v1"
SHARDS = 32
KEEP = 10                   # observations kept per key
STALE_AFTER = 14 * 86400    # seconds: re-measure (auto mode spawns) after this long
PRIORS = {"compile": 256 << 20, "link": 1 << 30, "archive": 64 << 20, "preprocess": 128 << 20,
          "other": 64 << 20}


def key(tool: str, output) -> str:
    return "%s\0%s" % (tool, output or "")


def key_of(record: dict) -> str:
    """The key of a ledger record or step: its tool and first output (else its input), or
    its `unit` where it has one (cargo's file names carry hashes that change between
    rebuilds of the same crate; shim/rustc.py unit)."""
    if record.get("unit"):
        return key(record["tool"], "unit:" + record["unit"])
    return key(record["tool"], record["out"][0] if record.get("out") else record.get("in"))


def _shard(ledger_dir: str, k: str) -> str:
    return host.join(host.join(ledger_dir, DIRNAME), "%02d.marshal" % _index(k))


def _index(k: str) -> int:
    return int(digest.fingerprint(k), 16) % SHARDS


def _entry_ok(entry) -> bool:
    """Whether *entry* has the shape observe() writes: ([peaks > 0], argv or None, time)."""
    return (type(entry) is tuple and len(entry) == 3 and type(entry[0]) in (list, tuple) and bool(entry[0])
            and all(type(p) is int and p > 0 for p in entry[0])
            and (entry[1] is None or type(entry[1]) is str) and type(entry[2]) in (int, float))


def _read_shard(path: str):
    """The table in shard *path*: {} if there is none, None if the file is damaged."""
    try:
        data = host.read_file(path)
    except OSError:
        return {}
    try:
        table = marshal.loads(data)
    except (ValueError, EOFError, TypeError, MemoryError):
        return None
    return table if type(table) is dict else None


def _damaged(path: str, env: dict) -> None:
    rundir.warn_once("estimates", "ignoring the damaged memory estimates file %s: the step is admitted by "
                     "its prior (the file is rewritten by the next measured step)" % path, env)


def lookup(ledger_dir: str, k: str, env: dict = None):
    """(peaks newest last, argv fingerprint, t) for key *k*, or None. Never raises: a
    damaged shard or entry (a partial CI cache restore) is ignored with a warning."""
    path = _shard(ledger_dir, k)
    table = _read_shard(path)
    if table is None:
        _damaged(path, env or {})
        return None
    entry = table.get(k)
    if entry is None or _entry_ok(entry):
        return entry
    _damaged(path, env or {})
    return None


def percentile90(peaks) -> int:
    ordered = sorted(peaks)
    return ordered[max(0, -(-len(ordered) * 9 // 10) - 1)]


def estimate(entry, kind: str, config: dict, tool: dict = None):
    """(bytes, source) where source is "history", "prior" (tool.<id>.memory, else
    step.<kind>.memory) or "default"."""
    if entry:
        return percentile90(entry[0]), "history"
    if tool and tool.get("memory"):
        return tool["memory"], "prior"
    step = config["steps"].get(kind) or {}
    if step.get("memory"):
        return step["memory"], "prior"
    return PRIORS.get(kind, PRIORS["other"]), "default"


def is_fresh(entry, argv: str, now: float) -> bool:
    """Known well enough to exec without measuring: same arguments, measured lately."""
    return bool(entry) and entry[1] == argv and now - entry[2] < STALE_AFTER


def observe(ledger_dir: str, record: dict) -> None:
    """Add a spawned step's measured peak to its shard at once: how every build (plain
    ninja, Bazel, `shim build`) learns, and nothing else does (the ledger keeps only recent
    builds). Steps finishing together update a shard in turn: byte <shard> of
    `memory-v1/lock` is held (lockf) from reading the shard to renaming its new version, so
    no update is lost. Never raises."""
    k = key_of(record)
    path = _shard(ledger_dir, k)
    lock = None
    try:
        lock = _lock(host.dirname(path), _index(k))
        table = _read_shard(path)
        if table is None:
            table = {}                    # damaged: start it over
        entry = table.get(k)
        peaks = (list(entry[0]) if _entry_ok(entry) else []) + [record.get("need") or record["rss"]]
        table[k] = (peaks[-KEEP:], record.get("argv"), record["t0"])
        host.replace_file(path, marshal.dumps(table))
    except (OSError, ValueError):
        pass
    finally:
        if lock is not None:
            osapi.close(lock)                   # releases the lock


def _lock(directory: str, index: int) -> int:
    """A descriptor of *directory*/lock holding byte *index* locked (made if missing); on a
    system without lockf (Windows), unlocked: a lost race there means measuring again."""
    flags = osapi.O_RDWR | osapi.O_CREAT | host.O_CLOEXEC
    try:
        fd = osapi.open(host.join(directory, "lock"), flags, 0o644)
    except FileNotFoundError:
        host.makedirs(directory)
        fd = osapi.open(host.join(directory, "lock"), flags, 0o644)
    if hasattr(osapi, "lockf"):
        try:
            osapi.lseek(fd, index, 0)
            osapi.lockf(fd, osapi.F_LOCK, 1)
        except BaseException:
            osapi.close(fd)
            raise
    return fd


def rebuild(ledger_dir: str, steps: list) -> int:
    """Write the index from *steps* (shim/records.py dicts); returns the number of keys."""
    table = {}
    for s in steps:
        peak = s.get("need") or s.get("rss")
        if not peak or (s.get("sig") is not None and not s.get("need")):
            continue                  # cut short: says too little (but an OOM kill says "more")
        k = key_of(s)
        peaks, _argv, _t = table.get(k, ([], None, 0))
        peaks = (peaks + [peak])[-KEEP:]
        table[k] = (peaks, s.get("argv"), s["t0"])
    shards = [{} for _ in range(SHARDS)]
    for k, v in table.items():
        shards[_index(k)][k] = v
    d = host.join(ledger_dir, DIRNAME)
    host.makedirs(d)
    for i, shard in enumerate(shards):
        host.replace_file(host.join(d, "%02d.marshal" % i), marshal.dumps(shard))
    return len(table)
