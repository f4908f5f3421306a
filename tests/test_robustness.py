"""Memory, concurrency and limits: no leak across calls, fit's memory does not scale
with N x width, a model shared between threads is never corrupted, sizes beyond 32 bits,
failed steps, and no thread pool of fastnn's own."""
import os
import re
import threading
import tracemalloc

import numpy as np
import pytest

import fastnn as fnn
from fastnn import _engine


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/statm"), reason="Linux only")
@pytest.mark.skipif(os.environ.get("FASTNN_UNDER_SANITIZERS") == "1",
                    reason="AddressSanitizer keeps freed memory in quarantine")
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
    """A second fit while one runs is refused; predicts wait for it. The training thread
    is held in its first epoch's callback (inside fit) until the refusal has been seen,
    so the check does not depend on how fast this machine trains the other epochs."""
    X = rng.normal(size=(40000, 50)).astype(np.float32)
    y = rng.integers(0, 10, 40000)
    model = fnn.Sequential([fnn.Dense(50, 256), fnn.ReLU(), fnn.Dense(256, 10)], seed=0)
    started, refused = threading.Event(), threading.Event()
    errors = []

    class HoldFirstEpoch(fnn.Callback):
        def on_epoch_end(self, epoch, logs):
            if epoch == 0:
                started.set()
                refused.wait(60)

    def train():
        try:
            model.fit(X, y, epochs=3, batch_size=32, callbacks=[HoldFirstEpoch()])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=train)
    thread.start()
    try:
        assert started.wait(60)
        with pytest.raises(RuntimeError, match="being used by another thread"):
            model.fit(X[:100], y[:100])
    finally:
        refused.set()
    small = model.predict(X[:3])  # the calling thread's path: waits for the fit to end
    out = model.predict(X[:1000])  # the team's path: waits too
    thread.join()
    assert not errors
    assert model.optimizer.steps == 3 * (40000 // 32)  # the refused call changed nothing
    np.testing.assert_array_equal(small, model.predict(X[:3]))  # the trained weights
    np.testing.assert_array_equal(out, model.predict(X[:1000]))
    assert all(np.isfinite(p).all() for p in model.parameters())


def test_a_callback_may_predict_during_fit(rng):
    """predict from inside fit (a callback on the training thread) runs instead of
    waiting for the fit it is part of, for small and team-sized inputs."""
    X = rng.normal(size=(3000, 50)).astype(np.float32)
    y = rng.integers(0, 3, 3000)
    model = fnn.Sequential([fnn.Dense(50, 256), fnn.ReLU(), fnn.Dense(256, 3)], seed=0)
    seen = []

    class Predict(fnn.Callback):
        def on_epoch_end(self, epoch, logs):
            seen.append((model.predict(X[:2]), model.predict(X)))

    model.fit(X, y, epochs=2, callbacks=[Predict()])
    assert len(seen) == 2
    np.testing.assert_array_equal(seen[-1][0], model.predict(X[:2]))
    np.testing.assert_allclose(seen[-1][1], model.predict(X), rtol=1e-6)


def test_predicts_from_many_threads_on_the_calling_threads_agree(rng):
    """Small predicts and evaluates run on their callers' threads with per-thread
    buffers: 8 threads at once give the serial results exactly."""
    model = fnn.Sequential([fnn.Dense(20, 64), fnn.Tanh(), fnn.Dense(64, 5)], seed=0)
    batches = [rng.normal(size=(1 + i % 7, 20)).astype(np.float32) for i in range(64)]
    labels = [rng.integers(0, 5, len(b)) for b in batches]
    serial = [(model.predict(b), model.evaluate(b, y)) for b, y in zip(batches, labels)]
    results = [None] * len(batches)

    def work(k):
        for i in range(k, len(batches), 8):
            for _ in range(20):
                results[i] = (model.predict(batches[i]), model.evaluate(batches[i], labels[i]))

    workers = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for got, want in zip(results, serial):
        np.testing.assert_array_equal(got[0], want[0])
        assert got[1] == want[1]
    X = np.concatenate(batches)  # and the calling thread's evaluate is the team's
    y = np.concatenate(labels)
    here = model.evaluate(X, y)
    loss = fnn.losses.get_loss("cross_entropy")
    with model._lock:  # force the team's path for the same call
        team = model._metrics(X, model._prepare(X, y, loss, 1024)[1], loss, 3, 1024)
    assert here["loss"] == pytest.approx(team["loss"], rel=1e-6)
    assert here["accuracy"] == team["accuracy"]


# -- inputs beyond 32-bit sizes ---------------------------------------------------------

def test_batch_beyond_blas_range_is_refused_before_any_work():
    """A matrix product of 2**31 rows cannot be made with 32-bit BLAS: refused up front,
    before X (a stride-0 stand-in, nothing allocated) would be converted."""
    big = 2**31
    X = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), shape=(big, 4),
                                        strides=(0, 0))
    y = np.lib.stride_tricks.as_strided(np.zeros(1, np.int64), shape=(big,), strides=(0,))
    model = fnn.Sequential([fnn.Dense(4, 3)], seed=0)
    before = [p.copy() for p in model.parameters()]
    for call in (lambda: model.fit(X, y, batch_size=big),
                 lambda: model.predict(X, batch_size=big),
                 lambda: model.evaluate(X, y, batch_size=big),
                 lambda: model.gradients(X, y, batch_size=big)):
        with pytest.raises(ValueError, match="32-bit limit"):
            call()
    assert all((a == b).all() for a, b in zip(model.parameters(), before))


