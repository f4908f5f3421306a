"""SGD as torch.optim.SGD defines it, checked through whole training runs: fit with
shuffle=False against a NumPy reference that trains the same network batch by batch."""
import numpy as np
import pytest
from conftest import reference_layers
from test_kernels import SGD_SETTINGS

import fastnn as fnn
from fastnn import _reference as ref


def reference_fit(model, X, y, loss, batch_size, epochs, **sgd):
    """Train a float64 copy of model with the reference formulas; return its parameters."""
    layers = reference_layers(model)
    params = [p for _, ps in layers if _ == "dense" for p in ps if p is not None]
    bufs = [None] * len(params)
    step = 0
    for _ in range(epochs):
        for start in range(0, len(X), batch_size):
            xb, yb = X[start:start + batch_size], y[start:start + batch_size]
            _, grads = ref.mlp_loss_and_gradients(layers, xb, yb, loss)
            for i, g in enumerate(grads):
                new, bufs[i] = ref.sgd_step(params[i], g, bufs[i], step, **sgd)
                params[i][...] = new  # in place: `layers` holds the same arrays
            step += 1
    return params


def make_model(dtype="float64", seed=0):
    return fnn.Sequential([fnn.Dense(6, 12), fnn.ReLU(), fnn.Dense(12, 8, bias=False),
                           fnn.Tanh(), fnn.Dense(8, 3)], dtype=dtype, seed=seed)


