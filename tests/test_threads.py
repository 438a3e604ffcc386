"""ucadi.threads: one setting caps torch's and numpy's BLAS thread pools, and puts both back."""

import os

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from ucadi.threads import set_compute_threads


def _blas_threads() -> set[int]:
    np.ones((2, 2)) @ np.ones((2, 2))  # numpy's BLAS is loaded with numpy; use it once anyway
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores to tell 1 thread from 2")
def test_one_setting_caps_torch_and_numpy_blas_and_restores_both() -> None:
    torch_before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with threadpool_limits(limits=2, user_api="blas"):
            assert _blas_threads() == {2}, "numpy's BLAS is not visible to threadpoolctl"
            restore = set_compute_threads(1)
            assert torch.get_num_threads() == 1
            assert _blas_threads() == {1}
            restore()
            assert torch.get_num_threads() == 2
            assert _blas_threads() == {2}
    finally:
        torch.set_num_threads(torch_before)


def test_fewer_than_one_thread_is_refused() -> None:
    with pytest.raises(ValueError, match="must be >= 1; got 0"):
        set_compute_threads(0)
