"""The memory budget: its grammar, declared once, and the limit it is cut from, cached.

One grammar serves every place a budget is written: SHIM_MEMORY_BUDGET, toolchain.toml
`memory.budget`, `--budget` of `shim build`, `shim cargo`, `shim doctor` and `shim bazel
init`, and the keys table in README (`shim config keys`). It is *WORDS* (auto, and off
with its synonyms), a size ("6GiB", "512M", a bare number of bytes), or a percentage of
the detected limit ("75%"). Anything else is refused with one reason, and the slips
people make get a "did you mean": a bare fraction ("0.75" -> "75%"), a bare small
number ("512" -> "512MiB"), a budget under MINIMUM.

The default is DEFAULT (auto) everywhere a step runs: under plain ninja, make, a CMake or
Meson launcher, cargo, Bazel, as under `shim build`. Auto and percentages need the
limit: the smallest of the cgroup (v1, v2) limits of this process and MemTotal. Finding
it is a walk over /proc/self/mountinfo and the cgroup tree (shim/config/limits.py, cold
code); a step does not pay for it. The walk's result, which files hold a limit, is kept
in the per-user runtime directory under the fingerprint of /proc/self/cgroup and of the
cgroup namespace (what identifies the process's cgroups), with what those files held and
the limit they give; the note's date is when they were read. A step within FRESH_FOR
seconds of that takes the limit as it stands (one readlink and one fstatat, three lines
parsed); a later one reads the files again and dates the note anew (rewrites it if they
changed): a limit changed while the runner lives is seen within a second (the steps
already running were admitted under the old one whatever the reading), and a file gone
sends the step back to the walk.

Reading /proc/self/cgroup and the namespace link is most of what that costs a new process
(~75 us of ~300). So a step that reads the files also dates a parent note: named by its
parent's pid and the root directory's identity, holding the same limit and the cgroup's
fingerprint. A sibling within FRESH_FOR of it (ninja's, make's, cargo's next step) takes
the limit from it without reading its own cgroup: processes are born in their parent's
cgroup. A parent whose children turn out to live in different cgroups (a wrapper that
moves each step, such as systemd-run --scope) is marked MIXED when a child that reads its
own sees it, and its children read their own from then on (until then, for up to FRESH_FOR,
one may take a sibling's limit). A parent with one child per step (Bazel's process-wrapper,
a shell around a compound command) gains nothing and costs its steps one failed readlink
and a stat: only a step that reads the files writes a parent note, at most once a second.

A limit file that cannot be read or holds garbage means no budget for the step, with one
warning per build, never a failed step, and nothing of it is kept: the next step reads
it again.
"""

import time

from shim import digest, host, rundir, size

DEFAULT = "auto"
AUTO = "auto"
OFF = ("off", "none", "no", "false", "0", "disabled")
MINIMUM = 1 << 20               # a smaller budget is a slip, not a plan
DESCRIPTION = ("auto (the cgroup or RAM limit minus a reserve; the default), off (also none, no, "
               "false, 0, disabled), a size such as \"6GiB\", or a percentage of the limit such as \"75%\"")
UNLIMITED = 1 << 60             # cgroup v1 says "no limit" with a number near 2**63
CACHE_VERSION = "shim-limits 4"
PARENT_VERSION = "shim-parent 1"
FRESH_FOR = 1.0                 # seconds a reading of the limit files stands for every step


def parse(text):
    """("auto", None), ("off", None), ("size", bytes) or ("percent", number) for *text*
    (a str, or an int of bytes as TOML may give); ValueError with the reason if bad."""
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise ValueError("expected %s, got %r" % (DESCRIPTION, text))
    s = str(text).strip()          # an int from TOML reads as the same text would
    word = s.lower()
    if word == AUTO:
        return AUTO, None
    if word in OFF:
        return "off", None
    if s.endswith("%"):
        try:
            number = float(s[:-1].strip())
        except ValueError:
            number = -1.0
        if not 0 < number <= 100:
            raise ValueError("a percentage of the limit must be in (0, 100]: %r" % text)
        return "percent", number
    if _is_fraction(s):
        raise ValueError("%r is not a budget: did you mean \"%g%%\"? (a bare number is bytes)"
                         % (s, float(s) * 100))
    try:
        value = size.parse(s)
    except ValueError as e:
        if "did you mean" in str(e):
            raise
        raise ValueError("%s; or auto, off, a percentage such as \"75%%\"" % e) from None
    if value < MINIMUM:
        raise ValueError("a budget of %s leaves no room for any step (at least 1MiB)" % size.format(value))
    return "size", value


