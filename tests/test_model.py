"""The Sequential API contract: parameters, predict, evaluate, batching, determinism,
dtypes, threads and the input forms fit accepts."""
import os
import signal
import threading
import time
import tracemalloc

import numpy as np
import pytest
from conftest import reference_layers

import fastnn as fnn
from fastnn import _reference as ref


def small_model(dtype="float32", seed=0):
    return fnn.Sequential([fnn.Dense(6, 16), fnn.ReLU(), fnn.Dense(16, 3)], dtype=dtype,
                          seed=seed)


def data(rng, n=100, dtype=np.float32):
    X = rng.normal(size=(n, 6)).astype(dtype)
    return X, (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1)


def test_layout_follows_torch():
    layer = fnn.Dense(784, 256)
    assert layer.weight.shape == (256, 784) and layer.bias.shape == (256,)
    model = fnn.Sequential([layer, fnn.ReLU(), fnn.Dense(256, 10)], seed=0)
    assert [p.shape for p in model.parameters()] == [(256, 784), (256,), (10, 256), (10,)]
    assert all(p.dtype == np.float32 for p in model.parameters())


def test_version_is_the_installed_distributions():
    from importlib.metadata import version
    assert fnn.__version__ == version("fastnn")


@pytest.mark.parametrize("init,std", [("he", np.sqrt(2 / 400)),
                                      ("glorot", np.sqrt(2 / 600)),
                                      ("he_uniform", np.sqrt(2 / 400)),
                                      ("glorot_normal", np.sqrt(2 / 600))])
def test_initialisation_scale(init, std):
    model = fnn.Sequential([fnn.Dense(400, 200, init=init)], seed=0)
    w, b = model.parameters()
    assert w.std() == pytest.approx(std, rel=0.02)
    assert abs(w.mean()) < 5 * std / np.sqrt(w.size) and not b.any()  # 5 standard errors


def test_activations_by_name(rng):
    by_name = fnn.Sequential([fnn.Dense(6, 8), "tanh", fnn.Dense(8, 3), "softmax"], seed=0)
    by_class = fnn.Sequential([fnn.Dense(6, 8), fnn.Tanh(), fnn.Dense(8, 3), fnn.Softmax()],
                              seed=0)
    X, _ = data(rng)
    np.testing.assert_array_equal(by_name.predict(X), by_class.predict(X))


def test_parameters_are_live(rng):
    model = small_model()
    X, _ = data(rng)
    w1, b1, w2, b2 = model.parameters()
    w2[...] = 0
    b2[...] = [1, 2, 3]
    np.testing.assert_array_equal(model.predict(X), np.tile([1, 2, 3], (len(X), 1)))
    model.layers[2].bias = [4, 5, 6]  # assignment copies into the same array
    assert model.parameters()[3] is b2
    np.testing.assert_array_equal(model.predict(X[:2]), [[4, 5, 6], [4, 5, 6]])


def test_predict_matches_reference_in_batches(rng):
    model = fnn.Sequential([fnn.Dense(6, 8), fnn.Tanh(), fnn.Dense(8, 3), fnn.Softmax()],
                           dtype="float64", seed=1)
    X = rng.normal(size=(2500, 6))
    _, expected = ref.mlp_forward(reference_layers(model), X)
    np.testing.assert_allclose(model.predict(X, batch_size=333), expected, rtol=1e-13)
    assert model.predict(X[:0]).shape == (0, 3)


def test_evaluate_reports_loss_and_accuracy(rng):
    model = small_model("float64")
    X, y = data(rng, dtype=np.float64)
    result = model.evaluate(X, y, "cross_entropy")
    out = model.predict(X)
    value, _ = ref.loss("cross_entropy", out, y)
    assert result["loss"] == pytest.approx(value, rel=1e-12)
    assert result["accuracy"] == np.mean(out.argmax(axis=1) == y)
    assert set(model.evaluate(X, rng.normal(size=(100, 3)), "mse")) == {"loss"}


