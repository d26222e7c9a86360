"""Executors: serial, threads and dask give the same labels; errors are clear."""

import logging

import numpy as np
import pytest
import zarr

from orgaseg.errors import OrgasegError
from orgaseg.features.filterbank import FilterBank
from orgaseg.io import open_volume
from orgaseg.io.volume import Volume
from orgaseg.pipeline import executors
from orgaseg.pipeline.executors import DaskExecutor, SerialExecutor, ThreadExecutor, make_executor
from orgaseg.cluster import get_clusterer
from orgaseg.pipeline.runner import ArraySink, BlockJob, cluster_volume
from orgaseg.pipeline.tasks import VolumeSource
from orgaseg.synthetic import make_cell


class Scale:
    """A stand-in normalisation: uint8 to [0, 1]."""

    def apply(self, block):
        return block.astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def phantom_zarr(tmp_path_factory):
    """A phantom in a chunked Zarr array (workers reopen it from its path)."""
    path = tmp_path_factory.mktemp("exec") / "raw.zarr"
    raw = make_cell((8, 64, 64), voxel_size=(20.0, 20.0, 20.0), seed=0).raw
    array = zarr.create_array(str(path), shape=raw.shape, chunks=(2, 32, 32), dtype=raw.dtype, zarr_format=2)
    array[:] = raw
    return path


@pytest.fixture(scope="module")
def dask_executor():
    with DaskExecutor.local(workers=2) as executor:
        yield executor


def _segment(volume, executor, *, source=None, progress=None):
    bank = FilterBank(voxel_size=(20.0, 20.0, 20.0), scales_nm=(20.0, 40.0))
    sink = ArraySink(volume.shape, np.uint8)
    stats = {}
    job = BlockJob(source or VolumeSource(volume), Scale(), bank)
    (model,) = cluster_volume(job, get_clusterer("kmeans"), [sink], ks=[4], sample_size=3000,
                              block_shape=(2, 32, 32), executor=executor, stats=stats, progress=progress)
    return sink.array, model, stats


def test_serial_threads_and_dask_give_identical_labels(phantom_zarr, dask_executor):
    volume = open_volume(phantom_zarr, voxel_size=(20, 20, 20))
    source = VolumeSource.from_arguments(str(phantom_zarr), volume)
    serial, model, stats = _segment(volume, SerialExecutor())
    assert stats["blocks"] == 16 and len(np.unique(serial)) == 4
    threads, threads_model, _ = _segment(volume, ThreadExecutor(2))
    reports = []
    dask, dask_model, _ = _segment(volume, dask_executor, source=source,
                                   progress=lambda desc, done, total, **figures: reports.append((desc, done, figures)))
    np.testing.assert_array_equal(serial, threads)
    np.testing.assert_array_equal(serial, dask)
    np.testing.assert_array_equal(model.centers, dask_model.centers)  # the same sample wherever blocks ran
    labelled = [r for r in reports if r[0] == "labelling blocks"]
    # the bar starts at 0 before the first block, so a pass's time is measured from its start
    assert [r[1] for r in labelled] == list(range(17)) and labelled[-1][2]["voxels_per_s"] > 0


def test_dask_sends_the_job_to_each_worker_once(phantom_zarr, dask_executor, monkeypatch):
    volume = open_volume(phantom_zarr, voxel_size=(20, 20, 20))
    sent = []
    scatter = dask_executor.client.scatter
    monkeypatch.setattr(dask_executor.client, "scatter", lambda value, **kw: sent.append(type(value).__name__) or scatter(value, **kw))
    _segment(volume, dask_executor, source=VolumeSource.from_arguments(str(phantom_zarr), volume))
    # one job (input, normalisation, encoder) for both passes and one set of models, for 32 block tasks
    assert sorted(sent) == ["BlockJob", "tuple"]


class LockedArray:
    """An array behind a lock: it cannot be pickled (as some file handles cannot)."""

    def __init__(self, data):
        import threading

        self.data, self.lock = data, threading.Lock()
        self.shape, self.dtype = data.shape, data.dtype

    def __getitem__(self, key):
        with self.lock:
            return self.data[key]


