"""One thread setting for OpenMP kernels and BLAS."""
import pytest
from threadpoolctl import threadpool_info

import fastnn as fnn


def blas_threads():
    return {lib["filepath"]: lib["num_threads"] for lib in threadpool_info()
            if lib["user_api"] == "blas"}


def test_default_is_the_available_cores():
    assert fnn.get_num_threads() >= 1
    fnn.set_num_threads(None)
    assert fnn.get_num_threads() == fnn._threads.available_cores()


def test_set_num_threads_limits_blas_too():
    fnn.set_num_threads(1)
    assert fnn.get_num_threads() == 1
    assert set(blas_threads().values()) == {1}


def test_threads_context_manager_restores():
    fnn.set_num_threads(2)
    before = blas_threads()
    with fnn.threads(1) as n:
        assert n == 1 and fnn.get_num_threads() == 1
        assert set(blas_threads().values()) == {1}
    assert fnn.get_num_threads() == 2 and blas_threads() == before


@pytest.mark.parametrize("bad", [0, -2, 1.5, "2", True])
def test_bad_thread_counts(bad):
    with pytest.raises(ValueError, match="number of threads"):
        fnn.set_num_threads(bad)


def test_omp_num_threads_is_respected(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert fnn._threads.available_cores() == 1
