"""Property-based checks (hypothesis): for random layer sizes, batch sizes, dtypes, input
layouts and thread counts, predict, gradients and one SGD step agree with the NumPy
reference of the same formulas."""
import numpy as np
from conftest import reference_layers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastnn as fnn
from fastnn import _reference as ref

ACTS = ["relu", "leaky_relu", "sigmoid", "tanh", "identity"]


@st.composite
def problems(draw):
    widths = draw(st.lists(st.integers(1, 300), min_size=2, max_size=4))
    acts = [draw(st.sampled_from(ACTS)) for _ in widths[2:]]
    n = draw(st.integers(1, 60))
    batch = draw(st.sampled_from([1, 7, n, n + 5, max(1, n // 3)]))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    layout = draw(st.sampled_from(["C", "F", "sliced", "reversed"]))
    threads = draw(st.sampled_from([1, 2]))
    loss = draw(st.sampled_from(["cross_entropy", "mse"]))
    seed = draw(st.integers(0, 2**16))
    return widths, acts, n, batch, dtype, layout, threads, loss, seed


def layout_of(X, layout):
    if layout == "F":
        return np.asfortranarray(X)
    if layout == "sliced":
        return np.repeat(X, 2, axis=1)[:, ::2]
    if layout == "reversed":
        return X[::-1].copy()[::-1]
    return X


# derandomize: CI sees the same 60 cases every run (no flaky landings)
@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_engine_agrees_with_reference(problem):
    widths, acts, n, batch, dtype, layout, threads, loss, seed = problem
    rng = np.random.default_rng(seed)
    layers = [fnn.Dense(widths[0], widths[1])]
    for act, (a, b) in zip(acts, zip(widths[1:-1], widths[2:])):
        layers += [act, fnn.Dense(a, b)]
    model = fnn.Sequential(layers, dtype=dtype, seed=seed)
    X = rng.normal(size=(n, widths[0]))
    y = rng.integers(0, widths[-1], n) if loss == "cross_entropy" else \
        rng.normal(size=(n, widths[-1]))
    tol = dict(rtol=2e-3, atol=2e-4) if dtype == "float32" else dict(rtol=1e-9, atol=1e-11)
    with fnn.threads(threads):
        Xl = layout_of(X.astype(dtype), layout)
        spec = reference_layers(model)
        _, expected_out = ref.mlp_forward(spec, Xl.astype(np.float64))
        np.testing.assert_allclose(model.predict(Xl), expected_out, **tol)
        _, expected_grads = ref.mlp_loss_and_gradients(spec, Xl.astype(np.float64), y, loss)
        for got, want in zip(model.gradients(Xl, y, loss), expected_grads):
            np.testing.assert_allclose(got, want, **tol)
        # one epoch of SGD, in order: matches the reference batch by batch (a small lr
        # keeps every random network bounded, so float32 rounding stays comparable)
        lr = 1e-3
        params = [p.astype(np.float64) for p in model.parameters()]
        b = min(batch, n)
        for start in range(0, n, b):
            spec_now = _spec_with(spec, params)
            _, grads = ref.mlp_loss_and_gradients(spec_now, Xl[start:start + b].astype(
                np.float64), y[start:start + b], loss)
            params = [p - lr * g for p, g in zip(params, grads)]
        model.fit(Xl, y, loss=loss, optimizer=fnn.optim.SGD(lr=lr), batch_size=batch,
                  shuffle=False)
        for got, want in zip(model.parameters(), params):
            np.testing.assert_allclose(got, want, **tol)


def _spec_with(spec, params):
    """The reference layer list with the dense parameters replaced, in order."""
    it = iter(params)
    out = []
    for kind, ps in spec:
        if kind == "dense":
            w = next(it)
            b = next(it) if ps[1] is not None else None
            out.append(("dense", (w, b)))
        else:
            out.append((kind, ps))
    return out


@st.composite
def diverging_fits(draw):
    """A float32 fit with a learning rate far too large for its data's scale."""
    optimizer = draw(st.sampled_from([
        lambda lr: fnn.optim.SGD(lr=lr), lambda lr: fnn.optim.SGD(lr=lr, momentum=0.9),
        lambda lr: fnn.optim.Adam(lr=lr), lambda lr: fnn.optim.AdamW(lr=lr),
        lambda lr: fnn.optim.RMSprop(lr=lr), lambda lr: fnn.optim.Adagrad(lr=lr)]))
    lr = draw(st.sampled_from([1.0, 30.0, 1e3, 1e6]))
    loss = draw(st.sampled_from(["mse", "poisson_nll", "cross_entropy", "l1"]))
    scale = draw(st.sampled_from([1.0, 1e3, 1e8, 1e19, 1e38]))
    batch = draw(st.sampled_from([4, 16, 64]))
    batch_norm = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    return optimizer, lr, loss, scale, batch, batch_norm, seed


@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(diverging_fits())
def test_a_diverging_fit_never_leaves_nan_or_inf_behind(case):
    """However fit ends (returning, or FloatingPointError at a batch), the parameters,
    the optimizer's state and batch norm's running statistics are all finite: an update
    that overflows is undone like a loss that does (98 of 395 such fits left NaN or inf
    behind when only the loss was checked)."""
    optimizer, lr, loss, scale, batch, batch_norm, seed = case
    rng = np.random.default_rng(seed)
    X = (np.clip(rng.normal(size=(64, 5)), -3, 3) * scale).astype(np.float32)
    y = rng.integers(0, 3, 64) if loss == "cross_entropy" else \
        np.abs(rng.normal(size=(64, 3))).astype(np.float32) * 3
    middle = [fnn.BatchNorm1d(8)] if batch_norm else []
    model = fnn.Sequential([fnn.Dense(5, 8)] + middle + [fnn.ReLU(), fnn.Dense(8, 3)],
                           seed=seed)
    try:
        model.fit(X, y, loss=loss, optimizer=optimizer(lr), epochs=3, batch_size=batch)
    except FloatingPointError:
        pass
    state = model.parameters() + model.buffers() + [
        s for per_param in model.optimizer.state for s in per_param if s is not None]
    assert all(np.isfinite(a).all() for a in state)
