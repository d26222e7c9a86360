"""Progress reporting: a plain callback that the command line renders as bars.

Long-running functions take ``progress: ProgressCallback | None`` and call it
as ``progress(description, done, total)`` after each unit of work (a block, a
training step), with optional keyword figures to show beside the bar (for
training: ``loss=0.012, fovs_per_s=130``). Library users can pass any
callable that accepts those; the CLI passes a :class:`TqdmProgress`.
"""

from __future__ import annotations

import functools
import logging
import sys
from typing import Callable

ProgressCallback = Callable[..., None]


def report(progress: ProgressCallback | None, description: str, done: int, total: int, **figures) -> None:
    """Call ``progress`` if one was given."""
    if progress is not None:
        progress(description, done, total, **figures)


class TqdmProgress:
    """Render progress callbacks as tqdm bars, one per description.

    A bar is closed when its ``done`` reaches ``total``; keyword figures are
    shown as the bar's postfix.
    """

    def __init__(self, disable: bool = False, unit: str = "it") -> None:
        self.disable = disable
        self.unit = unit
        self._bars: dict = {}

    def __call__(self, description: str, done: int, total: int, **figures) -> None:
        if self.disable:
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

    def close(self, leave: bool = True) -> None:
        """Close the open bars; ``leave=False`` erases them (a run stopped by an error or Ctrl-C, whose
        last messages then read together instead of around a bar's final redraw)."""
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
