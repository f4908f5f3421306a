"""Forward and reverse mode (jvp, vjp, jacobian, jvp_parameters) against torch.func, central
differences and each other, for every layer kind and activation."""
import numpy as np
import pytest

import fastnn as fnn
from fastnn import forward

HIDDEN = {
    "relu": fnn.ReLU, "leaky_relu": lambda: fnn.LeakyReLU(0.1), "sigmoid": fnn.Sigmoid,
    "tanh": fnn.Tanh, "identity": fnn.Identity, "gelu": fnn.GELU,
    "gelu_tanh": lambda: fnn.GELU("tanh"), "silu": fnn.SiLU, "elu": lambda: fnn.ELU(0.7),
    "softplus": lambda: fnn.Softplus(1.5, 2.0),
}


def network(hidden="tanh", head=None, batchnorm=True, affine=True, dtype="float64", seed=0):
    """Dense, batch norm (running statistics set away from 0 and 1), the activation,
    dropout, Dense, the activation, Dense, and an optional final Softmax or Sigmoid."""
    rng = np.random.default_rng(seed)
    layers = [fnn.Dense(5, 7)]
    if batchnorm:
        layers.append(fnn.BatchNorm1d(7, affine=affine))
    layers += [HIDDEN[hidden](), fnn.Dropout(0.3), fnn.Dense(7, 6), HIDDEN[hidden](),
               fnn.Dense(6, 4)]
    if head is not None:
        layers.append(head())
    model = fnn.Sequential(layers, dtype=dtype, seed=seed)
    for layer in model.layers:
        if layer.kind == "dense":  # fastnn starts biases at 0: make every term show
            layer.bias[...] = rng.normal(size=layer.bias.shape)
        if layer.kind == "batchnorm":
            layer.running_mean[...] = rng.normal(size=7)
            layer.running_var[...] = rng.uniform(0.5, 2, 7)
            if affine:
                layer.weight[...] = rng.uniform(0.5, 1.5, 7)
                layer.bias[...] = rng.normal(size=7)
    return model


CASES = [(h, None, True, True) for h in HIDDEN] + [
    ("relu", fnn.Softmax, True, True), ("tanh", fnn.Sigmoid, True, False),
    ("sigmoid", None, False, True)]


def torch_modules(model, torch, layers=None):
    """The model's layers (or `layers`) as torch modules (float64), holding copies of
    their parameters and statistics; a residual block as a module adding its input."""
    modules = []
    for layer in model.layers if layers is None else layers:
        if layer.kind == "residual":
            modules.append(TorchResidual(torch, torch_modules(model, torch, layer.layers)))
            continue
        if layer.kind == "dense":
            linear = torch.nn.Linear(layer.in_features, layer.out_features).double()
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(layer.weight))
                linear.bias.copy_(torch.from_numpy(layer.bias))
            modules.append(linear)
        elif layer.kind == "batchnorm":
            bn = torch.nn.BatchNorm1d(layer.num_features, affine=layer.affine).double()
            with torch.no_grad():
                bn.running_mean.copy_(torch.from_numpy(layer.running_mean))
                bn.running_var.copy_(torch.from_numpy(layer.running_var))
                if layer.affine:
                    bn.weight.copy_(torch.from_numpy(layer.weight))
                    bn.bias.copy_(torch.from_numpy(layer.bias))
            modules.append(bn)
        elif layer.kind == "layernorm":
            ln = torch.nn.LayerNorm(layer.num_features, eps=layer.eps,
                                    elementwise_affine=layer.elementwise_affine,
                                    bias=layer.has_bias).double()
            with torch.no_grad():
                for ours, theirs in zip(layer.parameters(), ln.parameters()):
                    theirs.copy_(torch.from_numpy(ours))
            modules.append(ln)
        else:
            plain = {"relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh,
                     "silu": torch.nn.SiLU, "identity": torch.nn.Identity}
            settled = {"leaky_relu": lambda a: torch.nn.LeakyReLU(a.negative_slope),
                       "gelu": lambda a: torch.nn.GELU(a.approximate),
                       "elu": lambda a: torch.nn.ELU(a.alpha),
                       "softplus": lambda a: torch.nn.Softplus(a.beta, a.threshold),
                       "dropout": lambda a: torch.nn.Dropout(a.p),
                       "softmax": lambda a: torch.nn.Softmax(dim=1)}
            modules.append(plain[layer.kind]() if layer.kind in plain
                           else settled[layer.kind](layer))
    return modules


