"""Finite-difference gradient checks in float64 for every layer, activation and loss,
and agreement of model.gradients with the NumPy reference of the same network."""
import numpy as np
import pytest
from conftest import ACTIVATIONS, reference_layers

import fastnn as fnn
from fastnn import _reference as ref


def numerical_gradients(model, X, y, loss, eps=1e-6):
    """Central differences of the mean loss over every parameter entry."""
    grads = []
    for p in model.parameters():
        g = np.zeros_like(p)
        flat, gflat = p.reshape(-1), g.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            up = model.evaluate(X, y, loss)["loss"]
            flat[i] = old - eps
            down = model.evaluate(X, y, loss)["loss"]
            flat[i] = old
            gflat[i] = (up - down) / (2 * eps)
        grads.append(g)
    return grads


def relative_error(a, b):
    a = np.concatenate([x.ravel() for x in a])
    b = np.concatenate([x.ravel() for x in b])
    return np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b), 1e-300)


def check(model, X, y, loss):
    analytic = model.gradients(X, y, loss)
    numeric = numerical_gradients(model, X, y, loss)
    assert [g.shape for g in analytic] == [p.shape for p in model.parameters()]
    assert relative_error(analytic, numeric) < 1e-6


def targets_for(loss, rng, n, c):
    if loss == "cross_entropy":
        return rng.integers(0, c, n)
    if loss == "cross_entropy_probs":
        t = rng.random((n, c))
        return t / t.sum(axis=1, keepdims=True)
    if loss == "binary_cross_entropy":
        return (rng.random((n, c)) > 0.5).astype(float)
    if loss == "poisson_nll":
        return rng.poisson(1.5, (n, c)).astype(float)
    return rng.normal(size=(n, c))


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_each_activation(rng, activation):
    model = fnn.Sequential([fnn.Dense(4, 5), ACTIVATIONS[activation](), fnn.Dense(5, 3)],
                           dtype="float64", seed=1)
    X = rng.normal(size=(7, 4))
    check(model, X, targets_for("mse", rng, 7, 3), "mse")


@pytest.mark.parametrize("loss", ["cross_entropy", "cross_entropy_probs",
                                  "binary_cross_entropy", "mse", "l1", "poisson_nll"])
def test_each_loss(rng, loss):
    model = fnn.Sequential([fnn.Dense(4, 5), fnn.Tanh(), fnn.Dense(5, 3)],
                           dtype="float64", seed=2)
    X = rng.normal(size=(9, 4))
    y = targets_for(loss, rng, 9, 3)
    check(model, X, y, loss.replace("_probs", ""))


@pytest.mark.parametrize("last,loss", [(fnn.Softmax, "mse"), (fnn.Sigmoid, "mse"),
                                       (fnn.Softmax, "cross_entropy"),
                                       (fnn.Sigmoid, "binary_cross_entropy")])
def test_output_activations(rng, last, loss):
    """A final Softmax/Sigmoid is differentiated through, or fused into its own loss."""
    model = fnn.Sequential([fnn.Dense(4, 6), fnn.ReLU(), fnn.Dense(6, 3), last()],
                           dtype="float64", seed=3)
    X = rng.normal(size=(8, 4))
    check(model, X, targets_for(loss, rng, 8, 3), loss)


def test_three_layer_network_without_some_biases(rng):
    model = fnn.Sequential([fnn.Dense(5, 8), fnn.ReLU(), fnn.Dense(8, 7, bias=False),
                            fnn.LeakyReLU(0.2), fnn.Dense(7, 4)], dtype="float64", seed=4)
    X = rng.normal(size=(10, 5))
    check(model, X, rng.integers(0, 4, 10), "cross_entropy")


def test_activation_before_first_dense(rng):
    model = fnn.Sequential([fnn.Tanh(), fnn.Dense(4, 3)], dtype="float64", seed=5)
    X = rng.normal(size=(6, 4))
    check(model, X, rng.integers(0, 3, 6), "cross_entropy")


@pytest.mark.parametrize("loss", ["cross_entropy", "binary_cross_entropy", "mse", "l1",
                                  "poisson_nll"])
def test_gradients_match_reference(rng, loss):
    model = fnn.Sequential([fnn.Dense(6, 16), fnn.ReLU(), fnn.Dense(16, 8), fnn.Sigmoid(),
                            fnn.Dense(8, 3)], dtype="float64", seed=6)
    X = rng.normal(size=(2500, 6))  # more rows than one engine batch (1024): chunks add up
    y = targets_for(loss, rng, 2500, 3)
    value, expected = ref.mlp_loss_and_gradients(reference_layers(model), X, y, loss)
    for got, want in zip(model.gradients(X, y, loss), expected):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-14)
    assert model.evaluate(X, y, loss)["loss"] == pytest.approx(value, rel=1e-12)


def test_trailing_softmax_is_fused_with_cross_entropy(rng):
    """CE on a model ending in Softmax is CE on the logits before it (not a double softmax)."""
    layers = [fnn.Dense(4, 3)]
    plain = fnn.Sequential(layers, dtype="float64", seed=7)
    with_softmax = fnn.Sequential([fnn.Dense(4, 3), fnn.Softmax()], dtype="float64", seed=7)
    X, y = rng.normal(size=(5, 4)), rng.integers(0, 3, 5)
    for a, b in zip(plain.gradients(X, y), with_softmax.gradients(X, y)):
        np.testing.assert_array_equal(a, b)
    probs = with_softmax.predict(X)
    np.testing.assert_allclose(probs, ref.activation("softmax", plain.predict(X)), rtol=1e-14)


def test_l2_penalty_gradient(rng):
    """loss = data loss + lambda * sum(W^2) per layer; gradient 2 lambda W; bias free."""
    model = fnn.Sequential([fnn.Dense(4, 6, l2=0.3), fnn.Tanh(), fnn.Dense(6, 3, l2=0.05)],
                           dtype="float64", seed=8)
    X, y = rng.normal(size=(9, 4)), rng.integers(0, 3, 9)
    check(model, X, y, "cross_entropy")
    plain = model.evaluate(X, y)["loss"] - model.penalty()
    w1, _, w2, _ = model.parameters()
    assert model.penalty() == pytest.approx(0.3 * (w1 ** 2).sum() + 0.05 * (w2 ** 2).sum())
    _, reference = ref.mlp_loss_and_gradients(reference_layers(model), X, y, "cross_entropy")
    got = model.gradients(X, y)
    np.testing.assert_allclose(got[0], reference[0] + 0.6 * w1, rtol=1e-12)
    np.testing.assert_allclose(got[1], reference[1], rtol=1e-12)  # bias: no penalty
    assert plain == pytest.approx(ref.loss("cross_entropy", model.predict(X), y)[0])
