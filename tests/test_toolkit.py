"""The tabular toolkit's layers (LayerNorm, GELU, SiLU, ELU, Softplus), losses (Huber,
label smoothing), optimizers (Adadelta, NAdam), class weights and callbacks: against NumPy
statements of their formulas, central differences, torch (where installed) over several
training steps, and through save/load."""
import numpy as np
import pytest
from conftest import reference_layers
from test_forward import torch_modules
from test_gradients import check

import fastnn as fnn
from fastnn import _reference as ref

NEW_ACTIVATIONS = {"gelu": fnn.GELU, "gelu_tanh": lambda: fnn.GELU("tanh"), "silu": fnn.SiLU,
                   "elu": lambda: fnn.ELU(0.7), "softplus": lambda: fnn.Softplus(1.5, 2.0)}


def smoothed(label_smoothing):
    return fnn.CrossEntropyLoss(label_smoothing=label_smoothing)


# -- losses: the NumPy formula and central differences ----------------------------------

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


# -- torch over several steps of training (float64) ------------------------------------

def train_both(model, net, torch, X, y, loss, torch_loss, optimizer, torch_optimizer,
               epochs=3, batch_size=10):
    for _ in range(epochs):
        for start in range(0, len(X), batch_size):
            torch_optimizer.zero_grad()
            torch_loss(net(torch.from_numpy(X[start:start + batch_size])),
                       torch.from_numpy(y[start:start + batch_size])).backward()
            torch_optimizer.step()
    # two fits: the optimizer's state (NAdam's running product too) carries over
    model.fit(X, y, loss=loss, optimizer=optimizer, epochs=1, batch_size=batch_size,
              shuffle=False, verbose=0)
    model.fit(X, y, loss=loss, optimizer=optimizer, epochs=epochs - 1, batch_size=batch_size,
              shuffle=False, verbose=0)
    for got, want in zip(model.parameters(), net.parameters()):
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("activation", sorted(NEW_ACTIVATIONS))
def test_activation_trains_as_torch(rng, activation):
    torch = pytest.importorskip("torch")
    model = fnn.Sequential([fnn.Dense(5, 16), NEW_ACTIVATIONS[activation](),
                            fnn.Dense(16, 3)], dtype="float64", seed=1)
    net = torch.nn.Sequential(*torch_modules(model, torch))
    X, y = 2 * rng.normal(size=(40, 5)), rng.integers(0, 3, 40)
    train_both(model, net, torch, X, y, "cross_entropy", torch.nn.CrossEntropyLoss(),
               fnn.optim.SGD(lr=0.1), torch.optim.SGD(net.parameters(), lr=0.1))


OPTIMIZERS = [
    ("NAdam", dict(lr=0.01)),
    ("NAdam", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1, momentum_decay=0.01)),
    ("NAdam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    ("Adadelta", dict(lr=0.5)),
    ("Adadelta", dict(lr=0.5, rho=0.8, eps=1e-4, weight_decay=0.05)),
]


@pytest.fixture
def torch64():
    """torch with float64 as its default dtype (NAdam keeps its running product in the
    default dtype: float32 would round it), restored afterwards."""
    torch = pytest.importorskip("torch")
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch
    torch.set_default_dtype(saved)


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


# -- Adadelta and NAdam against the NumPy statement (no torch needed) --------------------

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


# -- saved and loaded ------------------------------------------------------------------

def test_new_kinds_survive_save_and_load(rng, tmp_path):
    """A model of every new activation, a smoothed loss and NAdam: the loaded copy
    predicts the same and trains on exactly as the original does."""
    layers = [fnn.Dense(5, 8), fnn.LayerNorm(8, bias=False)]
    for make in NEW_ACTIVATIONS.values():
        layers += [make(), fnn.Dense(8, 8)]
    layers[-1] = fnn.Dense(8, 3)
    model = fnn.Sequential(layers, dtype="float64", seed=3, loss=smoothed(0.1))
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


