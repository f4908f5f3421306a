"""Sequential's sample weights (torch's weighted mean) and sparse input (scipy.sparse rows
gathered into each batch, never densified)."""
import tracemalloc

import numpy as np
import pytest
import scipy.sparse

import fastnn as fnn
from fastnn import _reference as ref


def model(seed=0, n_in=6, n_out=3, dtype="float64"):
    return fnn.Sequential([fnn.Dense(n_in, 16), fnn.ReLU(), fnn.Dense(16, n_out)],
                          dtype=dtype, seed=seed)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse", "binary_cross_entropy"])
def test_weighted_gradient_is_torchs_weighted_mean(rng, loss):
    """gradients(sample_weight=w) is the gradient of sum_i w_i l_i / sum_i w_i, l_i the
    row's loss (its mean over outputs for elementwise losses): a NumPy statement of
    (loss_fn(reduction="none") * w).sum() / w.sum()."""
    m = model()
    X = rng.normal(size=(20, 6))
    y = rng.integers(0, 3, 20) if loss == "cross_entropy" else \
        (rng.random((20, 3)) > 0.5).astype(float)
    w = rng.uniform(0, 2, 20)
    w[3] = 0
    layers = [("dense", (m.layers[0].weight, m.layers[0].bias)), ("relu", None),
              ("dense", (m.layers[2].weight, m.layers[2].bias))]
    want = [np.zeros_like(p) for p in m.parameters()]
    weighted_loss = 0.0
    for i in range(20):  # each row's mean loss and gradient, weighted
        row_loss, grads = ref.mlp_loss_and_gradients(layers, X[i:i + 1], y[i:i + 1], loss)
        weighted_loss += w[i] * row_loss / w.sum()
        for acc, g in zip(want, grads):
            acc += w[i] * g / w.sum()
    for got, expected in zip(m.gradients(X, y, loss, sample_weight=w, batch_size=7), want):
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-14)
    assert m.evaluate(X, y, loss, sample_weight=w)["loss"] == pytest.approx(weighted_loss,
                                                                              rel=1e-12)


@pytest.mark.parametrize("shuffle", [False, True])
def test_integer_weights_train_as_repeated_rows(rng, shuffle):
    """Full-batch training with integer weights equals training on the rows repeated
    that many times (the weighted mean is the mean over the repeated rows), shuffled
    (the weights gathered with their rows) or not."""
    X = rng.normal(size=(30, 6))
    y = rng.integers(0, 3, 30)
    w = rng.integers(0, 4, 30)
    w[0] = 1
    weighted, repeated = model(seed=1), model(seed=1)
    hw = weighted.fit(X, y, optimizer=fnn.optim.Adam(lr=0.01), epochs=5, batch_size=30,
                      shuffle=shuffle, sample_weight=w)
    hr = repeated.fit(np.repeat(X, w, axis=0), np.repeat(y, w),
                      optimizer=fnn.optim.Adam(lr=0.01), epochs=5, batch_size=int(w.sum()),
                      shuffle=False)
    for a, b in zip(weighted.parameters(), repeated.parameters()):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(hw["loss"], hr["loss"], rtol=1e-12)


def test_weighted_validation_and_accuracy(rng):
    X = rng.normal(size=(40, 6))
    y = rng.integers(0, 3, 40)
    w = rng.uniform(0, 1, 40)
    m = model()
    history = m.fit(X, y, epochs=1, validation_split=0.25, sample_weight=w, shuffle=False)
    metrics = m.evaluate(X[30:], y[30:], sample_weight=w[30:])
    assert history["val_loss"][-1] == pytest.approx(metrics["loss"], rel=1e-12)
    correct = m.predict(X[30:]).argmax(1) == y[30:]
    assert metrics["accuracy"] == pytest.approx(np.sum(w[30:] * correct) / w[30:].sum())