def test_binary_classification_accepts_1d_targets(rng):
    model = fnn.Sequential([fnn.Dense(6, 8), fnn.ReLU(), fnn.Dense(8, 1), fnn.Sigmoid()],
                           seed=0)
    X, y = data(rng)
    y = (y > 0).astype(float)
    before = model.evaluate(X, y, "binary_cross_entropy")
    model.fit(X, y, loss="binary_cross_entropy", optimizer=fnn.optim.SGD(lr=0.5), epochs=20)
    after = model.evaluate(X, y, "binary_cross_entropy")
    assert after["loss"] < before["loss"] and after["accuracy"] > 0.9
    probs = model.predict(X)  # the final Sigmoid applied to the logits
    W1, b1, W2, b2 = (p.astype(np.float64) for p in model.parameters())
    logits = np.maximum(X @ W1.T + b1, 0) @ W2.T + b2
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits)), rtol=1e-5, atol=1e-7)
    assert ((probs >= 0) & (probs <= 1)).all()


def test_batch_sizes_are_one_call(rng):
    """Batch GD, per-example SGD and mini-batch SGD: one update per batch, in order."""
    X, y = data(rng, n=30, dtype=np.float64)
    for batch_size, steps in [(30, 1), (1000, 1), (1, 30), (8, 4)]:
        model = small_model("float64")
        opt = fnn.optim.SGD(lr=0.1)
        model.fit(X, y, optimizer=opt, epochs=1, batch_size=batch_size, shuffle=False)
        assert opt.steps == steps
    # batch GD equals one step on the gradient of the mean loss over all rows
    model = small_model("float64")
    grads = model.gradients(X, y)
    expected = [p - 0.1 * g for p, g in zip(model.parameters(), grads)]
    model.fit(X, y, optimizer=fnn.optim.SGD(lr=0.1), batch_size=len(X), shuffle=False)
    for p, e in zip(model.parameters(), expected):
        np.testing.assert_allclose(p, e, rtol=1e-13, atol=1e-15)


def test_shuffle_is_reproducible_from_seed(rng):
    X, y = data(rng, n=200)
    results = []
    with fnn.threads(1):
        for seed in (7, 7, 8):
            model = small_model(seed=seed)
            model.fit(X, y, optimizer=fnn.optim.SGD(lr=0.1, momentum=0.9), epochs=3,
                      batch_size=16)
            results.append(model.parameters())
    for a, b in zip(results[0], results[1]):
        np.testing.assert_array_equal(a, b)
    assert any((a != b).any() for a, b in zip(results[0], results[2]))


def test_shuffled_epochs_differ_from_ordered(rng):
    X, y = data(rng, n=200)
    a, b = small_model(seed=3), small_model(seed=3)
    a.fit(X, y, optimizer=fnn.optim.SGD(lr=0.1), epochs=1, batch_size=16, shuffle=True)
    b.fit(X, y, optimizer=fnn.optim.SGD(lr=0.1), epochs=1, batch_size=16, shuffle=False)
    assert any((p != q).any() for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_one_and_two_threads_agree(rng, dtype):
    X = rng.normal(size=(3000, 6)).astype(dtype)
    y = (X[:, 0] > 0).astype(int)
    params = []
    for n in (1, 2):
        with fnn.threads(n):
            model = fnn.Sequential([fnn.Dense(6, 400), fnn.ReLU(), fnn.Dense(400, 300),
                                    fnn.Sigmoid(), fnn.Dense(300, 2)], dtype=dtype, seed=0)
            model.fit(X, y, optimizer=fnn.optim.SGD(lr=0.05, momentum=0.9), epochs=2,
                      batch_size=512)
            params.append(model.parameters() + [model.predict(X)])
    tol = 1e-4 if dtype == "float32" else 1e-10
    for a, b in zip(*params):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def test_input_conversion_and_readonly_memmap(rng, tmp_path):
    X, y = data(rng, dtype=np.float64)
    expected = small_model(seed=5)
    expected.fit(X.astype(np.float32), y, optimizer=fnn.optim.SGD(lr=0.1), shuffle=False)
    path = tmp_path / "X.npy"
    np.save(path, X.astype(np.float32))
    mapped = np.load(path, mmap_mode="r")
    assert not mapped.flags.writeable
    fortran = np.asfortranarray(X)
    strided = np.repeat(X, 2, axis=0)[::2]
    for form in (X, mapped, fortran, strided, X.tolist()):
        model = small_model(seed=5)
        model.fit(form, y, optimizer=fnn.optim.SGD(lr=0.1), shuffle=False)
        for p, q in zip(model.parameters(), expected.parameters()):
            np.testing.assert_array_equal(p, q)
    np.testing.assert_array_equal(np.load(path), mapped)  # never written to


def test_integer_inputs_and_float_labels(rng):
    X = rng.integers(0, 255, size=(50, 6)).astype(np.uint8)
    y = rng.integers(0, 3, 50)
    model = small_model(seed=0)
    a = model.gradients(X, y)
    b = model.gradients(X.astype(np.float32), y.astype(np.float64))
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p, q)


