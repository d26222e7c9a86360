"""Fault injection: broken inputs give exit 2 and one line naming the problem, never a smaller volume.

Each case of :data:`FAULTS` builds a tiny broken file in ``tmp_path`` and
runs it through :func:`orgaseg.cli.main`, as ``info`` and as ``segment``
(which must leave nothing at its output path). Each case of
:data:`OUTPUT_FAULTS` makes the output unwritable (a read-only folder, a full
disk) for an intact input: exit 2, one line naming the output and the cause,
and nothing left but the finished work of a run that had some, which the
same command resumes. ``benchmarks/fault_table.py`` runs both tables for the
README.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import h5py
import mrcfile
import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

import orgaseg
from orgaseg.cli import main
from orgaseg.errors import OrgasegError
from orgaseg.io import MissingChunksWarning, open_volume, read_provenance, write_labels
from orgaseg.io.writers import OmeZarrLabelWriter
from orgaseg.synthetic import make_cell

from partial_outputs import block_markers

SHAPE = (8, 32, 32)


def _stack() -> np.ndarray:
    return (np.arange(np.prod(SHAPE)) % 251).astype(np.uint8).reshape(SHAPE)


def _intact(tmp_path: Path, name: str = "raw.tif") -> Path:
    path = tmp_path / name
    tifffile.imwrite(path, _stack(), imagej=True, resolution=(0.25, 0.25),
                     metadata={"spacing": 50, "unit": "nm", "axes": "ZYX"})
    return path


def _truncate(path: Path, fraction: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def truncated_imagej(tmp_path: Path) -> Path:
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, _stack(), imagej=True, resolution=(0.25, 0.25),
                     metadata={"spacing": 50, "unit": "nm", "axes": "ZYX"})
    return _truncate(path)


def truncated_plain_tiff(tmp_path: Path) -> Path:
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, _stack())
    return _truncate(path)


def non_utf8_name(tmp_path: Path) -> Path:
    # a name written on a Latin-1 system ("rawÿ.tif"): Python holds the byte 0xff as a surrogate
    path = tmp_path / os.fsdecode(b"raw\xff.tif")
    tifffile.imwrite(path, _stack())
    return _truncate(path)


def truncated_hdf5(tmp_path: Path) -> Path:
    path = tmp_path / "volume.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("raw", data=_stack())  # contiguous: the second half of the file is the data
    return _truncate(path)


def truncated_mrc(tmp_path: Path) -> Path:
    path = tmp_path / "volume.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(_stack().astype(np.int16))
        mrc.voxel_size = (40.0, 40.0, 500.0)
    return _truncate(path)


def tiff_named_mrc(tmp_path: Path) -> Path:
    path = tmp_path / "raw.mrc"
    tifffile.imwrite(path, _stack())
    return path


def _zarr(tmp_path: Path) -> Path:
    path = tmp_path / "volume.zarr"
    array = zarr.create_array(path, shape=SHAPE, chunks=(4, 16, 16), dtype="u1", zarr_format=2, fill_value=0)
    array[:] = _stack()
    array.attrs["resolution"] = [50, 4, 4]
    return path


def zarr_corrupt_chunk(tmp_path: Path) -> Path:
    path = _zarr(tmp_path)
    (path / "1.1.0").write_bytes(b"not a compressed chunk")
    return path


def zarr_missing_chunks(tmp_path: Path) -> Path:
    path = _zarr(tmp_path)
    for key in ("0.1.1", "1.0.1"):
        (path / key).unlink()
    return path


def _slices(tmp_path: Path, names: list[str], shapes: dict[str, tuple[int, int]] | None = None) -> Path:
    folder = tmp_path / "slices"
    folder.mkdir()
    for name in names:
        shape = (shapes or {}).get(name, SHAPE[1:])
        tifffile.imwrite(folder / name, np.zeros(shape, dtype=np.uint8))
    return folder


def slices_with_a_gap(tmp_path: Path) -> Path:
    return _slices(tmp_path, ["00.tif", "01.tif", "03.tif"])


def slices_of_two_sizes(tmp_path: Path) -> Path:
    return _slices(tmp_path, ["00.tif", "01.tif", "02.tif"], {"02.tif": (16, 32)})


def empty_tiff(tmp_path: Path) -> Path:
    path = tmp_path / "empty.tif"
    path.write_bytes(b"II*\x00\x08\x00\x00\x00")  # a header and nothing else: what a failed write leaves
    return path


def zero_voxel_size(tmp_path: Path) -> Path:
    path = tmp_path / "zero.tif"
    tifffile.imwrite(path, _stack(), imagej=True, resolution=(0.25, 0.25),
                     metadata={"spacing": 0, "unit": "nm", "axes": "ZYX"})
    return path


def nan_voxel_size(tmp_path: Path) -> Path:
    path = tmp_path / "nan.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("raw", data=_stack()).attrs["element_size_um"] = [0.05, np.nan, 0.004]
    return path


#: (builder, extra options, words the one line must contain)
FAULTS = {
    "truncated ImageJ stack": (truncated_imagej, [], r"stack\.tif: the metadata declares 8 images, but the file holds 1"),
    "truncated plain TIFF": (truncated_plain_tiff, [], r"plain\.tif: damaged or truncated TIFF"),
    "damaged TIFF with a non-UTF-8 name": (non_utf8_name, [], r"raw\\udcff\.tif: damaged or truncated TIFF"),
    "TIFF header without an image": (empty_tiff, [], r"empty\.tif: the TIFF holds no image"),
    "HDF5 truncated mid-dataset": (truncated_hdf5, [], r"volume\.h5: not a readable HDF5 file \(.*truncated file"),
    "truncated MRC": (truncated_mrc, [], r"volume\.mrc: the header declares 8 x 32 x 32 .* holds 7,680 after the header"),
    "a TIFF named .mrc": (tiff_named_mrc, [], r"raw\.mrc: not an MRC file \(its header has no 'MAP' identifier"),
    "zarr with a corrupt chunk": (zarr_corrupt_chunk, [], r"volume\.zarr: cannot read the region \[0:8, 0:32, 0:32\]"),
    "zarr with missing chunks, strict": (zarr_missing_chunks, ["--strict-chunks"],
                                         r"volume\.zarr: 2 of 8 chunks are missing .* index \(0, 1, 1\).*--strict-chunks"),
    "slice folder with a gap": (slices_with_a_gap, [],
                                r"slice 2 of the numbered sequence is missing \(01\.tif is followed by 03\.tif\)"),
    "slices of two sizes": (slices_of_two_sizes, [], r"02\.tif: slice is 16 x 32 uint8, but 00\.tif is 32 x 32"),
    "voxel size 0 in the metadata": (zero_voxel_size, [],
                                     r"zero\.tif: the metadata gives a voxel size for z that is not a positive.*--voxel-size"),
    "voxel size NaN in the metadata": (nan_voxel_size, [], r"nan\.h5: the metadata gives a voxel size for y"),
}


def read_only_folder(tmp_path: Path, monkeypatch) -> Path:
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):  # root ignores the mode: refuse what the kernel would refuse anyone else
        for name in ("mkdir", "open"):  # a folder, a file
            monkeypatch.setattr(os, name, _refusing_in(folder, getattr(os, name)))
    return folder / "seg.ome.zarr"


def _refusing_in(folder: Path, create):
    def refuse(path, *args, **kwargs):
        if Path(path).parent == folder:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return create(path, *args, **kwargs)

    return refuse


def _disk_full(monkeypatch, method: str, after: int = 0) -> None:
    """Make the label writer's ``method`` fail as on a full disk from its call number ``after + 1`` on."""
    original, calls = getattr(OmeZarrLabelWriter, method), []

    def fail(self, *args):
        calls.append(args)
        if len(calls) > after:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original(self, *args)

    monkeypatch.setattr(OmeZarrLabelWriter, method, fail)


