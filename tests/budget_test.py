"""The memory budget's one grammar (shim/budget.py) and the limit cache a step reads.

Every place a budget is written takes the same words: SHIM_MEMORY_BUDGET, toolchain.toml
`memory.budget`, `--budget` of shim build / cargo / doctor. One table says which texts
are budgets and which are refused with what reason; the e2e test runs each text through
all of them.
"""

import json
import os

import pytest

from conftest import run_shim, write_toml
from shim import budget, host, rundir

GIB = 1 << 30
MEMINFO = "MemTotal:       %d kB\n" % (4 * 1024 * 1024)
V2_MOUNTS = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"

# text -> None (a budget) or a fragment of the one-line reason it is refused with
TABLE = {
    "auto": None, "AUTO": None, " auto ": None,
    "off": None, "none": None, "no": None, "false": None, "0": None, "disabled": None, "OFF": None,
    "6GiB": None, "512M": None, "1.5G": None, "300MB": None, "1MiB": None, "2147483648": None,
    "75%": None, "100%": None, "12.5%": None,
    "0.75": "did you mean \"75%\"", ".5": "did you mean \"50%\"",
    "512": "did you mean 512MiB", "1.5": "did you mean 1.5MiB",
    "1KiB": "leaves no room for any step (at least 1MiB)",
    "0%": "must be in (0, 100]", "150%": "must be in (0, 100]", "-5%": "must be in (0, 100]",
    "3 bananas": "unknown size unit", "lots": "unknown size unit", "2PiB": "unknown size unit",
    "2000TiB": "too large",
}


@pytest.mark.parametrize("text", sorted(TABLE))
def test_the_grammar_accepts_and_refuses_as_the_table_says(text):
    reason = TABLE[text]
    if reason is None:
        budget.parse(text)
    else:
        with pytest.raises(ValueError, match=None) as e:
            budget.parse(text)
        assert reason in str(e.value)


MIB = 1 << 20
# (limit, whether it is the machine's RAM, reserve): a cgroup keeps 1/16, at least 32 MiB;
# a machine 1/8, at least 256 MiB, at most a quarter of its RAM.
RESERVES = [(256 * MIB, False, 32 * MIB), (384 * MIB, False, 32 * MIB), (512 * MIB, False, 32 * MIB),
            (768 * MIB, False, 48 * MIB), (GIB, False, 64 * MIB), (4 * GIB, False, 256 * MIB),
            (16 * GIB, False, GIB),
            (512 * MIB, True, 128 * MIB), (GIB, True, 256 * MIB), (2 * GIB, True, 256 * MIB),
            (4 * GIB, True, 512 * MIB), (16 * GIB, True, 2 * GIB)]


@pytest.mark.parametrize("limit_, machine, reserve", RESERVES)
def test_the_reserve_is_proportional_and_small_runners_keep_most_of_their_limit(limit_, machine, reserve):
    assert budget.reserve_for(limit_, machine) == reserve
    assert budget.of("auto", None, limit_, machine) == limit_ - reserve


def test_off_and_its_synonyms_mean_no_budget_and_auto_the_limit_less_its_reserve():
    assert {budget.parse(w) for w in budget.OFF} == {("off", None)}
    assert budget.of("auto", None, 4 * GIB) == 4 * GIB - GIB // 4
    assert budget.of("auto", None, 512 << 20) == 480 << 20
    assert budget.of("auto", None, GIB, machine=True) == GIB - (256 << 20)
    assert budget.of("percent", 50, 4 * GIB) == 2 * GIB
    assert budget.of("auto", None, None) is None          # no limit found: no budget
    assert budget.parse(2147483648) == ("size", 2 * GIB)  # as TOML gives a bare number
    assert budget.parse(0) == ("off", None)


def tree(tmp_path, files: dict) -> str:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return str(tmp_path)


class StillClock:
    """budget._clock for a test: time moves only when the test says."""

    def __init__(self):
        self.now = 5000.0

    def __call__(self):
        return self.now


@pytest.fixture
def limit_clock(monkeypatch):
    c = StillClock()
    monkeypatch.setattr(budget, "_clock", c)
    return c


