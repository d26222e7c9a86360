"""Where blocks run: in this thread, in a thread pool, or on dask.distributed workers.

An executor only changes *where* a block function runs, never what it
computes, so every executor gives the same output voxel for voxel. All of
them share one interface, :meth:`Executor.map`: call
``fn(*shared, *args)`` for each item and yield ``(item, result)`` as items
finish, in any order. ``shared`` objects (the block job with its encoder,
the fitted models) are sent to each worker once, not per block. At most a
small window of items is in flight, so results waiting to be written (and
the memory they hold) stay bounded whatever the number of blocks.

Choose one with :func:`make_executor` (the command line's ``--workers``,
``--threads-per-worker``, ``--executor`` and ``--scheduler``).
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from orgaseg.errors import OrgasegError, arg

#: Items in flight per parallel slot (keeps every worker busy while results are written).
WINDOW_PER_SLOT = 2

#: Seconds to wait for a dask scheduler before giving up.
CONNECT_TIMEOUT_S = 10

EXECUTORS = ("serial", "threads", "dask")


class Executor:
    """Runs block functions; subclasses decide where. Use as a context manager."""

    name = "executor"
    slots = 1
    #: Blocks run in this process, so they share its memory (the features a run keeps between its passes).
    in_process = True

    def map(self, fn: Callable, shared: Sequence[Any], items: Iterable[tuple[Any, tuple]]) -> Iterator[tuple[Any, Any]]:
        """Yield ``(key, fn(*shared, *args))`` for each ``(key, args)`` in ``items``, as they finish."""
        raise NotImplementedError

    def describe(self) -> dict:
        """For the provenance record."""
        return {"kind": self.name, "slots": self.slots}

    def forget(self) -> None:
        """Drop the ``shared`` objects sent so far (workers free them); the next map sends its own."""

    def close(self) -> None:
        """Release workers (a cluster this executor started)."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _windowed(self, submit: Callable, finished: Callable, items: Iterable[tuple[Any, tuple]]):
        """Keep ``slots * WINDOW_PER_SLOT`` futures in flight; yield ``(key, result)`` as they finish.

        ``submit(*args)`` returns a future; ``finished(futures)`` returns those of
        ``futures`` that are done, waiting for at least one.
        """
        items = iter(items)
        pending: dict = {}

        def top_up() -> None:
            while len(pending) < self.slots * WINDOW_PER_SLOT:
                item = next(items, None)
                if item is None:
                    return
                key, args = item
                pending[submit(*args)] = key

        try:
            top_up()
            while pending:
                for future in finished(list(pending)):
                    key = pending.pop(future)
                    result = future.result()  # re-raises the block's exception here
                    top_up()
                    yield key, result
        finally:
            for future in pending:
                future.cancel()


class SerialExecutor(Executor):
    """Blocks one after another in the calling thread (the default)."""

    name = "serial"

    def map(self, fn, shared, items):
        for key, args in items:
            yield key, fn(*shared, *args)


class ThreadExecutor(Executor):
    """A pool of threads in this process: no copies of the encoder, but shares the GIL."""

    name = "threads"

    def __init__(self, threads: int) -> None:
        self.slots = _positive(threads, "workers")

    def map(self, fn, shared, items):
        def finished(futures):
            return concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_COMPLETED).done

        with concurrent.futures.ThreadPoolExecutor(max_workers=self.slots) as pool:
            yield from self._windowed(lambda *args: pool.submit(fn, *shared, *args), finished, items)


class _DropCancelOfUnstartedCall(logging.Filter):
    """Drops tornado's report of distributed's cancel of a call that Ctrl-C interrupted before it started.

    ``distributed.utils.sync`` answers Ctrl-C by scheduling a ``cancel`` of the call on its event loop; when the
    call had not started yet, ``cancel`` reads a future that was never assigned, and tornado logs the NameError
    with a traceback (distributed 2026.8), above orgaseg's own "interrupted" line. The call never ran, so there
    is nothing to cancel and nothing worth a word.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, NameError) or error.__traceback__ is None:
            return True
        last = error.__traceback__
        while last.tb_next is not None:
            last = last.tb_next
        code = last.tb_frame.f_code
        return not (code.co_name == "cancel" and code.co_filename.endswith(os.path.join("distributed", "utils.py")))


def quiet_cancel_of_unstarted_calls() -> None:
    """Install :class:`_DropCancelOfUnstartedCall` on tornado's callback log (once)."""
    logger = logging.getLogger("tornado.application")
    if not any(isinstance(f, _DropCancelOfUnstartedCall) for f in logger.filters):
        logger.addFilter(_DropCancelOfUnstartedCall())