def disk_full_at_the_start(tmp_path: Path, monkeypatch) -> Path:
    _disk_full(monkeypatch, "_create")
    return tmp_path / "seg.ome.zarr"


def disk_full_after_two_blocks(tmp_path: Path, monkeypatch) -> Path:
    _disk_full(monkeypatch, "_write", after=2)
    return tmp_path / "seg.ome.zarr"


#: (set-up of an intact run's output path, words the one line must contain, whether finished work is kept)
OUTPUT_FAULTS = {
    "read-only output folder": (read_only_folder,
                                r"seg\.ome\.zarr: cannot write the output: Permission denied \(.*read-only/seg\.ome\.zarr"
                                r"\.partial\); write to a folder you may write to$", False),
    "disk full when the output is created": (disk_full_at_the_start,
                                             r"seg\.ome\.zarr: cannot write the output: no space left on the device; "
                                             r"free some space or write elsewhere$", False),
    "disk full after 2 of 8 blocks": (disk_full_after_two_blocks,
                                      r"no space left on the device; free some space or write elsewhere; "
                                      r"kept the finished work in .*seg\.ome\.zarr\.partial; rerun the same command", True),
}

#: The run of every output fault: 8 blocks, so a run can stop with finished blocks.
SEGMENT_OPTIONS = ["-k", "2", "--block-shape", "4", "16", "16", "--quiet"]


