"""compile_commands.json from the compile steps shim actually ran.

What clangd and clang-tidy read; unlike `ninja -t compdb` it also works for Bazel
builds and shows each compiler invocation as the compiler got it: the resolved
program and the arguments after toolchain.toml's rewrite rules (not `shim cc ...`).
The newest step per (directory, file, output) wins.
"""

import os


def entries(steps: list, build_dir: str) -> list:
    latest = {}
    for s in steps:
        if s["kind"] != "compile" or not s.get("args") or not s.get("in"):
            continue
        directory = os.path.normpath(os.path.join(build_dir, s["cwd"] or "."))
        output = s["out"][0] if s["out"] else None
        if output and s["cwd"] not in (None, ".") and output.startswith(s["cwd"] + "/"):
            output = output[len(s["cwd"]) + 1:]       # the ledger keeps it build-dir relative
        source = s["in"]
        if source and s["cwd"] not in (None, ".") and source.startswith(s["cwd"] + "/"):
            source = source[len(s["cwd"]) + 1:]
        entry = {"directory": directory, "arguments": [s.get("exe") or s["prog"]] + list(s["args"]),
                 "file": source}
        if output:
            entry["output"] = output
        latest[(directory, source, output)] = entry
    return list(latest.values())
