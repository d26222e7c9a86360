"""one_thread: fits run on one thread so their result does not depend on the machine or the executor."""

from orgaseg.threads import one_thread


def test_one_thread_limits_openmp_blas_and_torch_then_restores_them():
    import torch
    from threadpoolctl import threadpool_info

    before = torch.get_num_threads()
    with one_thread():
        assert torch.get_num_threads() == 1
        pools = threadpool_info()
        assert {pool["internal_api"] for pool in pools} >= {"openmp"}  # scikit-learn's runtime is loaded and limited
        assert all(pool["num_threads"] == 1 for pool in pools)
    assert torch.get_num_threads() == before


def test_one_thread_restores_torch_threads_after_an_error():
    import torch

    before = torch.get_num_threads()
    try:
        with one_thread(load_torch=True):
            raise ValueError("inside")
    except ValueError:
        pass
    assert torch.get_num_threads() == before
