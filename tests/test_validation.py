"""Bad input raises ValueError/TypeError naming the problem, and changes nothing."""
import numpy as np
import pytest

import fastnn as fnn


@pytest.fixture
def model():
    return fnn.Sequential([fnn.Dense(4, 8), fnn.ReLU(), fnn.Dense(8, 3)], seed=0)


@pytest.fixture
def Xy(rng):
    return rng.normal(size=(20, 4)), rng.integers(0, 3, 20)


def snapshot(model):
    return [p.copy() for p in model.parameters()]


def assert_unchanged(model, before):
    for p, q in zip(model.parameters(), before):
        np.testing.assert_array_equal(p, q)


def bad_fits(X, y):
    nan_X = X.copy()
    nan_X[5, 2] = np.nan
    inf_y = np.abs(np.random.default_rng(0).random((20, 3)))
    inf_y[7, 1] = np.inf
    wrong_label = y.copy()
    wrong_label[9] = 3
    negative = y.copy()
    negative[4] = -1
    return [
        (dict(X=X[0]), ValueError, r"X must be 2-D .* got shape \(4,\)"),
        (dict(X=X[:, :, None]), ValueError, r"X must be 2-D"),
        (dict(y=y[:-1]), ValueError, r"X has 20 rows but y has shape \(19,\)"),
        (dict(X=X[:, :3]), ValueError, r"X has 3 features but the model's first layer expects 4"),
        (dict(X=nan_X), ValueError, r"NaN or inf \(first in row 5"),
        (dict(X=X * 1e300, loss="mse", y=np.zeros((20, 3))), ValueError,
         r"X \(as float32\) contains NaN or inf \(first in row 0"),
        (dict(y=inf_y, loss="mse"), ValueError, r"y contains NaN or inf \(first in row 7"),
        (dict(y=wrong_label), ValueError, r"y\[9\] = 3 is outside \[0, 3\)"),
        (dict(y=negative), ValueError, r"y\[4\] = -1 is outside \[0, 3\)"),
        (dict(y=y + 0.5), ValueError, r"class labels must be integers; y\[0\] = "),
        (dict(y=y.astype(str)), TypeError, r"class labels must be integers"),
        (dict(y=np.ones((20, 2))), ValueError, r"targets must have shape \(20, 3\)"),
        (dict(y=np.ones((20, 3)) * 2), ValueError, r"targets must lie in \[0, 1\]; row 0"),
        (dict(y=np.ones(20), loss="mse"), ValueError, r"mse targets must have shape \(20, 3\)"),
        (dict(y=np.full((20, 3), 0.5), loss="binary_cross_entropy", X=X[:, :2]), ValueError,
         r"2 features"),
        (dict(loss="hinge"), ValueError, r"unknown loss 'hinge'"),
        (dict(loss=3), TypeError, r"loss must be a name"),
        (dict(batch_size=0), ValueError, r"batch_size must be a positive int, got 0"),
        (dict(batch_size=2.5), ValueError, r"batch_size must be a positive int, got 2.5"),
        (dict(epochs=-1), ValueError, r"epochs must be an int >= 0, got -1"),
        (dict(optimizer=0.1), TypeError, r"optimizer must be a fastnn.optim optimizer or its"),
        (dict(optimizer="lion"), ValueError, r"unknown optimizer 'lion'"),
        (dict(sample_weight=np.ones(3)), ValueError, r"sample_weight must have one entry per"),
        (dict(X="abc"), TypeError, r"X must be a 2-D array of numbers"),
        (dict(X=np.array([["a"] * 4] * 20)), TypeError, r"X must hold real numbers"),
        (dict(X=X[:0], y=y[:0]), ValueError, r"X has no rows"),
    ]


def test_each_bad_fit_raises_and_changes_nothing(model, Xy):
    X, y = Xy
    before = snapshot(model)
    for override, error, message in bad_fits(X, y):
        kwargs = dict(X=X, y=y, loss="cross_entropy", optimizer=fnn.optim.SGD(lr=0.1))
        kwargs.update(override)
        with pytest.raises(error, match=message):
            model.fit(kwargs.pop("X"), kwargs.pop("y"), **kwargs)
        assert_unchanged(model, before)
    assert model.optimizer is None


