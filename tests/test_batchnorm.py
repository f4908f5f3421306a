"""BatchNorm1d: training-mode gradients by finite differences, running statistics as
torch updates them, evaluation with the running statistics."""
import numpy as np
import pytest
from test_gradients import check

import fastnn as fnn
from fastnn import _kernels


def bn_train(x, gamma, beta, eps=1e-5):
    n, m = x.shape
    y = np.empty_like(x)
    mean, invstd = np.empty(m), np.empty(m)
    _kernels.batchnorm_train(x, y, gamma, beta, mean, invstd, np.zeros(m), np.ones(m), eps,
                             0.1)
    return y, mean, invstd


@pytest.mark.parametrize("features", [5, 101])  # 101: whole vectors and a remainder
def test_training_forward_matches_definition(rng, features):
    x = rng.normal(2, 3, size=(20, features))
    gamma, beta = rng.normal(size=features), rng.normal(size=features)
    y, mean, invstd = bn_train(x, gamma, beta)
    expected = gamma * (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5) + beta
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(invstd, 1 / np.sqrt(x.var(0) + 1e-5), rtol=1e-12)


def test_training_backward_by_finite_differences(rng):
    x = rng.normal(size=(7, 4))
    gamma, beta = rng.normal(size=4), rng.normal(size=4)
    weights = rng.normal(size=x.shape)  # L = sum(weights * y)

    def L(x_, gamma_, beta_):
        return float((weights * bn_train(x_, gamma_, beta_)[0]).sum())

    _, mean, invstd = bn_train(x, gamma, beta)
    dgamma, dbeta, dx = np.empty(4), np.empty(4), np.empty_like(x)
    _kernels.batchnorm_train_grad(x, weights, gamma, mean, invstd, dgamma, dbeta, dx)
    eps = 1e-6
    for analytic, arr in ((dx, x), (dgamma, gamma), (dbeta, beta)):
        numeric = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + eps
            up = L(x, gamma, beta)
            arr[idx] = old - eps
            down = L(x, gamma, beta)
            arr[idx] = old
            numeric[idx] = (up - down) / (2 * eps)
        err = np.linalg.norm(analytic - numeric) / np.linalg.norm(numeric)
        assert err < 1e-6


def test_running_statistics_follow_torch(rng):
    X = rng.normal(1, 2, size=(64, 6))
    y = rng.integers(0, 3, 64)
    model = fnn.Sequential([fnn.BatchNorm1d(6, momentum=0.2), fnn.Dense(6, 3)],
                           dtype="float64", seed=0)
    model.fit(X, y, optimizer=fnn.optim.SGD(lr=0.1), epochs=1, batch_size=16, shuffle=False)
    rm, rv = np.zeros(6), np.ones(6)
    for start in range(0, 64, 16):
        batch = X[start:start + 16]
        rm = 0.8 * rm + 0.2 * batch.mean(0)
        rv = 0.8 * rv + 0.2 * batch.var(0, ddof=1)  # unbiased, as torch
    running_mean, running_var = model.buffers()
    np.testing.assert_allclose(running_mean, rm, rtol=1e-12)
    np.testing.assert_allclose(running_var, rv, rtol=1e-12)
    gamma, beta, w, b = model.parameters()
    expected = (gamma * (X - rm) / np.sqrt(rv + 1e-5) + beta) @ w.T + b
    np.testing.assert_allclose(model.predict(X), expected, rtol=1e-12)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("features", [5, 101, 200])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_evaluation_matches_definition_over_many_features(rng, dtype, features, threads):
    """predict's batch norm (its scales taken in chunks of 64 features, each thread on a
    block of them) is gamma (x - running_mean) / sqrt(running_var + eps) + beta."""
    model = fnn.Sequential([fnn.BatchNorm1d(features), fnn.Dense(features, 3)], dtype=dtype,
                           seed=0)
    gamma, beta, w, b = model.parameters()
    running_mean, running_var = model.buffers()
    for arr, values in ((gamma, rng.normal(size=features)), (beta, rng.normal(size=features)),
                        (running_mean, rng.normal(size=features)),
                        (running_var, rng.uniform(0.5, 2, size=features))):
        arr[...] = values
    X = rng.normal(size=(300, features)).astype(dtype)
    expected = (gamma.astype(np.float64) * (X - running_mean.astype(np.float64))
                / np.sqrt(running_var.astype(np.float64) + 1e-5) + beta) @ w.T + b
    with fnn.threads(threads):
        got = model.predict(X)
    np.testing.assert_allclose(got, expected, rtol=1e-10 if dtype == "float64" else 1e-4,
                               atol=1e-10 if dtype == "float64" else 1e-4)


