"""Frozen layers: constants of the loss (torch with requires_grad off), saved, loaded and
unfrozen."""
import numpy as np
import pytest
from conftest import train_both
from test_forward import torch_modules

import fastnn as fnn


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



def test_trainable_takes_only_a_bool():
    """A string such as "no" is truthy: it is refused, as is any non-bool, on a layer and
    on a residual block, and the flag stays as it was; freeze's stop is an index."""
    layer, block = fnn.Dense(4, 4), fnn.Residual(fnn.Dense(4, 4), fnn.ReLU())
    for target in (layer, block):
        for bad in ("no", 0, None, [False]):
            with pytest.raises(TypeError, match="trainable must be True or False"):
                target.trainable = bad
            assert target.trainable is True
        target.trainable = np.False_
        assert target.trainable is False
    assert block.layers[0].trainable is False
    model = fnn.Sequential([fnn.Dense(4, 4), fnn.ReLU(), fnn.Dense(4, 2)])
    with pytest.raises(ValueError, match="stop must be an int"):
        model.freeze("a")
    with pytest.raises(ValueError, match="stop must be an int >= -3, got -4"):
        model.freeze(-4)
    assert [layer.trainable for layer in model.freeze(-1).layers] == [False, True, True]
