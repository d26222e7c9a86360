"""One thread for the computations whose result must not depend on the machine or the executor.

Multi-threaded reductions add in an order that depends on the number of
threads, so scikit-learn's k-means (OpenMP) and torch's CPU kernels return
slightly different numbers on 1 and on 2 threads: on vnc, k-means centres
moved by 1e-7 and one voxel in 8.4 million changed its label between the
serial executor (this process: all cores) and dask workers (one thread each,
and the dask parent sets ``OMP_NUM_THREADS=1``). Fitting and applying a
clusterer are small next to computing features, so they run on one thread:
the same sample and seed then give the same labels on a laptop, a 64-core
node, serially or on dask. Feature extraction keeps every thread.

threadpoolctl limits only the libraries already loaded when the limit is
set, so :func:`one_thread` loads scikit-learn's OpenMP runtime (and torch,
when asked) before it sets the limit.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def one_thread(*, load_torch: bool = False) -> Iterator[None]:
    """Limit OpenMP and BLAS thread pools, and torch's, to one thread inside the ``with`` block.

    Parameters
    ----------
    load_torch : bool
        Import torch first (for code that would import it inside the block);
        otherwise torch is limited only if something imported it already.
    """
    import sklearn.cluster  # noqa: F401  (loads scikit-learn's OpenMP runtime: a limit reaches only loaded ones)
    from threadpoolctl import threadpool_limits

    if load_torch:
        import torch  # noqa: F401
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(limits=1):
        if torch is not None:
            torch.set_num_threads(1)
        try:
            yield
        finally:
            if torch is not None:
                torch.set_num_threads(before)
