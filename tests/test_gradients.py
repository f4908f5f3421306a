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


def batchnorm_model(seed=0):
    model = fnn.Sequential([fnn.Dense(5, 8), fnn.BatchNorm1d(8), fnn.Tanh(), fnn.Dense(8, 3)],
                           dtype="float64", seed=seed)
    bn = model.layers[1]
    rng = np.random.default_rng(seed)
    bn.weight[...] = rng.uniform(0.5, 1.5, 8)  # not the identity, so each term shows
    bn.bias[...] = rng.normal(size=8)
    bn.running_mean[...] = rng.normal(size=8)
    bn.running_var[...] = rng.uniform(0.5, 2, 8)
    return model


def train_mode_loss(model, X, y):
    """NumPy: the mean cross-entropy with batch norm on X's own statistics (biased
    variance), as torch's train mode and fastnn's fit compute it."""
    W1, b1, gamma, beta, W2, b2 = model.parameters()
    h = X @ W1.T + b1
    z = gamma * (h - h.mean(0)) / np.sqrt(h.var(0) + model.layers[1].eps) + beta
    return ref.loss("cross_entropy", np.tanh(z) @ W2.T + b2, y)[0]


def test_training_mode_gradients_use_the_batch_statistics(rng):
    """gradients(training=True): batch norm normalises with the statistics of all of X
    (central differences of the NumPy statement), leaving its running statistics as
    they were; the default differentiates what predict computes (running statistics)."""
    model = batchnorm_model()
    X, y = rng.normal(size=(12, 5)), rng.integers(0, 3, 12)
    running = [b.copy() for b in model.buffers()]
    analytic = model.gradients(X, y, batch_size=5, training=True)  # one batch regardless
    numeric = []
    for p in model.parameters():
        g = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + 1e-6
            up = train_mode_loss(model, X, y)
            p[i] = old - 1e-6
            g[i] = (up - train_mode_loss(model, X, y)) / 2e-6
            p[i] = old
        numeric.append(g)
    assert relative_error(analytic, numeric) < 1e-7
    for now, before in zip(model.buffers(), running):
        np.testing.assert_array_equal(now, before)
    assert relative_error(model.gradients(X, y), analytic) > 1e-3  # eval mode differs
    check(model, X, y, "cross_entropy")  # and eval mode is the function evaluate computes


def test_training_mode_gradients_follow_torch(rng):
    torch = pytest.importorskip("torch")
    model = batchnorm_model(seed=3)
    X, y = rng.normal(size=(16, 5)), rng.integers(0, 3, 16)
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.BatchNorm1d(8), torch.nn.Tanh(),
                              torch.nn.Linear(8, 3)).double().train()
    with torch.no_grad():
        for p, q in zip(net.parameters(), model.parameters()):
            p.copy_(torch.from_numpy(q))
    loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(X)), torch.from_numpy(y))
    loss.backward()
    for ours, theirs in zip(model.gradients(X, y, training=True), net.parameters()):
        np.testing.assert_allclose(ours, theirs.grad.numpy(), rtol=1e-10, atol=1e-13)


def test_training_mode_gradients_draw_dropout_masks(rng):
    """training=True: dropout's masks come from the model's generator (the documented
    stream, seeded as fit seeds it) and scale the gradient; the default passes through."""
    p = 0.4
    model = fnn.Sequential([fnn.Dense(6, 30), fnn.Dropout(p), fnn.Dense(30, 3)],
                           dtype="float64", seed=5)
    X, y = rng.normal(size=(10, 6)), rng.integers(0, 3, 10)
    W1, b1, W2, b2 = model.parameters()
    generator = np.random.default_rng()
    generator.bit_generator.state = model._rng.bit_generator.state
    mask = ref.dropout_mask((10, 30), p, int(generator.integers(2**63)))
    got = model.gradients(X, y, training=True)
    h = (X @ W1.T + b1) * mask
    _, g = ref.loss("cross_entropy", h @ W2.T + b2, y)
    gh = (g @ W2) * mask
    for ours, want in zip(got, (gh.T @ X, gh.sum(0), g.T @ h, g.sum(0))):
        np.testing.assert_allclose(ours, want, rtol=1e-12, atol=1e-14)
    assert model._rng.bit_generator.state == generator.bit_generator.state  # advanced
    h = X @ W1.T + b1
    _, g = ref.loss("cross_entropy", h @ W2.T + b2, y)
    np.testing.assert_allclose(model.gradients(X, y)[2], g.T @ h, rtol=1e-12)
