"""fastnn.sklearn against scikit-learn's own MLP estimators: the same steps to rounding,
scikit-learn's estimator checks, its known MLP pitfalls, and the meta-estimators."""
import contextlib
import pickle
import warnings

import numpy as np
import pytest
from conftest import run_python

sklearn = pytest.importorskip("sklearn")  # the test extra installs it: runs in CI
from sklearn import neural_network as sk  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning, DataConversionWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import fastnn.sklearn as fs  # noqa: E402

RTOL = 1e-10  # float64: the same operations in another order


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X / 16.0, y, test_size=0.25, random_state=0)


@contextlib.contextmanager
def quiet():
    """Hide scikit-learn's ConvergenceWarning for short runs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def assert_same_fit(ours, theirs):
    """Same weights, losses and counters as scikit-learn's estimator, to rounding."""
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=1e-13)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=RTOL)
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=RTOL)
    assert (ours.n_iter_, ours.t_, ours.n_layers_, ours.n_outputs_, ours.out_activation_) == (
        theirs.n_iter_, theirs.t_, theirs.n_layers_, theirs.n_outputs_, theirs.out_activation_)
    if theirs.validation_scores_ is None:
        assert ours.validation_scores_ is None
        assert ours.best_loss_ == pytest.approx(theirs.best_loss_, rel=RTOL)
    else:
        np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_)
        assert ours.best_loss_ is None


def both(name, **params):
    return getattr(fs, name)(**params), getattr(sk, name)(**params)


def test_import_fastnn_does_not_import_scikit_learn(tmp_path):
    code = ("import sys, fastnn; print(sorted(m for m in ('sklearn', 'torch', 'jax', "
            "'matplotlib', 'pandas', 'onnx', 'mpi4py') if m in sys.modules))")
    result = run_python(["-c", code], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# -- one epoch from identical weights: the parity test -------------------------

@pytest.mark.parametrize("solver,params", [
    ("sgd", {"momentum": 0.9, "nesterovs_momentum": True}),
    ("sgd", {"momentum": 0.9, "nesterovs_momentum": False}),
    ("sgd", {"momentum": 0.0}),
    ("adam", {}),
])
def test_one_epoch_from_copied_weights_matches(digits, solver, params):
    """Both estimators start from the same weights (copied in, different random_state for
    the first draw), train one epoch with the same shuffling: same coefficients."""
    X, _, y, _ = digits
    settings = dict(hidden_layer_sizes=(40, 20), solver=solver, alpha=1e-3, batch_size=64,
                    learning_rate_init=0.05 if solver == "sgd" else 0.01, max_iter=1,
                    **params)
    ours, theirs = fs.MLPClassifier(random_state=1, **settings), \
        sk.MLPClassifier(random_state=2, **settings)
    with quiet():
        ours.fit(X, y)
        theirs.fit(X, y)
    rng = np.random.default_rng(0)
    start = [rng.uniform(-0.3, 0.3, c.shape) for c in theirs.coefs_]
    start_b = [rng.uniform(-0.3, 0.3, b.shape) for b in theirs.intercepts_]
    for est in (ours, theirs):
        est.coefs_ = [c.copy() for c in start]
        est.intercepts_ = [b.copy() for b in start_b]
        est.set_params(warm_start=True, random_state=7)
        with quiet():
            est.fit(X, y)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=1e-13)
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=RTOL)


# -- whole fits with the same random_state follow scikit-learn's steps -------------------

CLASSIFIER_CASES = [
    dict(solver="adam"),
    dict(solver="sgd", learning_rate_init=0.1),
    dict(solver="sgd", learning_rate="invscaling", learning_rate_init=0.5, power_t=0.3,
         nesterovs_momentum=False),
    dict(solver="sgd", learning_rate="adaptive", learning_rate_init=0.2, tol=5e-2,
         n_iter_no_change=1),
    dict(solver="adam", early_stopping=True, validation_fraction=0.2, n_iter_no_change=2,
         tol=1e-3),
    dict(solver="sgd", activation="tanh", shuffle=False, batch_size=100, alpha=0.01),
    dict(solver="adam", activation="logistic", beta_1=0.8, beta_2=0.99, epsilon=1e-6),
    dict(solver="adam", activation="identity", batch_size=1000),
]