def test_running_variance_over_batches_of_different_sizes(rng):
    """An independent check of the unbiased running variance: batches of 24, 24 and 16
    rows each contribute var * n / (n - 1) of their own n, while the normalization in
    training uses the biased variance (checked through the weights the steps reach)."""
    X = rng.normal(-1, 3, size=(64, 3))
    y = rng.normal(size=(64, 2))
    model = fnn.Sequential([fnn.BatchNorm1d(3, momentum=0.3, affine=False),
                            fnn.Dense(3, 2)], dtype="float64", seed=2)
    W, b = (p.copy() for p in model.parameters())
    model.fit(X, y, loss="mse", optimizer=fnn.optim.SGD(lr=0.1), epochs=1, batch_size=24,
              shuffle=False)
    rm, rv = np.zeros(3), np.ones(3)
    for start in (0, 24, 48):
        batch = X[start:start + 24]
        rm = 0.7 * rm + 0.3 * batch.mean(0)
        rv = 0.7 * rv + 0.3 * batch.var(0, ddof=1)
    np.testing.assert_allclose(model.buffers()[0], rm, rtol=1e-12)
    np.testing.assert_allclose(model.buffers()[1], rv, rtol=1e-12)
    # the three steps in NumPy: each batch normalized by its own biased variance
    for start in (0, 24, 48):
        batch, target = X[start:start + 24], y[start:start + 24]
        h = (batch - batch.mean(0)) / np.sqrt(batch.var(0) + 1e-5)
        g = 2 * (h @ W.T + b - target) / (len(batch) * 2)  # mse: mean over n x 2 entries
        W, b = W - 0.1 * g.T @ h, b - 0.1 * g.sum(0)
    np.testing.assert_allclose(model.parameters()[0], W, rtol=1e-10)
    np.testing.assert_allclose(model.parameters()[1], b, rtol=1e-10)


def test_evaluation_mode_gradients(rng):
    model = fnn.Sequential([fnn.Dense(4, 6), fnn.BatchNorm1d(6), fnn.Tanh(), fnn.Dense(6, 3)],
                           dtype="float64", seed=1)
    mean, var = model.buffers()
    mean[...] = rng.normal(size=6)
    var[...] = rng.random(6) + 0.5
    X = rng.normal(size=(8, 4))
    check(model, X, rng.integers(0, 3, 8), "cross_entropy")


def test_batchnorm_trains_saves_and_rejects_batches_of_one(rng, tmp_path):
    X = rng.normal(5, 10, size=(400, 6)).astype(np.float32)
    y = (X[:, 0] > 5).astype(int)
    model = fnn.Sequential([fnn.Dense(6, 32), fnn.BatchNorm1d(32), fnn.ReLU(),
                            fnn.Dense(32, 2)], seed=0)
    model.fit(X, y, optimizer=fnn.optim.SGD(lr=0.05, momentum=0.9), epochs=10, batch_size=32)
    assert model.evaluate(X, y)["accuracy"] > 0.95
    model.save(tmp_path / "bn.npz")
    loaded = fnn.load(tmp_path / "bn.npz")
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    for a, b in zip(loaded.buffers(), model.buffers()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="leaves a batch of 1"):
        model.fit(X[:33], y[:33], batch_size=32)
    with pytest.raises(ValueError, match="receives 6 features"):
        fnn.Sequential([fnn.BatchNorm1d(5), fnn.Dense(6, 2)])


def test_affine_free_batch_norm_trains_by_its_gradient(rng):
    """One plain SGD step on a network with BatchNorm1d(affine=False) moves every weight by
    -lr times the gradient of the training-mode loss (batch statistics), taken by central
    differences of the loss written in NumPy."""
    X, y = rng.normal(1, 2, size=(12, 4)), rng.integers(0, 3, 12)
    model = fnn.Sequential([fnn.Dense(4, 5), fnn.BatchNorm1d(5, affine=False), fnn.Tanh(),
                            fnn.Dense(5, 3)], dtype="float64", seed=0)
    before = [p.copy() for p in model.parameters()]

    def loss(W1, b1, W2, b2):
        z = X @ W1.T + b1
        logits = np.tanh((z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)) @ W2.T + b2
        shifted = logits - logits.max(1, keepdims=True)
        return float(np.mean(np.log(np.exp(shifted).sum(1)) - shifted[np.arange(12), y]))

    model.fit(X, y, optimizer=fnn.optim.SGD(lr=0.1), epochs=1, batch_size=12, shuffle=False)
    for i, old in enumerate(before):
        numeric = np.zeros_like(old)
        for idx in np.ndindex(old.shape):
            args = [p.copy() for p in before]
            args[i][idx] += 1e-6
            up = loss(*args)
            args[i][idx] -= 2e-6
            numeric[idx] = (up - loss(*args)) / 2e-6
        np.testing.assert_allclose(model.parameters()[i], old - 0.1 * numeric, rtol=1e-6,
                                   atol=1e-8)