# -- class weights -----------------------------------------------------------------------

def test_class_weight_is_torch_weighted_cross_entropy(rng, torch64):
    """class_weight={label: w} trains as torch's CrossEntropyLoss(weight=w): each batch's
    loss sum_i w_yi l_i / sum_i w_yi."""
    torch = torch64
    model = fnn.Sequential([fnn.Dense(5, 16), fnn.Tanh(), fnn.Dense(16, 3)], dtype="float64",
                           seed=1)
    net = torch.nn.Sequential(*torch_modules(model, torch))
    X, y = rng.normal(size=(40, 5)), rng.integers(0, 3, 40)
    w = {0: 0.5, 1: 2.0, 2: 3.0}
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    loss = torch.nn.CrossEntropyLoss(weight=torch.tensor([w[0], w[1], w[2]]))
    for _ in range(3):
        for start in range(0, 40, 10):
            optimizer.zero_grad()
            loss(net(torch.from_numpy(X[start:start + 10])),
                 torch.from_numpy(y[start:start + 10])).backward()
            optimizer.step()
    model.fit(X, y, optimizer=fnn.optim.SGD(lr=0.1), epochs=3, batch_size=10, shuffle=False,
              class_weight=w)
    for got, want in zip(model.parameters(), net.parameters()):
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_balanced_class_weight_is_scikit_learns(rng):
    """"balanced" weights each training row n / (k * count of its class), times its
    sample_weight: the same run as fit with those sample weights, bit for bit."""
    from sklearn.utils.class_weight import compute_sample_weight
    X, y = rng.normal(size=(60, 4)), np.repeat([0, 1, 1, 2, 2, 2], 10)
    extra = rng.uniform(0.5, 2, 60)
    runs = []
    for kwargs in (dict(class_weight="balanced", sample_weight=extra),
                   dict(sample_weight=compute_sample_weight("balanced", y) * extra)):
        model = fnn.Sequential([fnn.Dense(4, 8), fnn.ReLU(), fnn.Dense(8, 3)],
                               dtype="float64", seed=4)
        model.fit(X, y, epochs=2, batch_size=16, **kwargs)
        runs.append(model.parameters())
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_estimator_class_weight(rng):
    from sklearn.utils.class_weight import compute_sample_weight

    from fastnn.sklearn import MLPClassifier
    X, y = rng.normal(size=(60, 4)), np.repeat(["a", "b", "b", "c", "c", "c"], 10)
    settings = dict(hidden_layer_sizes=(8,), max_iter=3, random_state=0)
    weighted = MLPClassifier(class_weight={"a": 4.0, "c": 0.5}, **settings).fit(X, y)
    plain = MLPClassifier(**settings).fit(
        X, y, sample_weight=compute_sample_weight({"a": 4.0, "c": 0.5}, y))
    for a, b in zip(weighted.coefs_, plain.coefs_):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="'balanced' is not supported for partial_fit"):
        MLPClassifier(class_weight="balanced").partial_fit(X, y, classes=["a", "b", "c"])


@pytest.mark.parametrize("kwargs,message", [
    (dict(class_weight={5: 1.0}), "class_weight names class 5"),
    (dict(class_weight={0: -1.0}), "class_weight\\[0\\] must be a finite number >= 0"),
    (dict(class_weight="even"), "class_weight must be 'balanced' or a dict"),
    (dict(class_weight="balanced", loss="mse"), "class_weight needs a classification loss"),
])
def test_bad_class_weight_is_refused_and_nothing_changes(rng, kwargs, message):
    model = fnn.Sequential([fnn.Dense(4, 3)], dtype="float64", seed=1)
    before = [p.copy() for p in model.parameters()]
    X, y = rng.normal(size=(12, 4)), rng.integers(0, 3, 12)
    if kwargs.get("loss") == "mse":
        y = rng.normal(size=(12, 3))
    with pytest.raises(ValueError, match=message):
        model.fit(X, y, **kwargs)
    for a, b in zip(before, model.parameters()):
        np.testing.assert_array_equal(a, b)


