"""The operating system's API for shim, declared once; chooses the platform module that
defines it (the only place in shim that looks at sys.platform)."""

import sys

# Every name host_posix.py and host_windows.py define for the rest of shim (tests/host_test.py
# holds both to it); nothing else of theirs is reachable as shim.host.NAME.
API = (
    "osapi", "EXEC_SUPPORTED", "SEP", "PATHSEP", "PLATFORM",
    "getcwd", "stat", "lstat", "exists", "getpid", "getuid", "open_file", "read", "write", "close",
    "O_RDONLY", "O_CLOEXEC", "O_NOFOLLOW", "arch", "environ",
    "is_absolute", "join", "dirname", "basename", "program_stem", "is_executable_file", "program_candidates",
    "flush_stdio", "hold_std_fds", "exit_now", "read_file", "mkdir", "makedirs", "private_dir_problem", "make_private_dir",
    "read_own_file", "read_regular_file", "open_private_dir", "open_private",
    "read_note", "write_note", "note_time", "stamp_note",
    "replace_file", "raise_oom_score", "restore_oom_score",
    "pid_alive", "tree_rss", "exec_program", "spawn_program", "die_of_signal",
)

if sys.platform == "win32":
    from shim import host_windows as _platform
else:
    from shim import host_posix as _platform

for _name in API:
    globals()[_name] = getattr(_platform, _name)
del _name
