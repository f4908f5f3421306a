"""class_weight: torch's weighted cross-entropy, scikit-learn's "balanced", the estimator's
parameter, and bad weights refused with the model unchanged."""
import numpy as np
import pytest
from conftest import assert_same_parameters, torch_train
from test_forward import torch_modules

import fastnn as fnn


def test_class_weight_is_torch_weighted_cross_entropy(rng, torch64):
    """class_weight={label: w} trains as torch's CrossEntropyLoss(weight=w): each batch's
    loss sum_i w_yi l_i / sum_i w_yi."""
    torch = torch64
    model = fnn.Sequential([fnn.Dense(5, 16), fnn.Tanh(), fnn.Dense(16, 3)], dtype="float64",
                           seed=1)
    net = torch.nn.Sequential(*torch_modules(model, torch))
    X, y = rng.normal(size=(40, 5)), rng.integers(0, 3, 40)
    w = {0: 0.5, 1: 2.0, 2: 3.0}
    torch_train(torch, net, X, y, torch.nn.CrossEntropyLoss(
        weight=torch.tensor([w[0], w[1], w[2]])), torch.optim.SGD(net.parameters(), lr=0.1))
    model.fit(X, y, optimizer=fnn.optim.SGD(lr=0.1), epochs=3, batch_size=10, shuffle=False,
              class_weight=w)
    assert_same_parameters(model, net)


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

