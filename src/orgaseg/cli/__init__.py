"""The ``orgaseg`` command line.

Exit codes: 0 on success, 2 on bad input (a one-line message naming the
problem; ``--debug`` shows the traceback), 1 on an unexpected failure.

:func:`main` runs a command: its options are defined in :mod:`orgaseg.cli.arguments`
(:func:`build_parser`), and ``cmd_COMMAND`` of :mod:`orgaseg.cli.commands` runs it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import warnings

from orgaseg.cli.arguments import _UsageError, build_parser
from orgaseg.cli.commands import (
    cmd_benchmark,
    cmd_crop,
    cmd_demo,
    cmd_evaluate,
    cmd_info,
    cmd_inspect,
    cmd_instances,
    cmd_measure,
    cmd_methods,
    cmd_name,
    cmd_segment,
    cmd_train,
)
from orgaseg.errors import OrgasegError
from orgaseg.progress import TqdmLogHandler, TqdmProgress

__all__ = [
    "build_parser",
    "cmd_benchmark",
    "cmd_crop",
    "cmd_demo",
    "cmd_evaluate",
    "cmd_info",
    "cmd_inspect",
    "cmd_instances",
    "cmd_measure",
    "cmd_methods",
    "cmd_name",
    "cmd_segment",
    "cmd_train",
    "main",
]


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a batch system's time limit, ``kill``), handled as Ctrl-C is: the run keeps its finished work,
    releases its lock and says how to resume."""


def _terminate(signum, frame):
    raise _Terminated


def main(argv: list[str] | None = None) -> int:
    """Run the ``orgaseg`` command line on ``argv`` (default: the process's arguments); the exit code."""
    # a file name that is not UTF-8 reaches us with its bytes as surrogates: print it
    # (stdout gives the bytes back, stderr shows them escaped) instead of failing on a strict stream
    for stream, errors in ((sys.stdout, "surrogateescape"), (sys.stderr, "backslashreplace")):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors=errors)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except _UsageError as err:
        print(err, file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C while starting up
        print("orgaseg: interrupted", file=sys.stderr)
        return 130
    # bars redrawn with carriage returns belong on a terminal; a log file or a pipe gets whole lines
    progress = TqdmProgress(disable=args.quiet, bars=getattr(sys.stderr, "isatty", lambda: False)())
    handler = TqdmLogHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, handlers=[handler], force=True)
    logging.captureWarnings(True)  # warnings too are written above the progress bars
    # what a learned encoder's run will cost is said up front (README, `segment`), unless --quiet
    # and, for segment --centers, the stages taken from the reused run
    for name in ("orgaseg.pipeline.cost", "orgaseg.segmentation"):
        logging.getLogger(name).setLevel(logging.NOTSET if args.quiet or args.debug else logging.INFO)
    command = (args.command, args.option_strings)

    def in_command_line_words(record: logging.LogRecord) -> bool:
        """A logged note of orgaseg's (finished work kept after a crash) says here what to run again."""
        if hasattr(record.msg, "for_command_line"):
            record.msg = record.msg.for_command_line(command)
        return True

    handler.addFilter(in_command_line_words)
    if not args.debug:
        warnings.simplefilter("default")
        # a file a lazy reader keeps open until exit (a TIFF read through its zarr store) is nothing to act on
        warnings.simplefilter("ignore", ResourceWarning)
        # the log handler ends the line; orgaseg's warnings name command-line options here
        warnings.formatwarning = lambda message, category, *rest: "warning: " + (
            message.for_command_line(command) if hasattr(message, "for_command_line") else str(message))
    terminate = signal.signal(signal.SIGTERM, _terminate)
    try:
        if getattr(args, "device", None) == "cuda":  # refused at once, also where nothing would run on it
            from orgaseg.models.device import resolve_device

            resolve_device("cuda")
        return globals()[f"cmd_{args.command}"](args, progress)  # the parser names a command, not its handler
    except OrgasegError as err:
        progress.close(leave=False)
        if args.debug:
            raise
        print(f"orgaseg {args.command}: error: {err.for_command_line(command)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        progress.close(leave=False)
        # zarr's pending writes, torn down at exit, are not worth a word after this line
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        terminated = isinstance(err, _Terminated)
        notes = "".join(f"; {note.for_command_line(command) if hasattr(note, 'for_command_line') else note}"
                        for note in getattr(err, "__notes__", ()))  # what was kept, how to resume
        print(f"orgaseg {args.command}: {'terminated (SIGTERM)' if terminated else 'interrupted'}{notes}",
              file=sys.stderr)
        return 143 if terminated else 130
    except BrokenPipeError:  # the reader of stdout stopped (`orgaseg methods | head`): what it read is what it asked
        progress.close()
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes at exit
        return 0
    except Exception as err:  # an unexpected failure: say so plainly, traceback with --debug
        progress.close()
        if args.debug:
            raise
        print(f"orgaseg {args.command}: unexpected error: {type(err).__name__}: {err} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, terminate)  # main() called from Python leaves the caller's handler as it was
