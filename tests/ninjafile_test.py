"""The ninja manifest reader: byte-for-byte round trips, ninja's scoping and escapes, errors.

Every expectation about what a manifest means is checked against the real ninja (the
binary of the PyPI package beside this interpreter): `ninja -t commands -s` prints the
command of each build statement, which ninjafile must evaluate identically.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shim.generators import ninjafile
from shim.exit_status import BAD_INPUT, USAGE, ShimError

NINJA = Path(sys.executable).parent / "ninja"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "ninja"
CORPUS = sorted(p.name for p in FIXTURES.glob("*.ninja"))


def copy_fixtures(tmp_path: Path) -> Path:
    """The corpus, copied: ninja writes nothing there for tools, but a test may."""
    return Path(shutil.copytree(FIXTURES, tmp_path / "fixtures"))


def run_ninja(directory: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(NINJA), *args], cwd=directory, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)


def ninja_commands(directory: Path, manifest: str, targets) -> list:
    """The command ninja runs for each target's own build statement, in order."""
    if not targets:
        return []
    result = run_ninja(directory, "-f", manifest, "-t", "commands", "-s", *targets)
    assert result.returncode == 0, result.stderr
    return result.stdout.decode("utf-8", "surrogateescape").split("\n")[:-1]


def evaluated_commands(manifest: ninjafile.Manifest):
    """(one target per build statement that runs a command, ninjafile's command for each)."""
    builds = [b for b in manifest.builds if b.rule != "phony"]
    targets = [ninjafile.canonical_path((b.outputs or b.implicit_outputs)[0]) for b in builds]
    return targets, [manifest.evaluate(b, "command") for b in builds]


def assert_tokens_cover(nfile: ninjafile.NinjaFile) -> None:
    at = 0
    for token in nfile.tokens:
        assert token.start == at and token.end > token.start, (nfile.path, token, at)
        at = token.end
    assert at == len(nfile.text), nfile.path


def to_crlf(data: bytes) -> bytes:
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)


# --- lossless -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CORPUS)
def test_every_fixture_and_the_files_it_includes_round_trip_byte_for_byte(tmp_path, name):
    directory = copy_fixtures(tmp_path)
    manifest = ninjafile.parse(str(directory / name))
    for nfile in manifest.files:
        assert_tokens_cover(nfile)
        assert ninjafile.encode(nfile.emit()) == Path(nfile.real_path).read_bytes()


@pytest.mark.e2e
@pytest.mark.parametrize("name", CORPUS)
def test_every_fixture_means_the_same_to_ninja_and_round_trips_with_crlf_line_endings(tmp_path, name):
    directory = copy_fixtures(tmp_path)
    lf_targets, lf_commands = evaluated_commands(ninjafile.parse(str(directory / name)))
    for path in directory.rglob("*.ninja"):
        path.write_bytes(to_crlf(path.read_bytes()))
    manifest = ninjafile.parse(str(directory / name))
    for nfile in manifest.files:
        assert_tokens_cover(nfile)
        assert ninjafile.encode(nfile.emit()) == Path(nfile.real_path).read_bytes()
    assert evaluated_commands(manifest) == (lf_targets, lf_commands)
    assert ninja_commands(directory, name, lf_targets) == lf_commands


@pytest.mark.e2e
@pytest.mark.parametrize("name", CORPUS)
def test_ninja_runs_exactly_the_commands_ninjafile_evaluates_for_every_fixture(tmp_path, name):
    directory = copy_fixtures(tmp_path)
    targets, commands = evaluated_commands(ninjafile.parse(str(directory / name)))
    assert ninja_commands(directory, name, targets) == commands


def test_tokens_are_spans_of_the_text_with_their_kinds():
    text = "x = a$ b\nrule r\n  command = c $\n    $x # not a comment\n# comment\nbuild o: r i || d\n"
    manifest = ninjafile.parse("build.ninja", text)
    assert [(t.kind, text[t.start:t.end]) for t in manifest.top.tokens] == [
        ("ident", "x"), ("space", " "), ("equals", "="), ("space", " "), ("value", "a$ b"),
        ("newline", "\n"),
        ("rule", "rule"), ("space", " "), ("ident", "r"), ("newline", "\n"),
        ("indent", "  "), ("ident", "command"), ("space", " "), ("equals", "="), ("space", " "),
        ("value", "c $\n    $x # not a comment"), ("newline", "\n"),
        ("comment", "# comment"), ("newline", "\n"),
        ("build", "build"), ("space", " "), ("path", "o"), ("colon", ":"), ("space", " "),
        ("ident", "r"), ("space", " "), ("path", "i"), ("space", " "), ("pipe2", "||"),
        ("space", " "), ("path", "d"), ("newline", "\n")]