def test_history(rng):
    X, y = data(rng)
    model = small_model()
    history = model.fit(X, y, optimizer=fnn.optim.SGD(lr=0.1), epochs=3)
    assert history.epoch == [0, 1, 2]
    assert len(history["loss"]) == 3 and history["loss"][-1] < history["loss"][0]
    assert history["lr"] == [0.1] * 3 and all(s > 0 for s in history["samples_per_second"])


def test_verbose_prints_a_line_per_epoch(rng, capsys):
    X, y = data(rng)
    small_model().fit(X, y, epochs=2, verbose=1)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("epoch 2/2") and "loss" in lines[1]


def test_divergence_raises_and_keeps_finite_parameters(rng):
    X, y = data(rng, dtype=np.float64)
    model = small_model("float64")
    with pytest.raises(FloatingPointError, match=r"epoch \d+, batch \d+"):
        model.fit(X * 1e3, y, optimizer=fnn.optim.SGD(lr=1e30), epochs=5, batch_size=10)
    assert all(np.isfinite(p).all() for p in model.parameters())


def test_fit_releases_the_gil(rng):
    """Another Python thread keeps running while fit trains."""
    X = rng.normal(size=(20000, 50)).astype(np.float32)
    y = rng.integers(0, 10, 20000)
    model = fnn.Sequential([fnn.Dense(50, 256), fnn.ReLU(), fnn.Dense(256, 10)], seed=0)
    ticks = []
    done = threading.Event()

    def count():
        while not done.is_set():
            ticks.append(1)
            done.wait(0.001)

    # one call long enough to count ticks in, however fast the machine: its epochs sized
    # from one epoch's time
    epoch = sum(model.fit(X, y, epochs=1, batch_size=32)["seconds"])
    epochs = min(200, int(np.ceil(0.15 / epoch)))
    thread = threading.Thread(target=count)
    thread.start()
    try:
        history = model.fit(X, y, epochs=epochs, batch_size=32)
    finally:
        done.set()
        thread.join()
    assert sum(history["seconds"]) > 0.05
    assert len(ticks) > 10


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("rows", [1, 64, 500, 3000])
def test_predict_bits_do_not_depend_on_timing_or_other_threads(rng, dtype, rows):
    """The same predict, again and again (the team awake, then asleep), from 8 threads at
    once (some find the team busy and run on their own thread), and of the same values in
    another dtype or layout: every result equals the first bit for bit. Before, a small
    predict split units only while the team was awake, and a predict beside a busy team
    made BLAS's own multi-threaded products over other row blocks than the team's."""
    model = fnn.Sequential([fnn.Dense(784, 256), fnn.ReLU(), fnn.Dense(256, 128),
                            fnn.ReLU(), fnn.Dense(128, 10)], dtype=dtype, seed=0)
    X = rng.normal(size=(rows, 784)).astype(dtype)
    first = model.predict(X)
    for i in range(20):
        np.testing.assert_array_equal(model.predict(X), first)
        if i % 5 == 4:
            time.sleep(0.01)  # the team's workers go to sleep
    np.testing.assert_array_equal(model.predict(np.asfortranarray(X)), first)
    np.testing.assert_array_equal(model.predict(X.astype(np.float64)), first)  # exact
    np.testing.assert_array_equal(model.predict(X.tolist()), first)
    start = threading.Barrier(8)
    results = []

    def work():
        start.wait()
        for _ in range(3):
            results.append(model.predict(X))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 24
    for r in results:
        np.testing.assert_array_equal(r, first)


