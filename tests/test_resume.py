"""Resume: an interrupted run (even by SIGKILL) finishes to the same output, computing only what is missing."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

import orgaseg
from orgaseg.cli import main
from orgaseg.io import open_volume, read_provenance
from orgaseg.segmentation import segment
from orgaseg.synthetic import make_cell

from partial_outputs import block_markers

OPTIONS = {"scales_nm": (20.0, 40.0)}
SHAPE, BLOCK, N_BLOCKS = (12, 64, 64), (2, 32, 32), 24


@pytest.fixture(scope="module")
def raw_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("resume") / "raw.tif"
    cell = make_cell(SHAPE, voxel_size=(20.0, 20.0, 20.0), seed=0)
    tifffile.imwrite(path, cell.raw, imagej=True, resolution=(50.0, 50.0),
                     metadata={"spacing": 0.02, "unit": "um", "axes": "ZYX"})
    return path


@pytest.fixture(scope="module")
def uninterrupted(raw_path, tmp_path_factory):
    """Labels of uninterrupted runs, by K."""
    return {k: segment(raw_path, k=k, options=OPTIONS, sample_size=3000, block_shape=BLOCK).labels for k in (4, 5)}


class StopAfter:
    """A progress callback that interrupts the run after ``n`` labelled blocks, as Ctrl-C would."""

    def __init__(self, n):
        self.n = n

    def __call__(self, description, done, total, **figures):
        if description == "labelling blocks" and done >= self.n:
            raise KeyboardInterrupt


def _run(raw_path, out, k=4, **kw):
    return segment(raw_path, k=k, output=out, options=OPTIONS, sample_size=3000, block_shape=BLOCK, **kw)


@pytest.mark.parametrize("name", ["seg.ome.zarr", "seg.tif"])
def test_interrupted_run_resumes_with_the_same_centres_and_only_missing_blocks(raw_path, uninterrupted, tmp_path, name):
    out = tmp_path / name
    with pytest.raises(KeyboardInterrupt) as stopped:
        _run(raw_path, out, progress=StopAfter(10))
    assert not out.exists() and len(block_markers(out)) == 10
    # the note speaks to the Python caller; the command line prints it in its own words (tests/test_faults.py)
    assert stopped.value.__notes__ == [(f"kept the finished work in {out}.partial; call it again with the same "
                                        "arguments to resume")]
    assert stopped.value.__notes__[0].for_command_line() == (f"kept the finished work in {out}.partial; rerun the "
                                                             "same command to resume")
    result = _run(raw_path, out)
    assert result.provenance["blocks"] == {"shape": list(BLOCK), "blocks": N_BLOCKS, "computed": N_BLOCKS - 10, "skipped": 10}
    assert "sampling_s" not in result.provenance["timings"]  # the stored clusterer was reused, not refitted
    np.testing.assert_array_equal(open_volume(out).read(), uninterrupted[4])
    # the voxels per cluster count the blocks of both runs
    assert result.provenance["label_voxels"] == np.bincount(uninterrupted[4].ravel(), minlength=4).tolist()
    assert sorted(p.name for p in tmp_path.iterdir()) == [name, f"{name}.provenance.json"]


def test_changed_k_overwrite_or_a_stale_marker_recompute(raw_path, uninterrupted, tmp_path):
    changed_k, overwritten, stale = (tmp_path / f"{name}.ome.zarr" for name in ("k", "overwrite", "stale"))
    for out in (changed_k, overwritten, stale):
        with pytest.raises(KeyboardInterrupt):
            _run(raw_path, out, progress=StopAfter(8))

    result = _run(raw_path, changed_k, k=5)  # another K: nothing of the K = 4 run may survive
    assert result.provenance["blocks"]["skipped"] == 0 and result.provenance["blocks"]["computed"] == N_BLOCKS
    np.testing.assert_array_equal(open_volume(changed_k).read(), uninterrupted[5])

    # --overwrite replaces a finished output; an interrupted --overwrite run resumes when rerun the same way
    finished = _run(raw_path, overwritten, overwrite=True)
    assert finished.provenance["blocks"]["skipped"] == 8
    with pytest.raises(KeyboardInterrupt):
        _run(raw_path, overwritten, progress=StopAfter(5), overwrite=True)
    again = _run(raw_path, overwritten, overwrite=True)
    assert again.provenance["blocks"]["skipped"] == 5
    np.testing.assert_array_equal(open_volume(overwritten).read(), uninterrupted[4])

    marker = block_markers(stale)[0]
    marker.write_text(json.dumps({"signature": "of another run"}))
    assert _run(raw_path, stale).provenance["blocks"]["skipped"] == 7  # its block was recomputed
    np.testing.assert_array_equal(open_volume(stale).read(), uninterrupted[4])


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM])
def test_a_kill_mid_run_then_rerun_is_identical_and_computes_only_unfinished_blocks(raw_path, uninterrupted, tmp_path,
                                                                                   stop):
    """SIGKILL leaves the run as it was; SIGTERM (a batch system's time limit) is handled as Ctrl-C."""
    out = tmp_path / "seg.ome.zarr"
    args = ["segment", str(raw_path), "-k", "4", "-o", str(out), "--scales-nm", "20", "40", "--sample-size", "3000",
            "--block-shape", *map(str, BLOCK), "--quiet"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(orgaseg.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    process = subprocess.Popen([sys.executable, "-m", "orgaseg.cli", *args], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(block_markers(out)) < 4 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(process.pid, stop)
    _, err = process.communicate()
    finished = len(block_markers(out))
    assert not out.exists() and 4 <= finished < N_BLOCKS, f"killed too late or too early: {finished} blocks marked"
    if stop == signal.SIGTERM:
        assert process.returncode == 143 and err.splitlines()[-1] == (
            f"orgaseg segment: terminated (SIGTERM); kept the finished work in {out}.partial; rerun the same command "
            "to resume")
        assert not (tmp_path / "seg.ome.zarr.partial" / "lock.json").exists()  # released, as after Ctrl-C

    assert main(args) == 0
    blocks = read_provenance(out)["blocks"]
    assert blocks["skipped"] == finished and blocks["computed"] == N_BLOCKS - finished
    np.testing.assert_array_equal(open_volume(out).read(), uninterrupted[4])


def test_a_changed_input_starts_afresh(raw_path, tmp_path, caplog):
    import shutil

    raw = tmp_path / "raw.tif"
    shutil.copy(raw_path, raw)
    out = tmp_path / "seg.ome.zarr"
    with pytest.raises(KeyboardInterrupt):
        _run(raw, out, progress=StopAfter(8))
    stat = raw.stat()
    os.utime(raw, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # rewritten, as far as a file's time says
    with caplog.at_level(logging.WARNING):
        assert _run(raw, out).provenance["blocks"]["skipped"] == 0
    assert "run with other settings" in caplog.text


def test_a_zarr_input_whose_chunks_were_rewritten_starts_afresh(tmp_path):
    """Zarr v3 (and NGFF's '/' chunk keys) keep chunks in nested folders: a rewritten chunk is a changed input."""
    import zarr

    cell = make_cell(SHAPE, voxel_size=(20.0, 20.0, 20.0), seed=0)
    raw = tmp_path / "raw.zarr"
    zarr.create_array(str(raw), shape=SHAPE, chunks=(4, 32, 32), dtype=cell.raw.dtype)[:] = cell.raw
    out = tmp_path / "seg.ome.zarr"
    with pytest.raises(KeyboardInterrupt):
        _run(raw, out, progress=StopAfter(8), voxel_size=(20.0, 20.0, 20.0))
    array = zarr.open_array(str(raw), mode="r+")
    # two chunks swapped: the data of the first blocks changes, not the histogram (nor the normalisation)
    first, last = array[:4, :32, :32], array[:4, 32:, 32:]
    array[:4, :32, :32], array[:4, 32:, 32:] = last, first
    result = _run(raw, out, voxel_size=(20.0, 20.0, 20.0))
    assert result.provenance["blocks"]["skipped"] == 0
    expected = segment(raw, k=4, options=OPTIONS, sample_size=3000, block_shape=BLOCK,
                       voxel_size=(20.0, 20.0, 20.0)).labels
    np.testing.assert_array_equal(open_volume(out).read(), expected)


def test_another_channel_or_axis_order_of_the_same_file_starts_afresh(tmp_path):
    """The file and its shape are the same, what is read from it is not: nothing of the first run may survive."""
    cell = make_cell(SHAPE, voxel_size=(20.0, 20.0, 20.0), seed=0)
    raw = tmp_path / "raw.tif"
    tifffile.imwrite(raw, np.stack([cell.raw, cell.raw.max() - cell.raw], axis=1), imagej=True,
                     resolution=(50.0, 50.0), metadata={"spacing": 0.02, "unit": "um", "axes": "ZCYX"})
    pairs = ({"channel": 0}, {"channel": 1}), ({"channel": 0, "axes": "zcyx"}, {"channel": 0, "axes": "zcxy"})
    for n, (first, second) in enumerate(pairs):
        out = tmp_path / f"seg{n}.ome.zarr"
        with pytest.raises(KeyboardInterrupt):
            _run(raw, out, progress=StopAfter(8), **first)
        result = _run(raw, out, **second)
        assert result.provenance["blocks"]["skipped"] == 0
        expected = segment(raw, k=4, options=OPTIONS, sample_size=3000, block_shape=BLOCK, **second).labels
        np.testing.assert_array_equal(open_volume(out).read(), expected)


def test_a_second_run_on_the_same_output_is_refused_while_the_first_lives(raw_path, tmp_path):
    out = tmp_path / "seg.ome.zarr"
    with pytest.raises(KeyboardInterrupt):
        _run(raw_path, out, progress=StopAfter(8))
    lock = tmp_path / "seg.ome.zarr.partial" / "lock.json"
    assert not lock.exists()  # an interrupted run lets the next one in
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(json.dumps({"pid": other.pid, "host": __import__("socket").gethostname()}))
        with pytest.raises(orgaseg.OrgasegError, match=f"another orgaseg run \\(process {other.pid}\\) is writing"):
            _run(raw_path, out)
        assert (tmp_path / "seg.ome.zarr.partial").is_dir()  # the other run's work is left alone
    finally:
        other.kill()
        other.wait()
    # the holder died (as after SIGKILL): its lock is taken over and the run resumes
    assert _run(raw_path, out).provenance["blocks"]["skipped"] > 0
    assert out.exists() and not lock.exists()


def test_a_run_stopped_before_it_recorded_its_settings_is_not_said_to_have_had_other_ones(tmp_path, caplog):
    from orgaseg.io.partial import PartialOutput

    out = tmp_path / "seg.ome.zarr"
    PartialOutput(out, overwrite=False, resume_key="key").release()  # stopped before commit_key
    with caplog.at_level(logging.WARNING):
        again = PartialOutput(out, overwrite=False, resume_key="key")
    assert not again.resumed and "stopped before it had written anything to resume" in caplog.text
    assert "other settings" not in caplog.text
    again.target.mkdir()
    again.commit_key()
    again.release()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert not PartialOutput(out, overwrite=False, resume_key="another key").resumed
    assert "run with other settings" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # a command that does not resume ("or without resume", it said)
        PartialOutput(out, overwrite=False, resume_key=None).release()
    assert "left by an earlier run, and this command does not resume one: starting afresh" in caplog.text


@pytest.mark.parametrize("counts", [
    [[900, 1100, 0, 48]],  # dense voxels per label, as markers kept them before (label, voxels) pairs (d503edd)
    [[[0, 900], [1]]],  # a damaged pair
    [[[-1, 900]]],  # a label no run writes
    [],  # no label volume
])
def test_a_marker_whose_voxel_counts_cannot_be_read_resumes_to_no_counts(raw_path, uninterrupted, tmp_path, counts):
    """The block's labels stand (its signature matches), only their count is unknown: None, not an error or a
    wrong count."""
    out = tmp_path / "seg.ome.zarr"
    with pytest.raises(KeyboardInterrupt):
        _run(raw_path, out, progress=StopAfter(6))
    marker = block_markers(out)[0]
    record = json.loads(marker.read_text())
    marker.write_text(json.dumps({**record, "label_voxels": counts}))
    result = _run(raw_path, out)
    assert result.provenance["blocks"]["skipped"] == 6
    np.testing.assert_array_equal(open_volume(out).read(), uninterrupted[4])
    assert result.provenance["label_voxels"] is None