@pytest.fixture
def runtime(tmp_path, monkeypatch, limit_clock):
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.setattr(rundir, "_chosen", {})
    monkeypatch.setattr(rundir, "_fds", {})
    monkeypatch.setattr(budget, "_found", {})
    monkeypatch.setattr(budget, "_binding", {})
    monkeypatch.setattr(budget, "_group", {})
    monkeypatch.setattr(budget, "_getppid", lambda: 0)     # no parent note, unless a test gives a parent
    return {"XDG_RUNTIME_DIR": str(run), "SHIM_BUILD_ID": "test-%s" % tmp_path.name}


def limit(env, root):
    """budget.limit as a new step would ask it (each step is a process of its own)."""
    budget._found.clear()
    return budget.limit(env, root)


def v2_root(tmp_path, limit_text: str) -> str:
    return tree(tmp_path / "root", {
        "proc/meminfo": MEMINFO,
        "proc/self/cgroup": "0::/ci/job\n",
        "proc/self/mountinfo": V2_MOUNTS,
        "sys/fs/cgroup/ci/job/memory.max": limit_text,
        "sys/fs/cgroup/ci/job/memory.high": "max\n",
    })


def limit_reads(monkeypatch):
    """The cgroup limit files host.read_file is asked for from now on."""
    reads = []
    real = host.read_file

    def spy(path):
        if path.endswith(("memory.max", "memory.high", "memory.limit_in_bytes")):
            reads.append(path)
        return real(path)
    monkeypatch.setattr(host, "read_file", spy)
    return reads


def test_a_step_walks_the_cgroup_tree_once_then_takes_what_was_read_a_moment_ago(tmp_path, runtime, limit_clock,
                                                                                monkeypatch):
    root = v2_root(tmp_path, "%d\n" % GIB)
    assert limit(runtime, root) == (GIB, False)
    caches = [n for n in os.listdir(rundir.ensure(runtime)) if n.startswith("limits")]
    assert len(caches) == 1

    from shim.config import limits

    def no_walk(root):
        raise AssertionError("walked the cgroup tree although the cache was good")
    monkeypatch.setattr(limits, "scan", no_walk)
    reads = limit_reads(monkeypatch)
    limit_clock.now += budget.FRESH_FOR * 0.9
    assert limit(runtime, root) == (GIB, False)
    assert reads == []                               # within the second: no file read at all
    # A limit changed while the runner lives: seen once the reading is older than FRESH_FOR,
    # still without a walk; the step that read it refreshes the note for the others.
    (tmp_path / "root/sys/fs/cgroup/ci/job/memory.max").write_text("%d\n" % (2 * GIB))
    assert limit(runtime, root) == (GIB, False)
    limit_clock.now += budget.FRESH_FOR * 0.2
    assert limit(runtime, root) == (2 * GIB, False)
    assert len(reads) == 2                           # memory.max and memory.high, once
    assert limit(runtime, root) == (2 * GIB, False)
    assert len(reads) == 2
    # Unchanged when read again a second later: only the note's date moves (the same link,
    # not a new one renamed over it), and it holds for the next step.
    note = os.path.join(rundir.ensure(runtime), caches[0])
    before = os.lstat(note).st_ino
    limit_clock.now += budget.FRESH_FOR
    assert limit(runtime, root) == (2 * GIB, False)
    assert limit(runtime, root) == (2 * GIB, False)
    assert len(reads) == 4
    assert os.lstat(note).st_ino == before
    (tmp_path / "root/sys/fs/cgroup/ci/job/memory.max").write_text("max\n")
    limit_clock.now += budget.FRESH_FOR
    assert limit(runtime, root) == (4 * GIB, True)                   # MemTotal then


def file_reads(monkeypatch):
    """Every path host.read_file is asked for from now on."""
    reads = []
    real = host.read_file

    def spy(path):
        reads.append(path)
        return real(path)
    monkeypatch.setattr(host, "read_file", spy)
    return reads


def cgroup_reads(reads):
    return [r for r in reads if r.endswith("proc/self/cgroup")]


