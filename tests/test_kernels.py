"""Each compiled kernel against its NumPy reference (fastnn/_reference.py)."""
import numpy as np
import pytest

from fastnn import _engine, _kernels
from fastnn import _reference as ref

ACTS = ["identity", "relu", "leaky_relu", "sigmoid", "tanh", "softmax", "gelu", "gelu_tanh",
        "silu", "elu", "softplus"]
TOL = {np.float32: 1e-5, np.float64: 1e-13}
DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
def test_dense_forward(rng, dtype, bias):
    x = rng.normal(size=(9, 5)).astype(dtype)
    w = rng.normal(size=(3, 5)).astype(dtype)
    b = rng.normal(size=3).astype(dtype) if bias else None
    out = np.empty((9, 3), dtype)
    _kernels.dense_forward(x, w, b, out)
    np.testing.assert_allclose(out, ref.dense_forward(x, w, b), rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_backward_with_alpha_beta(rng, dtype):
    x = rng.normal(size=(9, 5)).astype(dtype)
    w = rng.normal(size=(3, 5)).astype(dtype)
    g = rng.normal(size=(9, 3)).astype(dtype)
    dw0, db0 = rng.normal(size=(3, 5)).astype(dtype), rng.normal(size=3).astype(dtype)
    dw, db, dx = dw0.copy(), db0.copy(), np.empty_like(x)
    _kernels.dense_backward(x, w, g, dx, dw, db, dtype(-0.5), dtype(0.75))
    rdx, rdw, rdb = ref.dense_backward(x, w, g)
    tol = dict(rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)
    np.testing.assert_allclose(dx, rdx, **tol)
    np.testing.assert_allclose(dw, -0.5 * rdw + 0.75 * dw0, **tol)
    np.testing.assert_allclose(db, -0.5 * rdb + 0.75 * db0, **tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ACTS)
@pytest.mark.parametrize("shape", [(13, 7), (1100, 1000)])
def test_activation_forward_backward(rng, dtype, kind, shape):
    z = (3 * rng.normal(size=shape)).astype(dtype)
    z[0, :3] = 0  # the kink of ReLU: derivative 0 there, as torch
    g = rng.normal(size=shape).astype(dtype)
    a, dz = np.empty_like(z), np.empty_like(z)
    code = _engine.LAYER_KINDS[kind]
    slope = 1.5 if kind == "softplus" else 0.01 if kind == "leaky_relu" else 0.7
    _kernels.activation(code, slope, z, a, 2.0)
    _kernels.activation_grad(code, slope, z, a, g, dz, 2.0)
    z64, g64 = z.astype(np.float64), g.astype(np.float64)
    tol = dict(rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)
    np.testing.assert_allclose(a, ref.activation(kind, z64, slope, 2.0), **tol)
    np.testing.assert_allclose(dz, ref.activation_grad(kind, z64, g64, slope, 2.0), **tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_saturate_without_overflow(dtype):
    z = np.array([[-1e4, -100, 0, 100, 1e4]], dtype)
    a = np.empty_like(z)
    _kernels.activation(_engine.LAYER_KINDS["sigmoid"], 0, z, a)
    assert np.isfinite(a).all()
    assert (a[0, 0], a[0, 2], a[0, 4]) == (0, 0.5, 1)
    _kernels.activation(_engine.LAYER_KINDS["softmax"], 0, z, a)
    np.testing.assert_allclose(a, [[0, 0, 0, 0, 1]], atol=1e-30)


LOSS_CASES = [("cross_entropy", "labels"), ("cross_entropy", "probs"),
              ("binary_cross_entropy", "probs"), ("mse", "values"), ("l1", "values"),
              ("poisson_nll", "probs")]


def _loss_inputs(rng, name, target_kind, dtype, n=11, c=4, scale=3.0):
    x = (scale * rng.normal(size=(n, c))).astype(dtype)
    if target_kind == "labels":
        return x, None, rng.integers(0, c, n)
    if target_kind == "probs":
        t = rng.random((n, c))
        if name == "cross_entropy":
            t /= t.sum(axis=1, keepdims=True)
        if name == "poisson_nll":
            t = rng.poisson(2.0, (n, c)) * 1.0
        t[0] = 0.3  # rows need not sum to one: the gradient uses sum(t)
        return x, t.astype(dtype), None
    return x, rng.normal(size=(n, c)).astype(dtype), None


def _kernel_loss(name, target_kind, x, t, labels):
    key = {"labels": "cross_entropy_labels", "probs": "cross_entropy_probs"}.get(
        target_kind) if name == "cross_entropy" else name
    divisor = x.shape[0] if name == "cross_entropy" else x.size
    grad = np.empty_like(x)
    total, correct = _kernels.loss(_engine.LOSS_KINDS[key], x, t, labels, grad,
                                   1.0 / divisor)
    return total / divisor, grad, correct


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,target_kind", LOSS_CASES)
def test_loss_value_and_gradient(rng, dtype, name, target_kind):
    x, t, labels = _loss_inputs(rng, name, target_kind, dtype)
    value, grad, _ = _kernel_loss(name, target_kind, x, t, labels)
    target = labels if labels is not None else t.astype(np.float64)
    rvalue, rgrad = ref.loss(name, x.astype(np.float64), target)
    tol = TOL[dtype] * 10
    assert value == pytest.approx(rvalue, rel=tol, abs=tol)
    np.testing.assert_allclose(grad, rgrad, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_is_stable_for_huge_logits(dtype):
    x = np.array([[1e4, 0, -1e4], [-1e4, 1e4, 1e4]], dtype)
    value, grad, _ = _kernel_loss("cross_entropy", "labels", x, None, np.array([0, 0]))
    # row 0: correct with certainty (loss 0); row 1: logsumexp = 1e4 + log 2, minus -1e4
    expected = (0 + (2e4 + np.log(2))) / 2
    assert np.isfinite(value) and value == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(grad, [[0, 0, 0], [-0.5, 0.25, 0.25]], atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_cross_entropy_is_stable_for_huge_logits(dtype):
    x = np.array([[1e4, -1e4, 1e4, -1e4]], dtype)
    t = np.array([[1, 0, 0, 1]], dtype)
    value, grad, correct = _kernel_loss("binary_cross_entropy", "probs", x, t, None)
    assert value == pytest.approx(2e4 / 4, rel=1e-6)
    np.testing.assert_allclose(grad, [[0, 0, 0.25, -0.25]], atol=1e-7)
    assert correct == 2


def test_correct_counts(rng):
    x = rng.normal(size=(50, 5))
    labels = rng.integers(0, 5, 50)
    _, _, correct = _kernel_loss("cross_entropy", "labels", x, None, labels)
    assert correct == np.sum(x.argmax(axis=1) == labels)
    t = rng.random((50, 5))
    _, _, correct = _kernel_loss("cross_entropy", "probs", x, t, None)
    assert correct == np.sum(x.argmax(axis=1) == t.argmax(axis=1))


SGD_SETTINGS = [
    dict(lr=0.1),
    dict(lr=0.1, weight_decay=0.01),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.02),
    dict(lr=0.05, momentum=0.8, nesterov=True),
    dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1),
]


def sgd_hyper(lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    return np.array([lr, momentum, dampening, float(nesterov), weight_decay])


@pytest.mark.parametrize("settings", SGD_SETTINGS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_step_over_several_steps(rng, settings, dtype):
    p = rng.normal(size=50).astype(dtype)
    buf = np.zeros_like(p)
    rp, rbuf = p.astype(np.float64), None
    for step in range(5):
        g = rng.normal(size=50).astype(dtype)
        _kernels.optimizer_step(_engine.OPTIMIZER_KINDS["sgd"], sgd_hyper(**settings), step,
                                p, g, buf)
        rp, rbuf = ref.sgd_step(rp, g.astype(np.float64), rbuf, step, **settings)
    np.testing.assert_allclose(p, rp, rtol=TOL[dtype] * 100, atol=TOL[dtype] * 100)


def test_first_nonfinite_row():
    a = np.zeros((5, 3))
    assert _kernels.first_nonfinite_row(a) == -1
    a[3, 1], a[4, 0] = np.inf, np.nan
    assert _kernels.first_nonfinite_row(a) == 3
    a[1, 2] = -np.inf
    assert _kernels.first_nonfinite_row(a) == 1


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 0.9])
def test_dropout_keeps_the_mean(rng, dtype, p):
    z = (1 + rng.random((400, 500))).astype(dtype)
    g = rng.normal(size=z.shape).astype(dtype)
    a, mask, dz = np.empty_like(z), np.empty_like(z), np.empty_like(z)
    _kernels.dropout(z, a, mask, g, dz, p, 12345)
    assert set(np.unique(mask)) <= {0, dtype(1 / (1 - p))}
    assert (mask == 0).mean() == pytest.approx(p, abs=0.005)
    assert a.mean() == pytest.approx(z.mean(), rel=0.01)
    np.testing.assert_array_equal(a, z * mask)
    np.testing.assert_array_equal(dz, g * mask)  # the derivative of z * mask
    a2 = np.empty_like(z)
    _kernels.dropout(z, a2, mask, g, dz, p, 12345)
    np.testing.assert_array_equal(a, a2)  # the same seed, the same mask


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (37, 53), (64, 256)])
def test_dropout_masks_are_the_documented_generator(rng, dtype, shape):
    """Every mask bit as the NumPy statement of the generator says (odd sizes: the last
    draw's high half unused; the kernel is built per instruction set)."""
    z = rng.normal(size=shape).astype(dtype)
    g, a, mask, dz = np.ones_like(z), np.empty_like(z), np.empty_like(z), np.empty_like(z)
    _kernels.dropout(z, a, mask, g, dz, 0.3, 987654321)
    np.testing.assert_array_equal(mask, ref.dropout_mask(shape, 0.3, 987654321).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_infinite_logits_take_their_limits(dtype):
    """Losses and gradients at +-inf logits are the limits of the formulas: finite
    wherever the mathematics is, +inf where the loss truly is infinite, never NaN."""
    inf = np.inf
    x = np.array([[inf, 0, -inf, inf], [1, -inf, 2, 0], [inf, 3, 0, 0]], dtype)
    labels = np.array([0, 2, 1])
    losses, grads = [], []
    for i in range(3):
        g = np.empty((1, 4), dtype)
        total, _ = _kernels.loss(_engine.LOSS_KINDS["cross_entropy_labels"], x[i:i + 1],
                                 None, labels[i:i + 1], g, 1.0)
        losses.append(total)
        grads.append(g[0])
    assert losses[0] == pytest.approx(np.log(2))  # two +inf entries share the mass
    assert losses[1] == pytest.approx(np.log(np.exp(1) + np.exp(2) + 1) - 2, rel=1e-6)
    assert losses[2] == np.inf  # the label's probability is exactly 0
    np.testing.assert_allclose(grads[0], [-0.5, 0, 0, 0.5])
    np.testing.assert_allclose(grads[2], [1, -1, 0, 0])
    assert np.isfinite(grads[1]).all() and grads[1][1] == 0
    # probability targets: zero weight on an infinite term contributes nothing
    t = np.array([[0.5, 0, 0, 0.5]], dtype)
    g = np.empty((1, 4), dtype)
    total, _ = _kernels.loss(_engine.LOSS_KINDS["cross_entropy_probs"], x[:1], t, None, g,
                             1.0)
    assert total == pytest.approx(np.log(2))
    np.testing.assert_allclose(g[0], [0, 0, 0, 0], atol=1e-7)
    # binary cross-entropy: 0 when the target agrees completely, else +inf
    for logit, target, expected in [(inf, 1, 0), (inf, 0, inf), (inf, 0.5, inf),
                                    (-inf, 0, 0), (-inf, 1, inf), (-inf, 0.25, inf)]:
        g = np.empty((1, 1), dtype)
        total, _ = _kernels.loss(_engine.LOSS_KINDS["binary_cross_entropy"],
                                 np.array([[logit]], dtype), np.array([[target]], dtype), None,
                                 g, 1.0)
        assert total == expected, (logit, target)
        assert g[0, 0] == (1.0 if logit > 0 else 0.0) - target
    # NaN still propagates
    g = np.empty((1, 4), dtype)
    total, _ = _kernels.loss(_engine.LOSS_KINDS["cross_entropy_labels"],
                             np.array([[np.nan, 0, 1, 2]], dtype), None, labels[:1], g, 1.0)
    assert np.isnan(total)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_loop_rounds_as_written(rng, dtype):
    """The Adam loop is built for several instruction sets (csrc/updates.h, picked at load
    time); with contraction off, whichever runs rounds each operation as written: equal,
    bitwise, to NumPy doing the same operations in the same order."""
    n = 1003  # not a multiple of any vector width: the remainder loop runs too
    p, g, m = (rng.normal(size=n).astype(dtype) for _ in range(3))
    v = rng.random(n).astype(dtype)
    lr, b1, b2, eps, step = 1e-3, 0.9, 0.999, 1e-8, 4
    state = [m.copy(), v.copy(), np.zeros(n, dtype)]
    got = p.copy()
    _kernels.optimizer_step(_engine.OPTIMIZER_KINDS["adam"], [lr, b1, b2, eps, 0, 0, 0],
                            step, got, g, *state)
    one = dtype(1)
    b1_, b2_ = dtype(b1), dtype(b2)
    step_size = dtype(lr / (1 - b1 ** (step + 1)))
    bc2_sqrt = dtype(np.sqrt(1 - b2 ** (step + 1)))
    m_ref = b1_ * m + (one - b1_) * g
    v_ref = b2_ * v + (one - b2_) * g * g
    p_ref = p * one - step_size * (m_ref / (np.sqrt(v_ref) / bc2_sqrt + dtype(eps)))
    np.testing.assert_array_equal(state[0], m_ref)
    np.testing.assert_array_equal(state[1], v_ref)
    np.testing.assert_array_equal(got, p_ref)


def _expf_as_written(x):
    """csrc/vmath.h's fastnn_expf, step by step in NumPy float32."""
    f = np.float32
    x = np.minimum(np.maximum(x.astype(np.float32), f(-88.0)), f(88.0))
    n = (x * f(1.44269504088896341) + f(12582912.0)) - f(12582912.0)
    r = x - n * f(0.693359375) - n * f(-2.12194440e-4)
    p = f(1.9875691500e-4)
    for c in (1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
              5.0000001201e-1):
        p = p * r + f(c)
    p = p * r * r + r + f(1.0)
    bits = ((n.astype(np.int32) + 127).astype(np.uint32) << 23).view(np.float32)
    return p * bits


def test_float32_sigmoid_and_tanh_loops_round_as_written(rng):
    """The float32 sigmoid/tanh passes are built per instruction set (csrc/vmath.h); each
    must round every operation as written: bitwise equal to NumPy doing the same steps."""
    f = np.float32
    z = (rng.normal(size=(97, 33)) * 6).astype(np.float32)  # odd sizes: remainder loops
    a = np.empty_like(z)
    _kernels.activation(_engine.LAYER_KINDS["sigmoid"], 0.0, z, a)
    e = _expf_as_written(np.where(z < 0, z, -z))
    s = (1.0 / (1.0 + e.astype(np.float64))).astype(np.float32)
    np.testing.assert_array_equal(a, np.where(z >= 0, s, e * s))
    _kernels.activation(_engine.LAYER_KINDS["tanh"], 0.0, z, a)
    x = z
    absx, zz = np.abs(x), x * x
    small = ((((f(-5.70498872745e-3) * zz + f(2.06390887954e-2)) * zz - f(5.37397155531e-2))
              * zz + f(1.33314422036e-1)) * zz - f(3.33332819422e-1)) * zz * x + x
    large = f(1.0) - f(2.0) / (_expf_as_written(f(2.0) * absx) + f(1.0))
    large = np.where(x < 0, -large, large)
    np.testing.assert_array_equal(a, np.where(absx < f(0.625), small, large))
