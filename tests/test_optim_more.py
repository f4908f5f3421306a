"""Adadelta and NAdam: torch over several training steps in two fits (NAdam's running
product carried over), and the NumPy statement of each."""
import numpy as np
import pytest
from conftest import train_both
from test_forward import torch_modules

import fastnn as fnn
from fastnn import _reference as ref

OPTIMIZERS = [
    ("NAdam", dict(lr=0.01)),
    ("NAdam", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1, momentum_decay=0.01)),
    ("NAdam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    ("Adadelta", dict(lr=0.5)),
    ("Adadelta", dict(lr=0.5, rho=0.8, eps=1e-4, weight_decay=0.05)),
]


@pytest.mark.parametrize("name,settings", OPTIMIZERS)
def test_optimizer_trains_as_torch(rng, torch64, name, settings):
    torch = torch64
    model = fnn.Sequential([fnn.Dense(5, 16), fnn.Tanh(), fnn.Dense(16, 3)], dtype="float64",
                           seed=1)
    net = torch.nn.Sequential(*torch_modules(model, torch))
    X, y = rng.normal(size=(40, 5)), rng.integers(0, 3, 40)
    train_both(model, net, torch, X, y, "cross_entropy", torch.nn.CrossEntropyLoss(),
               getattr(fnn.optim, name)(**settings),
               getattr(torch.optim, name)(net.parameters(), **settings))


@pytest.mark.parametrize("name,settings", OPTIMIZERS)
def test_optimizer_matches_formula(rng, name, settings):
    from test_optim import make_model, reference_fit_with
    step_fn = {"NAdam": ref.nadam_step, "Adadelta": ref.adadelta_step}[name]
    X, y = rng.normal(size=(48, 6)), rng.integers(0, 3, 48)
    model = make_model()
    expected = reference_fit_with(step_fn, settings, model, X, y, "cross_entropy", 16, 3)
    optimizer = getattr(fnn.optim, name)(**settings)
    model.fit(X, y, optimizer=optimizer, epochs=3, batch_size=16, shuffle=False, verbose=0)
    assert optimizer.steps == 9
    for got, want in zip(model.parameters(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)