@pytest.mark.parametrize("params", CLASSIFIER_CASES)
def test_classifier_follows_scikit_learn(digits, params):
    X, X_test, y, _ = digits
    ours, theirs = both("MLPClassifier", hidden_layer_sizes=(30,), max_iter=12,
                        random_state=0, **params)
    with quiet():
        ours.fit(X, y)
        theirs.fit(X, y)
    assert_same_fit(ours, theirs)
    np.testing.assert_allclose(ours.predict_proba(X_test), theirs.predict_proba(X_test),
                               rtol=1e-9, atol=1e-12)
    assert (ours.predict(X_test) == theirs.predict(X_test)).all()


def test_binary_and_multilabel_follow_scikit_learn(digits):
    X, X_test, y, _ = digits
    for target in ((y > 4).astype(int), np.stack([y % 2, y > 6, y == 0], axis=1).astype(int)):
        ours, theirs = both("MLPClassifier", hidden_layer_sizes=(16,), max_iter=8,
                            random_state=3, solver="sgd", learning_rate_init=0.1)
        with quiet():
            ours.fit(X, target)
            theirs.fit(X, target)
        assert ours.out_activation_ == "logistic"
        assert_same_fit(ours, theirs)
        np.testing.assert_allclose(ours.predict_proba(X_test), theirs.predict_proba(X_test),
                                   rtol=1e-9)
        assert (ours.predict(X_test) == theirs.predict(X_test)).all()


@pytest.mark.parametrize("params", [
    dict(solver="adam"),
    dict(solver="sgd", learning_rate_init=0.01, alpha=0.1),
    dict(solver="adam", early_stopping=True, n_iter_no_change=3),
    dict(solver="adam", loss="poisson"),
])
def test_regressor_follows_scikit_learn(params):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(300, 5))
    Y = np.stack([np.sin(X[:, 0]) + X[:, 1] ** 2, X[:, 2] * X[:, 3]], axis=1)
    if params.get("loss") == "poisson":
        Y = rng.poisson(np.exp(0.5 * np.tanh(X[:, :2])))
    ours, theirs = both("MLPRegressor", hidden_layer_sizes=(20, 10), max_iter=15,
                        random_state=0, **params)
    with quiet():
        ours.fit(X, Y)
        theirs.fit(X, Y)
    assert_same_fit(ours, theirs)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-9)
    assert ours.score(X, Y) == pytest.approx(theirs.score(X, Y), rel=1e-9)


