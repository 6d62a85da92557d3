"""Running a synthesis off Slicer's main thread and applying its result on it.

A :class:`Task` is one synthesis split where the threads meet:

* ``compute(progress, cancel)`` calls SynthBrainLib only (no MRML, no Qt), so it may run in a worker
  thread; PyTorch releases the GIL while it computes, so the application stays responsive.
* ``apply(payload)`` creates the result nodes; MRML is not thread-safe, so it runs on the main
  thread.

Nothing touches the scene before ``apply``, and ``apply`` is skipped when the task was cancelled,
so a cancelled or failed task leaves the scene exactly as it was.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional

from SynthBrainLib.errors import SynthesisCancelled
from SynthBrainLib.outputs.interrupts import is_cancelled  # torch-free: loads before dependencies

ProgressCallback = Callable[[int, int], None]


def cancelled_error() -> Exception:
    return SynthesisCancelled()


@dataclass
class Task:
    """One synthesis: a thread-safe ``compute`` and a main-thread ``apply``."""

    title: str
    compute: Callable[[Optional[ProgressCallback], Any], Any]
    apply: Callable[[Any], Any]
    #: The MRML scene ``apply`` adds to; when given, a failing ``apply`` leaves no node behind.
    scene: Any = None

    def run(self, progress: ProgressCallback | None = None, cancel=None):
        """Compute then apply, in the calling thread (console scripting, tests)."""
        payload = self.compute(progress, cancel)
        if is_cancelled(cancel):
            raise cancelled_error()
        return self.apply_to_scene(payload)

    def apply_to_scene(self, payload):
        """``apply(payload)``, all or nothing: nodes it added before failing are removed again."""
        if self.scene is None:
            return self.apply(payload)
        before = {self.scene.GetNthNode(i).GetID() for i in range(self.scene.GetNumberOfNodes())}
        try:
            return self.apply(payload)
        except BaseException:
            # Oldest first, and again until none is left: removing a proxy node before its
            # sequence browser makes the Sequences logic create a new proxy.
            for _ in range(3):
                added = [self.scene.GetNthNode(i) for i in range(self.scene.GetNumberOfNodes())]
                added = [n for n in added if n.GetID() not in before]
                if not added:
                    break
                for node in added:
                    if self.scene.IsNodePresent(node):
                        self.scene.RemoveNode(node)
            raise


class BackgroundRun:
    """Run ``task.compute`` in a daemon thread; the main thread polls and then calls :meth:`finish`.

    The worker never touches Qt or MRML: progress goes into plain attributes that the widget reads
    from a timer on the main thread.

    Example (what the module widget does)::

        run = BackgroundRun(logic.brainTask(age=70)).start()
        ...                       # every 100 ms: progressBar.value = run.fraction
        run.cancel()              # Cancel button: the pipeline stops at its next step
        if run.done:
            node = run.finish()   # main thread; raises SynthesisCancelled or the task's error
    """

    def __init__(self, task: Task, progress: ProgressCallback | None = None) -> None:
        self.task = task
        #: also called with (step, total), from the worker thread (console scripts); never touch Qt or MRML in it
        self._userProgress = progress
        self.cancelEvent = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._step = 0
        self._total = 0
        self._payload: Any = None
        self._error: Exception | None = None
        self._finished = False
        self._result: Any = None
        self._thread = threading.Thread(target=self._work, name=f"SynthBrain: {task.title}", daemon=True)

    def start(self) -> "BackgroundRun":
        self._thread.start()
        return self

    def _progress(self, step: int, total: int) -> None:
        with self._lock:
            self._step, self._total = int(step), int(total)
        if self._userProgress is not None:
            self._userProgress(step, total)

    def _work(self) -> None:
        try:
            self._payload = self.task.compute(self._progress, self.cancelEvent)
        except Exception as exc:  # handed over to the main thread, which reports it
            self._error = exc
        finally:
            self._done.set()

    def cancel(self) -> None:
        """Ask the worker to stop; the result, if any, is then discarded."""
        self.cancelEvent.set()

    @property
    def cancelled(self) -> bool:
        return self.cancelEvent.is_set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def progress(self) -> tuple[int, int]:
        with self._lock:
            return self._step, self._total

    @property
    def fraction(self) -> float:
        step, total = self.progress
        return min(max(step / total, 0.0), 1.0) if total else 0.0

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def finish(self):
        """On the main thread, once :attr:`done`: apply the result and return its node(s).

        Raises:
            SynthesisCancelled: :meth:`cancel` was called (even after the computation ended);
                nothing is added to the scene.
            Exception: whatever the computation raised.
        """
        if not self.done:
            raise RuntimeError("the run has not finished yet")
        if self._finished:
            raise RuntimeError("the run was already finished")
        self._finished = True
        if self.cancelled:
            raise cancelled_error()
        if self._error is not None:
            raise self._error
        self._result = self.task.apply_to_scene(self._payload)
        return self._result

    @property
    def finished(self) -> bool:
        """Whether :meth:`finish` has run (its nodes are in the scene, or it raised)."""
        return self._finished

    def result(self, timeout: float | None = None):
        """Wait for the run (main thread), add its nodes if not done yet, and return them.

        Raises:
            TimeoutError: the run did not end within ``timeout`` seconds.
            SynthesisCancelled / Exception: as :meth:`finish`.
        """
        if not self.wait(timeout):
            raise TimeoutError(f"{self.task.title} is still running")
        if not self._finished:
            return self.finish()
        if self.cancelled:
            raise cancelled_error()
        if self._error is not None:
            raise self._error
        return self._result
