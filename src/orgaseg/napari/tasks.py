"""Long orgaseg calls from a napari widget: a thread worker, progress in the status bar, a cancel button.

The call runs in a thread worker (superqt's, as napari's) so the viewer stays responsive. orgaseg's
progress callback (:mod:`orgaseg.progress`, called after every block) is relayed to the
GUI thread through a Qt signal and shown in the viewer's status bar and in the widget.
Cancelling sets a flag that the next progress call turns into :class:`Cancelled`
raised inside the worker: orgaseg's functions clean up on any exception (a partial
output is kept for resuming, nothing half-written is left), so the call stops at the
end of the block it is in.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from qtpy.QtCore import QObject, Signal


def text_label():
    """A magicgui label that wraps long text (status lines, vote summaries) instead of widening the dock."""
    from magicgui.widgets import Label

    label = Label(value="")
    label.native.setWordWrap(True)
    return label


class Cancelled(Exception):
    """Raised by the progress callback once the user has pressed Cancel."""


class TaskRunner(QObject):
    """Runs one call at a time for a widget, with progress and cancel.

    Parameters
    ----------
    viewer : napari.Viewer
        Its status bar shows the progress.
    status : magicgui Label
        The widget's own status line (kept when the mouse overwrites the status bar).
    run_button, cancel_button : magicgui PushButton
        Disabled / enabled while a call runs.
    """

    progressed = Signal(str)

    def __init__(self, viewer, status, run_button, cancel_button) -> None:
        super().__init__()
        self.viewer, self.status, self.run_button, self.cancel_button = viewer, status, run_button, cancel_button
        self.worker = None
        self._cancel = threading.Event()
        self.progressed.connect(self.show)
        self.cancel_button.enabled = False
        self.cancel_button.changed.connect(self.cancel)

    @property
    def busy(self) -> bool:
        """Whether a call is running."""
        return self.worker is not None

    def start(self, call: Callable[[Callable], Any], done: Callable[[Any], None], description: str) -> None:
        """Run ``call(progress)`` in a thread; ``done(result)`` in the GUI thread when it returns."""
        # superqt's worker, which napari's wraps: napari's wrapper breaks on errors under PySide6
        from superqt.utils import create_worker

        if self.busy:
            return
        self._cancel.clear()
        # errors go to _failed (a cancel is not an error), not re-raised in the GUI thread
        self.worker = create_worker(call, self._progress, _ignore_errors=True)
        self.worker.returned.connect(done)
        self.worker.errored.connect(self._failed)
        self.worker.finished.connect(self._finished)
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.show(f"{description}...")
        self.worker.start()

    def cancel(self) -> None:
        """Ask the running call to stop at its next progress report."""
        if self.busy:
            self._cancel.set()
            self.show("cancelling at the end of the current block...")

    def _progress(self, description: str, done: int, total: int, **figures) -> None:
        # called in the worker thread: raising here stops the orgaseg call
        if self._cancel.is_set():
            raise Cancelled(f"cancelled during {description} ({done}/{total})")
        self.progressed.emit(f"{description}: {done}/{total}")

    def show(self, text: str) -> None:
        self.status.value = text
        self.viewer.status = f"orgaseg: {text}"

    def _failed(self, error: BaseException) -> None:
        if isinstance(error, Cancelled):
            self.show(str(error))
            return
        from napari.utils.notifications import show_error

        self.show(f"failed: {error}")
        show_error(f"orgaseg: {error}")

    def _finished(self) -> None:
        self.worker = None
        self.run_button.enabled, self.cancel_button.enabled = True, False