def _one_error_line(capsys, command: str, pattern: str) -> None:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"orgaseg {command}: error: ")
    assert re.search(pattern, lines[0]), lines[0]


@pytest.mark.parametrize("case", FAULTS)
def test_a_broken_input_is_one_line_and_exit_2(tmp_path, capsys, case):
    build, options, pattern = FAULTS[case]
    path = build(tmp_path)
    assert main(["info", str(path), "--quiet", *options]) == 2
    _one_error_line(capsys, "info", pattern)
    output = tmp_path / "out.ome.zarr"
    assert main(["segment", str(path), "-o", str(output), "-k", "2", "--quiet", *options]) == 2
    _one_error_line(capsys, "segment", pattern)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("out.ome.zarr")]


@pytest.mark.parametrize("case", OUTPUT_FAULTS)
def test_an_unwritable_output_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, case):
    prepare, pattern, kept = OUTPUT_FAULTS[case]
    raw = _intact(tmp_path)
    output = prepare(tmp_path, monkeypatch)
    args = ["segment", str(raw), "-o", str(output), *SEGMENT_OPTIONS]
    assert main(args) == 2
    _one_error_line(capsys, "segment", pattern)
    partial = f"{output.name}.partial"
    assert [p.name for p in output.parent.iterdir() if p.name.startswith(output.name)] == ([partial] if kept else [])
    if kept:  # space freed: the same command resumes, to the labels of a run that never stopped
        monkeypatch.undo()
        assert main(args) == 0
        assert read_provenance(output)["blocks"]["skipped"] == 2
        assert main(["segment", str(raw), "-o", str(tmp_path / "whole.ome.zarr"), *SEGMENT_OPTIONS]) == 0
        np.testing.assert_array_equal(open_volume(output).read(), open_volume(tmp_path / "whole.ome.zarr").read())


def test_finished_work_kept_after_an_output_fault_is_said_in_python_words_to_a_python_caller(tmp_path, monkeypatch):
    raw = _intact(tmp_path)
    output = disk_full_after_two_blocks(tmp_path, monkeypatch)
    with pytest.raises(OrgasegError) as failed:
        orgaseg.segment(raw, k=2, output=output, block_shape=(4, 16, 16))
    kept = f"; kept the finished work in {output}.partial; "
    assert str(failed.value).endswith(f"{kept}call it again with the same arguments to resume")
    assert failed.value.for_command_line().endswith(f"{kept}rerun the same command to resume")


@pytest.mark.parametrize("command", [["train", "--method", "maester", "--preset", "tiny", "--steps", "2"],
                                     ["train", "--method", "sccs", "--preset", "tiny", "--steps", "2"],
                                     ["crop", "--region", ":", ":", ":"]])
def test_train_and_crop_refuse_an_unwritable_output_before_any_work(tmp_path, capsys, monkeypatch, command):
    from orgaseg import training

    raw = _intact(tmp_path)
    output = read_only_folder(tmp_path, monkeypatch).with_suffix(".tif" if command[0] == "crop" else ".pt")
    monkeypatch.setattr(training, "run_training", lambda *args, **kwargs: pytest.fail("trained before the check"))
    assert main([command[0], str(raw), *command[1:], "-o", str(output), "--quiet"]) == 2
    _one_error_line(capsys, command[0], rf"{output.name}: cannot write the output: Permission denied \(.*read-only"
                                        r"/\.tmp-writable-.*\); write to a folder you may write to$")
    assert list(output.parent.iterdir()) == []


