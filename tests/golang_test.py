"""Reading a go tool invocation (shim/golang.py, shim/family.py's `go` family): which tool, its
kind, package, output and stable unit; probes; recognition by path. The command lines are the ones
Go 1.19.8 (Debian's golang-go) passed through `-toolexec` building godoc (x/tools 0.5.0)."""

import pytest

from shim import args, family, golang, oom

TOOLDIR = "/usr/lib/go-1.19/pkg/tool/linux_amd64"
W = "/tmp/go-build3898411842"
COMPILE = ["-o", W + "/b155/_pkg_.a", "-trimpath", W + "/b155=>", "-p", "github.com/yuin/goldmark/parser",
           "-complete", "-buildid", "RUzcvcwJyJcVnhES62uQ/RUzcvcwJyJcVnhES62uQ", "-goversion", "go1.19.8", "-c=2",
           "-nolocalimports", "-importcfg", W + "/b155/importcfg", "-pack",
           "/usr/share/gocode/src/github.com/yuin/goldmark/parser/attribute.go",
           "/usr/share/gocode/src/github.com/yuin/goldmark/parser/atx_heading.go"]
COMPILE_MAIN = ["-o", W + "/b001/_pkg_.a", "-trimpath", W + "/b001=>", "-p", "main", "-complete", "-buildid",
                "E3Hb/E3Hb", "-goversion", "go1.19.8", "-c=2", "-nolocalimports", "-importcfg",
                W + "/b001/importcfg", "-pack", "/usr/share/gocode/src/golang.org/x/tools/cmd/godoc/main.go"]
LINK = ["-o", W + "/b001/exe/a.out", "-importcfg", W + "/b001/importcfg.link", "-buildmode=exe",
        "-buildid=eHdd/E3Hb/2wLK/eHdd", "-extld=gcc", W + "/b001/_pkg_.a"]
ENV = {"GOOS": "linux", "GOARCH": "amd64"}


def parse(argv):
    return args.parse(argv, "go", "/nowhere")


def test_the_option_table_is_sorted_and_unique():
    names = [name for name, _ in golang.OPTIONS]
    assert names == sorted(names) and len(set(names)) == len(names)


@pytest.mark.parametrize("tool", golang.TOOLS)
def test_go_tools_are_recognised_by_their_path_under_goroot_pkg_tool(tool):
    assert args.family_of("%s/%s" % (TOOLDIR, tool)) == "go"
    assert family.alias("%s/%s" % (TOOLDIR, tool)) == "go-" + tool


def test_a_link_named_link_outside_goroot_is_still_msvcs_and_compile_alone_is_no_go_tool():
    assert args.family_of("link") == "msvc-link" and args.family_of("/usr/bin/link") == "msvc-link"
    assert args.family_of("compile") == "other" and family.alias("/usr/bin/compile") is None
    assert args.family_of(TOOLDIR + "/pack") == "other"        # not run through -toolexec


def test_a_compile_is_kind_compile_named_by_its_package_with_its_output_not_taken_for_an_input():
    p = parse(COMPILE)
    assert (p.family, p.kind, p.probe, p.detail.tool) == ("go", "compile", False, "compile")
    assert p.primary_output == W + "/b155/_pkg_.a"
    assert p.inputs == tuple(COMPILE[-2:]) and p.primary_input.endswith("attribute.go")
    facts = golang.facts(p.detail, ENV)
    assert facts == {"pkg": "github.com/yuin/goldmark/parser",
                     "unit": "go compile github.com/yuin/goldmark/parser linux/amd64 exe"}


def test_the_unit_never_holds_gos_random_work_directory():
    again = [a.replace("3898411842", "1111111111").replace("b155", "b042") for a in COMPILE]
    units = {golang.facts(parse(argv).detail, ENV)["unit"] for argv in (COMPILE, again)}
    assert len(units) == 1 and "go-build" not in units.pop()


def test_goos_goarch_and_buildmode_make_different_units():
    p = parse(LINK)
    arm = golang.facts(p.detail, dict(ENV, GOARCH="arm64"))["unit"]
    pie = golang.facts(parse([a.replace("=exe", "=pie") for a in LINK]).detail, ENV)["unit"]
    assert len({golang.facts(p.detail, ENV)["unit"], arm, pie}) == 3


def test_the_main_package_is_named_by_toolexec_importpath_not_by_dash_p_main():
    p = parse(COMPILE_MAIN)
    assert golang.facts(p.detail, dict(ENV, TOOLEXEC_IMPORTPATH="golang.org/x/tools/cmd/godoc"))["pkg"] == \
        "golang.org/x/tools/cmd/godoc"
    assert golang.facts(p.detail, ENV)["pkg"] == "main"


def test_a_link_is_kind_link_named_by_the_first_packagefile_of_its_importcfg(tmp_path):
    cfg = tmp_path / "importcfg.link"
    cfg.write_text("# import config\npackagefile golang.org/x/tools/cmd/godoc=%s/b001/_pkg_.a\n"
                   "packagefile bufio=/usr/lib/go-1.19/pkg/linux_amd64/bufio.a\n" % W)
    p = parse([str(cfg) if a.endswith("importcfg.link") else a for a in LINK])
    assert (p.kind, p.detail.tool, p.primary_output) == ("link", "link", W + "/b001/exe/a.out")
    assert golang.facts(p.detail, ENV) == {"pkg": "golang.org/x/tools/cmd/godoc",
                                          "unit": "go link golang.org/x/tools/cmd/godoc linux/amd64 exe"}