@pytest.mark.e2e
def test_a_nul_byte_ends_the_manifest_as_for_ninja_and_what_follows_survives(tmp_path):
    data = b"rule r\n  command = echo hi\nbuild a: r\n\x00anything $ at all\n"
    (tmp_path / "build.ninja").write_bytes(data)
    manifest = ninjafile.parse(str(tmp_path / "build.ninja"))
    assert ninjafile.encode(manifest.top.emit()) == data
    assert manifest.top.tokens[-1].kind == "eof"
    assert ninja_commands(tmp_path, "build.ninja", ["a"]) == ["echo hi"]


@pytest.mark.e2e
def test_a_large_generated_manifest_round_trips(tmp_path):
    from ninja.ninja_syntax import Writer
    path = tmp_path / "build.ninja"
    with open(path, "w") as f:
        writer = Writer(f, width=60)
        writer.variable("cflags", ["-I/a/fairly/long/include/directory/%d" % i for i in range(20)])
        writer.rule("cc", "gcc $cflags -c $in -o $out", depfile="$out.d", deps="gcc")
        for i in range(2000):
            writer.build("obj/f%d.o" % i, "cc", "src/f%d.c" % i, implicit=["gen.h"],
                         order_only=["stamp"], variables={"cflags": "$cflags -DN=%d" % i})
    manifest = ninjafile.parse(str(path))
    assert ninjafile.encode(manifest.top.emit()) == path.read_bytes()
    assert len(manifest.builds) == 2000
    assert manifest.builds[7].values["cflags"].endswith("/19 -DN=7")


# --- meaning --------------------------------------------------------------------------------


def test_rules_are_listed_with_their_bindings_decoded_and_evaluated_where_possible():
    manifest = ninjafile.parse(str(FIXTURES / "escapes.ninja"))
    (echo,) = manifest.rules
    assert list(echo.bindings) == ["command", "description"]
    assert echo.bindings["command"].line == 8
    assert echo.evaluate("command") == (
        'echo "$HOME" dotted plain.txt [ leading and trailing  ]:colon continued   after-indent > ${out}')
    assert echo.evaluate("description") == "ECHO ${out}"
    assert echo.evaluate("depfile") is None


def test_variables_follow_ninja_scoping_across_include_and_subninja():
    manifest = ninjafile.parse(str(FIXTURES / "scoping.ninja"))
    rules = {(r.name, Path(r.file.path).name): r for r in manifest.rules}
    top_cc, child_cc = rules["cc", "scoping.ninja"], rules["cc", "child.ninja"]
    shared_ar = rules["ar", "shared.ninja"]
    # include shares the scope; a rule sees the file scope as it stands at the end
    assert shared_ar.scope is manifest.scope
    assert manifest.scope.variables["shared_flags"] == "-O1 -g -DSHARED"
    assert top_cc.evaluate("command") == "gcc -O3 -c ${in} -o ${out}"
    # subninja: a child scope, invisible to the parent
    assert child_cc.scope.parent is manifest.scope
    assert child_cc.evaluate("command") == "clang -DCHILD -Os -c ${in} -o ${out}"
    assert manifest.scope.variables["cc"] == "gcc"
    # a build statement's bindings are read where it stands, and its paths see them
    by_output = {b.outputs[0]: b for b in manifest.builds}
    assert by_output["out/b.o"].values == {"cflags": "-O1 -g -DB"}
    assert by_output["elsewhere/c.o"].values == {"cc": "clang", "dir": "elsewhere"}
    assert manifest.evaluate(by_output["out/a.o"], "command") == "gcc -O3 -c a.c -o out/a.o"
    assert [f.path for f in manifest.files] == [
        str(FIXTURES / "scoping.ninja"), str(FIXTURES / "inc/shared.ninja"),
        str(FIXTURES / "sub/child.ninja")]