def test_arrays_go_to_dask_workers_when_they_pickle_else_a_clear_error(dask_executor):
    raw = make_cell((4, 48, 48), voxel_size=(20.0, 20.0, 20.0), seed=1).raw
    in_memory = Volume(raw, voxel_size=(20.0, 20.0, 20.0))
    np.testing.assert_array_equal(_segment(in_memory, dask_executor)[0], _segment(in_memory, SerialExecutor())[0])
    locked = Volume(LockedArray(raw), voxel_size=(20.0, 20.0, 20.0))
    with pytest.raises(OrgasegError, match="cannot send BlockJob to dask workers.*give the input as a path"):
        _segment(locked, dask_executor)


def test_a_corrupt_chunk_names_its_block_under_every_executor(phantom_zarr, tmp_path, dask_executor):
    import shutil

    broken = tmp_path / "broken.zarr"
    shutil.copytree(phantom_zarr, broken)
    (broken / "2.1.0").write_bytes(b"not a blosc chunk")  # z 4:6, y 32:64, x 0:32
    volume = open_volume(broken, voxel_size=(20, 20, 20))
    for executor, source in ((SerialExecutor(), None), (dask_executor, VolumeSource.from_arguments(str(broken), volume))):
        with pytest.raises(OrgasegError, match=r"cannot read block \d+ \(z \d+:\d+, y \d+:\d+, x \d+:\d+, with halo\) of .*broken\.zarr"):
            _segment(volume, executor, source=source)


def test_make_executor_choices_and_errors(monkeypatch):
    assert isinstance(make_executor(), SerialExecutor)
    assert isinstance(make_executor("threads", workers=3), ThreadExecutor)
    for workers in (0, -2):
        with pytest.raises(OrgasegError, match="workers=N must be a positive whole number"):
            make_executor(workers=workers)
    with pytest.raises(OrgasegError, match="threads_per_worker=N must be a positive"):
        make_executor("dask", threads_per_worker=0)
    with pytest.raises(OrgasegError, match="serial executor runs one block at a time"):
        make_executor("serial", workers=2)
    with pytest.raises(OrgasegError, match="scheduler=ADDRESS needs the dask executor"):
        make_executor("threads", scheduler="tcp://127.0.0.1:1")
    # threads per worker are those of the local dask workers a run starts: elsewhere they were ignored
    for kind, workers in ((None, 1), ("serial", 1), ("threads", 2)):
        with pytest.raises(OrgasegError, match="threads_per_worker=N sets the threads of the local dask workers"):
            make_executor(kind, workers=workers, threads_per_worker=2)
    with pytest.raises(OrgasegError, match="workers of a running scheduler"):
        make_executor(scheduler="tcp://127.0.0.1:1", threads_per_worker=2)
    monkeypatch.setattr(executors, "CONNECT_TIMEOUT_S", 1)
    with pytest.raises(OrgasegError, match="cannot reach the dask scheduler at 'tcp://127.0.0.1:1'"):
        make_executor(scheduler="tcp://127.0.0.1:1")


def test_a_missing_slice_file_names_its_block(tmp_path):
    from PIL import Image

    raw = make_cell((6, 64, 64), voxel_size=(20.0, 20.0, 20.0), seed=2).raw
    for z, plane in enumerate(raw):
        Image.fromarray(plane).save(tmp_path / f"{z:02d}.png")
    volume = open_volume(tmp_path, voxel_size=(20, 20, 20))
    (tmp_path / "04.png").unlink()  # vanished after the stack was listed (a failed disk, a sync in progress)
    with pytest.raises(OrgasegError, match=r"cannot read block \d+ \(z \d+:\d+, y \d+:\d+, x \d+:\d+, with halo\) of .*FileNotFoundError.*04\.png"):
        _segment(volume, SerialExecutor())