def test_lbfgs_follows_scikit_learn(digits):
    X, _, y, _ = digits
    ours, theirs = both("MLPClassifier", hidden_layer_sizes=(10,), solver="lbfgs",
                        max_iter=15, random_state=0)
    with quiet():
        ours.fit(X, y)
        theirs.fit(X, y)
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-6)
    for a, b in zip(ours.coefs_, theirs.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert not hasattr(ours, "partial_fit")


def test_partial_fit_follows_scikit_learn(digits):
    X, _, y, _ = digits
    ours, theirs = both("MLPClassifier", hidden_layer_sizes=(25,), solver="sgd",
                        random_state=0, learning_rate_init=0.05)
    for chunk in np.array_split(np.arange(len(X)), 4):
        ours.partial_fit(X[chunk], y[chunk], classes=np.arange(10))
        theirs.partial_fit(X[chunk], y[chunk], classes=np.arange(10))
    assert_same_fit(ours, theirs)


def test_digits_accuracy_within_one_point(digits):
    """Default settings (Adam, 200 iterations at most): the same test accuracy as
    scikit-learn's, within one percentage point, in float64 and in float32."""
    X, X_test, y, y_test = digits
    theirs = sk.MLPClassifier(random_state=0)
    with quiet():
        reference = theirs.fit(X, y).score(X_test, y_test)
        for dtype in ("float64", "float32"):
            ours = fs.MLPClassifier(random_state=0, dtype=dtype).fit(X, y)
            assert abs(ours.score(X_test, y_test) - reference) <= 0.01, dtype
            assert ours.coefs_[0].dtype == np.dtype(dtype)
    assert reference > 0.95


# -- scikit-learn's known MLP pitfalls ---------------------------------------------------

@pytest.mark.parametrize("name", ["MLPClassifier", "MLPRegressor"])
def test_partial_fit_after_fit_with_early_stopping_is_a_clear_error(digits, name):
    X, _, y, _ = digits
    est = getattr(fs, name)(hidden_layer_sizes=(8,), early_stopping=True, max_iter=3,
                            random_state=0)
    with quiet():
        est.fit(X, y)
    before = [c.copy() for c in est.coefs_]
    extra = {"classes": np.arange(10)} if name == "MLPClassifier" else {}
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping"):
        est.partial_fit(X, y, **extra)
    for a, b in zip(est.coefs_, before):
        assert (a == b).all()  # the rejected call changed nothing
    assert len(est.loss_curve_) == est.n_iter_


@pytest.mark.parametrize("name", ["MLPClassifier", "MLPRegressor"])
def test_warm_start_honours_max_iter(digits, name):
    X, _, y, _ = digits
    est = getattr(fs, name)(hidden_layer_sizes=(8,), warm_start=True, max_iter=3,
                            solver="sgd", tol=0, random_state=0)
    with pytest.warns(ConvergenceWarning):
        est.fit(X, y)
    assert est.n_iter_ == 3 and len(est.loss_curve_) == 3
    first = [c.copy() for c in est.coefs_]
    est.set_params(max_iter=5)
    with pytest.warns(ConvergenceWarning):
        est.fit(X, y)
    # n_iter_ counts this fit's epochs (scikit-learn >= 1.3); the curve keeps them all
    assert est.n_iter_ == 5 and len(est.loss_curve_) == 8
    assert est.t_ == 8 * len(X)
    assert any((a != b).any() for a, b in zip(est.coefs_, first))  # it went on training


def test_partial_fit_classes_not_yet_seen(digits):
    X, X_test, y, _ = digits
    est = fs.MLPClassifier(hidden_layer_sizes=(8,), random_state=0)
    first = y < 3
    est.partial_fit(X[first], y[first], classes=np.arange(10))
    assert est.predict_proba(X_test).shape == (len(X_test), 10)
    assert est.out_activation_ == "softmax"
    est.partial_fit(X[~first], y[~first])  # classes 3-9 arrive later: no error
    assert est.n_outputs_ == 10 and list(est.classes_) == list(range(10))
    with pytest.raises(ValueError, match="classes not in"):
        est.partial_fit(X[:5], np.array([0, 1, 2, 3, 11]))
    with pytest.raises(ValueError, match="not the same as on the first call"):
        est.partial_fit(X[:5], y[:5], classes=np.arange(5))
    fresh = fs.MLPClassifier()
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        fresh.partial_fit(X, y)
    # two classes given, only one present in the first batch: still a binary model
    binary = fs.MLPClassifier(hidden_layer_sizes=(4,), random_state=0)
    binary.partial_fit(X[:20], np.zeros(20, dtype=int), classes=[0, 1])
    assert binary.predict_proba(X[:3]).shape == (3, 2)


def test_validation_split_stays_the_same_across_warm_starts(digits, monkeypatch):
    X, _, y, _ = digits
    splits = []
    original = fs.train_test_split

    def spy(*args, **kwargs):
        train, val = original(*args, **kwargs)
        splits.append(np.sort(val))
        return train, val

    monkeypatch.setattr(fs, "train_test_split", spy)
    est = fs.MLPClassifier(hidden_layer_sizes=(8,), early_stopping=True, warm_start=True,
                           max_iter=2, random_state=None)
    with quiet():
        est.fit(X, y)
        est.fit(X, y)
        est.fit(X, y)
    assert len(splits) == 3
    assert all((s == splits[0]).all() for s in splits[1:])
    est.set_params(warm_start=False)
    with quiet():
        est.fit(X, y)  # a fresh fit draws a fresh split
    assert len(splits[3]) == len(splits[0])


def test_warm_start_with_other_classes_is_refused(digits):
    X, _, y, _ = digits
    est = fs.MLPClassifier(hidden_layer_sizes=(4,), warm_start=True, max_iter=2,
                           random_state=0)
    with quiet():
        est.fit(X, y)
    with pytest.raises(ValueError, match="same classes"):
        est.fit(X[y < 5], y[y < 5])


# -- labels, outputs and dtypes ----------------------------------------------------------

def test_string_and_noncontiguous_labels(digits):
    X, X_test, y, y_test = digits
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven",
                      "eight", "nine"])
    codes = np.array([3, 7, 100, 12, 55, 4, 8, 1000, 41, 2])
    reference = fs.MLPClassifier(hidden_layer_sizes=(16,), max_iter=30, random_state=0,
                                 learning_rate_init=0.01)
    with quiet():
        base = reference.fit(X, y).predict(X_test)
        for mapping in (names, codes):
            est = clone(reference).fit(X, mapping[y])
            assert set(est.classes_) == set(mapping)
            pred = est.predict(X_test)
            assert pred.dtype == mapping.dtype
            # the label order differs, so the network differs; the fits are as good
            assert np.mean(pred == mapping[y_test]) > 0.9
    assert np.mean(base == y_test) > 0.9