def test_build_statements_keep_every_kind_of_path():
    manifest = ninjafile.parse(str(FIXTURES / "statements.ninja"))
    a, b = manifest.builds[:2]
    assert (a.outputs, a.inputs, a.implicit, a.order_only, a.validations) == (
        ["out/a.o"], ["a.c"], ["a.h"], ["out/gen.stamp"], ["out/lint.stamp"])
    assert (b.outputs, b.implicit_outputs) == (["out/b.o"], ["out/b.o.d"])
    assert manifest.pools["link_pool"].depth == 2
    assert [len(d.targets) for d in manifest.defaults] == [1, 2]
    link = next(r for r in manifest.rules if r.name == "link")
    assert link.evaluate("rspfile_content") == "${in_newline} ${libs}"   # libs: set by builds


@pytest.mark.e2e
def test_rewriting_a_command_changes_only_its_bytes_and_ninja_runs_the_new_one(tmp_path):
    directory = copy_fixtures(tmp_path)
    path = directory / "escapes.ninja"
    manifest = ninjafile.parse(str(path))
    old = manifest.top.text
    value = manifest.rules[0].bindings["command"].value
    new = ninjafile.rewrite_commands(manifest.top, {"echo": "printf '%s\\n' $$PWD $\n    > $out"})
    assert new == old[:value.start] + "printf '%s\\n' $$PWD $\n    > $out" + old[value.end:]
    path.write_bytes(ninjafile.encode(new))
    assert ninja_commands(directory, "escapes.ninja", ["out/plain.txt"]) == [
        "printf '%s\\n' $PWD > out/plain.txt"]


def test_rewriting_keeps_crlf_and_every_other_byte(tmp_path):
    data = (FIXTURES / "crlf.ninja").read_bytes()
    manifest = ninjafile.parse("crlf.ninja", data.decode())
    new = ninjafile.encode(ninjafile.rewrite_commands(manifest.top, {"cc": "clang -c $in -o $out"}))
    assert new.replace(b"clang -c $in -o $out", b"gcc $cflags -c $in -o $out") == data


def test_rewrite_commands_refuses_a_rule_the_file_does_not_define():
    manifest = ninjafile.parse(str(FIXTURES / "scoping.ninja"))
    with pytest.raises(KeyError):
        ninjafile.rewrite_commands(manifest.top, {"ar": "ar rcs $out $in"})   # in inc/shared.ninja


# --- errors ---------------------------------------------------------------------------------


MALFORMED = [
    ("rule cc\n  command = gcc\n\tbuild a: cc\n", 3, "tabs are not allowed, use spaces"),
    ("rule cc\n  command = gcc\n  bogus = 1\n", 3, "unexpected variable 'bogus'"),
    ("rule cc\n  description = x\n", 3, "expected 'command =' line"),
    ("rule cc\n  command = x\n  rspfile = a\n", 4, "rspfile and rspfile_content need to be both specified"),
    ("rule cc\n  command = a\nrule cc\n  command = b\n", 3, "duplicate rule 'cc'"),
    ("build a: nosuch b\n", 1, "unknown build rule 'nosuch'"),
    ("build a: $\n  nosuch\n", 2, "unknown build rule 'nosuch'"),
    ("x = $", 1, "bad $-escape"),
    ("x = $\n", 2, "unexpected EOF"),
    ("rule cc\n  command = gcc", 2, "unexpected EOF"),
    ("rule cc\n  command = gcc\n# comment at the end without newline", 3, "lexing error"),
    ("x = a$!b\n", 1, "bad $-escape (literal $ must be written as $$)"),
    ("x = ${a b}\n", 1, "bad $-escape"),
    ("default\n", 1, "expected target name"),
    ("build a: phony\n  x\n", 2, "expected '=', got newline"),
    ("build a b: phony || c |@ d | e\n", 1, "expected newline, got '|'"),
    ("build a\n", 1, "expected ':', got newline ($ also escapes ':')"),
    ("a = b\n  c = d\n", 2, "unexpected indent"),
    ("pool p\n  depth = -1\n", 2, "invalid pool depth"),
    ("pool p\n\n", 2, "expected 'depth =' line"),
    ("pool console\n  depth = 1\n", 1, "duplicate pool 'console'"),
    ("include missing.ninja\n", 1, "loading 'missing.ninja': No such file or directory"),
    ("rule cc\r\n  command = gcc\r\n\tx\r\n", 3, "tabs are not allowed"),
    ("rule cc\n  command = a\rb\n", 2, "lexing error"),
    ("x = 1\n=\n", 2, "unexpected '='"),
]


