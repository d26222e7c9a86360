"""Figures drawn without pyplot, so no display and no global backend state are involved."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from orgaseg.io.partial import atomic_path

#: Pixels per inch of saved figures; figure sizes are chosen for at most ~2000 px.
DPI = 100


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` x ``height`` inches, rendered by Agg on save."""
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save_png(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` as PNG to ``path`` (parents created; a temporary name moved into place) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=DPI)
    return path
