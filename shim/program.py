"""Finding the real program for a tool, never shim itself (ccache's find_executable).

A masquerade directory (`gcc -> shim`) is usually first on PATH; resolving `gcc`
must skip it and find the next one. "Shim itself" is any file with the same inode
as the running launcher (symlinks, hard links) or whose first line names
itself a shim launcher (copies).
"""

from shim import host
from shim.exit_status import NOT_EXECUTABLE, NOT_FOUND, ShimError

MARKER = b"shim-launcher"


def is_shim(path: str, st, self_ids) -> bool:
    if (st.st_dev, st.st_ino) in self_ids:
        return True
    if st.st_size > 4096:            # launchers are tiny; compilers are not
        return False
    try:
        fd = host.open_file(path, host.O_RDONLY | host.O_CLOEXEC)
        try:
            head = host.read(fd, 256)
        finally:
            host.close(fd)
    except OSError:
        return False
    return head[:2] == b"#!" and MARKER in head


def find_on_path(name: str, env_path: str, self_ids=frozenset()):
    """Full path of program *name* on *env_path*, skipping shim itself; None if absent."""
    for directory in env_path.split(host.PATHSEP):
        for candidate in host.program_candidates(name):
            path = host.join(directory or ".", candidate)
            st = host.is_executable_file(path)
            if st is not None and not is_shim(path, st, self_ids):
                return path
    return None


def resolve(program: str, tool: str, env_path: str, cwd: str, self_ids) -> str:
    """The path to execute for *program*; ShimError 127/126 with the reason if there is none."""
    if host.SEP in program or "/" in program:
        path = program if host.is_absolute(program) else host.join(cwd, program)
        st = host.is_executable_file(path)
        if st is None:
            try:
                host.stat(path)
            except OSError:
                raise ShimError("tool %r: program %s does not exist" % (tool, program), NOT_FOUND) from None
            raise ShimError("tool %r: program %s is not an executable file" % (tool, program),
                            NOT_EXECUTABLE)
        if is_shim(path, st, self_ids):
            raise ShimError("tool %r: program %s is shim itself; set tool.%s.program to the real tool"
                            % (tool, program, tool), NOT_FOUND)
        return path
    found = find_on_path(program, env_path, self_ids)
    if found is None:
        hint, status = _why_not(program, env_path)
        raise ShimError("tool %r: program %r not found on PATH%s" % (tool, program, hint), status)
    return found


def _why_not(program: str, env_path: str):
    """(hint, exit status) when PATH holds only shim itself or a non-executable file."""
    for directory in env_path.split(host.PATHSEP):
        for candidate in host.program_candidates(program):
            path = host.join(directory or ".", candidate)
            if host.is_executable_file(path) is not None:
                return " (only shim itself: %s)" % path, NOT_FOUND
            try:
                host.stat(path)
            except OSError:
                continue
            return " (%s exists but is not executable)" % path, NOT_EXECUTABLE
    return "", NOT_FOUND