class _InterruptSoon(fnn.callbacks.Callback):
    """Sends SIGINT a moment after the first epoch ends, so it lands while the engine is
    in the middle of the next epoch's steps however slow the machine (a timer started
    with fit could fire before its first step under sanitizers on a loaded machine)."""

    def __init__(self, delay):
        self.delay, self.timer, self.sent = delay, None, None

    def on_epoch_end(self, epoch, logs):
        if self.timer is None:
            def send():
                self.sent = time.perf_counter()
                os.kill(os.getpid(), signal.SIGINT)
            self.timer = threading.Timer(self.delay, send)
            self.timer.start()


@pytest.mark.parametrize("n_threads", [1, 2])
def test_ctrl_c_stops_fit_within_a_batch_and_keeps_finite_parameters(rng, n_threads):
    """On one thread and on the team (thread 0 checks for signals between steps and the
    team stops together). Python's own SIGINT handler is installed for the test, so it
    runs the same when the process inherited an ignored SIGINT (a shell's background job)."""
    X = rng.normal(size=(50000, 100)).astype(np.float32)
    y = rng.integers(0, 10, 50000)
    model = fnn.Sequential([fnn.Dense(100, 512), fnn.ReLU(), fnn.Dense(512, 10)], seed=0)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupt = _InterruptSoon(0.05)
    try:
        with fnn.threads(n_threads):
            with pytest.raises(KeyboardInterrupt):
                model.fit(X, y, epochs=1000, batch_size=64, callbacks=[interrupt])
            stopped = time.perf_counter()
            assert model.last_threads == n_threads
    finally:
        if interrupt.timer is not None:
            interrupt.timer.cancel()
        signal.signal(signal.SIGINT, previous)
    steps_per_epoch = -(-50000 // 64)
    assert interrupt.sent is not None and stopped - interrupt.sent < 5
    # the signal came after the first epoch: the steps it finished are kept
    assert model.optimizer.steps > steps_per_epoch
    assert all(np.isfinite(p).all() for p in model.parameters())
    model.fit(X[:100], y[:100], epochs=1)  # the model is usable afterwards


@pytest.mark.parametrize("shape", [(2**31, 1), (46341, 46341), (1, 2**31)])
def test_a_too_large_dense_is_refused_before_any_allocation(shape):
    """More weights than BLAS's 32-bit counts: refused by the constructor itself, with
    nothing of that size allocated or drawn (tracemalloc sees numpy's allocations)."""
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="more than BLAS's 32-bit limit"):
            fnn.Dense(*shape)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20


def test_an_initialisation_drawn_in_blocks_is_the_one_draw_of_the_whole_weight():
    """Weights are drawn a block of rows at a time (no float64 copy of a large weight):
    the values are those of one draw of the whole shape, cast to the model's dtype."""
    n_in, n_out = 1000, 3 * fnn.layers.DRAW_BLOCK // 1000 + 7
    for init, draw in [("he", lambda r: r.normal(0.0, np.sqrt(2.0 / n_in), (n_out, n_in))),
                       ("glorot", lambda r: r.uniform(-np.sqrt(6.0 / (n_in + n_out)),
                                                      np.sqrt(6.0 / (n_in + n_out)),
                                                      (n_out, n_in)))]:
        for dtype in (np.float32, np.float64):
            layer = fnn.Dense(n_in, n_out, init=init)
            layer.reset_parameters(np.random.default_rng(5), dtype)
            expected = draw(np.random.default_rng(5)).astype(dtype)
            assert layer.weight.dtype == dtype
            np.testing.assert_array_equal(layer.weight, expected)


class _EngineSpy:
    """Stands in for a model's engine, recording the row order of every train_epoch."""

    def __init__(self, engine):
        self._engine, self.orders = engine, []

    def train_epoch(self, X, targets, labels, order, *args, **kwargs):
        self.orders.append(None if order is None else order.copy())
        return self._engine.train_epoch(X, targets, labels, order, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._engine, name)


def _epoch_orders(seed, X, y, epochs=3):
    model = small_model(seed=seed)
    spy = model._engine = _EngineSpy(model._engine)
    model.fit(X, y, optimizer=fnn.optim.SGD(lr=0.1), epochs=epochs, batch_size=16)
    return spy.orders


