"""GELU (exact and tanh), SiLU, ELU and Softplus: trained as torch trains them, GELU's
lower tail, and a model of each saved and loaded. (Kernels against their NumPy formulas:
test_kernels.py; central differences: test_gradients.py; jvp/vjp: test_forward.py.)"""
import numpy as np
import pytest
from conftest import train_both
from test_forward import torch_modules

import fastnn as fnn
from fastnn import _reference as ref

SMOOTH_ACTIVATIONS = {"gelu": fnn.GELU, "gelu_tanh": lambda: fnn.GELU("tanh"), "silu": fnn.SiLU,
                   "elu": lambda: fnn.ELU(0.7), "softplus": lambda: fnn.Softplus(1.5, 2.0)}


@pytest.mark.parametrize("activation", sorted(SMOOTH_ACTIVATIONS))
def test_activation_trains_as_torch(rng, activation):
    torch = pytest.importorskip("torch")
    model = fnn.Sequential([fnn.Dense(5, 16), SMOOTH_ACTIVATIONS[activation](),
                            fnn.Dense(16, 3)], dtype="float64", seed=1)
    net = torch.nn.Sequential(*torch_modules(model, torch))
    X, y = 2 * rng.normal(size=(40, 5)), rng.integers(0, 3, 40)
    train_both(model, net, torch, X, y, "cross_entropy", torch.nn.CrossEntropyLoss(),
               fnn.optim.SGD(lr=0.1), torch.optim.SGD(net.parameters(), lr=0.1))


@pytest.mark.parametrize("dtype,rtol", [(np.float32, 3e-5), (np.float64, 1e-12)])
def test_gelu_keeps_its_lower_tail(dtype, rtol):
    """GELU(z) = z Phi(z) to relative accuracy down to z = -12 (where (1 + erf) / 2 in
    the working precision would cancel to zero): float32 to the input's own conditioning
    (z^2 ulps), float64 to 1e-12."""
    from fastnn import _engine, _kernels
    z = np.linspace(-12, 4, 20001).astype(dtype)[None]
    a = np.empty_like(z)
    _kernels.activation(_engine.LAYER_KINDS["gelu"], 0.0, z, a)
    want = ref.activation("gelu", z.astype(np.float64))
    np.testing.assert_allclose(a, want, rtol=rtol, atol=0)


@pytest.mark.parametrize("dtype,rtol", [(np.float32, 3e-5), (np.float64, 1e-12)])
def test_gelu_derivative_keeps_its_lower_tail(dtype, rtol):
    """GELU'(z) = Phi(z) + z phi(z) from z = -12 to 4 to a relative accuracy of its terms'
    size (near z = -0.75 they cancel to 0), and exactly 1 / 2 at z = 0 (the float32 loop
    takes Phi as the forward's output over z, and 1 / 2 where z is within 1e-8 of 0)."""
    from scipy.special import ndtr

    from fastnn import _engine, _kernels
    kind = _engine.LAYER_KINDS["gelu"]
    z = np.concatenate([np.linspace(-12, 4, 20001), [0.0, 1e-9, -1e-9, 1e-7, -1e-7]])
    z = z.astype(dtype)[None]
    a, g, dz = np.empty_like(z), np.ones_like(z), np.empty_like(z)
    _kernels.activation(kind, 0.0, z, a)
    _kernels.activation_grad(kind, 0.0, z, a, g, dz)
    z64 = z.astype(np.float64)
    want = ref.activation_grad("gelu", z64, g.astype(np.float64))
    terms = ndtr(z64) + np.abs(z64) * np.exp(-z64 ** 2 / 2) / np.sqrt(2 * np.pi)
    assert (np.abs(dz - want) <= rtol * terms).all()
    assert dz[0, -5] == 0.5


