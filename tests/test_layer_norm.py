"""LayerNorm: torch over several steps on one- and two-block plans, central differences,
jvp/vjp, the normalization itself, and its row kernels against NumPy's statement of the
formulas."""
import numpy as np
import pytest
from conftest import assert_modes_match_torch, plan_of, train_both
from test_forward import check_modes, torch_modules
from test_gradients import check

import fastnn as fnn
from fastnn import _kernels


def layer_norm_model(affine=True, bias=True, seed=1):
    model = fnn.Sequential([fnn.Dense(5, 16), fnn.LayerNorm(16, elementwise_affine=affine,
                                                            bias=bias), fnn.GELU(),
                            fnn.Dense(16, 3)], dtype="float64", seed=seed)
    rng = np.random.default_rng(seed)
    for p in model.layers[1].parameters():  # gamma and beta away from 1 and 0
        p[...] = rng.uniform(0.5, 1.5, p.shape)
    return model


@pytest.mark.parametrize("affine,bias", [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("blocks", [1, 2])
def test_layer_norm_trains_as_torch(rng, torch64, affine, bias, blocks):
    """Adam over 12 steps equals torch's, on a plan of one block or of two (gamma's and
    beta's gradients then summed over the blocks' rows)."""
    torch = torch64
    model = layer_norm_model(affine, bias)
    net = torch.nn.Sequential(*torch_modules(model, torch))
    X, y = 2 * rng.normal(size=(64, 5)) + 1, rng.integers(0, 3, 64)
    with plan_of(blocks, model):
        train_both(model, net, torch, X, y, "cross_entropy", torch.nn.CrossEntropyLoss(),
                   fnn.optim.Adam(lr=0.01), torch.optim.Adam(net.parameters(), lr=0.01),
                   batch_size=16)


@pytest.mark.parametrize("blocks", [1, 2])
def test_layer_norm_gradients_and_tangents(rng, blocks):
    """Central differences of the loss (its gradient on a plan of one or two blocks);
    jvp and vjp against each other's Jacobian and central differences of predict."""
    model = layer_norm_model()
    X, y = rng.normal(size=(7, 5)), rng.integers(0, 3, 7)
    with plan_of(blocks, model):
        check(model, X, y, "cross_entropy")
    check_modes(model, X, rng)


def test_layer_norm_normalizes_each_row(rng):
    """Without affine parameters each output row has mean 0 and biased variance
    v / (v + eps), v its input's, whatever the scale of the input."""
    model = fnn.Sequential([fnn.Dense(4, 4, bias=False), fnn.LayerNorm(
        4, eps=1e-12, elementwise_affine=False)], dtype="float64")
    model.layers[0].weight = np.eye(4)
    X = rng.normal(size=(6, 4)) * np.array([[1], [10], [1e3], [1e-3], [5], [0.1]]) + 7
    out = model.predict(X)
    np.testing.assert_allclose(out.mean(axis=1), 0, atol=1e-12)
    v = X.var(axis=1)
    np.testing.assert_allclose(out.var(axis=1), v / (v + 1e-12), rtol=1e-9)


def test_layer_norm_modes_match_torch_func(rng, torch64):
    model = layer_norm_model()
    net = torch64.nn.Sequential(*torch_modules(model, torch64))
    X = rng.normal(size=(7, 5))
    assert_modes_match_torch(model, net, torch64, X, rng.normal(size=X.shape),
                             rng.normal(size=(7, 3)))


def numpy_layer_norm(x, g, gamma, beta, eps):
    """torch.nn.LayerNorm's forward and, for g = dL/dy, its backward, in NumPy."""
    m = x.shape[1]
    invstd = 1 / np.sqrt(x.var(axis=1, keepdims=True) + eps)
    xhat = (x - x.mean(axis=1, keepdims=True)) * invstd
    w = g * gamma
    dx = invstd * (w - w.mean(axis=1, keepdims=True)
                   - xhat * (w * xhat).sum(axis=1, keepdims=True) / m)
    return xhat * gamma + beta, (g * xhat).sum(axis=0), g.sum(axis=0), dx


@pytest.mark.parametrize("width", [5, 16, 37])  # within, at and past the 16 lanes
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("in_place", [False, True])
def test_layer_norm_kernels_match_numpy(rng, width, affine, in_place):
    """The row kernels: y, each row's moments, gamma's and beta's gradients and the input
    gradient (written over g, as the engine may) equal the formulas to 1e-12."""
    x = rng.normal(3, 2, size=(9, width))
    g = rng.normal(size=x.shape)
    gamma, beta = (rng.normal(size=width), rng.normal(size=width)) if affine else (None,
                                                                                    None)
    y, mean, invstd = np.empty_like(x), np.empty(9), np.empty(9)
    _kernels.layernorm_train(x, y, gamma, beta, mean, invstd, 1e-5)
    expected_y, dgamma, dbeta, dx = numpy_layer_norm(
        x, g, 1 if gamma is None else gamma, 0 if beta is None else beta, 1e-5)
    np.testing.assert_allclose(y, expected_y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mean, x.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(invstd, 1 / np.sqrt(x.var(axis=1) + 1e-5), rtol=1e-12)
    got_dgamma, got_dbeta = np.empty(width), np.empty(width)
    out = g.copy() if in_place else np.empty_like(x)
    _kernels.layernorm_train_grad(x, out if in_place else g, gamma, mean, invstd, got_dgamma,
                                  got_dbeta, out)
    np.testing.assert_allclose(got_dgamma, dgamma, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_dbeta, dbeta, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out, dx, rtol=1e-10, atol=1e-12)
