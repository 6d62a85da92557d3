"""Ways a run is stopped: a cancel flag checked between steps, and SIGTERM handled like Ctrl-C.

A cancel flag (:data:`CancelFlag`) is a ``threading.Event`` or a callable returning True to stop;
:func:`is_cancelled` reads either (torch-free, so the Slicer module's tasks share it).


``kill`` (SIGTERM, what job schedulers and ``timeout`` send) would otherwise end the process at
once, leaving the temporary files of a write in progress behind; as a KeyboardInterrupt it unwinds
through the atomic writers, which delete their temporaries. SIGKILL cannot be caught: the next run
removes what it left (:func:`SynthBrainLib.outputs.atomic_files.remove_stale_temporaries`).
"""

from __future__ import annotations

import signal
import threading
from typing import Callable

from ..errors import SynthesisCancelled

CancelFlag = Callable[[], bool] | threading.Event | None


def is_cancelled(cancel: CancelFlag) -> bool:
    """Whether ``cancel`` (None, a ``threading.Event`` or a callable) asks to stop."""
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return bool(cancel())


def check_cancel(cancel: CancelFlag) -> None:
    """Raise :class:`~SynthBrainLib.errors.SynthesisCancelled` when the flag is set (checked between steps)."""
    if is_cancelled(cancel):
        raise SynthesisCancelled()


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