# -- callbacks -----------------------------------------------------------------------------

class Recorder:
    """Records the hooks fit calls."""

    def __init__(self):
        self.calls = []

    def on_epoch_begin(self, epoch):
        self.calls.append(("epoch", epoch))

    def on_batch_end(self, batch, logs):
        self.calls.append(("batch", batch, logs["size"], logs["loss"]))

    def on_epoch_end(self, epoch, logs):
        self.calls.append(("end", epoch, logs["loss"]))


@pytest.mark.parametrize("weighted", [False, True])
def test_batch_callbacks_see_every_batch_and_change_nothing(rng, weighted):
    """on_epoch_begin before each epoch, on_batch_end after each batch with its size and
    mean loss (the epoch's loss their weighted mean); the parameters are those of a fit
    without callbacks, bit for bit (shuffled, with dropout)."""
    X, y = rng.normal(size=(50, 4)), rng.integers(0, 3, 50)
    w = rng.uniform(0.5, 2, 50) if weighted else None
    runs = []
    for callbacks in ([], [Recorder()]):
        model = fnn.Sequential([fnn.Dense(4, 8), fnn.ReLU(), fnn.Dropout(0.3),
                                fnn.Dense(8, 3)], dtype="float64", seed=5)
        model.fit(X, y, epochs=2, batch_size=16, callbacks=callbacks, sample_weight=w)
        runs.append(model.parameters())
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    calls = callbacks[0].calls
    assert [c[0] for c in calls] == ["epoch"] + ["batch"] * 4 + ["end"] + \
        ["epoch"] + ["batch"] * 4 + ["end"]
    batches = [c for c in calls if c[0] == "batch"]
    assert [c[1] for c in batches] == [0, 1, 2, 3] * 2
    assert [c[2] for c in batches] == [16, 16, 16, 2] * 2
    # sample weights are taken in the shuffled order: check the unweighted mean only
    if not weighted:
        first = batches[:4]
        epoch_loss = sum(c[2] * c[3] for c in first) / 50
        assert epoch_loss == pytest.approx(calls[5][2], rel=1e-12)


def test_model_checkpoint(rng, tmp_path):
    X, y = rng.normal(size=(40, 4)), rng.integers(0, 3, 40)
    model = fnn.Sequential([fnn.Dense(4, 8), fnn.ReLU(), fnn.Dense(8, 3)], dtype="float64",
                           seed=5)
    every = fnn.ModelCheckpoint(tmp_path / "m-{epoch}.npz", monitor="loss")
    model.fit(X, y, epochs=3, batch_size=8, optimizer="adam", callbacks=[every])
    assert every.saved == [str(tmp_path / f"m-{e}.npz") for e in (1, 2, 3)]
    np.testing.assert_array_equal(fnn.load(every.saved[-1]).predict(X), model.predict(X))

    class Rising:  # a monitored value that improves only at the second epoch
        def on_epoch_end(self, epoch, logs):
            logs["score"] = [3.0, 1.0, 2.0][epoch]
    best = fnn.ModelCheckpoint(tmp_path / "best-{epoch}.npz", monitor="score",
                               save_best_only=True)
    model.fit(X, y, epochs=3, batch_size=8, callbacks=[Rising(), best])
    assert best.saved == [str(tmp_path / "best-1.npz"), str(tmp_path / "best-2.npz")]


def test_batch_callbacks_refused_in_data_parallel_fit(rng):
    MPI = pytest.importorskip("mpi4py.MPI")
    model = fnn.Sequential([fnn.Dense(4, 3)], seed=1)
    before = [p.copy() for p in model.parameters()]
    with pytest.raises(ValueError, match="on_batch_end callbacks are not run in data-parallel"):
        model.fit(rng.normal(size=(8, 4)), rng.integers(0, 3, 8), callbacks=[Recorder()],
                  comm=MPI.COMM_SELF)
    for a, b in zip(before, model.parameters()):
        np.testing.assert_array_equal(a, b)


