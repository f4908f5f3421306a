"""Threads: one count for fastnn's team, and BLAS kept to one thread inside fastnn's calls.

fastnn's engine runs every pass of a step on its own team of threads (csrc/team.h), sized
to the work per call and capped by `set_num_threads`; while it runs, the BLAS that scipy
ships (scipy.linalg.cython_blas, used for every matrix product) is pinned to one thread,
so each team thread makes its own one-thread products and BLAS's pool stays asleep.
This module finds that BLAS's thread functions once, at import, and hands them to the
engine. `set_num_threads` also limits BLAS (through threadpoolctl) for the rest of the
process, so numpy/scipy code around fastnn uses the same count.
"""
import ctypes
import os
from contextlib import contextmanager

from threadpoolctl import threadpool_info, threadpool_limits

from . import _engine

_n_threads = None  # None until set: the cores available to the process

# OpenBLAS's thread functions under the prefixes and suffixes its builds use
# (scipy's wheels: "scipy_openblas_set_num_threads").
_AFFIXES = [(p, s) for p in ("scipy_", "") for s in ("", "64_", "_64")]


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def scipy_blas():
    """(path, set_num_threads, get_num_threads) of the OpenBLAS behind
    scipy.linalg.cython_blas, or None when it is another BLAS.

    The functions are looked up through cython_blas's own handle, so the library found is
    the one its products call (numpy may load another OpenBLAS of a similar name)."""
    try:
        import scipy.linalg.cython_blas as cython_blas
        lib = ctypes.CDLL(cython_blas.__file__)
    except (ImportError, OSError):
        return None
    for prefix, suffix in _AFFIXES:
        setter = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}", None)
        getter = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}", None)
        if setter is not None and getter is not None:
            info = _DlInfo()
            try:
                found = ctypes.CDLL(None).dladdr(ctypes.cast(setter, ctypes.c_void_p),
                                                 ctypes.byref(info))
            except (AttributeError, OSError):
                found = 0
            path = os.path.realpath(info.dli_fname.decode()) if found else None
            return (path, ctypes.cast(setter, ctypes.c_void_p).value,
                    ctypes.cast(getter, ctypes.c_void_p).value)
    return None


_BLAS = scipy_blas()
if _BLAS is not None:
    _engine.register_blas(_BLAS[1], _BLAS[2])


def blas_info():
    """threadpoolctl's description of the BLAS fastnn calls (scipy's, matched by its file;
    numpy's OpenBLAS is another library), or of the first BLAS loaded when unknown."""
    libs = [i for i in threadpool_info() if i["user_api"] == "blas"]
    ours = [i for i in libs if _BLAS is not None and _BLAS[0] is not None
            and os.path.realpath(i.get("filepath", "")) == _BLAS[0]]
    return (ours or libs or [{}])[0]


def describe_blas():
    """One line: the BLAS fastnn calls, its version, kernel and thread setting."""
    lib = blas_info()
    return (f"{lib.get('internal_api', '?')} {lib.get('version', '?')} "
            f"kernel={lib.get('architecture', '?')} threads={lib.get('num_threads', '?')}")


def available_cores():
    """Cores this process may use: CPU affinity, cgroup quota and OMP_NUM_THREADS respected.
    The affinity and quota are read once per process (a file read costs more than a
    one-row predict); OMP_NUM_THREADS is read every call."""
    global _machine_cores
    if _machine_cores is None:
        _machine_cores = _affinity_and_quota()
    omp = _engine.omp_num_threads()
    return max(1, min(_machine_cores, omp) if omp > 0 else _machine_cores)


_machine_cores = None


def _forget_machine_cores():
    global _machine_cores
    _machine_cores = None


if hasattr(os, "register_at_fork"):  # a child may be pinned to other cores
    os.register_at_fork(after_in_child=_forget_machine_cores)


def _affinity_and_quota():
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
    return n


def _check_count(n):
    """n as a count, or None for the default (None or -1: the cores available)."""
    if n is None or (isinstance(n, int) and not isinstance(n, bool) and n == -1):
        return None
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"number of threads must be a positive int, -1 or None; got {n!r}")
    return min(n, _engine.MAX_THREADS)


def get_num_threads():
    """The most threads fastnn's calls use (each call may use fewer: see the design)."""
    return available_cores() if _n_threads is None else _n_threads


def adapts_to_load():
    """Whether training sizes its team to the cores a busy machine leaves it: only while
    no count was fixed (set_num_threads, threads(), OMP_NUM_THREADS). A fixed count is
    used as given. Either way training is bitwise reproducible: the fewer threads run
    the same plan's blocks."""
    return _n_threads is None and _engine.omp_num_threads() == 0


def set_num_threads(n):
    """Use at most n threads in fastnn and in BLAS. None or -1 restores the default: all
    available cores, training sized to what a busy machine leaves free."""
    global _n_threads
    n = _check_count(n)
    threadpool_limits(limits=available_cores() if n is None else n, user_api="blas")
    _n_threads = n


@contextmanager
def threads(n):
    """Context manager: run the block with n threads, then restore the previous setting."""
    global _n_threads
    n = _check_count(n)
    previous = _n_threads
    with threadpool_limits(limits=available_cores() if n is None else n, user_api="blas"):
        _n_threads = n
        try:
            yield get_num_threads()
        finally:
            _n_threads = previous