def parent_notes(env):
    return sorted(n for n in os.listdir(rundir.ensure(env)) if n.startswith("parent"))


def test_a_step_whose_sibling_read_the_limit_a_moment_ago_takes_it_without_reading_its_cgroup(
        tmp_path, runtime, limit_clock, monkeypatch):
    """Reading /proc/self/cgroup and the cgroup namespace link costs a new process ~75 us (a
    quarter of what protection costs a step): the steps of one parent (ninja, make, cargo)
    take what a sibling read within FRESH_FOR instead."""
    root = v2_root(tmp_path, "%d\n" % GIB)
    monkeypatch.setattr(budget, "_getppid", lambda: 4242)
    assert limit(runtime, root) == (GIB, False)                    # the walk: both notes written
    (note,) = parent_notes(runtime)
    reads = file_reads(monkeypatch)
    limit_clock.now += budget.FRESH_FOR * 0.9
    assert limit(runtime, root) == (GIB, False)
    assert reads == []                                             # neither its cgroup nor a limit file
    (tmp_path / "root/sys/fs/cgroup/ci/job/memory.current").write_text("%d\n" % (300 * MIB))
    assert budget.in_use(runtime, exact=False, root=root) == 300 * MIB    # the group's usage: the binding kept
    reads.clear()
    # A step of another parent (a second build beside this one) reads its own cgroup, then the
    # cgroup's note, which is fresh: no limit file.
    monkeypatch.setattr(budget, "_getppid", lambda: 4243)
    assert limit(runtime, root) == (GIB, False)
    assert len(cgroup_reads(reads)) == 1 and len(reads) == 1
    # Once the reading is older than FRESH_FOR, a sibling reads its cgroup and the files again,
    # sees a change, and dates the parent note anew for the others.
    monkeypatch.setattr(budget, "_getppid", lambda: 4242)
    (tmp_path / "root/sys/fs/cgroup/ci/job/memory.max").write_text("%d\n" % (2 * GIB))
    limit_clock.now += budget.FRESH_FOR * 0.2
    reads.clear()
    assert limit(runtime, root) == (2 * GIB, False)
    assert len(cgroup_reads(reads)) == 1 and len(reads) == 3       # its cgroup, memory.max, memory.high
    reads.clear()
    assert limit(runtime, root) == (2 * GIB, False)
    assert reads == []
    # Unchanged a second later: the same note, dated anew (one utimensat, no new link).
    before = os.lstat(os.path.join(rundir.ensure(runtime), note)).st_ino
    limit_clock.now += budget.FRESH_FOR
    assert limit(runtime, root) == (2 * GIB, False)
    assert len(reads) == 3
    assert limit(runtime, root) == (2 * GIB, False)
    assert len(reads) == 3
    assert os.lstat(os.path.join(rundir.ensure(runtime), note)).st_ino == before
    assert parent_notes(runtime) == [note]


def test_a_parent_note_is_dated_anew_from_a_cgroup_note_another_parent_keeps_fresh(tmp_path, runtime, limit_clock,
                                                                                    monkeypatch):
    """Two builds in one cgroup (or a build and a Bazel server's actions): the files are read
    once a second by whichever step comes first; the other parent's children, which find the
    cgroup note fresh, date their own parent note as that reading (one utimensat)."""
    root = v2_root(tmp_path, "%d\n" % GIB)
    monkeypatch.setattr(budget, "_getppid", lambda: 4242)
    assert limit(runtime, root) == (GIB, False)
    (note,) = parent_notes(runtime)
    limit_clock.now += budget.FRESH_FOR
    monkeypatch.setattr(budget, "_getppid", lambda: 77)
    assert limit(runtime, root) == (GIB, False)                    # 77's step reads the files
    reading = limit_clock.now
    limit_clock.now += budget.FRESH_FOR * 0.5
    monkeypatch.setattr(budget, "_getppid", lambda: 4242)
    reads = file_reads(monkeypatch)
    assert limit(runtime, root) == (GIB, False)
    assert len(cgroup_reads(reads)) == 1 and len(reads) == 1       # its cgroup, then the fresh cgroup note
    assert os.lstat(os.path.join(rundir.ensure(runtime), note)).st_mtime == reading
    reads.clear()
    assert limit(runtime, root) == (GIB, False)
    assert reads == []                                             # its siblings: the parent note
    limit_clock.now = reading + budget.FRESH_FOR                   # as old as the reading, not as the stamp
    assert limit(runtime, root) == (GIB, False)
    assert len(reads) == 3


