"""The examples run and reach what docs/api.md says they reach."""
import os
import re

import pytest
from conftest import MNIST_DIR, ROOT, run_python


def run(script, *args):
    result = run_python([os.path.join(ROOT, "examples", script), *args], cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_regression_example():
    out = run("regression.py")
    rmse = float(re.search(r"RMSE ([0-9.]+)", out).group(1))
    assert rmse < 0.05


def test_sigmoid_neuron_example(mnist):
    out = run("sigmoid_neuron.py", MNIST_DIR)
    assert float(re.search(r"test accuracy ([0-9.]+)", out).group(1)) > 0.98


@pytest.mark.slow
def test_mnist_example_reaches_98_percent(mnist):
    out = run("mnist_mlp.py", MNIST_DIR)
    assert float(re.search(r"test accuracy ([0-9.]+)", out).group(1)) >= 0.98


def test_forward_vs_reverse_example(tmp_path):
    """Both modes give the same gradient and Jacobian (the times it prints are measured,
    not judged: speed belongs to benchmarks), and it draws its plot."""
    pytest.importorskip("matplotlib")
    out = run("forward_vs_reverse.py", "--quick", "--plot", str(tmp_path / "cost.png"))
    differences = [float(d) for d in re.findall(r"largest difference ([0-9.e+-]+)", out)]
    assert len(differences) == 2 and max(differences) < 1e-12
    assert (tmp_path / "cost.png").stat().st_size > 0