def test_rows_beyond_2_31_elements_are_addressed_correctly(tmp_path):
    """Rows past element 2**31 of X are read at their true offsets (64-bit arithmetic):
    a step on the last rows of a sparse-file memmap of 2**31 + 24 elements equals the
    same step on those rows copied out. Only the touched pages are ever written."""
    width, n_rows = 8, 2**31 // 8 + 3
    X = np.memmap(tmp_path / "X.f32", dtype=np.float32, mode="w+", shape=(n_rows, width))
    labels = np.memmap(tmp_path / "y.i64", dtype=np.int64, mode="w+", shape=(n_rows,))
    rng = np.random.default_rng(0)
    last = np.arange(n_rows - 3, n_rows)
    X[last] = rng.normal(size=(3, width)).astype(np.float32)
    labels[last] = [2, 0, 1]
    results = []
    for rows, order in ((X, last.astype(np.int64)), (np.array(X[last]), None)):
        model = fnn.Sequential([fnn.Dense(width, 5), fnn.ReLU(), fnn.Dense(5, 3)], seed=1)
        opt = fnn.optim.SGD(lr=0.1)
        opt._bind(model.parameters())
        model._engine.set_optimizer(*opt._engine_args(), 0)
        y = np.asarray(labels) if order is not None else np.array(labels[last])
        loss, failed = model._engine.train_epoch(
            rows, None, y, order, 3, _engine.LOSS_KINDS["cross_entropy_labels"], 3)
        assert failed == -1
        results.append((loss, [p.copy() for p in model.parameters()]))
    assert results[0][0] == results[1][0]
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_array_equal(a, b)
    del X, labels


# -- batch norm and failed steps --------------------------------------------------------