@pytest.mark.parametrize("settings", SGD_SETTINGS)
@pytest.mark.parametrize("batch_size", [1, 7, 16, 64])  # 7 and 16 leave a partial batch
def test_fit_matches_reference_sgd(rng, settings, batch_size):
    X = rng.normal(size=(40, 6))
    y = rng.integers(0, 3, 40)
    model = make_model()
    expected = reference_fit(model, X, y, "cross_entropy", min(batch_size, 40), 2, **settings)
    optimizer = fnn.optim.SGD(**settings)
    model.fit(X, y, optimizer=optimizer, epochs=2, batch_size=batch_size, shuffle=False)
    assert optimizer.steps == 2 * -(-40 // min(batch_size, 40))
    for got, want in zip(model.parameters(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("loss", ["binary_cross_entropy", "mse", "l1"])
def test_fit_matches_reference_other_losses(rng, loss):
    X = rng.normal(size=(40, 6))
    y = rng.random((40, 3)) if loss != "binary_cross_entropy" else \
        (rng.random((40, 3)) > 0.5).astype(float)
    model = make_model()
    expected = reference_fit(model, X, y, loss, 8, 3, lr=0.05, momentum=0.5)
    model.fit(X, y, loss=loss, optimizer=fnn.optim.SGD(lr=0.05, momentum=0.5), epochs=3,
              batch_size=8, shuffle=False)
    for got, want in zip(model.parameters(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_float32_training_follows_float64(rng):
    X = rng.normal(size=(64, 6))
    y = rng.integers(0, 3, 64)
    m64, m32 = make_model("float64", 3), make_model("float32", 3)
    for p32, p64 in zip(m32.parameters(), m64.parameters()):
        p32[...] = p64  # the same start (float32 draws differ from float64 draws)
    for m in (m64, m32):
        m.fit(X, y, optimizer=fnn.optim.SGD(lr=0.05, momentum=0.9), epochs=3, batch_size=16,
              shuffle=False)
    for p32, p64 in zip(m32.parameters(), m64.parameters()):
        assert p32.dtype == np.float32
        np.testing.assert_allclose(p32, p64, rtol=1e-4, atol=1e-5)


def test_fit_without_optimizer_continues_state(rng):
    """fit(optimizer=None) keeps the model's optimizer and its momentum buffers."""
    X, y = rng.normal(size=(40, 6)), rng.integers(0, 3, 40)
    a, b = make_model(seed=1), make_model(seed=1)
    a.fit(X, y, optimizer=fnn.optim.SGD(lr=0.05, momentum=0.9), epochs=2, shuffle=False)
    b.fit(X, y, optimizer=fnn.optim.SGD(lr=0.05, momentum=0.9), epochs=1, shuffle=False)
    b.fit(X, y, epochs=1, shuffle=False)
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p, q)


def test_lr_change_between_fits_takes_effect(rng):
    X, y = rng.normal(size=(40, 6)), rng.integers(0, 3, 40)
    model = make_model()
    opt = fnn.optim.SGD(lr=0.05)
    model.fit(X, y, optimizer=opt, epochs=1, shuffle=False)
    before = [p.copy() for p in model.parameters()]
    opt.lr = 0.0
    model.fit(X, y, epochs=1, shuffle=False)
    for p, q in zip(before, model.parameters()):
        np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("kwargs,message", [
    (dict(lr=-1), "Invalid learning rate: -1"),
    (dict(lr=0.1, momentum=-0.5), "Invalid momentum value: -0.5"),
    (dict(lr=0.1, weight_decay=-1e-3), "Invalid weight_decay value: -0.001"),
    (dict(lr=0.1, nesterov=True), "Nesterov momentum requires a momentum and zero dampening"),
    (dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "Nesterov momentum requires"),
    (dict(lr=float("nan")), "Invalid learning rate: nan"),
])
def test_sgd_rejects_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fnn.optim.SGD(**kwargs)


# -- Adam, AdamW, RMSprop, Adagrad: several steps against the documented algorithm ----------

OTHER_OPTIMIZERS = [
    (fnn.optim.Adam, ref.adam_step, dict(lr=0.01)),
    (fnn.optim.Adam, ref.adam_step, dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1)),
    (fnn.optim.Adam, ref.adam_step, dict(lr=0.01, amsgrad=True, eps=1e-6)),
    (fnn.optim.AdamW, ref.adamw_step, dict(lr=0.01)),
    (fnn.optim.AdamW, ref.adamw_step, dict(lr=0.02, weight_decay=0.3, amsgrad=True)),
    (fnn.optim.RMSprop, ref.rmsprop_step, dict(lr=0.01)),
    (fnn.optim.RMSprop, ref.rmsprop_step, dict(lr=0.01, alpha=0.9, weight_decay=0.05)),
    (fnn.optim.RMSprop, ref.rmsprop_step, dict(lr=0.01, momentum=0.9)),
    (fnn.optim.RMSprop, ref.rmsprop_step, dict(lr=0.01, centered=True, momentum=0.5)),
    (fnn.optim.Adagrad, ref.adagrad_step, dict(lr=0.05)),
    (fnn.optim.Adagrad, ref.adagrad_step,
     dict(lr=0.05, lr_decay=0.1, weight_decay=0.01, initial_accumulator_value=0.5)),
]


def reference_fit_with(step_fn, settings, model, X, y, loss, batch_size, epochs):
    layers = reference_layers(model)
    params = [p for _, ps in layers if _ == "dense" for p in ps if p is not None]
    # each weight's L2 penalty adds 2 lambda W to its gradient
    l2 = [2 * layer.l2 if i == 0 else 0.0 for layer in model.layers if layer.kind == "dense"
          for i, _ in enumerate(layer.parameters())]
    states = [None] * len(params)
    step = 0
    for _ in range(epochs):
        for start in range(0, len(X), batch_size):
            _, grads = ref.mlp_loss_and_gradients(layers, X[start:start + batch_size],
                                                  y[start:start + batch_size], loss)
            for i, g in enumerate(grads):
                new, states[i] = step_fn(params[i], g + l2[i] * params[i], states[i], step,
                                         **settings)
                params[i][...] = new
            step += 1
    return params


@pytest.mark.parametrize("cls,step_fn,settings", OTHER_OPTIMIZERS,
                         ids=[f"{c.__name__}-{i}" for i, (c, _, _) in
                              enumerate(OTHER_OPTIMIZERS)])
def test_optimizer_matches_documented_algorithm(rng, cls, step_fn, settings):
    X, y = rng.normal(size=(48, 6)), rng.integers(0, 3, 48)
    model = make_model()
    expected = reference_fit_with(step_fn, settings, model, X, y, "cross_entropy", 16, 3)
    optimizer = cls(**settings)
    model.fit(X, y, optimizer=optimizer, epochs=3, batch_size=16, shuffle=False)
    assert optimizer.steps == 9
    for got, want in zip(model.parameters(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_torch_defaults():
    assert fnn.optim.Adam()._config() == dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                                              weight_decay=0.0, amsgrad=False)
    assert fnn.optim.AdamW().weight_decay == 1e-2
    assert fnn.optim.RMSprop()._config() == dict(lr=1e-2, alpha=0.99, eps=1e-8,
                                                 weight_decay=0.0, momentum=0.0,
                                                 centered=False)
    assert fnn.optim.Adagrad()._config() == dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                                                 initial_accumulator_value=0.0, eps=1e-10)


@pytest.mark.parametrize("make,message", [
    (lambda: fnn.optim.Adam(betas=(1.0, 0.9)), "Invalid beta parameter at index 0: 1.0"),
    (lambda: fnn.optim.Adam(betas=(0.9, -0.1)), "Invalid beta parameter at index 1"),
    (lambda: fnn.optim.AdamW(eps=-1), "Invalid epsilon value: -1"),
    (lambda: fnn.optim.RMSprop(alpha=-0.5), "Invalid alpha value: -0.5"),
    (lambda: fnn.optim.Adagrad(lr_decay=-1), "Invalid lr_decay value: -1"),
])
def test_bad_optimizer_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_adam_trains_mnist_like_problem(rng):
    X = rng.normal(size=(600, 6))
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 0.5)
    model = make_model("float32")
    model.fit(X, y, optimizer=fnn.optim.Adam(lr=0.01), epochs=30, batch_size=32)
    assert model.evaluate(X, y)["accuracy"] > 0.95


def sgd_as_step(p, g, state, step, **settings):
    new, buf = ref.sgd_step(p, g, state, step, **settings)
    return new, buf


@pytest.mark.parametrize("cls,step_fn,settings", [
    (fnn.optim.SGD, sgd_as_step, dict(lr=0.05)),
    (fnn.optim.SGD, sgd_as_step, dict(lr=0.05, weight_decay=0.01)),
    (fnn.optim.SGD, sgd_as_step, dict(lr=0.05, momentum=0.9, weight_decay=0.01)),
    (fnn.optim.SGD, sgd_as_step, dict(lr=0.05, momentum=0.9, nesterov=True)),
    (fnn.optim.Adam, ref.adam_step, dict(lr=0.01, weight_decay=0.01)),
    (fnn.optim.AdamW, ref.adamw_step, dict(lr=0.01)),
    (fnn.optim.RMSprop, ref.rmsprop_step, dict(lr=0.01, momentum=0.5)),
    (fnn.optim.Adagrad, ref.adagrad_step, dict(lr=0.05)),
])
def test_l2_penalty_in_every_update_path(rng, cls, step_fn, settings):
    X, y = rng.normal(size=(48, 6)), rng.integers(0, 3, 48)
    model = fnn.Sequential([fnn.Dense(6, 12, l2=0.02), fnn.ReLU(), fnn.Dense(12, 3, l2=0.1)],
                           dtype="float64", seed=5)
    expected = reference_fit_with(step_fn, settings, model, X, y, "cross_entropy", 16, 3)
    model.fit(X, y, optimizer=cls(**settings), epochs=3, batch_size=16, shuffle=False)
    for got, want in zip(model.parameters(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("settings", [dict(lr=0.01, momentum=0.9),
                                      dict(lr=0.01, momentum=0.5, dampening=0.2,
                                           weight_decay=0.01)])
def test_momentum_over_hundreds_of_steps_in_one_epoch(rng, settings):
    """The engine keeps momentum buffers scaled (b = s * c) and folds s back in every few
    dozen steps and at the epoch's end: 200 per-example steps cross that several times."""
    X, y = rng.normal(size=(200, 6)), rng.integers(0, 3, 200)
    model = fnn.Sequential([fnn.Dense(6, 3)], dtype="float64", seed=1)
    layers = reference_layers(model)
    params = [p for _, ps in layers for p in ps]
    bufs = [None, None]
    for step in range(200):
        _, grads = ref.mlp_loss_and_gradients(layers, X[step:step + 1], y[step:step + 1],
                                              "cross_entropy")
        for i, g in enumerate(grads):
            new, bufs[i] = ref.sgd_step(params[i], g, bufs[i], step, **settings)
            params[i][...] = new
    optimizer = fnn.optim.SGD(**settings)
    model.fit(X, y, optimizer=optimizer, epochs=1, batch_size=1, shuffle=False)
    for got, want in zip(model.parameters(), params):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)
    for (got,), want in zip(optimizer.state, bufs):  # the stored state is torch's buffer
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)
