"""Predicts of a few rows (Engine.predict_small): NumPy's formula for every layer kind
on one thread and split over two, the general path's checks for anything unusual, only
the output allocated, and OMP_NUM_THREADS read as before."""
import threading
import tracemalloc

import numpy as np
import pytest

import fastnn as fnn
from fastnn import _engine


def every_kind_model(dtype, rng):
    """Every layer kind predict runs, wide enough (2e5+ flops a row) to split a row over
    two threads; biases, batch norm's running statistics and affine parameters not at
    their initial values."""
    model = fnn.Sequential([fnn.Dense(200, 256), fnn.BatchNorm1d(256), fnn.LeakyReLU(0.1),
                            fnn.Dropout(0.3), fnn.Dense(256, 256), fnn.Tanh(),
                            fnn.Dense(256, 64), fnn.Sigmoid(), fnn.Dense(64, 10),
                            fnn.Softmax()], dtype=dtype, seed=0)
    for layer in model.layers:  # biases start at zero: make them count
        if layer.kind == "dense":
            layer.bias[:] = rng.uniform(-0.5, 0.5, layer.bias.shape)
    bn = model.layers[1]
    for arr, low, high in ((bn.running_mean, -1, 1), (bn.running_var, 0.5, 2),
                           (bn.weight, 0.5, 1.5), (bn.bias, -0.5, 0.5)):
        arr[:] = rng.uniform(low, high, arr.shape)
    return model


def numpy_predict(model, X):
    """What predict computes, stated in NumPy (float64)."""
    h = X.astype(np.float64)
    for layer in model.layers:
        if layer.kind == "dense":
            h = h @ layer.weight.T.astype(np.float64) + layer.bias
        elif layer.kind == "batchnorm":
            h = (h - layer.running_mean) / np.sqrt(layer.running_var + layer.eps) \
                * layer.weight + layer.bias
        elif isinstance(layer, fnn.LeakyReLU):
            h = np.where(h > 0, h, layer.negative_slope * h)
        elif isinstance(layer, fnn.Tanh):
            h = np.tanh(h)
        elif isinstance(layer, fnn.Sigmoid):
            h = 1 / (1 + np.exp(-h))
        elif isinstance(layer, fnn.Softmax):
            e = np.exp(h - h.max(axis=1, keepdims=True))
            h = e / e.sum(axis=1, keepdims=True)
    return h


def predict_on(model, X, n_threads):
    """predict with n_threads allowed, split over the team even where its workers sleep
    (a split is otherwise made only while they are awake: a performance choice)."""
    old = _engine.tune(small_wake_flops=0)
    try:
        with fnn.threads(n_threads):
            out = model.predict(X)
    finally:
        _engine.tune(**old)
    assert model.last_threads == n_threads
    return out


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-12), ("float32", 2e-6)])
@pytest.mark.parametrize("rows", [1, 3, 16, 64])
def test_every_layer_kind_matches_numpy_alone_and_split(rng, dtype, tol, rows):
    model = every_kind_model(dtype, rng)
    X = rng.normal(size=(rows, 200)).astype(dtype)
    want = numpy_predict(model, X)
    alone = predict_on(model, X, 1)
    split = predict_on(model, X, 2)
    assert alone.dtype == split.dtype == np.dtype(dtype)
    np.testing.assert_allclose(alone, want, rtol=tol, atol=tol)
    np.testing.assert_allclose(split, want, rtol=tol, atol=tol)
    if rows == 1:  # one row: each unit's GEMV is the same however the units are split
        np.testing.assert_array_equal(split, alone)


def test_threads_predicting_at_once_use_buffers_of_their_own(rng):
    """Four Python threads predict different rows at once, on their own threads (one
    core each), long enough to overlap: each gets the serial result, exactly."""
    model = fnn.Sequential([fnn.Dense(256, 512), fnn.ReLU(), fnn.Dense(512, 256),
                            fnn.Tanh(), fnn.Dense(256, 8)], seed=0)
    inputs = [rng.normal(size=(8, 256)).astype(np.float32) for _ in range(4)]
    with fnn.threads(1):
        serial = [model.predict(x) for x in inputs]
        wrong = []

        def work(k):
            for _ in range(300):
                if not np.array_equal(model.predict(inputs[k]), serial[k]):
                    wrong.append(k)

        workers = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    assert not wrong


def test_anything_unusual_takes_the_checked_path(rng):
    """NaN, the wrong width or rank, another dtype or memory layout, bad batch sizes:
    the general path's conversion or error, the model unchanged."""
    model = fnn.Sequential([fnn.Dense(6, 8), fnn.ReLU(), fnn.Dense(8, 3)], seed=0)
    before = [p.copy() for p in model.parameters()]
    X = rng.normal(size=(5, 6)).astype(np.float32)
    want = model.predict(X)
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"X contains NaN or inf \(first in row 3"):
        model.predict(bad)
    bad[3, 2] = np.inf
    with pytest.raises(ValueError, match="first in row 3"):
        model.predict(bad)
    with pytest.raises(ValueError, match="X has 5 features but the model's first layer "
                                         "expects 6"):
        model.predict(X[:, :5].copy())
    with pytest.raises(ValueError, match="must be 2-D"):
        model.predict(X[0])
    with pytest.raises(ValueError, match="must be 2-D"):
        model.predict(np.array(1.0, dtype=np.float32))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        model.predict(X, batch_size=0)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        model.predict(X, batch_size=True)
    np.testing.assert_array_equal(model.predict(np.asfortranarray(X)), want)
    np.testing.assert_array_equal(model.predict(X.astype(np.float64)), want)
    np.testing.assert_array_equal(model.predict(X.tolist()), want)
    readonly = X.copy()
    readonly.flags.writeable = False
    np.testing.assert_array_equal(model.predict(readonly), want)
    big = X.astype(np.float64)
    big[1, 0] = 1e39  # finite in float64, inf in float32: reported after conversion
    with pytest.raises(ValueError, match=r"X \(as float32\) contains NaN or inf"):
        model.predict(big)
    np.testing.assert_allclose(model.predict(X, batch_size=2), want, rtol=1e-6)
    for p, q in zip(before, model.parameters()):
        np.testing.assert_array_equal(p, q)


def test_a_small_predict_allocates_only_its_output(rng):
    model = fnn.Sequential([fnn.Dense(300, 512), fnn.ReLU(), fnn.Dense(512, 10)], seed=0)
    X = rng.normal(size=(16, 300)).astype(np.float32)
    for _ in range(3):  # the thread's scratch block is made on its first call
        model.predict(X)
    tracemalloc.start()
    try:
        out = model.predict(X)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the output's 640 bytes and its array object; a buffer of 16 x 512 would be 32 kB
    assert peak < out.nbytes + 2048


@pytest.mark.parametrize("value, expected", [("3", 3), (" 2 ,4", 2), ("1,8", 1),
                                             ("", 0), ("x", 0), ("0", 0), ("2x", 0)])
def test_omp_num_threads_is_read_from_the_environment_each_call(monkeypatch, value,
                                                                 expected):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert _engine.omp_num_threads() == expected
    cores = fnn._threads.available_cores()
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert cores == (min(expected, fnn._threads.available_cores()) if expected
                     else fnn._threads.available_cores())
