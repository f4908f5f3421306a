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
