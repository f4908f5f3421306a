"""The BLAS wrapper (csrc/_blas.pxd): row-major GEMM/GEMV over dtype x transpose x stride."""
import itertools

import numpy as np
import pytest

from fastnn import _kernels

TOL = {np.float32: 2e-5, np.float64: 1e-12}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a,trans_b", list(itertools.product([False, True], repeat=2)))
@pytest.mark.parametrize("strided", [False, True])
def test_gemm_matches_numpy(rng, dtype, trans_a, trans_b, strided):
    m, n, k = 7, 5, 9
    a = rng.normal(size=(k, m) if trans_a else (m, k))
    b = rng.normal(size=(n, k) if trans_b else (k, n))
    if strided:  # views with a row stride larger than their width (leading dimension)
        a = np.hstack([a, rng.normal(size=(a.shape[0], 3))])[:, :a.shape[1]]
        b = np.hstack([b, rng.normal(size=(b.shape[0], 2))])[:, :b.shape[1]]
    a, b = a.astype(dtype), b.astype(dtype)
    c = rng.normal(size=(m, n)).astype(dtype)
    expected = 0.5 * (a.T if trans_a else a) @ (b.T if trans_b else b) + 2.0 * c
    _kernels.gemm(trans_a, trans_b, dtype(0.5), a, b, dtype(2.0), c)
    np.testing.assert_allclose(c, expected, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans", [False, True])
def test_gemv_matches_numpy(rng, dtype, trans):
    a = rng.normal(size=(6, 4)).astype(dtype)
    x = rng.normal(size=6 if trans else 4).astype(dtype)
    y = rng.normal(size=4 if trans else 6).astype(dtype)
    expected = 1.5 * (a.T if trans else a) @ x - 1.0 * y
    _kernels.gemv(trans, dtype(1.5), a, x, dtype(-1.0), y)
    np.testing.assert_allclose(y, expected, rtol=TOL[dtype], atol=TOL[dtype])