def test_asm_cgo_and_vet_are_kind_other_and_told_apart_by_their_arguments():
    asm = parse(["-p", "golang.org/x/sys/unix", "-trimpath", W + "/b071=>", "-I", W + "/b071/", "-I",
                 "/usr/lib/go-1.19/pkg/include", "-D", "GOOS_linux", "-D", "GOARCH_amd64", "-compiling-runtime",
                 "-D", "GOAMD64_v1", "-gensymabis", "-o", W + "/b071/symabis", "./asm_linux_amd64.s"])
    cgo = parse(["-objdir", W + "/b043/", "-importpath", "net", "--", "-I", W + "/b043/", "./cgo_linux.go"])
    vet = parse([W + "/b001/vet.cfg"])
    assert [(p.kind, p.detail.tool) for p in (asm, cgo, vet)] == [("other", "asm"), ("other", "cgo"),
                                                                 ("other", "vet")]
    assert golang.facts(cgo.detail, ENV)["pkg"] == "net" and cgo.inputs == ("./cgo_linux.go",)


@pytest.mark.parametrize("argv", [["-V=full"], ["-V"], ["-flags"]])
def test_version_and_flags_questions_are_probes(argv):
    assert parse(argv).probe


def test_cgos_question_to_gcc_is_a_probe_and_a_real_compile_is_not():
    assert args.parse(["-###", "-x", "c", "-c", "-"], "gcc", "/w").probe
    assert not args.parse(["-x", "c", "-c", "a.c"], "gcc", "/w").probe


def test_gos_out_of_memory_message_counts_as_running_out_of_memory():
    class Finished:
        code, signal, forwarded = 2, None, False
        stderr_tail = b"fatal error: runtime: out of memory\n\ngoroutine 1 [running]:\n"
    assert oom.ran_out(Finished())
    assert oom.hold_from(b"ok\nfatal error: runtime: out of memory\n") == 3


def test_the_build_is_found_in_shim_go_dir_else_in_gos_own_directory():
    assert golang.go_dir({"SHIM_GO_DIR": "/b"}, "/src/pkg") == "/b"
    import os
    assert golang.go_dir({}, "/src/pkg") == os.readlink("/proc/%d/cwd" % os.getppid())   # this process's parent


def test_report_compare_matches_a_go_step_across_builds_by_its_package_not_its_work_dir():
    from shim.reports import compare
    again = [a.replace("3898411842", "1111111111").replace("b155", "b042") for a in COMPILE]
    keys = {compare.step_key(dict(golang.facts(parse(argv).detail, ENV), out=[parse(argv).primary_output]))
            for argv in (COMPILE, again)}
    assert keys == {"go compile github.com/yuin/goldmark/parser linux/amd64 exe"}


# --- a step's room as the runtime's soft memory limit (family.soft_limit) ------------------

def fake_go_tool(tmp_path):
    """A "compile" where go keeps its tools (…/pkg/tool/GOOS_GOARCH/), writing the GOMEMLIMIT
    it was started with."""
    tool = tmp_path / "goroot" / "pkg" / "tool" / "linux_amd64" / "compile"
    tool.parent.mkdir(parents=True)
    tool.write_text('#!/bin/sh\nprintf "%s" "${GOMEMLIMIT-unset}" > "$SEEN"\n')
    tool.chmod(0o755)
    return str(tool)


@pytest.mark.parametrize("given, budget", [(None, None), ("77MiB", None), (None, "off")])
def test_an_admitted_go_step_is_given_its_room_as_gomemlimit_unless_go_has_one(tmp_path, env, given, budget):
    import subprocess
    from conftest import SHIM, last_step
    from shim import budget as budget_mod
    tool = fake_go_tool(tmp_path)
    env.update(SEEN=str(tmp_path / "seen"), SHIM_GO_DIR=str(tmp_path))
    if given:
        env["GOMEMLIMIT"] = given
    if budget:
        env["SHIM_MEMORY_BUDGET"] = budget
    done = subprocess.run([str(SHIM), tool, "-o", str(tmp_path / "x.a"), "-p", "example.com/x", "x.go"],
                          cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    assert done.returncode == 0, done.stderr
    seen = (tmp_path / "seen").read_text()
    step = last_step(tmp_path)
    if given or budget:
        assert seen == (given or "unset") and "soft_limit" not in step
        return
    ceiling = budget_mod.of(budget_mod.AUTO, None, *budget_mod.limit(env))
    assert seen == "%dMiB" % (step["soft_limit"] >> 20), seen
    assert step["est"] <= step["soft_limit"] <= ceiling       # admitted: at least its own estimate fits


def test_a_step_of_a_family_without_a_soft_limit_gets_none(tmp_path, env):
    import subprocess
    from conftest import SHIM
    cc = tmp_path / "bin" / "cc"
    cc.parent.mkdir()
    cc.write_text('#!/bin/sh\nprintf "%s" "${GOMEMLIMIT-unset}" > "$SEEN"\n')
    cc.chmod(0o755)
    env["SEEN"] = str(tmp_path / "seen")
    done = subprocess.run([str(SHIM), str(cc), "-c", "x.c", "-o", "x.o"], cwd=tmp_path, env=env,
                          stderr=subprocess.PIPE, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "seen").read_text() == "unset"
    assert family.get("gcc").soft_limit is None and family.get("go").soft_limit == "GOMEMLIMIT"
