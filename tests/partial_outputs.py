"""What a stopped run left in its partial output, as the resume tests read it."""

from __future__ import annotations

from pathlib import Path


def block_markers(output: Path) -> list[Path]:
    """The block markers a run on ``output`` has written, in name order.

    Only markers (``INDEX.json``): a kill between a marker's temporary file and its rename leaves a
    ``.tmp-*.json`` beside them, which is not a finished block.
    """
    done = output.with_name(f"{output.name}.partial") / "run" / "done"
    return sorted(done.glob("[0-9]*.json")) if done.is_dir() else []