class DaskExecutor(Executor):
    """dask.distributed: a local cluster of worker processes, or an existing scheduler.

    Parameters
    ----------
    client : distributed.Client
        Connected client.
    cluster : distributed.LocalCluster, optional
        The cluster this executor started (closed with it).
    """

    name = "dask"
    in_process = False

    def __init__(self, client, cluster=None) -> None:
        quiet_cancel_of_unstarted_calls()
        self.client = client
        self.cluster = cluster
        self._scattered: dict[int, tuple[Any, Any]] = {}

    @classmethod
    def local(cls, workers: int, threads_per_worker: int = 1) -> "DaskExecutor":
        """Start a ``LocalCluster`` of ``workers`` processes with ``threads_per_worker`` threads each."""
        from distributed import Client, LocalCluster

        workers = _positive(workers, "workers")
        threads_per_worker = _positive(threads_per_worker, "threads_per_worker")
        quiet_cancel_of_unstarted_calls()  # Ctrl-C while the cluster starts
        # the scheduler and nannies run in this process and log every start and stop at INFO
        logging.getLogger("distributed").setLevel(logging.ERROR)
        # worker processes inherit an ignored SIGINT (Python then installs no KeyboardInterrupt handler in them):
        # Ctrl-C reaches this process alone, which stops the run and closes the cluster, instead of every
        # worker printing its own traceback
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if _main_thread() else None
        try:
            cluster = LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
                                   dashboard_address=":0", silence_logs=logging.ERROR)  # any free port
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        return cls(Client(cluster), cluster)

    @classmethod
    def connect(cls, address: str) -> "DaskExecutor":
        """Join a running scheduler (e.g. one that dask-jobqueue started on SLURM or LSF)."""
        from distributed import Client

        quiet_cancel_of_unstarted_calls()  # Ctrl-C while connecting
        try:
            client = Client(address, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError) as err:
            raise OrgasegError(f"cannot reach the dask scheduler at {address!r}: {err}") from None
        return cls(client)

    @property
    def slots(self) -> int:
        return max(1, sum(self.client.nthreads().values()))

    def describe(self) -> dict:
        return {"kind": self.name, "workers": len(self.client.nthreads()), "slots": self.slots,
                "scheduler": self.client.scheduler.address if self.cluster is None else "local"}

    def _scatter(self, value: Any):
        """A future of ``value`` held by every worker; each object is sent once per executor."""
        entry = self._scattered.get(id(value))
        if entry is None:
            try:
                future = self.client.scatter(value, broadcast=True, hash=False)
            except Exception as err:  # pickling failures come as several types
                raise OrgasegError(
                    f"cannot send {type(value).__name__} to dask workers ({type(err).__name__}: {err}); "
                    f"give the input as a path so workers can open it, or the threads executor ({arg('executor')})"
                ) from None
            entry = (value, future)  # holding value keeps its id from being reused
            self._scattered[id(value)] = entry
        return entry[1]

    def forget(self) -> None:
        self._scattered.clear()  # releasing the futures lets the workers drop their copies

    def map(self, fn, shared, items):
        import distributed

        shared_futures = [self._scatter(value) for value in shared]

        def finished(futures):
            return distributed.wait(futures, return_when="FIRST_COMPLETED").done

        yield from self._windowed(lambda *args: self.client.submit(fn, *shared_futures, *args, pure=False),
                                  finished, items)

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def make_executor(
    kind: str | None = None,
    *,
    workers: int = 1,
    threads_per_worker: int = 1,
    scheduler: str | None = None,
) -> Executor:
    """The executor for the command line's choices.

    Parameters
    ----------
    kind : {"serial", "threads", "dask"}, optional
        Default: ``dask`` with a scheduler address or more than one worker,
        else ``serial``.
    workers : int
        Threads (``threads``) or worker processes of a local cluster (``dask``).
    threads_per_worker : int
        Threads in each local dask worker (more than one is refused where no local dask workers are started).
    scheduler : str, optional
        Address of a running dask scheduler (``tcp://host:8786``); implies dask.

    Returns
    -------
    Executor
    """
    workers = _positive(workers, "workers")
    threads_per_worker = _positive(threads_per_worker, "threads_per_worker")
    if kind is None:
        kind = "dask" if scheduler is not None or workers > 1 else "serial"
    if kind not in EXECUTORS:
        raise OrgasegError(f"unknown executor {kind!r}; choose one of {', '.join(EXECUTORS)}")
    if scheduler is not None and kind != "dask":
        raise OrgasegError(f"{arg('scheduler')} needs the dask executor, not {kind!r}")
    if threads_per_worker > 1 and (kind != "dask" or scheduler is not None):
        where = ("the workers of a running scheduler have their threads set where they were started"
                 if scheduler is not None else f"the {kind} executor starts none (threads: {arg('workers')})")
        raise OrgasegError(f"{arg('threads_per_worker')} sets the threads of the local dask workers this run "
                           f"starts; {where}")
    if kind == "serial":
        if workers > 1:
            raise OrgasegError(f"the serial executor runs one block at a time; {workers} workers need threads or dask ({arg('executor')})")
        return SerialExecutor()
    if kind == "threads":
        return ThreadExecutor(workers)
    if scheduler is not None:
        return DaskExecutor.connect(scheduler)
    return DaskExecutor.local(workers, threads_per_worker)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()  # signal handlers can only be set there


def _positive(value: int, option: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise OrgasegError(f"{arg(option)} must be a positive whole number, got {value!r}")
    return value
