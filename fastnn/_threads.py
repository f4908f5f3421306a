"""One thread count for fastnn's OpenMP kernels and for BLAS, set together.

fastnn's elementwise kernels receive the count explicitly; BLAS (the OpenBLAS that
scipy ships, used for every matrix product) is limited through threadpoolctl. The two
never run at once, so a count of n means at most n busy threads.
"""
import os
from contextlib import contextmanager

from threadpoolctl import threadpool_limits

_n_threads = None  # None until set: the cores available to the process


def available_cores():
    """Cores this process may use: CPU affinity, cgroup quota and OMP_NUM_THREADS respected."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            n = min(n, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    omp = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if omp.isdigit() and int(omp) > 0:
        n = min(n, int(omp))
    return max(1, n)


def _check_count(n):
    if n is None or (isinstance(n, int) and not isinstance(n, bool) and n == -1):
        return available_cores()
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"number of threads must be a positive int, -1 or None; got {n!r}")
    return n


def get_num_threads():
    """The number of threads fastnn uses (OpenMP kernels and BLAS)."""
    return available_cores() if _n_threads is None else _n_threads


def set_num_threads(n):
    """Use n threads (None or -1: all available cores) for OpenMP kernels and BLAS."""
    global _n_threads
    n = _check_count(n)
    threadpool_limits(limits=n, user_api="blas")
    _n_threads = n


@contextmanager
def threads(n):
    """Context manager: run the block with n threads, then restore the previous setting."""
    global _n_threads
    n = _check_count(n)
    previous = _n_threads
    with threadpool_limits(limits=n, user_api="blas"):
        _n_threads = n
        try:
            yield n
        finally:
            _n_threads = previous
