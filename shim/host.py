"""Chooses the platform module; the only place in shim that looks at sys.platform."""

import sys

if sys.platform == "win32":
    from shim.host_windows import *  # noqa: F401,F403
else:
    from shim.host_posix import *  # noqa: F401,F403