def _is_fraction(s: str) -> bool:
    try:
        return 0 < float(s) < 1
    except ValueError:
        return False


def reserve_for(limit: int, machine: bool = False) -> int:
    """Memory kept out of an auto budget. In a cgroup (whose limit counts only its own
    processes; the build tool and the shims are budgeted by `shim build` itself) 1/16 of
    the limit, at least 32 MiB, for the page cache the steps' files need: steps are
    admitted by their anonymous memory. When the limit is the machine's RAM (the OS and
    everything else on it live there too) 1/8, at least 256 MiB, at most a quarter of it
    (a 1 GiB machine keeps 768 MiB for the build, not 768 MiB for the OS)."""
    if machine:
        return min(max(256 << 20, limit // 8), limit // 4)
    return max(32 << 20, limit // 16)


def of(kind: str, value, limit, machine: bool = False):
    """Bytes for a parsed budget, given the *limit* (bytes, or None where none was
    found; *machine*: it is MemTotal); None for off, or for auto/a percentage without a
    limit."""
    if kind == "off":
        return None
    if kind == "size":
        return value
    if limit is None:
        return None
    if kind == AUTO:
        return max(limit - reserve_for(limit, machine), MINIMUM)
    budget = int(limit * value / 100)
    if budget < MINIMUM:
        raise ValueError("a budget of %s (%g%% of %s) leaves no room for any step (at least 1MiB)"
                         % (size.format(budget), value, size.format(limit)))
    return budget


def limit(env: dict, root: str = "/"):
    """(bytes, whether it is MemTotal) of the memory limit that applies to this process,
    or None: from the cache in the runtime directory when the files it names still read,
    else by the walk."""
    if root in _found:
        return _found[root]
    _found[root] = found = _limit(env, root)
    return found


_found = {}         # root -> limit: this process asks once
_binding = {}       # root -> the limit file whose value is the smallest (its group's usage is read)


def _limit(env: dict, root: str):
    try:
        place, dfd = rundir.dir_fd(env)
    except OSError:
        place = dfd = None
    now = _clock()
    parent = _parent_note(place, root)
    seen = _load_parent(parent, dfd) if parent else None
    if seen and seen[0] != MIXED and _fresh(_dated(parent, dfd), now):
        return _taken(seen[1], root)          # a sibling of this step read the limit a moment ago
    try:
        own = host.read_file(host.join(root, "proc/self/cgroup")).decode("utf-8", "replace")
    except OSError:
        own = ""
    try:       # inside a cgroup namespace /proc/self/cgroup says "0::/" whichever group it is
        own += host.osapi.readlink(host.join(root, "proc/self/ns/cgroup"))
    except (OSError, AttributeError):
        pass
    ident = digest.fingerprint(own + "\0" + root)
    # The version in the name: a shim of another version beside this one (an upgrade while
    # a build runs) keeps its own cache, rather than each walking again after the other.
    cache = host.join(place, "limits%s-" % CACHE_VERSION[-1] + ident) if place else None
    note = _load(cache, dfd) if cache else None
    entries = texts = None
    if note is not None:
        when = _dated(cache, dfd)
        if _fresh(when, now):                           # read a moment ago, by this step or another
            if seen:                          # kept fresh by another parent's steps: so is the parent note
                _date_parent(parent, seen, ident, note[2], when, dfd)
            return _taken(note[2], root)
        entries, memtotal = _entries(note)
        if entries is not None:
            texts = _texts([e[:2] for e in entries], root)
    if texts is None:                       # no note, or a file of it gone: the walk (cold)
        from shim.config import limits
        files, memtotal = limits.scan(root)
        texts, entries = _texts(files, root), None
        if texts is None:
            return _smallest([], memtotal, ["%s vanished while it was read" % f for f, _ in files[:1]], env)
    found = _judge(texts, root)
    result = _smallest(found[0], memtotal, found[1], env)
    if cache and not found[1]:
        fields = _result_fields(result, _binding.get(root))
        _store(cache, texts, memtotal, fields, now, dfd, same=texts == entries)
        if parent:                            # its siblings may take what it read for a second
            _date_parent(parent, seen, ident, fields, now, dfd)
    return result


_clock = time.time              # what a note's date is compared with (the tests move it)
_getppid = getattr(host.osapi, "getppid", lambda: 0)
MIXED = "mixed"                 # a parent whose children were seen in different cgroups


def _dated(note: str, dir_fd):
    """When the note was dated (the files it holds were read), or None if it cannot be told."""
    try:
        return host.note_time(note, dir_fd)
    except OSError:
        return None


def _fresh(when, now: float) -> bool:
    """Whether a reading made *when* stands *now* (one dated ahead, by a clock set back, does not)."""
    return when is not None and 0 <= now - when < FRESH_FOR


def _parent_note(place, root: str):
    """The parent note of this process (None where there is none): named by the parent's pid
    (its last 8 bits: a bounded number of notes; the whole pid is inside) and by the root
    directory's identity (a container sharing the runtime directory has its own root, and
    pids of its own)."""
    ppid = _getppid()
    if place is None or ppid <= 1:          # orphaned, or a parent outside our pid namespace
        return None
    try:
        st = host.stat(root)
    except OSError:
        return None
    return host.join(place, "parent%s-%d-%d-%d" % (PARENT_VERSION[-1], ppid & 255, st.st_dev, st.st_ino))


def _load_parent(note: str, dir_fd):
    """(cgroup fingerprint or MIXED, result fields) of the parent note if it is this
    process's parent's, else None."""
    try:
        lines = host.read_note(note, dir_fd).decode("utf-8", "replace").split("\n")
    except OSError:
        return None
    if len(lines) != 5 or lines[0] != PARENT_VERSION or lines[1] != str(_getppid()) or lines[4] != "":
        return None
    result = _checked(lines[3])
    return (lines[2], result) if result else None


def _date_parent(note: str, seen, ident: str, fields, when: float, dir_fd) -> None:
    """After a step read its own cgroup (fingerprint *ident*) and took the limit *fields* read
    at *when*: date the parent note then, or mark the parent MIXED if the note (*seen*, as
    _load_parent gave it) came from another cgroup. A parent marked MIXED stays so."""
    if seen and seen[0] == MIXED:
        return
    if seen and seen[0] != ident:
        ident = MIXED
    text = "%s\n%d\n%s\n%s\n" % (PARENT_VERSION, _getppid(), ident, "\t".join(fields))
    _keep(note, text, when, dir_fd, same=seen is not None and seen[0] == ident and seen[1] == fields)


def _keep(note: str, text: str, when: float, dir_fd, same: bool) -> None:
    """Make *text* the note dated *when*; when it holds that already (*same*), only its date
    changes (one utimensat: no new link, no rename). A note that cannot be kept only costs
    the next step a read."""
    try:
        if same:
            return host.stamp_note(note, when, dir_fd)
        host.write_note(note, text.encode("utf-8", "surrogateescape"), dir_fd, when=when)
    except OSError:
        pass


def _smallest(values, memtotal, problems, env):
    if problems:
        rundir.warn_once("limits", "cannot read the memory limit: %s: no memory budget" % problems[0], env)
        return None
    if values and (not memtotal or min(values) < memtotal):
        return min(values), False
    return (memtotal, True) if memtotal else None


# --- live usage (issue 18): the memory really in use where the limit applies ----------------

# The usage file beside each kind of limit file, and the memory.stat field of page cache the
# kernel takes back before it kills anything (inactive file pages).
_USAGE = {"memory.limit_in_bytes": ("memory.usage_in_bytes", b"total_inactive_file"),
          "memory.max": ("memory.current", b"inactive_file"), "memory.high": ("memory.current", b"inactive_file")}
_group = {}         # root -> (usage file, stat file, stat field) or "" for MemAvailable


def in_use(env: dict, exact: bool = True, root: str = "/"):
    """Bytes in use now where this process's memory limit applies, or None if they cannot
    be read (then admission is as it was: reservations only). In a memory cgroup its usage
    (v1 memory.usage_in_bytes, v2 memory.current), *exact*: less the inactive page cache of
    memory.stat, which the kernel reclaims before it kills; without one, MemTotal less
    MemAvailable. Not exact costs one small read: an upper bound, enough when it leaves room."""
    where = _group.get(root)
    if where is None:
        where = _group[root] = _usage_files(env, root)
    if where == ():
        return None                           # no limit found, or none that binds: nothing to judge by
    try:
        if not where:
            if not exact and root == "/":     # sysinfo(): free RAM, page cache counted as in use
                return max(limit(env, root)[0] - _ram(), 0)
            return _mem_in_use(host.read_file(host.join(root, "proc/meminfo")))
        usage = int(host.read_file(where[0]))
        if exact:
            usage -= _field(host.read_file(where[1]), where[2])
        return max(usage, 0)
    except (OSError, ValueError, AttributeError):     # AttributeError: no sysconf (Windows)
        return None


def _usage_files(env: dict, root: str):
    found = limit(env, root)
    if found is None:
        return ()
    if found[1]:
        return ""
    path = _binding.get(root)
    if path is None:
        return ()
    usage, field = _USAGE[host.basename(path)]
    d = host.join(root, host.dirname(path).lstrip("/"))
    return host.join(d, usage), host.join(d, "memory.stat"), field


def _field(stat: bytes, name: bytes) -> int:
    """The value of line *name* of a memory.stat; ValueError if it has none."""
    key = name + b" "
    start = (0 if stat.startswith(key) else stat.index(b"\n" + key) + 1) + len(key)
    end = stat.find(b"\n", start)
    return int(stat[start:end if end >= 0 else len(stat)])


def _ram() -> int:
    """Bytes of RAM free now (reclaimable page cache not counted as free)."""
    return host.osapi.sysconf("SC_AVPHYS_PAGES") * host.osapi.sysconf("SC_PAGE_SIZE")


def _mem_in_use(meminfo: bytes) -> int:
    total = available = None
    for line in meminfo.split(b"\n"):
        if line.startswith(b"MemTotal:"):
            total = int(line.split()[1]) << 10
        elif line.startswith(b"MemAvailable:"):
            available = int(line.split()[1]) << 10
            break
    if total is None or available is None:
        raise ValueError("no MemAvailable")
    return max(total - available, 0)


def _texts(files, root):
    """[(path, name, text or the OSError)] of the limit *files* [(path, name)] as they read now;
    None if one is gone (the note is stale: the walk must run again)."""
    out = []
    for path, name in files:
        try:
            text = host.read_file(host.join(root, path.lstrip("/"))).decode("ascii", "replace").strip()
        except FileNotFoundError:
            return None
        except OSError as e:
            text = e
        out.append((path, name, text))
    return out


def _judge(entries, root, note: bool = True):
    """([limits in bytes], [problems]) of *entries* (_texts). With *note*, which file binds is
    kept (_binding: its group's usage is what in_use reads)."""
    values, problems = [], []
    if note:
        _binding.pop(root, None)
    for path, _, text in entries:
        if isinstance(text, OSError):
            problems.append("%s: %s" % (path, text.strerror or text))
        elif text.isdigit():
            if int(text) < UNLIMITED:
                if note and (not values or int(text) < min(values)):
                    _binding[root] = path
                values.append(int(text))
        elif text != "max":
            problems.append("%s holds %r" % (path, text[:40]))
    return values, problems


def _load(cache: str, dir_fd=None):
    """The note's lines [version, MemTotal, result fields, entries] (one readlink), or None.
    Only the first three are checked here: a fresh note is taken by its result line (_taken);
    its entries are parsed only when the files are read again (_entries)."""
    try:
        note = host.read_note(cache, dir_fd).decode("utf-8", "replace").split("\n", 3)
    except OSError:
        return None
    if len(note) < 4 or note[0] != CACHE_VERSION or not note[1].isdigit():
        return None
    note[2] = _checked(note[2])
    return note if note[2] else None


def _checked(line: str):
    """The fields [limit or "-", "1" if it is MemTotal else "0", the file that binds or ""] of
    a note's result line, or None if it is damaged."""
    result = line.split("\t")
    if len(result) != 3 or not (result[0].isdigit() or result[0] == "-") or result[1] not in ("0", "1") \
            or not (result[2] == "" or result[2].startswith("/")):
        return None
    return result


def _result_fields(result, binding):
    return ["-", "0", ""] if result is None else [str(result[0]), "1" if result[1] else "0", binding or ""]


def _taken(result, root):
    """(limit, whether it is MemTotal) or None, as a fresh note's result line says; the file
    that binds is kept (_binding) as _judge would have found it."""
    if result[2]:
        _binding[root] = result[2]
    else:
        _binding.pop(root, None)
    return None if result[0] == "-" else (int(result[0]), result[1] == "1")


def _entries(note):
    """([(path, name, text)], MemTotal or None) of a note (_load), or (None, None) if damaged."""
    entries = []
    lines = note[3].split("\n")
    if lines.pop() != "":
        return None, None
    for line in lines:
        fields = line.split("\t")
        if len(fields) != 3 or not fields[0].startswith("/") or not (fields[2].isdigit() or fields[2] == "max"):
            return None, None
        entries.append(tuple(fields))
    return entries, int(note[1]) or None


def _store(cache: str, texts, memtotal, fields, now: float, dir_fd=None, same: bool = False) -> None:
    """Keep *texts* (read at *now*) in the note, with the result *fields* they give (_keep)."""
    _keep(cache, "%s\n%d\n%s\n%s" % (CACHE_VERSION, memtotal or 0, "\t".join(fields),
                                     "".join("%s\t%s\t%s\n" % e for e in texts)), now, dir_fd, same)


def detect(root: str = "/"):
    """(limit Figure, [every Figure considered]) with the files' values now: the smallest
    limit that applies here (for `shim doctor`, `shim build`, the tests)."""
    from shim.config import limits
    files, memtotal = limits.scan(root)
    figures = []
    for path, name in files:
        values, _ = _judge(_texts([(path, name)], root) or [], root, note=False)
        figures += [limits.Figure(name, v, path) for v in values]
    if memtotal:
        figures.append(limits.Figure("MemTotal", memtotal, "/proc/meminfo"))
    if not figures:
        return None, []
    return min(figures, key=lambda f: f.value), figures


def explain(requested, root: str = "/"):
    """(budget bytes or None for off, explanation lines) for a request in this grammar
    (None: the default); ValueError if it is not one."""
    kind, value = parse(DEFAULT if requested is None else requested)
    if kind == "off":
        return None, ["memory admission off (%r)" % requested]
    limit, figures = detect(root)
    lines = ["%s: %s (%s)" % (f.name, size.format(f.value), f.source) for f in figures]
    machine = bool(limit) and limit.name == "MemTotal"
    result = of(kind, value, limit.value if limit else None, machine)
    if result is None:
        return None, lines + ["no memory figure found: admission off"]
    if kind == AUTO:
        lines.append("budget: %s = %s (%s) minus a reserve of %s"
                     % (size.format(result), size.format(limit.value), limit.name,
                        size.format(reserve_for(limit.value, machine))))
    else:
        lines.append("budget: %s (%s)" % (size.format(result), "%s of %s" % (requested, limit.name)
                                           if kind == "percent" else "as requested"))
    return result, lines