# -- layer norm --------------------------------------------------------------------------

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
    from fastnn import _engine
    torch = torch64
    model = layer_norm_model(affine, bias)
    net = torch.nn.Sequential(*torch_modules(model, torch))
    X, y = 2 * rng.normal(size=(64, 5)) + 1, rng.integers(0, 3, 64)
    if blocks == 2:
        _engine.tune(grain_flops=1.0)  # (restored after the test)
    with fnn.threads(blocks):
        train_both(model, net, torch, X, y, "cross_entropy", torch.nn.CrossEntropyLoss(),
                   fnn.optim.Adam(lr=0.01), torch.optim.Adam(net.parameters(), lr=0.01),
                   batch_size=16)
        assert model.engine.last_threads == blocks


@pytest.mark.parametrize("blocks", [1, 2])
def test_layer_norm_gradients_and_tangents(rng, blocks):
    """Central differences of the loss (its gradient on a plan of one or two blocks);
    jvp and vjp against each other's Jacobian and central differences of predict."""
    from fastnn import _engine
    model = layer_norm_model()
    X, y = rng.normal(size=(7, 5)), rng.integers(0, 3, 7)
    if blocks == 2:
        _engine.tune(grain_flops=1.0)  # (restored after the test)
    with fnn.threads(blocks):
        check(model, X, y, "cross_entropy")
        assert model.engine.last_threads == blocks
    V, U = rng.normal(size=X.shape), rng.normal(size=(7, 3))
    _, JV = model.jvp(X, V)
    eps = 1e-6
    np.testing.assert_allclose(JV, (model.predict(X + eps * V) - model.predict(X - eps * V))
                               / (2 * eps), rtol=1e-7, atol=1e-8)
    _, UJ = model.vjp(X, U)
    J = model.jacobian(X)
    np.testing.assert_allclose(UJ, np.einsum("io,iod->id", U, J), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(JV, np.einsum("iod,id->io", J, V), rtol=1e-12, atol=1e-14)


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


# -- freezing ------------------------------------------------------------------------------

def test_frozen_layers_are_constants_of_the_loss(rng, torch64):
    """A frozen layer's parameters stay as they are and get no optimizer state; the
    others train exactly as torch trains them with the frozen ones' requires_grad off."""
    torch = torch64
    model = fnn.Sequential([fnn.Dense(5, 16), fnn.LayerNorm(16), fnn.ReLU(), fnn.Dense(16, 8),
                            fnn.Tanh(), fnn.Dense(8, 3)], dtype="float64", seed=1)
    model.freeze(3)  # the first Dense and the LayerNorm
    assert [layer.trainable for layer in model.layers if layer.parameters()] == \
        [False, False, True, True]
    net = torch.nn.Sequential(*torch_modules(model, torch))
    for module in list(net)[:2]:
        module.requires_grad_(False)
    frozen = [p.copy() for p in model.parameters()[:4]]
    X, y = rng.normal(size=(40, 5)), rng.integers(0, 3, 40)
    trainable = [p for p in net.parameters() if p.requires_grad]
    train_both(model, net, torch, X, y, "cross_entropy", torch.nn.CrossEntropyLoss(),
               fnn.optim.Adam(lr=0.01), torch.optim.Adam(trainable, lr=0.01))
    for a, b in zip(frozen, model.parameters()[:4]):
        np.testing.assert_array_equal(a, b)
    assert [s[0].shape for s in model.optimizer.state] == [(8, 16), (8,), (3, 8), (3,)]
    assert [g.shape for g in model.gradients(X, y)] == [(8, 16), (8,), (3, 8), (3,)]


def test_frozen_model_saves_loads_and_unfreezes(rng, tmp_path):
    X, y = rng.normal(size=(40, 5)), rng.integers(0, 3, 40)
    model = fnn.Sequential([fnn.Dense(5, 8), fnn.ReLU(), fnn.Dense(8, 3)], dtype="float64",
                           seed=2)
    model.fit(X, y, epochs=2, optimizer="adam")
    model.freeze()  # all but the last Dense
    model.fit(X, y, epochs=1)
    model.save(tmp_path / "m.npz")
    copy = fnn.load(tmp_path / "m.npz")
    assert [layer.trainable for layer in copy.layers] == [False, True, True]
    for m in (model, copy):  # the loaded optimizer state is the head's: same next steps
        m.fit(X, y, epochs=1, shuffle=False)
    for a, b in zip(copy.parameters(), model.parameters()):
        np.testing.assert_array_equal(a, b)
    first = model.parameters()[0].copy()
    model.unfreeze().fit(X, y, epochs=1)
    assert not np.array_equal(first, model.parameters()[0])


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


# -- gradient clipping ------------------------------------------------------------------

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
    from fastnn import _engine
    torch = torch64
    model = fnn.Sequential([fnn.Dense(5, 16), fnn.Tanh(), fnn.Dense(16, 3)], dtype="float64",
                           seed=1)
    net = torch.nn.Sequential(*torch_modules(model, torch))
    X, y = 3 * rng.normal(size=(40, 5)), rng.integers(0, 3, 40)
    settings = dict(lr=0.1, momentum=0.9) if optimizer == "SGD" else dict(lr=0.05)
    theirs = getattr(torch.optim, optimizer)(net.parameters(), **settings)
    loss = torch.nn.CrossEntropyLoss()
    for _ in range(3):
        for start in range(0, 40, 10):
            theirs.zero_grad()
            loss(net(torch.from_numpy(X[start:start + 10])),
                 torch.from_numpy(y[start:start + 10])).backward()
            torch.nn.utils.clip_grad_value_(net.parameters(), 0.2)
            torch.nn.utils.clip_grad_norm_(net.parameters(), 0.4)
            theirs.step()
    if blocks == 2:
        _engine.tune(grain_flops=1.0)  # (restored after the test)
    with fnn.threads(blocks):
        model.fit(X, y, optimizer=getattr(fnn.optim, optimizer)(**settings), epochs=3,
                  batch_size=10, shuffle=False, clip_grad_norm=0.4, clip_grad_value=0.2)
        assert model.engine.last_threads == blocks
    for got, want in zip(model.parameters(), net.parameters()):
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kwargs,message", [
    (dict(clip_grad_norm=0), "clip_grad_norm must be a finite number > 0"),
    (dict(clip_grad_value=float("inf")), "clip_grad_value must be a finite number > 0"),
    (dict(clip_grad_norm="1"), "clip_grad_norm must be"),
])
def test_bad_clipping_is_refused(rng, kwargs, message):
    model = fnn.Sequential([fnn.Dense(4, 3)], seed=1)
    with pytest.raises(ValueError, match=message):
        model.fit(rng.normal(size=(8, 4)), rng.integers(0, 3, 8), **kwargs)


# -- per-step learning-rate schedules ------------------------------------------------------

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
    loss = torch.nn.CrossEntropyLoss()
    for _ in range(3):
        for start in range(0, 40, 10):
            theirs.zero_grad()
            loss(net(torch.from_numpy(X[start:start + 10])),
                 torch.from_numpy(y[start:start + 10])).backward()
            theirs.step()
            their_schedule.step()
    model.fit(X, y, optimizer=ours, epochs=1, batch_size=10, shuffle=False,
              lr_schedule=schedule)
    history = model.fit(X, y, optimizer=ours, epochs=3, initial_epoch=1, batch_size=10,
                        shuffle=False, lr_schedule=schedule)
    for got, want in zip(model.parameters(), net.parameters()):
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-10, atol=1e-12)
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
