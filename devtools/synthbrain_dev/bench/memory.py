"""Peak resident memory of a measured run: RSS sampled from /proc every 5 ms while it runs."""

from __future__ import annotations

import os
import resource
import sys
import threading

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss() -> int:
    """Resident set size of this process in bytes (Linux /proc; elsewhere the peak so far)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * PAGE
    except OSError:  # pragma: no cover - non-Linux
        return peak_rss_so_far()


def peak_rss_so_far() -> int:
    """Peak resident set size of this process since it started, in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class PeakMemory:
    """Samples RSS every ``interval`` s while active; ``peak`` is the highest seen (bytes)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval, self.peak = interval, 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PeakMemory":
        self.peak = current_rss()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, current_rss())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, current_rss())


def gigabytes(n_bytes: int | None) -> str:
    """A memory figure's table cell: GB with two decimals, ``-`` for none."""
    return "-" if not n_bytes else f"{n_bytes / 1e9:.2f}"