@pytest.mark.parametrize("weights,message", [
    (np.ones(5), "one entry per row"),
    (-np.ones(10), "entry 0 is -1"),
    (np.r_[np.ones(9), np.nan], "entry 9 is nan"),
    (np.zeros(10), "zero for every row"),
])
def test_bad_weights_are_refused_before_training(rng, weights, message):
    m = model()
    before = [p.copy() for p in m.parameters()]
    with pytest.raises(ValueError, match=message):
        m.fit(rng.normal(size=(10, 6)), rng.integers(0, 3, 10), sample_weight=weights)
    for p, q in zip(m.parameters(), before):
        np.testing.assert_array_equal(p, q)


def sparse_data(rng, n=200, n_features=40, density=0.1):
    X = scipy.sparse.random(n, n_features, density=density, format="csr", random_state=1,
                            dtype=np.float64)
    return X, rng.integers(0, 3, n)


@pytest.mark.parametrize("layout", ["csr_matrix", "csr_array", "csc_matrix", "coo_array"])
@pytest.mark.parametrize("shuffle", [True, False])
def test_sparse_input_trains_as_dense(rng, layout, shuffle):
    """fit on sparse X takes bitwise the steps fit on X.toarray() takes; predict,
    evaluate and gradients agree too."""
    X, y = sparse_data(rng)
    X = getattr(scipy.sparse, layout)(X)
    w = rng.uniform(0.5, 1.5, X.shape[0])
    a, b = model(n_in=40, dtype="float32"), model(n_in=40, dtype="float32")
    ha = a.fit(X, y, epochs=2, batch_size=16, shuffle=shuffle, sample_weight=w,
               validation_split=0.1)
    hb = b.fit(X.toarray(), y, epochs=2, batch_size=16, shuffle=shuffle, sample_weight=w,
               validation_split=0.1)
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p, q)
    assert ha["loss"] == hb["loss"] and ha["val_loss"] == hb["val_loss"]
    np.testing.assert_array_equal(a.predict(X, batch_size=50),
                                  b.predict(X.toarray(), batch_size=50))
    assert a.evaluate(X, y) == b.evaluate(X.toarray(), y)
    for g, h in zip(a.gradients(X, y, batch_size=64), b.gradients(X.toarray(), y)):
        np.testing.assert_allclose(g, h, rtol=1e-5, atol=1e-7)


def test_duplicate_entries_are_summed(rng):
    """A CSR matrix may store one position twice; its value is the sum (scipy's)."""
    X = scipy.sparse.csr_matrix((np.array([1.0, 2.0, 3.0]), np.array([0, 0, 2]),
                                 np.array([0, 2, 3])), shape=(2, 6))
    m = model()
    np.testing.assert_array_equal(m.predict(X), m.predict(X.toarray()))


def test_sparse_input_is_never_densified():
    """A 20000 x 50000 sparse X (dense: 4 GB in float32) trains and predicts within
    a few MB of new memory."""
    n, d = 20_000, 50_000
    rows = np.arange(n)
    X = scipy.sparse.csr_matrix((np.ones(n, np.float32), (rows, rows * 7 % d)), shape=(n, d))
    y = rows % 2
    m = fnn.Sequential([fnn.Dense(d, 4), fnn.ReLU(), fnn.Dense(4, 2)], seed=0)
    tracemalloc.start()
    try:
        m.fit(X, y, epochs=1, batch_size=64)
        m.predict(X[:5000])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MB"


@pytest.mark.parametrize("mutate,message", [
    (lambda X: X.indices.__setitem__(0, 40), r"row 0 has column index 40"),
    (lambda X: X.indices.__setitem__(1, -1), r"column index -1"),
    (lambda X: X.data.__setitem__(2, np.inf), r"NaN or inf \(first in row 0"),
])
def test_malformed_sparse_input_is_refused(rng, mutate, message):
    X, y = sparse_data(rng)
    X.sort_indices()
    mutate(X)
    with pytest.raises(ValueError, match=message):
        model(n_in=40).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        model(n_in=39).predict(X)
