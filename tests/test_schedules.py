"""Per-step learning-rate schedules: torch's schedulers stepped per batch, the NumPy
statement, OneCycleLR's limits."""
import numpy as np
import pytest
from conftest import assert_same_parameters, reference_layers, torch_train
from test_forward import torch_modules

import fastnn as fnn
from fastnn import _reference as ref


def schedule_pairs(torch, theirs_optimizer, name):
    """(fastnn's schedule, torch's) of one kind, with the same settings."""
    lr = torch.optim.lr_scheduler
    if name == "warmup":
        return fnn.optim.LinearLR(0.1, 1.0, 7), lr.LinearLR(theirs_optimizer, 0.1, 1.0, 7)
    if name == "cosine":
        return (fnn.optim.CosineAnnealingLR(9, eta_min=0.01, per_step=True),
                lr.CosineAnnealingLR(theirs_optimizer, 9, eta_min=0.01))
    if name == "one-cycle":
        return (fnn.optim.OneCycleLR(0.2, 12), lr.OneCycleLR(theirs_optimizer, 0.2, 12))
    return (fnn.optim.OneCycleLR(0.2, 12, pct_start=0.25, anneal_strategy="linear",
                                 three_phase=True),
            lr.OneCycleLR(theirs_optimizer, 0.2, 12, pct_start=0.25,
                          anneal_strategy="linear", three_phase=True))


@pytest.mark.parametrize("name", ["warmup", "cosine", "one-cycle", "three-phase"])
@pytest.mark.parametrize("optimizer", ["SGD", "Adam"])
def test_per_step_schedule_trains_as_torch(rng, torch64, name, optimizer):
    """Stepped after every update (torch's scheduler.step() in the batch loop), over
    three epochs of four steps in two fits: the learning rates, and one-cycle's momenta
    (SGD's momentum, Adam's beta1), take the same values step by step."""
    torch = torch64
    model = fnn.Sequential([fnn.Dense(5, 16), fnn.Tanh(), fnn.Dense(16, 3)], dtype="float64",
                           seed=1)
    net = torch.nn.Sequential(*torch_modules(model, torch))
    settings = dict(lr=0.1, momentum=0.9) if optimizer == "SGD" else dict(lr=0.05)
    theirs = getattr(torch.optim, optimizer)(net.parameters(), **settings)
    ours = getattr(fnn.optim, optimizer)(**settings)
    schedule, their_schedule = schedule_pairs(torch, theirs, name)
    X, y = rng.normal(size=(40, 5)), rng.integers(0, 3, 40)
    torch_train(torch, net, X, y, torch.nn.CrossEntropyLoss(), theirs,
                after_step=their_schedule.step)
    model.fit(X, y, optimizer=ours, epochs=1, batch_size=10, shuffle=False,
              lr_schedule=schedule)
    history = model.fit(X, y, optimizer=ours, epochs=3, initial_epoch=1, batch_size=10,
                        shuffle=False, lr_schedule=schedule)
    assert_same_parameters(model, net)
    if name in ("warmup", "cosine"):  # (one-cycle keeps its last update's after the cycle)
        assert ours.lr == pytest.approx(theirs.param_groups[0]["lr"], rel=1e-12)
    assert history["lr"][0] == pytest.approx(schedule.lr_at(4), rel=1e-15)


def test_one_cycle_refuses_steps_past_its_total(rng):
    model = fnn.Sequential([fnn.Dense(4, 3)], seed=1)
    X, y = rng.normal(size=(20, 4)), rng.integers(0, 3, 20)
    schedule = fnn.optim.OneCycleLR(0.1, total_steps=4)
    model.fit(X, y, optimizer=fnn.optim.SGD(lr=0.1, momentum=0.9), batch_size=10, epochs=2,
              lr_schedule=schedule)
    before = [p.copy() for p in model.parameters()]
    with pytest.raises(ValueError, match="OneCycleLR has total_steps=4"):
        model.fit(X, y, batch_size=10, epochs=3, initial_epoch=2, lr_schedule=schedule)
    for a, b in zip(before, model.parameters()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="cycle_momentum needs SGD with momentum > 0"):
        model.fit(X, y, optimizer="sgd", lr_schedule=fnn.optim.OneCycleLR(0.1, 4))


def test_per_step_settings_reach_every_update(rng):
    """Each update uses its own step's learning rate and momentum from the schedule: SGD
    with one-cycle over two epochs of three steps (a last short batch), against the NumPy
    statement of SGD stepped with lr_at(k) and momentum_at(k)."""
    model = fnn.Sequential([fnn.Dense(5, 8), fnn.Tanh(), fnn.Dense(8, 3)], dtype="float64",
                           seed=2)
    X, y = rng.normal(size=(25, 5)), rng.integers(0, 3, 25)
    schedule = fnn.optim.OneCycleLR(0.3, total_steps=6, pct_start=0.5)
    layers = reference_layers(model)
    params = [p for kind, ps in layers if kind == "dense" for p in ps]
    buffers, step = [None] * len(params), 0
    for _ in range(2):
        for start in range(0, 25, 10):
            _, grads = ref.mlp_loss_and_gradients(layers, X[start:start + 10],
                                                  y[start:start + 10], "cross_entropy")
            for i, g in enumerate(grads):
                params[i][...], buffers[i] = ref.sgd_step(
                    params[i], g, buffers[i], step, lr=schedule.lr_at(step),
                    momentum=schedule.momentum_at(step))
            step += 1
    model.fit(X, y, optimizer=fnn.optim.SGD(lr=0.1, momentum=0.9), epochs=2, batch_size=10,
              shuffle=False, lr_schedule=schedule)
    for got, want in zip(model.parameters(), params):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-13)

