"""One setting for a process's compute threads: torch's intra-op pool and numpy's BLAS pool.

A process told to use N threads (a trainer service's `site.threads`, a demo baseline worker,
an experiment's `--threads`) caps both. torch's count alone leaves numpy's BLAS (OpenBLAS in
the numpy wheels) at one thread per core, and its threads spin while they wait for work:
loading a CT, whose in-plane resize is two small matrix products per batch of slices
(ucadi.ct.preprocess.resize_slices), then cost over four times the CPU of one thread
whenever other processes share the cores, as the demo's trainers and baseline workers do
(measured 2026-12-07 on a 2-core machine: 0.44 against 0.10 CPU-seconds a study). The
thread count also changes the resize's float rounding, so a run is reproducible for a
given setting (as for a given CPU), not across settings.
"""

from __future__ import annotations

from collections.abc import Callable


def set_compute_threads(threads: int) -> Callable[[], None]:
    """Cap torch and numpy's BLAS at `threads` threads (>= 1) for this process; returns a
    function that puts both back as they were."""
    import torch
    from threadpoolctl import threadpool_limits

    if threads < 1:
        raise ValueError(f"compute threads must be >= 1; got {threads}")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    blas = threadpool_limits(limits=threads, user_api="blas")

    def restore() -> None:
        blas.restore_original_limits()
        torch.set_num_threads(previous)

    return restore
