"""Progress reporting: a plain callback that the command line renders as bars.

Long-running functions take ``progress: ProgressCallback | None`` and call it
as ``progress(description, done, total)`` after each unit of work (a block, a
training step), with optional keyword figures to show beside the bar (for
training: ``loss=0.012, fovs_per_s=130``). Library users can pass any
callable that accepts those; the CLI passes a :class:`TqdmProgress`, with
bars on a terminal and plain lines when stderr goes to a file or a pipe.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from typing import Callable

ProgressCallback = Callable[..., None]


def report(progress: ProgressCallback | None, description: str, done: int, total: int, **figures) -> None:
    """Call ``progress`` if one was given."""
    if progress is not None:
        progress(description, done, total, **figures)


class TqdmProgress:
    """Render progress callbacks as tqdm bars, one per description, or as plain lines.

    A bar is closed when its ``done`` reaches ``total``; keyword figures are
    shown as the bar's postfix. With ``bars=False`` (the command line's choice
    when stderr is not a terminal: a log file, a pipe, a batch system) each
    description gets whole lines on stderr instead of a bar redrawn with
    carriage returns: one when it starts, one every ``line_interval_s``
    seconds, and one when it ends.
    """

    def __init__(self, disable: bool = False, unit: str = "it", *, bars: bool = True,
                 line_interval_s: float = 30.0) -> None:
        self.disable = disable
        self.unit = unit
        self.bars = bars
        self.line_interval_s = line_interval_s
        self._bars: dict = {}
        self._lines: dict = {}  # description -> (start, last line's time) of a pass shown as lines

    def __call__(self, description: str, done: int, total: int, **figures) -> None:
        if self.disable:
            return
        if not self.bars:
            self._line(description, done, total, figures)
            return
        bar = self._bars.get(description)
        if bar is None:
            # whole units done in the count: a block's encoder batches move the bar by fractions of a block
            bar = _whole_count_bar()(total=total, desc=description, unit=self.unit, leave=True, dynamic_ncols=True,
                                     bar_format="{l_bar}{bar}| {n_done}/{total_fmt} [{elapsed}<{remaining}, "
                                                "{rate_fmt}{postfix}]")
            self._bars[description] = bar
        bar.total = total
        if figures:
            bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in figures.items()}, refresh=False)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
            del self._bars[description]

    def _line(self, description: str, done: float, total: int, figures: dict) -> None:
        now = time.monotonic()
        start, last = self._lines.get(description, (now, None))
        finished = done >= total
        if last is None or finished or now - last >= self.line_interval_s:
            from tqdm import tqdm

            shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
            percent = f" ({100 * done / total:.0f}%)" if total else ""
            print(f"{description}: {int(done)}/{total}{percent}, {tqdm.format_interval(now - start)} elapsed"
                  + (f", {shown}" if shown else ""), file=sys.stderr, flush=True)
            last = now
        if finished:
            self._lines.pop(description, None)
        else:
            self._lines[description] = (start, last)

    def close(self, leave: bool = True) -> None:
        """Close the open bars; ``leave=False`` erases them (a run stopped by an error or Ctrl-C, whose
        last messages then read together instead of around a bar's final redraw)."""
        self._lines.clear()
        for bar in self._bars.values():
            bar.leave = leave and bar.leave
            bar.close()
        self._bars.clear()


@functools.cache
def _whole_count_bar():
    """A tqdm bar class whose format also knows ``n_done``: the whole units done (tqdm imported when first needed)."""
    from tqdm.auto import tqdm

    class WholeCountBar(tqdm):
        @property
        def format_dict(self):
            return {**super().format_dict, "n_done": int(self.n)}

    return WholeCountBar


class TqdmLogHandler(logging.Handler):
    """Writes log records above any open progress bars (``tqdm.write``), so a message never glues to a bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm.auto import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging must never raise
            self.handleError(record)
