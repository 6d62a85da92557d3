"""One background run at a time for the panel, without Qt: buttons, progress bar and status line.

The widget's only part is a timer on the main thread that calls :meth:`PanelRuns.poll` every
100 ms. While a run goes, its button reads "Cancel" (a second click cancels) and every other run
button is disabled; the progress bar follows the run; when it ends, the result nodes are added on
the main thread and ``onDone(result)`` shows them, or the error is reported in one sentence.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from SynthBrainLib.errors import SynthesisCancelled

from .i18n import _
from .tasks import BackgroundRun


class PanelRuns:
    """Args:
    buttons: run buttons by name (each starts one kind of run).
    progressBar, statusLabel: the panel's progress bar and status line.
    showError: ``showError(exception)`` tells the user (one sentence).
    startRun: ``startRun(task) -> BackgroundRun`` (default: a BackgroundRun started now).
    """

    def __init__(
        self,
        buttons: Mapping[str, Any],
        progressBar,
        statusLabel,
        showError: Callable[[BaseException], None],
        startRun: Callable[[Any], BackgroundRun] | None = None,
    ) -> None:
        self.buttons = dict(buttons)
        self.progressBar, self.statusLabel, self.showError = progressBar, statusLabel, showError
        self._startRun = startRun or (lambda task: BackgroundRun(task).start())
        self.run: BackgroundRun | None = None
        self._button = self._onDone = None
        self._buttonText = ""
        #: button name -> whether it may start a run now (e.g. Compare needs pinned conditions)
        self.allowed: dict[str, bool] = {}

    @property
    def running(self) -> bool:
        return self.run is not None

    def click(self, button, makeTask: Callable[[], Any], onDone: Callable[[Any], None]) -> bool:
        """A run button was clicked: cancel its run, or build the task (on this thread: inputs are
        checked and the scene is read here) and start it. Returns whether a run started."""
        if self.run is not None:
            if button is self._button:
                self.run.cancel()
                self.statusLabel.text = _("Cancelling...")
            return False
        try:
            task = makeTask()
        except Exception as exc:  # reported to the user in one sentence (unexpected ones also logged)
            self.showError(exc)
            return False
        self.run, self._button, self._buttonText, self._onDone = self._startRun(task), button, button.text, onDone
        button.text = _("Cancel")
        self.progressBar.value = 0
        self.progressBar.show()
        self.statusLabel.text = _("Running {task}...").format(task=task.title)
        self.updateButtons()
        return True

    def poll(self) -> bool:
        """Follow the run; when it has ended, add its result and report. Returns whether one is still going."""
        run = self.run
        if run is None:
            return False
        self.progressBar.value = int(round(100 * run.fraction))
        if not run.done:
            return True
        onDone = self._onDone
        self._end()
        try:
            result = run.finish()  # main thread: creates the result nodes
        except Exception as exc:  # the run's error (raised in the worker), or its cancellation
            if isinstance(exc, SynthesisCancelled):
                self.statusLabel.text = _("Cancelled: nothing was added to the scene.")
            else:
                self.showError(exc)
            return False
        self.statusLabel.text = _("Done: {result}.").format(result=describe(result))
        onDone(result)
        return False

    def cancel(self) -> None:
        """Cancel and forget the run (scene closing, module cleanup): its result is discarded."""
        if self.run is not None:
            self.run.cancel()
            self._end()

    def _end(self) -> None:
        if self._button is not None:
            self._button.text = self._buttonText
        self.run = self._button = self._onDone = None
        self.progressBar.hide()
        self.updateButtons()

    def updateButtons(self) -> None:
        for name, button in self.buttons.items():
            button.enabled = (button is self._button) if self.running else self.allowed.get(name, True)


def describe(result) -> str:
    """Names of the result nodes ('brain seed 3', or 'A, B, B - A' for a comparison)."""
    nodes = result if isinstance(result, (tuple, list)) else (result,)
    names = [n.GetName() for n in nodes if hasattr(n, "GetName")]
    return ", ".join(names) if names else _("finished")
