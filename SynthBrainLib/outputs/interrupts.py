"""SIGTERM handled like Ctrl-C, so that a stopped run cleans up after itself.

``kill`` (SIGTERM, what job schedulers and ``timeout`` send) would otherwise end the process at
once, leaving the temporary files of a write in progress behind; as a KeyboardInterrupt it unwinds
through the atomic writers, which delete their temporaries. SIGKILL cannot be caught: the next run
removes what it left (:func:`SynthBrainLib.outputs.atomic_files.remove_stale_temporaries`).
"""

from __future__ import annotations

import signal


class terminate_as_interrupt:
    """While active (in the main thread), SIGTERM raises KeyboardInterrupt."""

    def __enter__(self):
        self.previous = None
        try:
            self.previous = signal.signal(signal.SIGTERM, self._handler)
        except ValueError:  # not the main thread: signals cannot be handled here
            pass
        return self

    @staticmethod
    def _handler(signum, frame):
        raise KeyboardInterrupt

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False
