"""Expected peak memory of a step, learned from the ledger.

Key: tool id + primary output (build-dir relative, so a CI cache of `.shim/` works
on the next machine), or tool id + unit for cargo's rustc steps (crate, type, target,
profile: their file names change with every flag). Value: the peaks of the last observations (spawned steps
only: exec'd steps cannot be measured) with the argv fingerprint and time of the
newest. The estimate is a high percentile (p90) of those peaks, which for fewer
than ten observations is their maximum.

A step with no history of its own is admitted, once a few steps of the same tool and
kind have been measured in this build (SIBLINGS_MIN), at the median of their peaks
(source "build") when that is above the prior: a cold build whose steps are bigger than
the prior learns so as it goes (and one whose steps are smaller keeps the prior's margin). Those peaks are kept under a class key (tool, kind) with the build they came
from, and count only for that build.

The index lives beside the ledger in SHARDS small marshal files, sealed by a checksum
(shim/digest.py: damaged bytes never reach marshal), so a step reads one file of a few
KB, never the ledger. Each spawned step updates it (observe), so it outlives the
ledger's bounded history; rebuild() makes one from a ledger only where
there is none. A step whose key is missing falls back to toolchain.toml's
`step.<kind>.memory` prior, then to PRIORS.
"""

from shim import digest, host, rundir
from shim.host import osapi

DIRNAME = "memory-v2"          # v2: sealed shards (shim/digest.py)
SHARDS = 32
KEEP = 10                   # observations kept per key
STALE_AFTER = 14 * 86400    # seconds: re-measure (auto mode spawns) after this long
PRIORS = {"compile": 192 << 20, "link": 1 << 30, "archive": 64 << 20, "preprocess": 128 << 20,
          "other": 64 << 20}


SIBLINGS_MIN = 3           # measured steps of a tool and kind before their p90 stands for the others


def key(tool: str, output) -> str:
    return "%s\0%s" % (tool, output or "")


def class_key(tool: str, kind: str) -> str:
    """The key under which this build's measured peaks of *tool*'s *kind* steps are kept."""
    return "\0class\0%s\0%s" % (tool, kind)


def measured(ledger_dir: str, tool: str, kind: str, build: str):
    """Peaks of *tool*'s *kind* steps measured so far in *build* (None: none yet)."""
    entry = lookup(ledger_dir, class_key(tool, kind), None, quiet=True)
    return entry[0] if entry and entry[1] == build else None


def siblings(peaks):
    """*peaks* (measured()) once there are enough of them to stand for a step never measured."""
    return peaks if peaks and len(peaks) >= SIBLINGS_MIN else None


def borne_out(peaks, guess: int) -> bool:
    """Whether this build's measured *peaks* of a kind bear out *guess* for the others: the
    typical one came in at or under it."""
    return bool(peaks) and median(peaks) <= guess


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
        data = host.read_regular_file(path)
    except FileNotFoundError:
        return {}
    except OSError:
        return None               # a FIFO, a directory, a symlink in its place
    try:
        table = digest.unpack(data)
    except (ValueError, EOFError, TypeError, MemoryError):
        return None
    return table if type(table) is dict else None


def _damaged(path: str, env: dict) -> None:
    rundir.warn_once("estimates", "ignoring the damaged memory estimates file %s: the step is admitted by "
                     "its prior (the file is rewritten by the next measured step)" % path, env)


def lookup(ledger_dir: str, k: str, env: dict = None, quiet: bool = False):
    """(peaks newest last, argv fingerprint, t) for key *k*, or None. Never raises: a
    damaged shard or entry (a partial CI cache restore) is ignored with a warning (none
    when *quiet*: the step's own lookup has said so)."""
    path = _shard(ledger_dir, k)
    table = _read_shard(path)
    entry = table.get(k) if table is not None else None
    if table is not None and (entry is None or _entry_ok(entry)):
        return entry
    if not quiet:
        _damaged(path, env or {})
    return None


def median(peaks) -> int:
    """The middle of *peaks* (the upper one of an even count)."""
    return sorted(peaks)[len(peaks) // 2]


def percentile90(peaks) -> int:
    ordered = sorted(peaks)
    return ordered[max(0, -(-len(ordered) * 9 // 10) - 1)]


def estimate(entry, kind: str, config: dict, tool: dict = None, peers=None):
    """(bytes, source) where source is "history", "build" (the median of *peers*: steps
    of the same tool and kind measured earlier in this build), "prior" (tool.<id>.memory,
    else step.<kind>.memory) or "default". What the siblings measured only ever raises a
    step above its prior, and only when the typical sibling is bigger: the prior is then
    too small for this build. Below the prior they say little of a step never measured (a
    big translation unit among small ones), and their p90 is their one outlier (cargo's
    crates run from 15 to 165 MiB: admitting every later crate at regex-syntax's peak
    made a 384 MiB runner serial)."""
    if entry:
        return percentile90(entry[0]), "history"
    before = prior(kind, config, tool)
    if peers and median(peers) > before[0]:
        return median(peers), "build"
    return before


def prior(kind: str, config: dict, tool: dict = None):
    """(bytes, "prior" or "default") a step of *kind* is expected at before any measurement."""
    if tool and tool.get("memory"):
        return tool["memory"], "prior"
    step = config["steps"].get(kind) or {}
    if step.get("memory"):
        return step["memory"], "prior"
    return PRIORS.get(kind, PRIORS["other"]), "default"


def is_fresh(entry, argv: str, now: float) -> bool:
    """Known well enough to exec without measuring: same arguments, measured lately."""
    return bool(entry) and entry[1] == argv and now - entry[2] < STALE_AFTER


def observe(ledger_dir: str, record: dict, build: str = None) -> None:
    """Add a spawned step's measured peak to its shard at once: how every build (plain
    ninja, Bazel, `shim build`) learns, and nothing else does (the ledger keeps only recent
    builds); with *build*, also to this build's peaks of its tool and kind (a step cut short
    by the OOM killer says nothing of its siblings). Steps finishing together update a shard
    in turn: byte <shard> of `memory-v2/lock` is held (lockf) from reading the shard to
    renaming its new version, so no update is lost. Never raises."""
    peak = record.get("need") or record["rss"]
    _add(ledger_dir, key_of(record), peak, record.get("argv"), record["t0"], False)
    if build and not record.get("need"):
        _add(ledger_dir, class_key(record["tool"], record["kind"]), peak, build, record["t0"], True)


def _add(ledger_dir: str, k: str, peak: int, tag, t: float, same_tag_only: bool) -> None:
    path = _shard(ledger_dir, k)
    lock = None
    try:
        lock = _lock(host.dirname(path), _index(k))
        table = _read_shard(path)
        if table is None:
            table = {}                    # damaged: start it over
        entry = table.get(k)
        kept = list(entry[0]) if _entry_ok(entry) and (not same_tag_only or entry[1] == tag) else []
        table[k] = ((kept + [peak])[-KEEP:], tag, t)
        host.replace_file(path, digest.pack(table))
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
    """Write the index from *steps* (shim/reports/records.py dicts); returns the number of keys."""
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
        host.replace_file(host.join(d, "%02d.marshal" % i), digest.pack(shard))
    return len(table)