def test_multilabel_and_multioutput_shapes(digits):
    X, X_test, y, _ = digits
    Y = np.stack([y % 2, y > 6, y == 0], axis=1).astype(int)
    with quiet():
        clf = fs.MLPClassifier(hidden_layer_sizes=(16,), max_iter=20, random_state=0).fit(X, Y)
    assert clf.predict(X_test).shape == (len(X_test), 3)
    proba = clf.predict_proba(X_test)
    assert proba.shape == (len(X_test), 3) and ((proba >= 0) & (proba <= 1)).all()
    np.testing.assert_allclose(clf.predict_log_proba(X_test), np.log(proba))
    with quiet():
        reg = fs.MLPRegressor(hidden_layer_sizes=(8,), max_iter=5, random_state=0)
        reg.fit(X, np.stack([y, 2 * y], axis=1))
    assert reg.predict(X_test).shape == (len(X_test), 2)
    with pytest.warns(DataConversionWarning):
        with quiet():
            reg.set_params(warm_start=False).fit(X, y.reshape(-1, 1))
    assert reg.predict(X_test).shape == (len(X_test),)


def test_float32_input_trains_in_float32(digits):
    X, X_test, y, y_test = digits
    with quiet():
        est = fs.MLPClassifier(hidden_layer_sizes=(16,), max_iter=20, random_state=0,
                               learning_rate_init=0.01)
        est.fit(X.astype(np.float32), y)
    assert all(c.dtype == np.float32 for c in est.coefs_ + est.intercepts_)
    assert est.predict_proba(X_test).dtype == np.float32
    assert est.score(X_test, y_test) > 0.9


def test_invalid_parameters_are_named(digits):
    X, _, y, _ = digits
    for bad in (dict(alpha=-1), dict(solver="newton"), dict(dtype="float16"),
                dict(n_threads=0), dict(activation="gelu"), dict(hidden_layer_sizes=(10, 0))):
        with pytest.raises(ValueError, match=next(iter(bad)).replace("_sizes", "")):
            fs.MLPClassifier(**bad).fit(X, y)


SAMPLE_WEIGHT_CASES = [
    ("MLPClassifier", dict(solver="sgd", momentum=0.9, batch_size=64)),
    ("MLPClassifier", dict(solver="adam", early_stopping=True, n_iter_no_change=3)),
    ("MLPClassifier", dict(solver="sgd", learning_rate="invscaling", alpha=0.01)),
    ("MLPRegressor", dict(solver="adam")),
    ("MLPRegressor", dict(solver="adam", loss="poisson", batch_size=50)),
    ("MLPRegressor", dict(solver="sgd", early_stopping=True, learning_rate_init=0.01)),
]


def weighted_targets(name, params, y):
    if name == "MLPClassifier":
        return y
    return y.astype(float) if params.get("loss") == "poisson" else y / 9.0


@pytest.mark.parametrize("name,params", SAMPLE_WEIGHT_CASES)
def test_sample_weight_follows_scikit_learn(digits, name, params):
    """Whole fits with weights (some zero): the same steps as scikit-learn 1.9, the
    weighted batch losses, the penalty over the summed weights, the weighted split and
    validation score."""
    X, X_test, y, _ = digits
    w = np.random.default_rng(1).uniform(0, 3, len(X))
    w[::7] = 0
    target = weighted_targets(name, params, y)
    ours, theirs = both(name, hidden_layer_sizes=(20,), max_iter=10, random_state=0,
                        **params)
    with quiet():
        ours.fit(X, target, sample_weight=w)
        theirs.fit(X, target, sample_weight=w)
    assert_same_fit(ours, theirs)
    np.testing.assert_allclose(ours.predict(X_test), theirs.predict(X_test), rtol=1e-9)
    unweighted = getattr(fs, name)(hidden_layer_sizes=(20,), max_iter=10, random_state=0,
                                   **params)
    with quiet():
        unweighted.fit(X, target)
    assert not np.allclose(unweighted.coefs_[0], ours.coefs_[0])  # the weights mattered