def test_bad_predict_evaluate_gradients(model, Xy):
    X, y = Xy
    with pytest.raises(ValueError, match="expects 4"):
        model.predict(X[:, :2])
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        model.predict(X, batch_size=0)
    with pytest.raises(ValueError, match=r"y\[0\] = 7 is outside"):
        model.evaluate(X, np.full(20, 7))
    with pytest.raises(ValueError, match="rows"):
        model.gradients(X, y[:3])


@pytest.mark.parametrize("make,error,message", [
    (lambda: fnn.Sequential([fnn.ReLU()]), ValueError, "at least one Dense"),
    (lambda: fnn.Sequential([fnn.Dense(4, 8), fnn.Dense(7, 2)]), ValueError,
     r"layer 1: Dense\(7, 2\) expects 7 input features but receives 8"),
    (lambda: fnn.Sequential([fnn.Dense(4, 8), "relu6"]), ValueError,
     r"unknown activation 'relu6'; expected one of \['elu', 'gelu', 'identity'"),
    (lambda: fnn.Sequential([fnn.Dense(4, 8), 3]), TypeError, "layer 1 is a int"),
    (lambda: fnn.Sequential([fnn.Dense(4, 8)], dtype="float16"), ValueError,
     "unknown dtype 'float16'"),
    (lambda: fnn.Dense(0, 3), ValueError, "in_features must be a positive int, got 0"),
    (lambda: fnn.Dense(3, 2.0), ValueError, "out_features must be a positive int"),
    (lambda: fnn.Dense(3, 2, init="orthogonal"), ValueError, "unknown init 'orthogonal'"),
    (lambda: fnn.LeakyReLU(float("nan")), ValueError, "negative_slope must be a finite"),
])
def test_bad_construction(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_parameter_assignment_checks_shape(model):
    with pytest.raises(ValueError, match=r"weight must have shape \(8, 4\), got \(4, 8\)"):
        model.layers[0].weight = np.zeros((4, 8))
    with pytest.raises(ValueError, match="bias=False"):
        fnn.Dense(2, 2, bias=False).bias = [0, 0]


def test_nothing_to_train_before_a_fused_link(rng):
    model = fnn.Sequential([fnn.Dense(4, 3), fnn.Softmax()], seed=0)
    model.fit(rng.normal(size=(5, 4)), [0, 1, 2, 0, 1], epochs=1)  # works: Dense is trained
    with pytest.raises(ValueError, match="cross_entropy targets must have shape"):
        model.fit(rng.normal(size=(5, 4)), np.ones((5, 2)), epochs=1)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_predict_finds_nan_or_inf_in_any_chunk_and_names_the_first(threads):
    """predict leaves a dense X's finiteness to the engine, whose threads check their rows
    of each chunk before reading them: on the team (rows split) and on the calling thread,
    whichever chunk and thread holds the first bad value, it is named; float64 input to
    a float32 model is named "as float32" (a value overflowing float32 included)."""
    from fastnn import _engine
    old = _engine.tune(grain_flops=1.0)  # every predict on the team, whatever its size
    model = fnn.Sequential([fnn.Dense(30, 64), fnn.ReLU(), fnn.Dense(64, 5)], seed=0)
    X = np.random.default_rng(1).random((3000, 30), dtype=np.float32)
    try:
        with fnn.threads(threads):
            expected = model.predict(X)
            for first in (0, 511, 512, 1023, 1500, 2999):
                bad = X.copy()
                bad[first, 7] = np.nan
                bad[min(first + 300, 2999), 1] = np.inf
                for batch_size in (1024, 100, 7):
                    with pytest.raises(ValueError, match=rf"^X contains NaN or inf \(first "
                                                         rf"in row {first}:"):
                        model.predict(bad, batch_size=batch_size)
                wide = bad.astype(np.float64)
                wide[first, 7] = 1e300
                with pytest.raises(ValueError, match=rf"^X \(as float32\) contains NaN or "
                                                     rf"inf \(first in row {first}:"):
                    model.predict(wide)
            np.testing.assert_array_equal(model.predict(X), expected)
            assert model.last_threads == threads
    finally:
        _engine.tune(**old)