def test_children_of_one_parent_seen_in_two_cgroups_are_never_taken_for_each_other_again(
        tmp_path, runtime, limit_clock, monkeypatch):
    """A wrapper that moves each step into a cgroup of its own (systemd-run --scope) makes
    siblings that do not share a limit: once a step that reads its cgroup finds the parent note
    written from another one, the parent is marked mixed and its children always read their own."""
    root = v2_root(tmp_path, "%d\n" % GIB)
    tree(tmp_path / "root", {"sys/fs/cgroup/ci/other/memory.max": "%d\n" % (2 * GIB),
                             "sys/fs/cgroup/ci/other/memory.high": "max\n"})
    monkeypatch.setattr(budget, "_getppid", lambda: 4242)
    assert limit(runtime, root) == (GIB, False)
    (tmp_path / "root/proc/self/cgroup").write_text("0::/ci/other\n")     # the next child's own group
    limit_clock.now += budget.FRESH_FOR
    assert limit(runtime, root) == (2 * GIB, False)
    reads = file_reads(monkeypatch)
    for _ in range(3):                   # within the second: each reads its cgroup, none the files
        assert limit(runtime, root) == (2 * GIB, False)
    assert len(cgroup_reads(reads)) == 3 and len(reads) == 3
    (tmp_path / "root/proc/self/cgroup").write_text("0::/ci/job\n")
    limit_clock.now += budget.FRESH_FOR
    assert limit(runtime, root) == (GIB, False)
    limit_clock.now += budget.FRESH_FOR * 0.5
    reads.clear()
    assert limit(runtime, root) == (GIB, False)
    assert len(cgroup_reads(reads)) == 1


def test_mixed_is_also_seen_through_a_cgroup_note_another_parent_keeps_fresh(tmp_path, runtime, limit_clock,
                                                                          monkeypatch):
    root = v2_root(tmp_path, "%d\n" % GIB)
    tree(tmp_path / "root", {"sys/fs/cgroup/ci/other/memory.max": "%d\n" % (2 * GIB),
                             "sys/fs/cgroup/ci/other/memory.high": "max\n"})
    monkeypatch.setattr(budget, "_getppid", lambda: 4242)
    assert limit(runtime, root) == (GIB, False)
    limit_clock.now += budget.FRESH_FOR
    (tmp_path / "root/proc/self/cgroup").write_text("0::/ci/other\n")
    monkeypatch.setattr(budget, "_getppid", lambda: 77)                # another parent's step there
    assert limit(runtime, root) == (2 * GIB, False)
    monkeypatch.setattr(budget, "_getppid", lambda: 4242)              # 4242's child, moved there too
    assert limit(runtime, root) == (2 * GIB, False)
    # A child of 4242 back in the first group reads the files again (its group's note is stale)
    # but does not date the parent note for its siblings: one of them may be in the other group.
    (tmp_path / "root/proc/self/cgroup").write_text("0::/ci/job\n")
    assert limit(runtime, root) == (GIB, False)
    (tmp_path / "root/proc/self/cgroup").write_text("0::/ci/other\n")
    reads = file_reads(monkeypatch)
    assert limit(runtime, root) == (2 * GIB, False)
    assert len(cgroup_reads(reads)) == 1


