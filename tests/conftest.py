"""Shared fixtures: MNIST from ../shared/data/mnist, and models in the reference form."""
import contextlib
import os

import numpy as np
import pytest

import fastnn as fnn

# The session's own group of fastnn processes (csrc/neighbours.h), which the processes its
# tests start inherit: fastnn processes that train elsewhere on this machine then do not
# change how many threads the tests' adapting training runs.
os.environ["FASTNN_NEIGHBOURS"] = f"tests-{os.getpid()}"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST_DIR = os.environ.get("FASTNN_MNIST", os.path.join(ROOT, "..", "shared", "data", "mnist"))

ACTIVATIONS = {
    "identity": fnn.Identity, "relu": fnn.ReLU, "leaky_relu": lambda: fnn.LeakyReLU(0.1),
    "sigmoid": fnn.Sigmoid, "tanh": fnn.Tanh, "softmax": fnn.Softmax, "gelu": fnn.GELU,
    "gelu_tanh": lambda: fnn.GELU("tanh"), "silu": fnn.SiLU, "elu": lambda: fnn.ELU(0.7),
    "softplus": lambda: fnn.Softplus(1.5, 2.0),
}


@pytest.fixture(scope="session")
def mnist():
    """((X_train, y_train), (X_test, y_test)) of real MNIST."""
    if not os.path.exists(os.path.join(MNIST_DIR, "train-images-idx3-ubyte.gz")):
        if os.environ.get("CI"):  # CI has ../shared beside the checkout: never skip there
            pytest.fail(f"MNIST not found in {MNIST_DIR}")
        pytest.skip(f"MNIST not found in {MNIST_DIR}")
    from fastnn.datasets import load_mnist
    return load_mnist(MNIST_DIR, split="train"), load_mnist(MNIST_DIR, split="test")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(autouse=True)
def _restore_engine_settings():
    """A test may change the engine's tuning settings (fastnn._engine.tune: the grain,
    forced grids, a team cap, ...); every one is restored after it."""
    from fastnn import _engine
    saved = _engine.tuning()
    yield
    _engine.tune(**saved)


@pytest.fixture(autouse=True)
def _restore_threads():
    """Each test starts from the setting the last left: unset (the cores available, the
    team sized to a busy machine) unless a test fixed a count."""
    n = fnn._threads._n_threads
    yield
    fnn.set_num_threads(n)


def run_python(args, cwd, timeout=600, env=None):
    """Run python with `args` so it imports the same fastnn as the tests (installed or
    built in place), from a neutral working directory, in env (default: this process's);
    returns the CompletedProcess."""
    import subprocess
    import sys
    package_root = os.path.dirname(os.path.dirname(fnn.__file__))
    env = dict(os.environ if env is None else env, PYTHONPATH=package_root)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env)


def run_to_ok(code, tmp_path, env=None):
    """Run a test's script in a process of its own (it changes CPU affinity; env: its
    environment, default this process's); it prints "ok" last when its assertions hold."""
    result = run_python(["-c", code], cwd=tmp_path, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("ok")


def reference_layers(model):
    """The model's layers as fastnn._reference expects them, with float64 copies."""
    out = []
    for layer in model.layers:
        if layer.kind == "dense":
            b = None if layer.bias is None else layer.bias.astype(np.float64)
            out.append(("dense", (layer.weight.astype(np.float64), b)))
        elif layer.kind == "leaky_relu":
            out.append(("leaky_relu", (layer.negative_slope,)))
        elif layer.kind == "elu":
            out.append(("elu", (layer.alpha,)))
        elif layer.kind == "softplus":
            out.append(("softplus", (layer.beta, layer.threshold)))
        elif layer.kind == "gelu":
            out.append(("gelu_tanh" if layer.approximate == "tanh" else "gelu", None))
        else:
            out.append((layer.kind, None))
    return out


def classification_data(rng, n=64, n_features=6, n_classes=4, dtype=np.float64):
    X = rng.normal(size=(n, n_features)).astype(dtype)
    y = rng.integers(0, n_classes, size=n)
    return X, y


# -- torch as the reference for training (tests that need it skip without it) ---------

@pytest.fixture
def torch64():
    """torch with float64 as its default dtype (NAdam keeps its running product in the
    default dtype: float32 would round it), restored afterwards."""
    torch = pytest.importorskip("torch")
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch
    torch.set_default_dtype(saved)



def torch_train(torch, net, X, y, torch_loss, torch_optimizer, epochs=3, batch_size=10,
                after_backward=None, after_step=None):
    """torch's batch loop: in order, the hooks between backward and step and after it."""
    for _ in range(epochs):
        for start in range(0, len(X), batch_size):
            torch_optimizer.zero_grad()
            torch_loss(net(torch.from_numpy(X[start:start + batch_size])),
                       torch.from_numpy(y[start:start + batch_size])).backward()
            if after_backward is not None:
                after_backward()
            torch_optimizer.step()
            if after_step is not None:
                after_step()


def assert_same_parameters(model, net):
    for got, want in zip(model.parameters(), net.parameters()):
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-10, atol=1e-12)