def test_no_command_replaces_its_own_input_even_with_overwrite(tmp_path, capsys):
    raw = _intact(tmp_path)
    before = raw.read_bytes()
    assert main(["segment", str(raw), "-o", str(raw), "--overwrite", *SEGMENT_OPTIONS]) == 2
    _one_error_line(capsys, "segment", "is also an input of this run")
    assert raw.read_bytes() == before
    seg = tmp_path / "seg.ome.zarr"
    assert main(["segment", str(raw), "-o", str(seg), *SEGMENT_OPTIONS]) == 0
    labels = open_volume(seg).read()
    (tmp_path / "points.csv").write_text("z,y,x,name\n0,2,2,a\n1,10,10,b\n")
    for args in (["name", str(seg), "--points", str(tmp_path / "points.csv"), "-o", str(seg)],
                 ["name", str(seg), "--points", str(tmp_path / "points.csv"), "--refine", "-o", str(raw)],
                 # without --refine, name does not read the raw volume, but the segmentation's provenance names it
                 ["name", str(seg), "--points", str(tmp_path / "points.csv"), "-o", str(raw)],
                 ["instances", str(seg), "-o", str(seg)]):
        assert main([*args, "--overwrite", "--quiet"]) == 2
        _one_error_line(capsys, args[0], "is also an input of this run")
    assert raw.read_bytes() == before
    np.testing.assert_array_equal(open_volume(seg).read(), labels)


def test_a_name_that_is_not_utf8_is_read_and_written_as_given(tmp_path, capsysbinary):
    raw = _intact(tmp_path, os.fsdecode(b"raw\xff.tif"))
    output = tmp_path / os.fsdecode(b"seg\xff.ome.zarr")
    assert main(["info", str(raw), "--quiet"]) == 0
    assert main(["segment", str(raw), "-o", str(output), "-k", "2", "--quiet"]) == 0
    printed = capsysbinary.readouterr()
    assert printed.err == b""
    # stdout gives the names' own bytes back, so a script reading it finds the files
    assert os.fsencode(raw) in printed.out and os.fsencode(output) in printed.out
    assert open_volume(output).shape == SHAPE
    assert read_provenance(output)["input"]["path"] == str(raw)


def test_missing_chunks_warn_with_their_count_and_the_first_index(tmp_path, capsys):
    path = zarr_missing_chunks(tmp_path)
    with pytest.warns(MissingChunksWarning, match=r"2 of 8 chunks are missing .*index \(0, 1, 1\) along zyx.*"
                                                  r"fill value 0"):
        assert main(["info", str(path), "--quiet"]) == 0
    assert "shape:       8 x 32 x 32" in capsys.readouterr().out
    with pytest.raises(OrgasegError, match="strict_chunks"):
        open_volume(path, strict_chunks=True)


def test_a_complete_store_and_orgaseg_outputs_have_no_missing_chunks(tmp_path):
    labels = np.zeros(SHAPE, dtype=np.uint8)  # label 0 only: zarr would skip such chunks by default
    outputs = [_zarr(tmp_path), write_labels(tmp_path / "seg.ome.zarr", labels, voxel_size=(1, 1, 1), provenance={})]
    with warnings.catch_warnings():
        warnings.simplefilter("error", MissingChunksWarning)
        for path in outputs:
            open_volume(path, voxel_size=(1, 1, 1))


