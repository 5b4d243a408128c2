"""The sampled peak memory of a process tree: one sampler for the driver, bench/ and the tests."""

import threading
import time

from shim import host


class Sampler(threading.Thread):
    """Sums the RSS of a process tree (host.tree_rss) every *interval* seconds; keeps the peak.
    With *anon*, only the tree's anonymous memory (what a step adds to a cgroup; the
    peak a spawned step is learned by, host.spawn_program).

    *root* is the tree's pid, or a function giving it (None until the process exists).
    A sample of 0 (the process is gone or not yet there) is not counted. Start it only
    once the process to sample is forked: forking from a process with a second thread
    running is what this avoids.
    """

    def __init__(self, root, interval: float = 0.1, anon: bool = False, each=None):
        super().__init__(daemon=True)
        self.each = each         # also called every interval, or as soon as it returns: `shim build`'s pause watcher
        self.root = root if callable(root) else (lambda: root)
        self.interval = interval
        self.anon = anon
        self.peak = self.samples = 0
        self.stopping = threading.Event()

    def run(self):
        due = 0.0
        while not self.stopping.is_set():
            now = time.monotonic()
            if now >= due:
                due = now + self.interval
                pid = self.root()
                rss = host.tree_rss(pid, self.anon) if pid else 0
                if rss:
                    self.peak = max(self.peak, rss)
                    self.samples += 1
            pause = due - time.monotonic()
            if self.each is not None:
                try:
                    pause = min(pause, self.each() or pause)
                except OSError:
                    pass         # a pool or ledger gone: the build goes on unwatched this tick
            self.stopping.wait(max(pause, 0.0))

    def stop(self) -> int:
        """Stop sampling; the peak."""
        self.stopping.set()
        self.join(timeout=2)
        return self.peak