def test_a_parent_note_of_another_parent_or_root_is_not_taken(tmp_path, runtime, limit_clock, monkeypatch):
    root = v2_root(tmp_path, "%d\n" % GIB)
    monkeypatch.setattr(budget, "_getppid", lambda: 4242)
    assert limit(runtime, root) == (GIB, False)
    reads = file_reads(monkeypatch)
    # The same note name (pid & 255) for pid 4242 + 256: the pid inside tells them apart.
    monkeypatch.setattr(budget, "_getppid", lambda: 4242 + 256)
    assert limit(runtime, root) == (GIB, False)
    assert len(cgroup_reads(reads)) == 1
    # A container beside this one, sharing the runtime directory, has a root of its own: the
    # parent note of its ninja (pid 4242 there too) is another note. Here its limit is 2 GiB.
    other = tree(tmp_path / "other", {"proc/meminfo": MEMINFO, "proc/self/cgroup": "0::/ci/job\n",
                                       "proc/self/mountinfo": V2_MOUNTS,
                                       "sys/fs/cgroup/ci/job/memory.max": "%d\n" % (2 * GIB),
                                       "sys/fs/cgroup/ci/job/memory.high": "max\n"})
    monkeypatch.setattr(budget, "_getppid", lambda: 4242)
    assert limit(runtime, other) == (2 * GIB, False)
    assert limit(runtime, root) == (GIB, False)
    assert len(parent_notes(runtime)) == 2
    # No parent note for a step whose parent is init or outside its pid namespace (pid 0).
    for ppid in (0, 1):
        monkeypatch.setattr(budget, "_getppid", lambda: ppid)
        reads.clear()
        assert limit(runtime, root) == (GIB, False)
        assert len(cgroup_reads(reads)) == 1
    assert len(parent_notes(runtime)) == 2


def test_a_damaged_parent_note_is_walked_around(tmp_path, runtime, limit_clock, monkeypatch):
    root = v2_root(tmp_path, "%d\n" % GIB)
    monkeypatch.setattr(budget, "_getppid", lambda: 4242)
    assert limit(runtime, root) == (GIB, False)
    (note,) = parent_notes(runtime)
    path = os.path.join(rundir.ensure(runtime), note)
    ident = os.readlink(path).split("\n")[2]
    good = "shim-parent 1\n4242\n%s\n%d\t0\t/sys/fs/cgroup/ci/job/memory.max\n" % (ident, 2 * GIB)
    for damage in ("x", good.replace("4242", "42x"), good.replace("shim-parent 1", "shim-parent 0"),
                   good.replace("\t0\t", "\t7\t"), good.rstrip("\n"), good + "more\n", good.replace(ident, "mixed")):
        os.remove(path)
        os.symlink(damage, path)
        os.utime(path, (limit_clock.now, limit_clock.now), follow_symlinks=False)
        assert limit(runtime, root) == (GIB, False), damage
    os.remove(path)
    os.symlink(good, path)
    os.utime(path, (limit_clock.now, limit_clock.now), follow_symlinks=False)
    assert limit(runtime, root) == (2 * GIB, False)      # as it should be, it is taken as it stands