def test_shuffling_visits_every_row_once_in_a_new_order_each_epoch_from_the_seed(rng):
    """Each epoch's order is a permutation of the rows; consecutive epochs differ; the
    orders follow the model's seed (the same seed the same orders, another seed others)."""
    X, y = data(rng, n=200)
    orders = _epoch_orders(7, X, y)
    assert len(orders) == 3
    for order in orders:
        np.testing.assert_array_equal(np.sort(order), np.arange(200))
    assert all((a != b).any() for a, b in zip(orders, orders[1:]))
    for a, b in zip(orders, _epoch_orders(7, X, y)):
        np.testing.assert_array_equal(a, b)
    assert all((a != b).any() for a, b in zip(orders, _epoch_orders(8, X, y)))
    expected = np.random.default_rng(7)  # the permutations come from the model's generator
    model = small_model(seed=7)
    expected.bit_generator.state = model._rng.bit_generator.state
    np.testing.assert_array_equal(orders[0], expected.permutation(200))


def test_dropout_in_fit_scales_the_kept_units_by_one_over_keep(rng):
    """One plain SGD step through Dropout(p) equals NumPy's step with the layer's masks:
    the documented generator seeded from the model's, kept units scaled by 1 / (1 - p)."""
    from fastnn import _reference as ref
    X, y = rng.normal(size=(10, 4)), rng.integers(0, 3, 10)
    p = 0.4
    model = fnn.Sequential([fnn.Dense(4, 30), fnn.Dropout(p), fnn.Dense(30, 3)],
                           dtype="float64", seed=5)
    W1, b1, W2, b2 = (a.copy() for a in model.parameters())
    generator = np.random.default_rng()
    generator.bit_generator.state = model._rng.bit_generator.state
    mask = ref.dropout_mask((10, 30), p, int(generator.integers(2**63)))
    model.fit(X, y, optimizer=fnn.optim.SGD(lr=0.5), epochs=1, batch_size=10, shuffle=False)
    h = (X @ W1.T + b1) * mask
    logits = h @ W2.T + b2
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    g = (probs - np.eye(3)[y]) / 10
    gh = (g @ W2) * mask
    for new, old, grad in zip(model.parameters(), (W1, b1, W2, b2),
                              (gh.T @ X, gh.sum(0), g.T @ h, g.sum(0))):
        np.testing.assert_allclose(new, old - 0.5 * grad, rtol=1e-12, atol=1e-14)
    assert set(np.unique(mask)) == {0.0, 1 / (1 - p)}


def test_the_model_remembers_its_loss(rng, tmp_path):
    """The first fit sets the loss (or Sequential's `loss` does); evaluate and gradients
    use it when given none, and it is saved with the model."""
    X = rng.normal(size=(40, 4))
    y = rng.normal(size=(40, 2))
    m = fnn.Sequential([fnn.Dense(4, 8), fnn.ReLU(), fnn.Dense(8, 2)], dtype="float64", seed=0)
    assert m.loss is None
    m.fit(X, y, loss="mse", epochs=2)
    assert m.loss.name == "mse"
    assert m.evaluate(X, y) == m.evaluate(X, y, loss="mse")
    assert m.evaluate(X, y)["loss"] == pytest.approx(np.mean((m.predict(X) - y) ** 2))
    for a, b in zip(m.gradients(X, y), m.gradients(X, y, loss="mse")):
        np.testing.assert_array_equal(a, b)
    m.save(tmp_path / "m.npz")
    assert fnn.load(tmp_path / "m.npz").loss.name == "mse"
    given = fnn.Sequential([fnn.Dense(4, 2)], loss="l1", seed=0)
    assert given.evaluate(X, y)["loss"] == pytest.approx(
        np.mean(np.abs(given.predict(X) - y)), rel=1e-6)
    assert "loss='l1'" in repr(given)


