"""Reading and merging toolchain.toml layers (shim/config/layers.py): cost that grows with
the file, not with its square."""

import sys

from shim.config import layers


def many_tools(n: int) -> str:
    return "".join('[tool.t%d]\nprogram = "/usr/bin/t%d"\nnames = ["t%d"]\nargs.append = ["-x"]\n'
                   % (i, i, i) for i in range(n))


def lines_run(path) -> int:
    """Lines of shim/config/layers.py executed while building a config from *path*: a count
    of the work done, where a timing would depend on the machine."""
    count = [0]

    def local(frame, event, arg):
        if event == "line":
            count[0] += 1
        return local

    def tracer(frame, event, arg):
        return local if frame.f_code.co_filename == layers.__file__ else None

    sys.settrace(tracer)
    try:
        layers.build([("project", str(path))], "")
    finally:
        sys.settrace(None)
    return count[0]


def test_loading_a_toolchain_toml_is_linear_in_its_number_of_tools(tmp_path):
    work = {}
    for n in (100, 400):
        path = tmp_path / ("%d.toml" % n)
        path.write_text(many_tools(n))
        work[n] = lines_run(path)
    assert work[400] < 5 * work[100], work       # 4x the tools: ~4x the work (it was ~16x)


def test_a_key_is_located_on_its_own_line_under_its_table_or_inline_in_its_parent():
    text = '[tool.cc]\nprogram = "gcc"\nenv.set = { A = "1" }\n\n[tool.cc.low_memory]\nargs.append = ["-g0"]\n'
    assert [layers.locate(text, k) for k in [("tool", "cc"), ("tool", "cc", "program"),
                                             ("tool", "cc", "env", "set", "A"),
                                             ("tool", "cc", "low_memory", "args", "append"), ("tool", "cxx")]] \
        == [1, 2, 3, 6, None]
