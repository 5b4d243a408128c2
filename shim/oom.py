"""Did a spawned tool fail for lack of memory?

Yes when it was killed by SIGKILL (what the kernel's OOM killer sends; not when
shim itself forwarded a signal), exited 137 (a wrapper reporting a SIGKILLed
child), or its driver said so on stderr: gcc's "Killed signal terminated program
cc1plus", "virtual memory exhausted" and "out of memory allocating", clang's
"unable to execute command: Killed", GNU ld's "memory exhausted", C++'s
std::bad_alloc; Go's runtime ("fatal error: runtime: out of memory"); rustc's allocator ("memory allocation of N bytes failed", then SIGABRT),
its LLVM ("LLVM ERROR: out of memory"), an mmap refused under an address-space limit
("Cannot allocate memory (os error 12)", and the dynamic loader's "failed to map segment
from shared object", exit 127). A signal death other than SIGKILL counts only with one
of these messages.
"""

from shim import family

SIGKILL = 9
TEXTS = (
    b"Killed signal terminated program",
    b"virtual memory exhausted",
    b"out of memory allocating",
    b"unable to execute command: Killed",
    b"memory exhausted",
    b"std::bad_alloc",
    b"Cannot allocate memory",
    b"failed to map segment from shared object",
) + family.OOM_TEXTS           # each family's own: rustc's allocator and LLVM, Go's runtime


def hold_from(chunk: bytes) -> int:
    """Where in *chunk* (a tool's stderr as it comes) an out-of-memory message begins: the
    start of its line (within *chunk*), or -1. What follows is held back while shim
    decides whether the step is retried (see shim/step.py run)."""
    found = [i for i in (chunk.find(text) for text in TEXTS) if i >= 0]
    return chunk.rfind(b"\n", 0, min(found)) + 1 if found else -1


def ran_out(finished) -> bool:
    if getattr(finished, "forwarded", None):
        return False
    if finished.signal == SIGKILL or finished.code == 137:
        return True
    if finished.code == 0 or (finished.code is None and finished.signal is None):
        return False
    tail = getattr(finished, "stderr_tail", b"") or b""
    return any(text in tail for text in TEXTS)
