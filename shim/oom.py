"""Did a spawned tool fail for lack of memory?

Yes when it was killed by SIGKILL (what the kernel's OOM killer sends; not when
shim itself forwarded a signal), exited 137 (a wrapper reporting a SIGKILLed
child), or its driver said so on stderr: gcc's "Killed signal terminated program
cc1plus", "virtual memory exhausted" and "out of memory allocating", clang's
"unable to execute command: Killed", GNU ld's "memory exhausted", C++'s
std::bad_alloc.
"""

SIGKILL = 9
TEXTS = (
    b"Killed signal terminated program",
    b"virtual memory exhausted",
    b"out of memory allocating",
    b"unable to execute command: Killed",
    b"memory exhausted",
    b"std::bad_alloc",
    b"Cannot allocate memory",
)


def ran_out(finished) -> bool:
    if getattr(finished, "forwarded", None):
        return False
    if finished.signal == SIGKILL or finished.code == 137:
        return True
    if finished.code in (0, None):
        return False
    tail = getattr(finished, "stderr_tail", b"") or b""
    return any(text in tail for text in TEXTS)