@pytest.mark.e2e
@pytest.mark.parametrize("text, line, what", MALFORMED, ids=[m[2] for m in MALFORMED])
def test_a_malformed_manifest_is_one_error_line_naming_file_and_line_as_ninja_does(
        tmp_path, text, line, what):
    path = tmp_path / "build.ninja"
    path.write_bytes(text.encode())
    with pytest.raises(ShimError) as raised:
        ninjafile.parse(str(path))
    assert raised.value.status == BAD_INPUT
    assert str(raised.value).startswith("%s:%d: " % (path, line))
    assert what in str(raised.value) and "\n" not in str(raised.value)
    ninja = run_ninja(tmp_path, "-t", "rules")
    assert ninja.returncode != 0
    assert b"build.ninja:%d: " % line in ninja.stderr, ninja.stderr


# ninja checks these on the build graph, after the syntax: ninjafile leaves them to it.
GRAPH_ERRORS = ("empty path", "unknown target", "dyndep", "unknown pool", "multiple rules")
MUTATIONS = [" ", "$", ":", "\n", "\r\n", "\r", "|", "#", "=", "\t", "{", "}", "a", ".", "$\n",
             "$\r\n", "||", "|@", "\x00", "${a}", "$a", "include x\n", "subninja y\n", "pool\n", "build"]


@pytest.mark.e2e
def test_mutated_fixtures_are_accepted_or_rejected_as_ninja_does_at_the_same_line(tmp_path):
    import random
    rng = random.Random(2024)     # fixed: the same 300 manifests every run
    (tmp_path / "x").write_text("x = 1\n")
    (tmp_path / "y").write_text("rule q\n  command = z\n")
    bases = [(FIXTURES / name).read_bytes().decode() for name in
             ("escapes.ninja", "comments.ninja", "crlf.ninja", "statements.ninja", "handwritten.ninja")]
    path = tmp_path / "build.ninja"
    compared = 0
    for _ in range(300):
        text = list(rng.choice(bases))
        for _ in range(rng.randint(1, 2)):
            at = rng.randrange(len(text) + 1)
            if rng.random() < 0.4 and at < len(text):
                del text[at]
            else:
                text.insert(at, rng.choice(MUTATIONS))
        path.write_bytes("".join(text).encode())
        ninja = run_ninja(tmp_path, "-t", "rules")
        theirs = ninja.stderr.decode(errors="replace").split("\n")[0] if ninja.returncode else ""
        if any(error in theirs for error in GRAPH_ERRORS):
            continue
        try:
            manifest = ninjafile.parse(str(path))
            mine = ""
            assert ninjafile.encode(manifest.top.emit()) == path.read_bytes()
        except ShimError as e:
            mine = "ninja: error: " + str(e).replace(str(tmp_path) + "/", "")
        assert mine[:60] == theirs[:60], "".join(text)
        compared += 1
    assert compared > 200


def test_an_error_in_an_included_file_names_that_file(tmp_path):
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.ninja").write_text("rule cc\n  command = gcc\n  depth = 1\n")
    (tmp_path / "build.ninja").write_text("# top\ninclude rules/r.ninja\n")
    with pytest.raises(ShimError) as raised:
        ninjafile.parse(str(tmp_path / "build.ninja"))
    assert str(raised.value) == "%s:3: unexpected variable 'depth'" % (tmp_path / "rules" / "r.ninja")


def test_a_file_that_includes_itself_is_an_error_not_a_recursion(tmp_path):
    (tmp_path / "build.ninja").write_text("x = 1\nsubninja build.ninja\n")
    with pytest.raises(ShimError) as raised:
        ninjafile.parse(str(tmp_path / "build.ninja"))
    assert str(raised.value) == "%s:2: 'build.ninja' includes itself" % (tmp_path / "build.ninja")
    assert raised.value.status == BAD_INPUT


def test_a_missing_manifest_is_a_usage_error(tmp_path):
    with pytest.raises(ShimError) as raised:
        ninjafile.parse(str(tmp_path / "build.ninja"))
    assert raised.value.status == USAGE
    assert str(raised.value) == "cannot read %s: No such file or directory" % (tmp_path / "build.ninja")
