"""This machine's compiler facts: `shim bazel init` rewrites this file with what it detects.

These defaults fit a Debian or Ubuntu host with gcc in /usr/bin.
"""

CPU = "k8"

# The compiler's built-in include directories (`gcc -E -v -x c++ /dev/null`); a
# directory covers everything below it.
INCLUDE_DIRECTORIES = [
    "/usr/lib/gcc",
    "/usr/local/include",
    "/usr/include",
]

# The tools Bazel may call other than gcc and ar (which are the shim wrappers).
TOOL_PATHS = {
    "cpp": "/usr/bin/cpp",
    "dwp": "/usr/bin/dwp",
    "gcov": "/usr/bin/gcov",
    "ld": "/usr/bin/ld",
    "nm": "/usr/bin/nm",
    "objcopy": "/usr/bin/objcopy",
    "objdump": "/usr/bin/objdump",
    "strip": "/usr/bin/strip",
}