def test_the_command_line_refuses_bad_worker_counts(phantom_zarr, tmp_path, capsys):
    from orgaseg.cli import main

    for workers in ("0", "-1"):
        assert main(["segment", str(phantom_zarr), "-o", str(tmp_path / "s.ome.zarr"), "--workers", workers]) == 2
        assert "--workers N must be a positive whole number" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_learned_encoder_gives_the_same_labels_on_dask_workers(dask_executor, tmp_path):
    from orgaseg import train
    from orgaseg.segmentation import segment

    raw = make_cell((4, 80, 80), voxel_size=(20.0, 20.0, 20.0), seed=3).raw
    path = tmp_path / "raw.npy"
    np.save(path, raw)
    checkpoint = tmp_path / "tiny.pt"
    train("maester", [Volume(raw, voxel_size=(20.0, 20.0, 20.0))], checkpoint, preset="tiny", steps=5, device="cpu")
    runs = [segment(path, method="maester", model=checkpoint, k=4, voxel_size=(20, 20, 20), sample_size=2000,
                    block_shape=(2, 40, 80), options={"keep": 16}, device="cpu", executor=executor)
            for executor in (SerialExecutor(), dask_executor)]
    np.testing.assert_array_equal(runs[0].labels, runs[1].labels)
    assert runs[1].provenance["executor"]["kind"] == "dask"


@pytest.mark.parametrize("clusterer", ["kmeans", "minibatch-kmeans"])
def test_the_fit_does_not_depend_on_the_thread_count(phantom_zarr, clusterer):
    """Parallel reductions add in a thread-dependent order: fits run on one thread, so serial (all cores) and
    dask workers (one thread each) agree."""
    import sklearn.cluster  # noqa: F401  (loaded before the limits below, which reach only loaded libraries)
    from threadpoolctl import threadpool_limits

    volume = open_volume(phantom_zarr, voxel_size=(20, 20, 20))
    bank = FilterBank(voxel_size=(20.0, 20.0, 20.0), scales_nm=(20.0, 40.0))
    centers = []
    for threads in (1, 2):
        with threadpool_limits(limits=threads):
            (model,) = cluster_volume(BlockJob(VolumeSource(volume), Scale(), bank), get_clusterer(clusterer),
                                      [ArraySink(volume.shape, np.uint8)], ks=[6], sample_size=30_000,
                                      block_shape=(2, 32, 32), options={"init_size": 20_000} if "mini" in clusterer else None)
        centers.append(model.centers)
    np.testing.assert_array_equal(*centers)


def _interrupt_a_call_before_it_starts(monkeypatch) -> None:
    """Ctrl-C in ``distributed.utils.sync``'s first wait, before its event loop starts the call; returns once the
    loop has run the ``cancel`` that sync schedules."""
    import threading
    import types

    import distributed.utils
    from distributed.utils import LoopRunner, sync

    class InterruptedEvent(threading.Event):
        def is_set(self):
            return False  # sync waits, however soon the call ends

        def wait(self, timeout=None):
            raise KeyboardInterrupt

    runner = LoopRunner(asynchronous=False)
    runner.start()
    gate = threading.Event()
    try:
        # the loop waits at the gate, so the call has not started when sync schedules its cancel behind it
        runner.loop.add_callback(gate.wait, 10)
        monkeypatch.setattr(distributed.utils, "threading",
                            types.SimpleNamespace(Event=InterruptedEvent, get_ident=threading.get_ident))

        async def call():
            return None

        with pytest.raises(KeyboardInterrupt):
            sync(runner.loop, call)
        monkeypatch.undo()
        gate.set()
        ran = threading.Event()
        runner.loop.add_callback(ran.set)  # after sync's cancel: the loop runs its callbacks in order
        assert ran.wait(10)
    finally:
        gate.set()
        runner.stop()


def test_ctrl_c_before_a_dask_call_starts_logs_no_traceback(monkeypatch, caplog):
    logger = logging.getLogger("tornado.application")
    kept = list(logger.filters)
    try:
        logger.filters = [f for f in kept if not isinstance(f, executors._DropCancelOfUnstartedCall)]
        _interrupt_a_call_before_it_starts(monkeypatch)
        if not any(r.name == "tornado.application" and r.exc_info for r in caplog.records):
            pytest.skip("this distributed cancels a call that has not started without an error")
        caplog.clear()
        executors.quiet_cancel_of_unstarted_calls()
        _interrupt_a_call_before_it_starts(monkeypatch)
        assert not [r for r in caplog.records if r.name == "tornado.application"]
        logger.error("Exception in callback", exc_info=ValueError("another error"))  # other errors still show
        assert [r.exc_info[0] for r in caplog.records] == [ValueError]
    finally:
        logger.filters = kept