def test_a_cached_file_gone_sends_the_step_back_to_the_walk(tmp_path, runtime, limit_clock):
    root = v2_root(tmp_path, "%d\n" % GIB)
    assert limit(runtime, root) == (GIB, False)
    # The process moved to another cgroup of the same text? No: the group was replaced by a
    # nested layout; the cached file is gone and the walk finds the new one.
    os.remove(tmp_path / "root/sys/fs/cgroup/ci/job/memory.max")
    (tmp_path / "root/sys/fs/cgroup/ci/memory.max").write_text("%d\n" % (3 * GIB // 2))
    limit_clock.now += budget.FRESH_FOR
    assert limit(runtime, root) == (3 * GIB // 2, False)


@pytest.mark.parametrize("damage", ["garbage\n", "", "-5\n", "\x00\x01\n"])
def test_a_garbage_limit_file_means_no_budget_and_one_warning_per_build(tmp_path, runtime, capsys, damage):
    root = v2_root(tmp_path, damage)
    assert limit(runtime, root) is None
    assert limit(runtime, root) is None
    err = capsys.readouterr().err
    assert err.count("shim: warning: cannot read the memory limit") == 1, err
    assert "memory.max" in err
    # Nothing of a bad reading is kept: the next step, at once, reads the mended file.
    (tmp_path / "root/sys/fs/cgroup/ci/job/memory.max").write_text("%d\n" % GIB)
    assert limit(runtime, root) == (GIB, False)


def test_an_unreadable_or_damaged_cache_is_walked_around(tmp_path, runtime, limit_clock):
    root = v2_root(tmp_path, "%d\n" % GIB)
    limit(runtime, root)
    (cache,) = [n for n in os.listdir(rundir.ensure(runtime)) if n.startswith("limits")]
    path = os.path.join(rundir.ensure(runtime), cache)

    def plant(data: bytes, link: bool = True):
        os.remove(path)
        if link:
            os.symlink(data, path)
        else:
            with open(path, "wb") as f:
                f.write(data)
        os.utime(path, (limit_clock.now, limit_clock.now), follow_symlinks=False)     # fresh: it would be taken

    head = "shim-limits 4\n0\n"
    entry = "/sys/fs/cgroup/ci/job/memory.max\tcgroup v2 memory.max\t%d\n" % (2 * GIB)
    result = "%d\t0\t/sys/fs/cgroup/ci/job/memory.max\n" % (2 * GIB)
    for damage in (b"x", ("shim-limits 4\nx\n" + result + entry).encode(),
                   (head + "lots\t0\t\n" + entry).encode(), (head + "5\t2\t\n" + entry).encode(),
                   (head + "5\t0\trelative\n" + entry).encode(), (head + "5\t0\n" + entry).encode(),
                   (head.replace("4", "3") + entry).encode(),           # a note of the last version
                   b"\xff" * 100):
        plant(damage)
        assert limit(runtime, root) == (GIB, False), damage
    good = (head + result + entry).encode()
    plant(good, link=False)            # a regular file where the note (a symlink) was
    assert limit(runtime, root) == (GIB, False)
    # The note as it should be is taken as it stands: what makes the cases above walk around it.
    plant(good)
    assert limit(runtime, root) == (2 * GIB, False)
    # A fresh note is taken by its result line; its entries are read only once it is stale,
    # and damaged ones then send the step to the walk.
    for entries in ("relative\tname\t5\n", entry.replace("\t%d" % (2 * GIB), "\tlots"), entry.rstrip("\n"),
                    entry.replace("\tcgroup v2 memory.max", "")):
        plant((head + result + entries).encode())
        assert limit(runtime, root) == (2 * GIB, False), entries
        plant((head + result + entries).encode())
        limit_clock.now += budget.FRESH_FOR
        assert limit(runtime, root) == (GIB, False), entries
    # Dated in the future (a clock set back): read again, not trusted for as long as that lasts.
    plant(good)
    limit_clock.now -= 60
    assert limit(runtime, root) == (GIB, False)


# --- every entry point, the same answers ------------------------------------------------

def _accepted(result, refused_status):
    if result.returncode == 0:
        return None
    assert result.returncode == refused_status, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.startswith("shim: error: ")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.e2e
def test_the_variable_toolchain_toml_and_every_budget_option_accept_and_refuse_the_same_texts(tmp_path, env):
    work = tmp_path / "work"
    work.mkdir()
    (work / "build.ninja").write_text("rule t\n  command = true\nbuild all: phony\n")
    answers = {}
    for i, text in enumerate(sorted(TABLE)):
        conf = write_toml(tmp_path / ("t%d" % i) / "toolchain.toml", "[memory]\nbudget = %s\n" % json.dumps(text))
        seen = {
            "toolchain.toml": _accepted(run_shim(["config", "check", conf], env=env), 78),
            "SHIM_MEMORY_BUDGET": _accepted(run_shim(["true"], cwd=work, env=dict(env, SHIM_MEMORY_BUDGET=text)), 2),
            "shim doctor --budget": _accepted(run_shim(["doctor", "--budget", text], cwd=work, env=env), 2),
            "shim build --budget": _accepted(run_shim(["build", "--budget", text, "-n"], cwd=work, env=env), 2),
        }
        reason = TABLE[text]
        for where, line in seen.items():
            if reason is None:
                assert line is None, (text, where, line)
            else:
                assert line is not None and reason in line, (text, where, line)
        answers[text] = seen
    assert len(answers) == len(TABLE)
