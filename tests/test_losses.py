"""HuberLoss and cross-entropy's label smoothing: the NumPy formula, central differences,
torch over several training steps; and the toolkit's bad settings refused."""
import numpy as np
import pytest
from conftest import reference_layers, train_both
from test_forward import torch_modules
from test_gradients import check

import fastnn as fnn
from fastnn import _reference as ref


def smoothed(label_smoothing):
    return fnn.CrossEntropyLoss(label_smoothing=label_smoothing)


@pytest.mark.parametrize("loss,setting,targets", [
    (fnn.HuberLoss(0.5), 0.5, "values"), (fnn.HuberLoss(3.0), 3.0, "values"),
    (smoothed(0.1), 0.1, "labels"), (smoothed(0.3), 0.3, "probabilities")])
def test_loss_matches_formula_and_differences(rng, loss, setting, targets):
    model = fnn.Sequential([fnn.Dense(4, 6), fnn.Tanh(), fnn.Dense(6, 3)], dtype="float64",
                           seed=2)
    X = rng.normal(size=(9, 4))
    y = {"values": 2 * rng.normal(size=(9, 3)), "labels": rng.integers(0, 3, 9),
         "probabilities": rng.dirichlet(np.ones(3), 9)}[targets]
    name = "huber" if isinstance(loss, fnn.HuberLoss) else "cross_entropy"
    value, expected = ref.mlp_loss_and_gradients(reference_layers(model), X, y, name, setting)
    assert model.evaluate(X, y, loss)["loss"] == pytest.approx(value, rel=1e-13)
    for got, want in zip(model.gradients(X, y, loss), expected):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-14)
    check(model, X, y, loss)


def test_huber_is_mse_near_and_l1_far(rng):
    """Inside delta Huber is half the squared error; beyond, delta times the distance less
    delta / 2: the two regimes of its definition, checked on outputs chosen in each."""
    out = np.array([[0.1, -0.2], [4.0, -6.0]])
    target = np.zeros_like(out)
    model = fnn.Sequential([fnn.Dense(2, 2, bias=False)], dtype="float64")
    model.layers[0].weight = np.eye(2)
    got = model.evaluate(out, target, fnn.HuberLoss(1.0))["loss"]
    expected = np.mean([0.5 * 0.1 ** 2, 0.5 * 0.2 ** 2, 4.0 - 0.5, 6.0 - 0.5])
    assert got == pytest.approx(expected, rel=1e-15)


def test_label_smoothing_zero_is_plain_cross_entropy(rng):
    model = fnn.Sequential([fnn.Dense(4, 3)], dtype="float64", seed=1)
    X, y = rng.normal(size=(8, 4)), rng.integers(0, 3, 8)
    for a, b in zip(model.gradients(X, y, smoothed(0.0)), model.gradients(X, y)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("loss,targets", [("huber", "values"), ("smoothing", "labels"),
                                          ("smoothing", "probabilities")])
def test_loss_trains_as_torch(rng, loss, targets):
    torch = pytest.importorskip("torch")
    model = fnn.Sequential([fnn.Dense(5, 16), fnn.Tanh(), fnn.Dense(16, 3)], dtype="float64",
                           seed=1)
    net = torch.nn.Sequential(*torch_modules(model, torch))
    X = rng.normal(size=(40, 5))
    y = {"values": 2 * rng.normal(size=(40, 3)), "labels": rng.integers(0, 3, 40),
         "probabilities": rng.dirichlet(np.ones(3), 40)}[targets]
    ours, theirs = (fnn.HuberLoss(0.5), torch.nn.HuberLoss(delta=0.5)) if loss == "huber" \
        else (smoothed(0.2), torch.nn.CrossEntropyLoss(label_smoothing=0.2))
    train_both(model, net, torch, X, y, ours, theirs, fnn.optim.SGD(lr=0.1),
               torch.optim.SGD(net.parameters(), lr=0.1))


@pytest.mark.parametrize("make,message", [
    (lambda: fnn.HuberLoss(0), "delta must be a finite number > 0"),
    (lambda: fnn.HuberLoss(float("nan")), "delta"),
    (lambda: smoothed(1.5), r"label_smoothing must be in \[0, 1\]"),
    (lambda: fnn.GELU("fast"), "approximate must be 'none' or 'tanh'"),
    (lambda: fnn.Softplus(beta=0), "beta must be a finite positive number"),
    (lambda: fnn.ELU(alpha=float("inf")), "alpha must be a finite number"),
    (lambda: fnn.optim.Adadelta(rho=1.5), "Invalid rho value"),
    (lambda: fnn.optim.NAdam(momentum_decay=-1), "Invalid momentum_decay value"),
])
def test_bad_settings_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()

