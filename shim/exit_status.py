"""Exit statuses shim itself uses, the one error class, and how errors are printed.

A step's own exit status is passed through unchanged (0-255) and a tool killed by
signal N makes shim die of signal N, so ninja and Bazel see exactly what the tool
did. Shim's own failures use the codes below; they are documented in README.md
("Exit statuses") and `shim --help`.
"""

import sys

USAGE = 2             # bad command line for shim itself (as click and argparse)
BAD_INPUT = 65        # a response file or argument shim must read is malformed (EX_DATAERR)
INTERNAL = 70         # a bug in shim (EX_SOFTWARE); SHIM_DEBUG=1 shows the traceback
OS_ERROR = 71         # the system refused what shim needs: the cwd, a process (EX_OSERR)
CANT_CREATE = 73      # an output file shim was asked to write cannot be written (EX_CANTCREAT)
CONFIG = 78           # toolchain.toml is invalid or untrusted (EX_CONFIG)
NOT_EXECUTABLE = 126  # the tool exists but cannot be run (as sh)
NOT_FOUND = 127       # the tool is not on PATH / not at the configured path (as sh)
INTERRUPTED = 130     # 128 + SIGINT, where a signal cannot be re-raised

TABLE = (
    (USAGE, "usage", "bad shim command line (unknown subcommand, missing tool)"),
    (BAD_INPUT, "bad-input", "unreadable or malformed @response file or argument"),
    (INTERNAL, "internal", "internal error in shim (SHIM_DEBUG=1 shows a traceback)"),
    (OS_ERROR, "os-error", "the system refused something shim needs (current directory, a process)"),
    (CANT_CREATE, "cant-create", "an output file shim was asked to write (-o, --html, --trace, a launcher) "
                                 "cannot be written"),
    (CONFIG, "config", "invalid, unreadable or untrusted toolchain.toml"),
    (NOT_EXECUTABLE, "not-executable", "the tool was found but could not be executed"),
    (NOT_FOUND, "not-found", "the tool was not found"),
)


class Finished:
    """How a spawned tool ended, from wait4: exit code or signal, peak RSS, CPU times."""

    __slots__ = ("code", "signal", "max_rss", "user_time", "system_time", "forwarded", "stderr_tail", "noticed",
                 "withheld")

    def __init__(self, code, signal, max_rss, user_time, system_time, forwarded=None, stderr_tail=b"",
                 noticed=None, withheld=b""):
        self.code = code              # 0-255, or None when killed by a signal
        self.signal = signal          # signal number, or None
        self.max_rss = max_rss        # bytes: peak of the tool's process tree (sampled), or at
                                      # least its largest single process (wait4)
        self.user_time = user_time    # seconds, the tool and its waited-for children
        self.system_time = system_time
        self.forwarded = forwarded    # a signal shim passed on to the tool, or None
        self.stderr_tail = stderr_tail   # the end of the tool's stderr, when it was captured
        self.noticed = noticed        # when the watched text first passed on stderr (epoch s), or None
        self.withheld = withheld      # stderr held back, not shown yet (spawn_program's *hold*)


class ShimError(Exception):
    """A user-facing failure: one line of text and the exit status to leave with."""

    def __init__(self, message: str, status: int = USAGE) -> None:
        super().__init__(message)
        self.status = status


def report(error: BaseException) -> int:
    """Print `shim: error: ...` for *error* on stderr; return the exit status to use."""
    if isinstance(error, ShimError):
        message, status = str(error), error.status
    else:
        message = "internal error: %s: %s (set SHIM_DEBUG=1 for a traceback)" % (
            type(error).__name__, error)
        status = INTERNAL
    try:
        sys.stderr.write("shim: error: %s\n" % message)
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):    # stderr closed: sys.stderr is None
        pass
    return status
