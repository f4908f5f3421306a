"""scikit-learn's own MLP tests, run against fastnn.sklearn.

The tests are read from the installed scikit-learn (sklearn/neural_network/tests/
test_mlp.py), not copied into this project: its source is compiled here with one line
changed, the import of MLPClassifier and MLPRegressor, which now come from fastnn.sklearn.
pytest collects the test functions it defines as this module's. scikit-learn's conftest
hook that parametrizes `global_random_seed` is enabled below.

Every test in the file runs; none is skipped. Two of them reach into scikit-learn's
private API, which fastnn.sklearn provides for them: test_gradient calls
`_loss_grad_lbfgs` (fastnn's L-BFGS objective, which computes loss and gradient in the
engine), and test_learning_rate_warmstart / test_adaptive_learning_rate read
`_optimizer.learning_rate`.
"""
import importlib.util
import pathlib

import pytest

pytest.importorskip("sklearn")  # the test extra installs it: runs in CI
from sklearn.conftest import pytest_generate_tests  # noqa: E402,F401  (global_random_seed)

import fastnn.sklearn  # noqa: E402

_SPEC = importlib.util.find_spec("sklearn.neural_network.tests.test_mlp")
_PATH = pathlib.Path(_SPEC.origin)
_IMPORT = "from sklearn.neural_network import MLPClassifier, MLPRegressor"
_SOURCE = _PATH.read_text()
if _SOURCE.count(_IMPORT) != 1:  # fail loudly rather than run scikit-learn's estimators
    raise RuntimeError(f"{_PATH} no longer imports the estimators as {_IMPORT!r}")
exec(compile(_SOURCE.replace(_IMPORT, "from fastnn.sklearn import MLPClassifier, "
                                      "MLPRegressor"), str(_PATH), "exec"), globals())


def test_the_suite_runs_against_fastnn():
    """The compiled file's estimators are fastnn's, and it defined its tests here."""
    assert MLPClassifier is fastnn.sklearn.MLPClassifier  # noqa: F821 (from the file)
    assert MLPRegressor is fastnn.sklearn.MLPRegressor  # noqa: F821
    tests = [name for name in globals() if name.startswith("test_")]
    assert len(tests) > 30, tests