def train_both(model, net, torch, X, y, loss, torch_loss, optimizer, torch_optimizer,
               epochs=3, batch_size=10):
    torch_train(torch, net, X, y, torch_loss, torch_optimizer, epochs, batch_size)
    # two fits: the optimizer's state (NAdam's running product too) carries over
    model.fit(X, y, loss=loss, optimizer=optimizer, epochs=1, batch_size=batch_size,
              shuffle=False, verbose=0)
    model.fit(X, y, loss=loss, optimizer=optimizer, epochs=epochs - 1, batch_size=batch_size,
              shuffle=False, verbose=0)
    assert_same_parameters(model, net)


@contextlib.contextmanager
def plan_of(blocks, model):
    """Calls inside run on a plan of `blocks` (1, or 2: every call cut in two blocks, the
    grain tuned down; restored after the test); the model's last call must have."""
    from fastnn import _engine
    if blocks == 2:
        _engine.tune(grain_flops=1.0)
    with fnn.threads(blocks):
        yield
    assert model.engine.last_threads == blocks


def assert_predict_paths_agree(model, X, tol):
    """A few rows at a time (the small predict), a calling-thread predict and the team's
    on a plan of two blocks (each thread its rows of the layers' buffers) agree."""
    from fastnn import _engine
    with fnn.threads(1):
        alone = model.predict(X)
    saved = _engine.tune(grain_flops=1.0)
    try:
        with fnn.threads(2):
            team = model.predict(X)
    finally:
        _engine.tune(**saved)
    few = np.concatenate([model.predict(X[i:i + 3]) for i in range(0, 30, 3)])
    np.testing.assert_allclose(team, alone, rtol=tol, atol=tol)
    np.testing.assert_allclose(few, alone[:30], rtol=tol, atol=tol)


def assert_modes_match_torch(model, net, torch, X, V, U):
    """jvp along V and vjp of U equal torch.func's on the same network (eval mode),
    float64, to 1e-10."""
    net.eval()
    x = torch.from_numpy(X)
    _, their_jv = torch.func.jvp(net, (x,), (torch.from_numpy(V),))
    _, pullback = torch.func.vjp(net, x)
    (their_uj,) = pullback(torch.from_numpy(U))
    np.testing.assert_allclose(model.jvp(X, V)[1], their_jv.detach().numpy(), rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(model.vjp(X, U)[1], their_uj.detach().numpy(), rtol=1e-10,
                               atol=1e-12)


def write_columns(path, data, labels):
    """A CSV of the columns `data` ({name: cells}, None written blank) and a "label"
    column."""
    import csv
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(list(data) + ["label"])
        for i in range(len(labels)):
            writer.writerow(["" if data[k][i] is None else data[k][i] for k in data]
                            + [labels[i]])


def assert_cli_reads_raw_file(model_path, path, data, labels, capsys):
    """`fastnn predict` and `evaluate` of the raw CSV `path` (written from `data` and
    `labels`) give the labels and accuracy of the saved network on the rows its
    preprocessing makes of `data`; returns that accuracy."""
    from fastnn import cli
    model = fnn.load(model_path)
    capsys.readouterr()
    assert cli.main(["predict", str(model_path), str(path)]) == 0
    predicted = capsys.readouterr().out.splitlines()[1:]
    X = model.preprocessing.transform(data)
    expected = np.array(model.classes)[model.predict(X).argmax(1)]
    assert predicted == list(expected)
    assert cli.main(["evaluate", str(model_path), str(path)]) == 0
    accuracy = np.mean(expected == labels)
    assert f"accuracy {accuracy:.4f}" in capsys.readouterr().out
    return accuracy