def test_failed_step_leaves_batchnorm_running_statistics_unchanged(rng):
    """A step whose loss is not finite changes neither the parameters nor the running
    statistics (its forward pass had already folded the batch into them)."""
    model = fnn.Sequential([fnn.Dense(4, 6), fnn.BatchNorm1d(6), fnn.ReLU(),
                            fnn.Dense(6, 3)], seed=0)
    X = rng.normal(size=(64, 4)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    model.fit(X, y, epochs=1, batch_size=16)  # running statistics move away from 0 / 1
    huge = np.zeros((3, 6), np.float32)
    huge[0] = 3e38  # finite, but class 0's logit overflows to +inf: the others' loss is inf
    model.layers[-1].weight = huge
    params = [p.copy() for p in model.parameters()]
    stats = [b.copy() for b in model.buffers()]
    with pytest.raises(FloatingPointError, match="batch 0"):
        model.fit(X, y, epochs=1, batch_size=16)
    for a, b in zip(model.parameters() + model.buffers(), params + stats):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(stats[0], 0)  # the statistics that were kept are real ones


def _state(model):
    """Copies of everything a training step writes: parameters, batch norm's running
    statistics and the optimizer's state."""
    state = model.optimizer.state or []
    return [a.copy() for a in model.parameters() + model.buffers()
            + [s for per_param in state for s in per_param if s is not None]]


def _poisson_rows(dtype):
    """Rows on which SGD(lr=2), with and without momentum, and Adam(lr=1) overflow an
    update in float32 while the loss is still finite (their own generator: with other
    rows the loss can go non-finite first)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 8)).astype(dtype)
    return X, rng.poisson(3, size=(256, 1)).astype(dtype)


@pytest.mark.parametrize("optimizer", [lambda: fnn.optim.Adam(lr=1.0),
                                       lambda: fnn.optim.SGD(lr=2.0),
                                       lambda: fnn.optim.SGD(lr=2.0, momentum=0.9)],
                         ids=["adam", "sgd", "momentum"])
@pytest.mark.parametrize("per_batch", [False, True], ids=["whole", "on_batch_end"])
def test_an_update_that_overflows_raises_and_keeps_the_state_before_it(optimizer,
                                                                       per_batch):
    """float32, poisson_nll with a large learning rate: a step whose loss is finite can
    overflow its gradient or update, writing inf into the parameters or the optimizer's
    state (Adam: its second moment). fit raises FloatingPointError at that batch, and
    everything a step writes is bit for bit what training the batches before it gives;
    also where an on_batch_end callback cuts the epoch into a call per batch (the state
    copied aside once an epoch), the callback having seen every batch before it."""
    X, y = _poisson_rows(np.float32)

    def model():
        return fnn.Sequential([fnn.Dense(8, 32), fnn.ReLU(), fnn.Dense(32, 1)], seed=0)

    class Counting:
        calls = 0

        def on_batch_end(self, batch, logs):
            Counting.calls += 1

    failing = model()
    with pytest.raises(FloatingPointError, match=r"at epoch (\d+), batch (\d+)") as error:
        failing.fit(X, y, loss="poisson_nll", optimizer=optimizer(), epochs=20,
                    batch_size=32, shuffle=False, callbacks=[Counting()] if per_batch else [])
    epoch, batch = (int(v) for v in re.search(r"epoch (\d+), batch (\d+)",
                                              str(error.value)).groups())
    state = _state(failing)
    assert all(np.isfinite(a).all() for a in state)
    replay = model()
    replay.fit(X, y, loss="poisson_nll", optimizer=optimizer(), epochs=epoch,
               batch_size=32, shuffle=False)
    if batch:
        replay.fit(X[:32 * batch], y[:32 * batch], loss="poisson_nll", epochs=1,
                   batch_size=32, shuffle=False)
    assert failing.optimizer.steps == replay.optimizer.steps == 8 * epoch + batch
    assert Counting.calls == (8 * epoch + batch if per_batch else 0)
    for a, b in zip(state, _state(replay)):
        np.testing.assert_array_equal(a, b)


def test_an_overflow_in_the_second_moment_is_named_as_an_update():
    """Adam's v = b2 v + (1 - b2) g^2 overflows where |g| passes 1.8e19 in float32 though
    the loss is finite: the message says an update, not the loss, went wrong."""
    X, y = _poisson_rows(np.float32)
    model = fnn.Sequential([fnn.Dense(8, 32), fnn.ReLU(), fnn.Dense(32, 1)], seed=0)
    with pytest.raises(FloatingPointError, match="an update made a parameter or the "
                                                 "optimizer's state NaN or inf"):
        model.fit(X, y, loss="poisson_nll", optimizer=fnn.optim.Adam(lr=1.0), epochs=20,
                  batch_size=32)
    assert all(np.isfinite(a).all() for a in _state(model))


# -- threads and OpenMP runtimes --------------------------------------------------------

def test_no_openmp_runtime_of_its_own(tmp_path):
    """Imported after numpy, scipy, scikit-learn and torch (where installed) and used,
    fastnn adds no OpenMP runtime to the process (threadpoolctl's view)."""
    code = """if True:
        import importlib, json
        from threadpoolctl import threadpool_info
        for name in ("numpy", "scipy.linalg", "sklearn.neural_network", "torch"):
            try:
                importlib.import_module(name)
            except ImportError:
                pass
        def runtimes():
            return sorted(i["filepath"] for i in threadpool_info()
                          if i["user_api"] == "openmp")
        before = runtimes()
        import numpy as np, fastnn as fnn
        model = fnn.Sequential([fnn.Dense(20, 8), fnn.ReLU(), fnn.Dense(8, 3)], seed=0)
        X = np.random.default_rng(0).random((500, 20), dtype=np.float32)
        model.fit(X, np.arange(500) % 3, epochs=2, batch_size=50)
        model.predict(X)
        print(json.dumps({"before": before, "after": runtimes()}))
    """
    from conftest import run_python
    result = run_python(["-c", code], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    import json
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["after"] == seen["before"]
