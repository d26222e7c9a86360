"""The README is the user's manual: its examples must run and its commands must parse.

(a) Every ```python block of README.md runs, in order, in one namespace, in a temporary
    working directory that holds the files the examples name (``cell.ome.zarr``,
    ``cell.tif``), written from a small synthetic phantom.
(b) Every ``orgaseg ...`` command line in the ```bash blocks parses with
    :func:`orgaseg.cli.build_parser` (nothing is run).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from orgaseg.cli import build_parser
from orgaseg.synthetic import make_cell

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```(\w*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
SEPARATORS = {"&&", "||", ";", "|"}

#: The phantom the examples' files are written from: small, so the examples run in seconds.
SHAPE = (8, 64, 64)
VOXEL_NM = 10.0


def code_blocks(language: str) -> list[str]:
    """The bodies of the README's fenced blocks in ``language``, in order."""
    return [body for lang, body in FENCE.findall(README.read_text(encoding="utf-8")) if lang == language]


def orgaseg_commands() -> list[str]:
    """Every ``orgaseg ...`` command of the README's bash blocks, one string each.

    Backslash-continued lines are joined and ``# comments`` dropped (by shlex);
    a line ``pip install ... && orgaseg demo`` gives its ``orgaseg demo`` part.
    """
    commands = []
    for body in code_blocks("bash"):
        text = re.sub(r"\\\n", " ", body)
        for line in text.splitlines():
            tokens = shlex.split(line, comments=True)
            part: list[str] = []
            for token in tokens + [";"]:
                if token in SEPARATORS:
                    if part and part[0] == "orgaseg":
                        commands.append(shlex.join(part))
                    part = []
                else:
                    part.append(token)
    return commands


def write_example_files(directory: Path) -> None:
    """``cell.ome.zarr`` (NGFF 0.4 image) and ``cell.tif`` (ImageJ TIFF), both the same phantom."""
    cell = make_cell(SHAPE, voxel_size=(VOXEL_NM,) * 3, seed=0)
    group = zarr.open_group(directory / "cell.ome.zarr", mode="w", zarr_format=2)
    array = group.create_array("0", shape=cell.raw.shape, chunks=(4, 32, 32), dtype=cell.raw.dtype)
    array[...] = cell.raw
    axes = [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]
    transforms = [{"type": "scale", "scale": [VOXEL_NM] * 3}]
    group.attrs["multiscales"] = [{"version": "0.4", "axes": axes,
                                   "datasets": [{"path": "0", "coordinateTransformations": transforms}]}]
    tifffile.imwrite(directory / "cell.tif", cell.raw, imagej=True,
                     resolution=(1 / VOXEL_NM, 1 / VOXEL_NM),
                     metadata={"spacing": VOXEL_NM, "unit": "nm", "axes": "ZYX"})


def test_readme_has_examples():
    assert len(code_blocks("python")) >= 2
    assert len(orgaseg_commands()) >= 20


def test_example_files_read_back(tmp_path):
    import orgaseg

    write_example_files(tmp_path)
    for name in ("cell.ome.zarr", "cell.tif"):
        volume = orgaseg.open_volume(tmp_path / name)
        assert volume.shape == SHAPE
        np.testing.assert_allclose(volume.voxel_size, (VOXEL_NM,) * 3)


def test_python_examples_run(tmp_path, monkeypatch):
    write_example_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__main__"}  # as a script saved from the README runs
    logging.getLogger("distributed").setLevel(logging.ERROR)  # the dask example's cluster logs every start and stop
    for number, body in enumerate(code_blocks("python"), start=1):
        try:
            exec(compile(body, f"README.md python block {number}", "exec"), namespace)
        except Exception as err:
            pytest.fail(f"README python block {number} failed: {type(err).__name__}: {err}\n{body}")
    # what the examples promise, checked on their results
    assert namespace["result"].labels.shape == SHAPE
    assert (tmp_path / "cell_labels.ome.zarr.provenance.json").exists()
    np.testing.assert_array_equal(namespace["again"].labels,
                                  namespace["orgaseg"].open_volume("cell_labels.ome.zarr").read())
    assert (tmp_path / "report" / "report.json").exists()
    assert (tmp_path / "cell_labels_dask.ome.zarr").exists()  # the dask example, under its __main__ guard


def _parse_error(argv: list[str]) -> str | None:
    """None when argparse accepts ``argv``, else its error message."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(argv)
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            lines = stderr.getvalue().strip().splitlines()
            return lines[-1] if lines else f"exit {exit_.code}"
    return None


@pytest.mark.parametrize("command", orgaseg_commands())
def test_readme_command_parses(command):
    error = _parse_error(shlex.split(command)[1:])
    assert error is None, f"README command does not parse:\n  {command}\n  argparse: {error}"
