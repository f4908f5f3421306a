"""Memory and concurrency: no leak across calls, fit's memory does not scale with
N x width, and a model shared between threads is never corrupted."""
import threading
import tracemalloc

import numpy as np
import pytest

import fastnn as fnn


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/statm"), reason="Linux only")
def test_repeated_calls_do_not_leak(rng):
    X = rng.normal(size=(500, 20)).astype(np.float32)
    y = rng.integers(0, 4, 500)
    model = fnn.Sequential([fnn.Dense(20, 64), fnn.ReLU(), fnn.Dropout(0.1),
                            fnn.Dense(64, 4)], seed=0)
    for _ in range(10):  # warm up allocator pools
        model.fit(X, y, epochs=1)
        model.predict(X)
        model.gradients(X, y)
    before = rss_bytes()
    for _ in range(200):
        model.fit(X, y, epochs=1)
        model.predict(X)
        model.gradients(X, y)
    assert rss_bytes() - before < 5 * 2**20


def test_fit_peak_memory_is_not_n_times_width(rng):
    n, width = 100_000, 256
    X = rng.random((n, 32), dtype=np.float32)
    y = rng.integers(0, 10, n)
    model = fnn.Sequential([fnn.Dense(32, width), fnn.ReLU(), fnn.Dense(width, 10)], seed=0)
    tracemalloc.start()
    try:
        model.fit(X, y, epochs=1, batch_size=256)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # O(N x width) would be 100 MB; allowed: the shuffling order (8 bytes a row) plus
    # buffers of batch x width and the parameters' optimizer state
    assert peak < 8 * n + 4 * 2**20


def test_fit_while_another_thread_trains_is_refused_cleanly(rng):
    X = rng.normal(size=(40000, 50)).astype(np.float32)
    y = rng.integers(0, 10, 40000)
    model = fnn.Sequential([fnn.Dense(50, 256), fnn.ReLU(), fnn.Dense(256, 10)], seed=0)
    started = threading.Event()
    errors = []

    class Signal(fnn.Callback):
        def on_epoch_end(self, epoch, logs):
            started.set()

    def train():
        try:
            model.fit(X, y, epochs=3, batch_size=32, callbacks=[Signal()])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=train)
    thread.start()
    started.wait(30)
    with pytest.raises(RuntimeError, match="being used by another thread"):
        model.fit(X[:100], y[:100])
    out = model.predict(X[:1000])  # waits for the training thread, then predicts
    thread.join()
    assert not errors
    assert np.isfinite(out).all()
    assert all(np.isfinite(p).all() for p in model.parameters())