def derivative_terms(kind, z):
    """The size of the terms a derivative sums, where they cancel (SiLU's near -2.4,
    GELU's tanh form's near -0.75): the scale its rounding error is measured against."""
    if kind == "silu":
        s = 1 / (1 + np.exp(-z))
        return s + np.abs(z) * s * (1 - s)
    k, c = np.sqrt(2 / np.pi), 0.044715
    u = 1 + np.tanh(k * (z + c * z ** 3))
    return 0.5 * u + np.abs(0.5 * z * u * (2 - u) * k * (1 + 3 * c * z ** 2))


@pytest.mark.parametrize("kind,slope,threshold,lowest", [
    ("silu", 0.0, 20.0, -10), ("elu", 0.7, 20.0, -10), ("softplus", 1.0, 20.0, -10),
    ("softplus", 1.5, 2.0, -10), ("gelu_tanh", 0.0, 20.0, -4)])
def test_float32_smooth_activations_keep_their_accuracy(kind, slope, threshold, lowest):
    """The float32 loops of SiLU, ELU, softplus and GELU's tanh form (vmath.h: exp, expm1
    and log1p of their own) against float64, from `lowest` to 10 and at inputs down to
    1e-12 in size: values and derivatives to 2e-6 relative (ELU's expm1 and softplus's
    log1p keep their relative accuracy near 0; derivatives whose terms cancel, to the
    size of their terms). GELU's tanh form from -4: lower, its input's rounding alone
    is amplified past 2e-6 (and torch's formula, the float64 reference's, cancels)."""
    from fastnn import _engine, _kernels
    tiny = np.geomspace(1e-12, 1e-2, 200)
    z = np.concatenate([np.linspace(lowest, 10, 20001), tiny, -tiny]).astype(np.float32)[None]
    a, g, dz = np.empty_like(z), np.ones_like(z), np.empty_like(z)
    code = _engine.LAYER_KINDS[kind]
    _kernels.activation(code, slope, z, a, threshold)
    _kernels.activation_grad(code, slope, z, a, g, dz, threshold)
    z64 = z.astype(np.float64)
    np.testing.assert_allclose(a, ref.activation(kind, z64, slope, threshold), rtol=2e-6,
                               atol=0)
    want = ref.activation_grad(kind, z64, np.ones_like(z64), slope, threshold)
    if kind in ("silu", "gelu_tanh"):
        assert (np.abs(dz - want) <= 2e-6 * derivative_terms(kind, z64)).all()
    else:
        np.testing.assert_allclose(dz, want, rtol=2e-6, atol=0)


def test_toolkit_kinds_survive_save_and_load(rng, tmp_path):
    """A model of layer norm and every smooth activation, a smoothed loss and NAdam: the
    loaded copy predicts the same and trains on exactly as the original does."""
    layers = [fnn.Dense(5, 8), fnn.LayerNorm(8, bias=False)]
    for make in SMOOTH_ACTIVATIONS.values():
        layers += [make(), fnn.Dense(8, 8)]
    layers[-1] = fnn.Dense(8, 3)
    model = fnn.Sequential(layers, dtype="float64", seed=3,
                           loss=fnn.CrossEntropyLoss(label_smoothing=0.1))
    X, y = rng.normal(size=(30, 5)), rng.integers(0, 3, 30)
    model.fit(X, y, optimizer=fnn.optim.NAdam(lr=0.01), epochs=2, batch_size=10, verbose=0)
    model.save(tmp_path / "m.fnn")
    copy = fnn.load(tmp_path / "m.fnn")
    assert [layer._config() for layer in copy.layers] == \
        [layer._config() for layer in model.layers]
    assert copy.loss.label_smoothing == 0.1
    np.testing.assert_array_equal(copy.predict(X), model.predict(X))
    for m in (model, copy):
        m.fit(X, y, epochs=2, batch_size=10, shuffle=False, verbose=0)
    for a, b in zip(copy.parameters(), model.parameters()):
        np.testing.assert_array_equal(a, b)

