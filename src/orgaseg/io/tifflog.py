"""tifffile's log records: never on the user's terminal, but kept for checks.

tifffile reads a damaged file as far as it can and logs what it skipped on
the ``tifffile`` logger, whose records would otherwise reach the terminal as
raw lines (``<tifffile.TiffPages @8> invalid page offset 33136``) next to a
result that silently lacks data. On import of :mod:`orgaseg.io` they are
routed to orgaseg's logger at debug level (``--debug`` shows them), and
:func:`tiff_errors` collects the errors logged while a reader opens a file, so
that it can refuse the file with a clear message instead.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_log = logging.getLogger("orgaseg.io.tifffile")

# tifffile starts most messages with the repr of the object that logs them,
# e.g. "<tifffile.TiffPages @8> " or "<TiffTag.fromfile> "
_REPR = re.compile(r"^(<[^>]*>\s*)+")


class _Relay(logging.Handler):
    """Re-logs tifffile's records at debug level and hands errors to the collectors of their thread."""

    def __init__(self) -> None:
        super().__init__()
        self.collectors: dict[int, list[str]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        _log.debug("tifffile %s: %s", record.levelname.lower(), message)
        collector = self.collectors.get(record.thread)
        if collector is not None and record.levelno >= logging.ERROR:
            collector.append(_REPR.sub("", message))


_RELAY = _Relay()


def route_tifffile_log() -> None:
    """Send the ``tifffile`` logger's records to orgaseg's logger at debug level (idempotent)."""
    logger = logging.getLogger("tifffile")
    if _RELAY not in logger.handlers:
        logger.addHandler(_RELAY)
    logger.propagate = False


@contextmanager
def tiff_errors() -> Iterator[list[str]]:
    """Collect the errors tifffile logs in this thread while the block runs (messages without reprs)."""
    errors: list[str] = []
    thread = threading.get_ident()
    _RELAY.collectors[thread] = errors
    try:
        yield errors
    finally:
        del _RELAY.collectors[thread]
