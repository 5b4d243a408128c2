"""Response-file splitting with gcc (libiberty) and msvc (CommandLineToArgvW) rules."""

import pytest

from shim import rsp
from shim.exit_status import BAD_INPUT, ShimError


@pytest.mark.parametrize("text, expected", [
    ("a b\tc\nd", ["a", "b", "c", "d"]),
    ("  leading and trailing  \n", ["leading", "and", "trailing"]),
    ("'single quoted' \"double quoted\"", ["single quoted", "double quoted"]),
    ("mi'x'ed\"stuff\"", ["mixedstuff"]),
    ("a\\ b c\\\\d", ["a b", "c\\d"]),
    ("'it\\'s'", ["it's"]),                      # libiberty: backslash escapes inside quotes too
    ("\"a'b\" 'c\"d'", ["a'b", 'c"d']),
    ("''", [""]),
    ("-DX=\"1 2\"", ["-DX=1 2"]),
    ("", []),
])
def test_gcc_quoting(text, expected):
    assert rsp.split_gcc(text, "f.rsp") == expected


@pytest.mark.parametrize("text, expected", [
    ('a b "c d"', ["a", "b", "c d"]),
    ('C:\\path\\to\\file.c', ["C:\\path\\to\\file.c"]),       # backslashes are literal...
    ('"C:\\dir with space\\\\"', ["C:\\dir with space\\"]),   # ...unless they precede a quote
    ('a\\"b', ['a"b']),
    ('a\\\\"b c"', ['a\\b c']),
    ('"a""b"', ['a"b']),
    ("'not quoting'", ["'not", "quoting'"]),
    ('/Fo"out dir\\\\" /c', ["/Foout dir\\", "/c"]),
])
def test_msvc_quoting(text, expected):
    assert rsp.split_msvc(text, "f.rsp") == expected


@pytest.mark.parametrize("split, text, line", [
    (rsp.split_gcc, "a\nb\n'c\nd", 3),
    (rsp.split_gcc, '"x', 1),
    (rsp.split_msvc, 'a\n"b c', 2),
])
def test_an_unterminated_quote_names_the_line_where_it_opened(split, text, line):
    with pytest.raises(ShimError) as e:
        split(text, "f.rsp")
    assert e.value.status == BAD_INPUT
    assert str(e.value).endswith("in response file f.rsp, line %d" % line)


def test_utf16_files_with_a_bom_are_read(tmp_path):
    (tmp_path / "w.rsp").write_bytes("\ufeff/c \"ü.c\"".encode("utf-16-le"))
    assert rsp.expand(["@w.rsp"], "msvc", str(tmp_path)) == (["/c", "ü.c"], ("w.rsp",))


def test_msvc_does_not_nest_response_files(tmp_path):
    (tmp_path / "a.rsp").write_text("/c @b.rsp")
    assert rsp.expand(["@a.rsp"], "msvc", str(tmp_path))[0] == ["/c", "@b.rsp"]


def test_arguments_without_at_files_are_returned_as_they_are():
    argv = ["-c", "a.c", "@"]
    assert rsp.expand(argv, "gcc", "/") == (argv, ())


@pytest.mark.e2e
def test_an_at_argument_of_a_tool_that_reads_no_at_files_reaches_it_as_it_is(tmp_path, env):
    from conftest import run_shim
    result = run_shim(["echo", "@scope/pkg", "@missing"], cwd=tmp_path, env=env)
    assert (result.returncode, result.stdout, result.stderr) == (0, "@scope/pkg @missing\n", "")
