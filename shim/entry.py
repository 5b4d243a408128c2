"""The entry point: decides at its first branch between a build step and the CLI.

`shim TOOL ARGS...`, `shim run TOOL ARGS...` and masquerade (argv[0] named after a
tool) go to shim/step.py without importing anything heavy; a reserved word
(`build`, `config`, ...: shim/commands.py) or an option goes to the click CLI in
shim/cli/.
"""

import gc
import sys

from shim import exit_status, host
from shim.commands import RESERVED

_OWN_NAMES = ("shim", "__main__.py")


def main(argv=None) -> int:
    """Run shim with *argv* (default sys.argv); returns the exit status unless it execs."""
    host.hold_std_fds()      # before any state file is opened
    argv = sys.argv if argv is None else argv
    env = host.environ()
    # The launcher passes the name it was invoked by when it had to resolve a symlink.
    argv0 = env.pop("SHIM_ARGV0", "") or (argv[0] if argv else "shim")
    name = host.program_stem(argv0)
    try:
        if name not in _OWN_NAMES:
            return _step(name, argv[1:], env)              # masquerade: gcc -> shim
        first = argv[1] if len(argv) > 1 else ""
        if first == "run":
            if len(argv) < 3:
                raise exit_status.ShimError("shim run: no tool given (usage: shim run TOOL ARGS...)",
                                            exit_status.USAGE)
            return _step(argv[2], argv[3:], env)
        if not first:
            raise exit_status.ShimError("no tool or command given (usage: shim TOOL ARGS..., or shim --help)",
                                        exit_status.USAGE)
        if first in RESERVED or first.startswith("-"):
            gc.enable()              # off since the launcher (shim/generators/launcher.py): the CLI stays
            from shim.cli import main as cli
            return cli.main(argv[1:])
        return _step(first, argv[2:], env)
    except exit_status.ShimError as e:
        return exit_status.report(e)
    except KeyboardInterrupt:
        return exit_status.INTERRUPTED
    except Exception as e:
        if env.get("SHIM_DEBUG", "") not in ("", "0"):
            raise
        return exit_status.report(e)


def _step(name: str, args: list, env: dict) -> int:
    from shim import step
    status = step.run(name, args, env)
    host.exit_now(status)    # skip interpreter teardown: it is ~1 ms of every spawned step