def test_sample_weight_in_lbfgs_and_partial_fit(digits):
    X, _, y, _ = digits
    w = np.random.default_rng(2).uniform(0.5, 2, len(X))
    ours, theirs = both("MLPClassifier", hidden_layer_sizes=(10,), solver="lbfgs",
                        max_iter=15, random_state=0)
    with quiet():
        ours.fit(X, y, sample_weight=w)
        theirs.fit(X, y, sample_weight=w)
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-6)
    for a, b in zip(ours.coefs_, theirs.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    ours, theirs = both("MLPRegressor", hidden_layer_sizes=(12,), solver="sgd",
                        random_state=0, learning_rate_init=0.05)
    for chunk in np.array_split(np.arange(len(X)), 3):
        ours.partial_fit(X[chunk], y[chunk] / 9.0, sample_weight=w[chunk])
        theirs.partial_fit(X[chunk], y[chunk] / 9.0, sample_weight=w[chunk])
    assert_same_fit(ours, theirs)


def test_lbfgs_objective_matches_finite_differences(digits):
    """_loss_grad_lbfgs (the engine's loss and gradient, weighted) against central
    differences of its own loss."""
    X, _, y, _ = digits
    X, y = X[:40], y[:40] % 3
    w = np.random.default_rng(3).uniform(0, 2, len(X))
    model = fs.MLPClassifier(hidden_layer_sizes=(5,), solver="lbfgs", max_iter=1,
                             alpha=0.1, random_state=0)
    with quiet():
        model.fit(X, y)
    Y = model._label_binarizer.transform(y)
    theta = np.concatenate([p.ravel() for p in model.coefs_ + model.intercepts_])
    _, grad = model._loss_grad_lbfgs(theta, X, Y, w)
    eps = 1e-6
    for i in np.random.default_rng(0).choice(theta.size, 30, replace=False):
        step = np.zeros_like(theta)
        step[i] = eps
        numeric = (model._loss_grad_lbfgs(theta + step, X, Y, w)[0]
                   - model._loss_grad_lbfgs(theta - step, X, Y, w)[0]) / (2 * eps)
        assert grad[i] == pytest.approx(numeric, rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
@pytest.mark.parametrize("layout", ["csr_matrix", "csr_array", "csc_matrix"])
def test_sparse_input_trains_as_dense(digits, solver, layout):
    """Sparse X is gathered row by row into the engine's batches: the same fit as dense
    X, and the same predictions for sparse and dense input."""
    scipy_sparse = pytest.importorskip("scipy.sparse")
    X, X_test, y, _ = digits
    X_sparse = getattr(scipy_sparse, layout)(X)
    dense, sparse = (fs.MLPClassifier(hidden_layer_sizes=(16,), solver=solver, max_iter=8,
                                      random_state=0, early_stopping=solver == "adam")
                     for _ in range(2))
    with quiet():
        dense.fit(X, y)
        sparse.fit(X_sparse, y)
    for a, b in zip(dense.coefs_ + dense.intercepts_, sparse.coefs_ + sparse.intercepts_):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sparse.predict_proba(getattr(scipy_sparse, layout)(X_test)),
                                  dense.predict_proba(X_test))


def test_diverging_loss_follows_scikit_learn():
    """scikit-learn's fix for its issue #29504: with early stopping a diverging fit runs
    to max_iter, scores NaN, and keeps the best weights; without it, its ValueError."""
    from sklearn.datasets import load_iris
    X, y = load_iris(return_X_y=True)
    params = dict(hidden_layer_sizes=30, activation="identity", solver="sgd",
                  learning_rate_init=1, max_iter=12, random_state=0)
    ours, theirs = both("MLPRegressor", early_stopping=True, **params)
    with quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scikit-learn's overflow
        ours.fit(X, y)
        theirs.fit(X, y)
    assert np.isnan(theirs.validation_scores_[-1])
    np.testing.assert_array_equal(np.isnan(ours.validation_scores_),
                                  np.isnan(theirs.validation_scores_))
    assert ours.n_iter_ == theirs.n_iter_ == 12
    finite = ~np.isnan(theirs.validation_scores_)
    np.testing.assert_allclose(np.array(ours.validation_scores_)[finite],
                               np.array(theirs.validation_scores_)[finite], rtol=1e-9)
    for a, b in zip(ours.coefs_, theirs.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-9)
    model = fs.MLPRegressor(**params)
    with pytest.raises(ValueError, match="Solver produced non-finite parameter weights"):
        model.fit(X, y)
    assert all(np.isfinite(c).all() for c in model.coefs_)


def test_n_threads_gives_the_same_model(digits):
    X, _, y, _ = digits
    with quiet():
        one = fs.MLPClassifier(hidden_layer_sizes=(16,), max_iter=3, random_state=0,
                               n_threads=1).fit(X, y)
        two = fs.MLPClassifier(hidden_layer_sizes=(16,), max_iter=3, random_state=0,
                               n_threads=2).fit(X, y)
    for a, b in zip(one.coefs_, two.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


# -- the scikit-learn ecosystem ----------------------------------------------------------

def test_clone_pickle_and_continued_training(digits):
    X, X_test, y, _ = digits
    with quiet():
        est = fs.MLPClassifier(hidden_layer_sizes=(16,), solver="sgd", max_iter=3,
                               random_state=0).fit(X, y)
    copy = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(copy.predict_proba(X_test), est.predict_proba(X_test))
    # partial_fit goes on from the same optimizer state in both
    est.partial_fit(X, y)
    copy.partial_fit(X, y)
    for a, b in zip(est.coefs_, copy.coefs_):
        np.testing.assert_array_equal(a, b)
    fresh = clone(est)
    assert fresh.get_params() == est.get_params() and not hasattr(fresh, "coefs_")


def test_pipeline_grid_search_and_cross_validation(digits):
    X, X_test, y, y_test = digits
    pipe = make_pipeline(StandardScaler(), fs.MLPClassifier(max_iter=30, random_state=0))
    grid = GridSearchCV(pipe, {"mlpclassifier__hidden_layer_sizes": [(8,), (32,)],
                               "mlpclassifier__alpha": [1e-4, 1e-2]}, cv=3)
    with quiet():
        grid.fit(X, y)
        scores = cross_val_score(fs.MLPRegressor(max_iter=20, random_state=0), X, y, cv=3)
        expected = cross_val_score(sk.MLPRegressor(max_iter=20, random_state=0), X, y, cv=3)
    assert grid.best_params_["mlpclassifier__hidden_layer_sizes"] == (32,)
    assert grid.score(X_test, y_test) > 0.9
    np.testing.assert_allclose(scores, expected, rtol=1e-8)  # scikit-learn's own scores


def test_dataframes_and_set_output(digits):
    pd = pytest.importorskip("pandas")
    X, X_test, y, _ = digits
    columns = [f"pixel{i}" for i in range(X.shape[1])]
    frame = pd.DataFrame(X, columns=columns)
    pipe = make_pipeline(StandardScaler(), fs.MLPClassifier(max_iter=10, random_state=0))
    pipe.set_output(transform="pandas")
    with quiet():
        pipe.fit(frame, pd.Series(y))
    est = pipe[-1]
    assert list(est.feature_names_in_) == columns
    assert est.n_features_in_ == X.shape[1]
    pred = pipe.predict(pd.DataFrame(X_test, columns=columns))
    assert pred.shape == (len(X_test),)
    with pytest.warns(UserWarning, match="feature names"):
        est.predict(X_test)  # fitted with names, called without: scikit-learn's warning


# -- scikit-learn's estimator checks -----------------------------------------------------

@parametrize_with_checks([fs.MLPClassifier(), fs.MLPRegressor()])
def test_scikit_learn_estimator_checks(estimator, check):
    """Every check of sklearn.utils.estimator_checks; none is skipped by us (scikit-learn
    itself skips the array-API check without SCIPY_ARRAY_API, and the decision_function
    checks: these MLPs have none, as scikit-learn's)."""
    with quiet():
        check(estimator)


def test_verbose_prints_what_scikit_learn_prints(digits, capsys):
    X, _, y, _ = digits
    outputs = []
    for est in both("MLPClassifier", hidden_layer_sizes=(8,), max_iter=3, verbose=True,
                    random_state=0, early_stopping=True, n_iter_no_change=1, tol=0.5):
        with quiet():
            est.fit(X, y)
        outputs.append(capsys.readouterr().out)
    assert "Iteration 1, loss = " in outputs[0] and "Validation score: " in outputs[0]
    assert outputs[0] == outputs[1]
