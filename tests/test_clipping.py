"""Gradient clipping: one step on the NumPy-clipped gradient, torch's clip_grad_value_ and
clip_grad_norm_ over several steps, bad settings refused."""
import numpy as np
import pytest
from conftest import assert_same_parameters, plan_of, torch_train
from test_forward import torch_modules

import fastnn as fnn


@pytest.mark.parametrize("norm,value", [(0.3, None), (None, 0.02), (0.1, 0.02)])
def test_clipping_is_a_step_on_the_clipped_gradient(rng, norm, value):
    """One step of SGD on all rows moves the parameters by -lr times the gradient clipped
    as torch defines it: entries clamped to [-value, value], then the whole scaled by
    norm / (|g| + 1e-6) when that is below 1."""
    model = fnn.Sequential([fnn.Dense(5, 8), fnn.Tanh(), fnn.Dense(8, 3)], dtype="float64",
                           seed=3)
    X, y = rng.normal(size=(30, 5)), rng.integers(0, 3, 30)
    grads = model.gradients(X, y)
    if value is not None:
        grads = [np.clip(g, -value, value) for g in grads]
    if norm is not None:
        total = np.sqrt(sum(float(np.sum(g * g)) for g in grads))
        assert total > norm  # the case clips
        grads = [g * min(1.0, norm / (total + 1e-6)) for g in grads]
    expected = [p - 0.1 * g for p, g in zip(model.parameters(), grads)]
    model.fit(X, y, optimizer=fnn.optim.SGD(lr=0.1), batch_size=30, shuffle=False,
              clip_grad_norm=norm, clip_grad_value=value)
    for got, want in zip(model.parameters(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("blocks", [1, 2])
@pytest.mark.parametrize("optimizer", ["SGD", "Adam"])
def test_clipping_trains_as_torch(rng, torch64, blocks, optimizer):
    torch = torch64
    model = fnn.Sequential([fnn.Dense(5, 16), fnn.Tanh(), fnn.Dense(16, 3)], dtype="float64",
                           seed=1)
    net = torch.nn.Sequential(*torch_modules(model, torch))
    X, y = 3 * rng.normal(size=(40, 5)), rng.integers(0, 3, 40)
    settings = dict(lr=0.1, momentum=0.9) if optimizer == "SGD" else dict(lr=0.05)
    theirs = getattr(torch.optim, optimizer)(net.parameters(), **settings)

    def clip():
        torch.nn.utils.clip_grad_value_(net.parameters(), 0.2)
        torch.nn.utils.clip_grad_norm_(net.parameters(), 0.4)
    torch_train(torch, net, X, y, torch.nn.CrossEntropyLoss(), theirs, after_backward=clip)
    with plan_of(blocks, model):
        model.fit(X, y, optimizer=getattr(fnn.optim, optimizer)(**settings), epochs=3,
                  batch_size=10, shuffle=False, clip_grad_norm=0.4, clip_grad_value=0.2)
    assert_same_parameters(model, net)


@pytest.mark.parametrize("kwargs,message", [
    (dict(clip_grad_norm=0), "clip_grad_norm must be a finite number > 0"),
    (dict(clip_grad_value=float("inf")), "clip_grad_value must be a finite number > 0"),
    (dict(clip_grad_norm="1"), "clip_grad_norm must be"),
])
def test_bad_clipping_is_refused(rng, kwargs, message):
    model = fnn.Sequential([fnn.Dense(4, 3)], seed=1)
    with pytest.raises(ValueError, match=message):
        model.fit(rng.normal(size=(8, 4)), rng.integers(0, 3, 8), **kwargs)