def test_summary_counts_the_parameters():
    m = fnn.Sequential([fnn.Dense(5, 7), fnn.BatchNorm1d(7), fnn.ReLU(), fnn.Dropout(0.1),
                        fnn.Dense(7, 3, bias=False)], seed=0)
    lines = []
    m.summary(print_fn=lines.append)
    rows = [line for line in lines if line[:1].isdigit()]
    assert len(rows) == len(m.layers)
    counts = [int(row.split()[-1].replace(",", "")) for row in rows]
    assert counts == [sum(p.size for p in layer.parameters()) for layer in m.layers]
    assert [row.split("(None, ")[1].split(")")[0] for row in rows] == ["7", "7", "7", "7", "3"]
    learned = sum(p.size for p in m.parameters())
    assert learned == 5 * 7 + 7 + 2 * 7 + 7 * 3
    assert f"parameters: {learned:,} learned, 14 in buffers" in lines[-1]


def test_optimizers_by_name_take_torchs_defaults(rng):
    X, y = rng.normal(size=(20, 4)), rng.integers(0, 3, 20)
    m = fnn.Sequential([fnn.Dense(4, 3)], seed=0)
    for name, cls in [("sgd", fnn.optim.SGD), ("adam", fnn.optim.Adam),
                      ("adamw", fnn.optim.AdamW), ("rmsprop", fnn.optim.RMSprop),
                      ("adagrad", fnn.optim.Adagrad)]:
        m.fit(X, y, optimizer=name)
        assert type(m.optimizer) is cls and m.optimizer._config() == cls()._config()
    assert fnn.optim.get_optimizer("SGD", lr=0.5, momentum=0.9)._config() == \
        fnn.optim.SGD(lr=0.5, momentum=0.9)._config()
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        m.fit(X, y, optimizer="lion")


def test_predict_proba(rng):
    X = rng.normal(size=(10, 4))
    m = fnn.Sequential([fnn.Dense(4, 3)], dtype="float64", seed=0)
    with pytest.raises(ValueError, match="classification loss"):
        m.predict_proba(X)
    m.fit(X, rng.integers(0, 3, 10))
    logits = m.predict(X)
    want = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(m.predict_proba(X), want, rtol=1e-12)
    m.fit(X, (rng.random((10, 3)) > 0.5).astype(float), loss="binary_cross_entropy")
    np.testing.assert_allclose(m.predict_proba(X), 1 / (1 + np.exp(-m.predict(X))), rtol=1e-12)
    with_softmax = fnn.Sequential([fnn.Dense(4, 3), fnn.Softmax()], dtype="float64", seed=0)
    np.testing.assert_array_equal(with_softmax.predict_proba(X), with_softmax.predict(X))


def test_a_table_s_columns_are_taken_by_name(rng):
    """fit on a DataFrame learns its column names; predict, evaluate, gradients and the
    validation data then take a DataFrame's columns by name (reordered, extra columns
    ignored), so a reordered table predicts the same; one lacking a column is refused;
    arrays are taken as they are. Before, a reordered DataFrame predicted differently."""
    pd = pytest.importorskip("pandas")
    X = rng.normal(size=(120, 4))
    y = (X[:, 0] - 2 * X[:, 3] > 0).astype(int)
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    model = fnn.Sequential([fnn.Dense(4, 8), fnn.ReLU(), fnn.Dense(8, 2)], seed=0,
                           dtype="float64")
    shuffled = frame[["d", "b", "a", "c"]]
    model.fit(frame, y, epochs=2, validation_data=(shuffled, y))
    assert model.feature_names == ["a", "b", "c", "d"]
    expected = model.predict(X)
    np.testing.assert_array_equal(model.predict(frame), expected)
    np.testing.assert_array_equal(model.predict(shuffled), expected)
    np.testing.assert_array_equal(model.predict(shuffled.assign(e=1.0)), expected)
    assert model.evaluate(shuffled, y) == model.evaluate(X, y)
    for g, h in zip(model.gradients(shuffled, y), model.gradients(X, y)):
        np.testing.assert_array_equal(g, h)
    with pytest.raises(ValueError, match=r"X lacks columns the model was trained on: \['c'\]"):
        model.predict(frame.drop(columns="c"))
    before = [p.copy() for p in model.parameters()]
    with pytest.raises(ValueError, match="lacks columns"):
        model.fit(frame.rename(columns={"a": "z"}), y)
    for p, q in zip(before, model.parameters()):
        np.testing.assert_array_equal(p, q)