def test_tifffile_log_lines_go_to_debug(tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(OrgasegError):
        open_volume(truncated_imagej(tmp_path))
    # tifffile's logger does not propagate (its handler is the relay): nothing reaches the root's handlers or
    # the terminal. pytest >= 9.2 adds its capture handlers to loggers that do not propagate, so caplog holds
    # tifffile's records too: ask the logger itself
    assert logging.getLogger("tifffile").propagate is False
    terminal = capfd.readouterr()
    # an earlier CLI test may leave its root handler: the relayed debug lines may print, tifffile's own never
    raw = [line for line in (terminal.out + terminal.err).splitlines()
           if "invalid page offset" in line and "tifffile error:" not in line]
    assert not raw
    relayed = [r for r in caplog.records if r.name == "orgaseg.io.tifffile"]
    assert relayed and {r.levelno for r in relayed} == {logging.DEBUG}
    assert any("invalid page offset" in r.getMessage() for r in relayed)


def test_intact_files_still_open(tmp_path):
    stack = _stack()
    tifffile.imwrite(tmp_path / "ij.tif", stack, imagej=True, resolution=(0.25, 0.25),
                     metadata={"spacing": 50, "unit": "nm", "axes": "ZYX"})
    tifffile.imwrite(tmp_path / "ome.ome.tif", stack, ome=True, compression="zlib",
                     metadata={"axes": "ZYX", "PhysicalSizeZ": 0.05, "PhysicalSizeY": 0.004, "PhysicalSizeX": 0.004})
    for name in ("ij.tif", "ome.ome.tif"):
        volume = open_volume(tmp_path / name)
        assert volume.voxel_size == pytest.approx((50, 4, 4))
        np.testing.assert_array_equal(volume.read(), stack)
    # every tenth section is a complete sequence
    folder = tmp_path / "tenth"
    folder.mkdir()
    for z in (0, 10, 20):
        Image.fromarray(np.full((4, 5), z, dtype=np.uint8)).save(folder / f"sec_{z:04d}.png")
    assert open_volume(folder, voxel_size=(1, 1, 1)).read()[:, 0, 0].tolist() == [0, 10, 20]


#: Signals at random moments: a cell of 24 blocks, segmented on two dask worker processes.
CELL_OPTIONS = ["-k", "4", "--scales-nm", "20", "40", "--sample-size", "3000", "--block-shape", "2", "32", "32", "--quiet"]
CELL_BLOCKS = 24


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    """A synthetic cell and the labels of an uninterrupted (serial: the executor changes no label) run."""
    folder = tmp_path_factory.mktemp("signals")
    raw = folder / "raw.tif"
    tifffile.imwrite(raw, make_cell((12, 64, 64), voxel_size=(20.0, 20.0, 20.0), seed=0).raw, imagej=True,
                     resolution=(50.0, 50.0), metadata={"spacing": 0.02, "unit": "um", "axes": "ZYX"})
    assert main(["segment", str(raw), "-o", str(folder / "whole.ome.zarr"), *CELL_OPTIONS]) == 0
    return raw, open_volume(folder / "whole.ome.zarr").read()


def _segment_on_dask(raw: Path, output: Path, signum: int | None = None, after: int = 0):
    """Run ``orgaseg segment`` on 2 dask workers; send ``signum`` once ``after`` blocks are marked done.

    The run gets a session of its own and the signal goes to its process group,
    as Ctrl-C in a terminal or a batch scheduler's kill reaches the run and its
    workers alike. Returns the exit code, stdout and stderr.
    """
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(orgaseg.__file__).parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "orgaseg.cli", "segment", str(raw), "-o", str(output), *CELL_OPTIONS,
               "--workers", "2"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        if signum is not None:
            while len(block_markers(output)) < after and process.poll() is None:
                time.sleep(0.005)
            os.killpg(process.pid, signum)
        out, err = process.communicate(timeout=600)  # a hang fails instead of blocking the suite
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode, out, err


@pytest.mark.slow  # three dask start-ups: about a minute on a loaded 2-core machine
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_a_signal_at_a_random_moment_on_dask_workers_then_a_rerun_gives_the_same_labels(cell, tmp_path, signum):
    raw, labels = cell
    output = tmp_path / "seg.ome.zarr"
    after = int(np.random.default_rng(int(signum)).integers(1, CELL_BLOCKS // 2))  # seeded: a failure reruns alike
    code, _, err = _segment_on_dask(raw, output, signum, after)
    finished = len(block_markers(output))
    assert not output.exists() and after <= finished < CELL_BLOCKS, f"signalled too late: {finished} blocks done"
    if signum == signal.SIGINT:
        assert code == 130 and err.splitlines()[-1] == (f"orgaseg segment: interrupted; kept the finished work in "
                                                        f"{output}.partial; rerun the same command to resume"), err
    else:
        assert code == -signal.SIGKILL

    code, out, err = _segment_on_dask(raw, output)
    assert code == 0, err
    assert f"resumed: {finished} of {CELL_BLOCKS} blocks were done" in out
    assert read_provenance(output)["blocks"]["computed"] == CELL_BLOCKS - finished
    np.testing.assert_array_equal(open_volume(output).read(), labels)


@pytest.mark.slow
def test_ctrl_c_on_dask_workers_prints_only_what_orgaseg_says(cell, tmp_path):
    output = tmp_path / "seg.ome.zarr"
    code, _, err = _segment_on_dask(cell[0], output, signal.SIGINT, after=4)
    assert code == 130
    said = [line for line in err.splitlines() if not line.startswith("warning: ")]  # (the small blocks' cost)
    assert said == [(f"orgaseg segment: interrupted; kept the finished work in {output}.partial; rerun the same "
                     "command to resume")]
