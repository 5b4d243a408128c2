"""Files a user asks shim to write (`-o`, `--html`, `--trace`, launchers, generated files).

Domain code (shim/reports, shim/generators) returns text; the commands write it here.

Written atomically with host.replace_file (a temporary file beside the target, renamed
over it, and removed whatever goes wrong), so a reader never sees half a file and a
failure leaves the old one. A target that exists but is not a regular file (/dev/stdout,
a fifo) is written in place. A target that cannot be written is one line and exit status
73 (EX_CANTCREAT), never a traceback.
"""

import os
import stat

from shim import host
from shim.exit_status import CANT_CREATE, ShimError


def write(path: str, data, mode: int = 0o644, what: str = "") -> str:
    """Give *path* the content *data* (str as UTF-8, or bytes); returns *path*."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    try:
        try:
            special = not stat.S_ISREG(os.stat(path).st_mode)
        except FileNotFoundError:
            special = False
        if special:
            with open(path, "wb") as f:
                f.write(data)
        else:
            host.replace_file(path, data, mode)
    except (OSError, ValueError) as e:
        raise cannot(path, e, what) from None
    return path


def cannot(path: str, error: OSError, what: str = "", verb: str = "write") -> ShimError:
    """The one-line error (exit 73) for an output *path* that could not be written."""
    return ShimError("cannot %s %s%s: %s" % (verb, what + " " if what else "", path,
                                            getattr(error, "strerror", None) or error), CANT_CREATE)