def TorchResidual(torch, modules):
    class Residual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.block = torch.nn.Sequential(*modules)

        def forward(self, x):
            return x + self.block(x)
    return Residual()


def torch_net(model):
    """The same function in torch (eval mode: running statistics, no dropout)."""
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(*torch_modules(model, torch)).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return torch, net


@pytest.mark.parametrize("hidden,head,batchnorm,affine", CASES)
def test_against_torch_func(rng, hidden, head, batchnorm, affine):
    model = network(hidden, head, batchnorm, affine)
    torch, net = torch_net(model)
    from torch.func import jacfwd, jacrev, jvp, vjp
    X, V, U = rng.normal(size=(9, 5)), rng.normal(size=(9, 5)), rng.normal(size=(9, 4))
    tX = torch.from_numpy(X)
    out, jv = jvp(net, (tX,), (torch.from_numpy(V),))
    ours_out, ours_jv = model.jvp(X, V)
    np.testing.assert_allclose(ours_out, out.numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(ours_jv, jv.numpy(), rtol=1e-10, atol=1e-14)
    _, pull = vjp(net, tX)
    np.testing.assert_allclose(model.vjp(X, U)[1], pull(torch.from_numpy(U))[0].numpy(),
                               rtol=1e-10, atol=1e-14)
    per_row = [jacfwd(net)(tX[i:i + 1])[0, :, 0, :].numpy() for i in range(3)]
    np.testing.assert_allclose(model.jacobian(X[:3], mode="forward"), per_row, rtol=1e-10,
                               atol=1e-14)
    full = jacrev(net)(tX).numpy()
    np.testing.assert_allclose(model.jacobian(X, mode="reverse"),
                               np.stack([full[i, :, i, :] for i in range(9)]), rtol=1e-10,
                               atol=1e-14)


@pytest.mark.parametrize("hidden,head,batchnorm,affine", CASES)
def test_against_central_differences_and_each_other(rng, hidden, head, batchnorm, affine):
    """jvp is the derivative of predict (central differences); <U, J V> = <U^T J, V>
    row by row; forward and reverse Jacobians agree and equal jvp along unit vectors."""
    model = network(hidden, head, batchnorm, affine)
    X, V, U = rng.normal(size=(6, 5)), rng.normal(size=(6, 5)), rng.normal(size=(6, 4))
    out, JV = model.jvp(X, V)
    np.testing.assert_array_equal(out, model.predict(X))
    h = 1e-6
    numeric = (model.predict(X + h * V) - model.predict(X - h * V)) / (2 * h)
    np.testing.assert_allclose(JV, numeric, rtol=1e-6, atol=1e-8)
    _, UJ = model.vjp(X, U)
    np.testing.assert_allclose(np.sum(U * JV, axis=1), np.sum(UJ * V, axis=1), rtol=1e-12,
                               atol=1e-14)
    J_forward, J_reverse = model.jacobian(X, "forward"), model.jacobian(X, "reverse")
    assert J_forward.shape == (6, 4, 5)
    np.testing.assert_allclose(J_forward, J_reverse, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.einsum("nij,nj->ni", J_forward, V), JV, rtol=1e-12,
                               atol=1e-14)


@pytest.mark.parametrize("loss,head", [("cross_entropy", fnn.Softmax), ("mse", None),
                                       ("binary_cross_entropy", fnn.Sigmoid)])
def test_jvp_parameters_is_the_gradient_along_the_direction(rng, loss, head):
    """Forward mode in parameter space equals the dot product with gradients() (every
    parameter kind: Dense with and without bias and an L2 penalty, batch norm)."""
    model = fnn.Sequential([fnn.Dense(5, 7, l2=0.01), fnn.BatchNorm1d(7), fnn.Tanh(),
                            fnn.Dense(7, 6, bias=False), fnn.ReLU(), fnn.Dense(6, 3)]
                           + ([head()] if head else []), dtype="float64", seed=2)
    for p in model.parameters():
        p += rng.normal(scale=0.1, size=p.shape)  # biases and batch norm away from 0 and 1
    X = rng.normal(size=(11, 5))
    y = {"cross_entropy": rng.integers(0, 3, 11), "mse": rng.normal(size=(11, 3)),
         "binary_cross_entropy": (rng.random((11, 3)) > 0.5).astype(float)}[loss]
    D = [rng.normal(size=p.shape) for p in model.parameters()]
    want = sum(float(np.vdot(g, d)) for g, d in zip(model.gradients(X, y, loss), D))
    assert model.jvp_parameters(X, y, D, loss) == pytest.approx(want, rel=1e-12)
    h = 1e-6  # and the derivative of evaluate's loss along D
    params = model.parameters()
    for p, d in zip(params, D):
        p += h * d
    up = model.evaluate(X, y, loss)["loss"]
    for p, d in zip(params, D):
        p -= 2 * h * d
    down = model.evaluate(X, y, loss)["loss"]
    assert want == pytest.approx((up - down) / (2 * h), rel=1e-6)


def test_float32_and_chunks(rng, monkeypatch):
    """float32 agrees with float64 to float32 rounding; small chunks give the same."""
    model64, model32 = network(), network(dtype="float32")
    X, V = rng.normal(size=(40, 5)), rng.normal(size=(40, 5))
    np.testing.assert_allclose(model32.jvp(X, V)[1], model64.jvp(X, V)[1], rtol=1e-4,
                               atol=1e-5)
    assert model32.jacobian(X).dtype == np.float32
    whole = model64.jacobian(X, "forward"), model64.vjp(X, V[:, :4])[1]
    monkeypatch.setattr(forward, "CHUNK_VALUES", 50)  # a few rows per chunk
    np.testing.assert_array_equal(model64.jacobian(X, "forward"), whole[0])
    np.testing.assert_array_equal(model64.vjp(X, V[:, :4])[1], whole[1])


def test_bad_input_is_named_and_changes_nothing(rng):
    model = network()
    before = [p.copy() for p in model.parameters()]
    X = rng.normal(size=(4, 5))
    with pytest.raises(ValueError, match=r"V must have shape \(4, 5\) \(that of X\), got "
                                         r"\(4, 4\)"):
        model.jvp(X, np.ones((4, 4)))
    with pytest.raises(ValueError, match=r"U must have shape \(4, 4\)"):
        model.vjp(X, np.ones((4, 5)))
    with pytest.raises(ValueError, match="V contains NaN or inf"):
        model.jvp(X, np.full((4, 5), np.nan))
    with pytest.raises(ValueError, match="directions must be a list of 8 arrays"):
        model.jvp_parameters(X, [0, 1, 2, 3], [np.ones(3)])
    with pytest.raises(ValueError, match=r"directions\[0\] must have shape \(7, 5\)"):
        model.jvp_parameters(X, [0, 1, 2, 3], [np.ones(3)] * 8)
    with pytest.raises(ValueError, match="mode must be"):
        model.jacobian(X, mode="sideways")
    for p, q in zip(model.parameters(), before):
        np.testing.assert_array_equal(p, q)


def check_modes(model, X, rng):
    """jvp against central differences of predict; vjp, jvp and jacobian against each
    other (a new kind's forward and reverse mode, without torch)."""
    V, U = rng.normal(size=X.shape), rng.normal(size=(X.shape[0], model.n_outputs))
    _, JV = model.jvp(X, V)
    eps = 1e-6
    np.testing.assert_allclose(JV, (model.predict(X + eps * V) - model.predict(X - eps * V))
                               / (2 * eps), rtol=1e-6, atol=1e-8)
    _, UJ = model.vjp(X, U)
    J = model.jacobian(X)
    np.testing.assert_allclose(UJ, np.einsum("io,iod->id", U, J), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(JV, np.einsum("iod,id->io", J, V), rtol=1e-12, atol=1e-14)
