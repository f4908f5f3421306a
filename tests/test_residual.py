"""Residual blocks: training as torch trains x + block(x) (nested, with layer and batch
norm inside) on one- and two-block plans, every predict path, central differences,
forward and reverse mode, save/load and bad blocks refused."""
import numpy as np
import pytest
from conftest import (
    assert_modes_match_torch,
    assert_predict_paths_agree,
    assert_same_parameters,
    plan_of,
    torch_train,
)
from test_forward import check_modes, torch_modules
from test_gradients import check

import fastnn as fnn


def resnet(dtype="float64", seed=1, dropout=False):
    """Dense, a block with layer norm, a block holding a block, batch norm in one, a
    head: the tabular ResNet's shapes, nested."""
    return fnn.Sequential([
        fnn.Dense(5, 8),
        fnn.Residual(fnn.LayerNorm(8), fnn.Dense(8, 16), fnn.ReLU(),
                     *([fnn.Dropout(0.2)] if dropout else []), fnn.Dense(16, 8)),
        fnn.Residual(fnn.Residual(fnn.Dense(8, 8), "tanh"), fnn.BatchNorm1d(8),
                     fnn.GELU()),
        fnn.ReLU(), fnn.Dense(8, 3)], dtype=dtype, seed=seed)


@pytest.mark.parametrize("blocks", [1, 2])
def test_residual_blocks_train_as_torch(rng, torch64, blocks):
    torch = torch64
    model = resnet()
    net = torch.nn.Sequential(*torch_modules(model, torch))
    X, y = rng.normal(size=(64, 5)), rng.integers(0, 3, 64)
    torch_train(torch, net, X, y, torch.nn.CrossEntropyLoss(),
                torch.optim.Adam(net.parameters(), lr=0.01), batch_size=16)
    with plan_of(blocks, model):
        model.fit(X, y, optimizer=fnn.optim.Adam(lr=0.01), epochs=3, batch_size=16,
                  shuffle=False)
    assert_same_parameters(model, net)
    net.eval()
    np.testing.assert_allclose(model.predict(X), net(torch.from_numpy(X)).detach().numpy(),
                               rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("n_threads", [1, 2])
def test_a_block_first_trains_as_a_block_after_an_identity(rng, n_threads):
    """A block's BEGIN outputs into the layer below's buffer; one that is the first layer
    has none and copies the input rows: both train to the same bits."""
    X, y = rng.normal(size=(200, 6)), rng.integers(0, 3, 200)
    trained = []
    for first in ([], [fnn.Identity()]):
        model = fnn.Sequential(first + [fnn.Residual(fnn.Dense(6, 12), fnn.ReLU(),
                                                     fnn.Dense(12, 6)), fnn.Dense(6, 3)],
                               dtype="float64", seed=4)
        with fnn.threads(n_threads):
            model.fit(X, y, optimizer="adam", epochs=2, batch_size=32)
        trained.append(model.parameters())
    for a, b in zip(*trained):
        np.testing.assert_array_equal(a, b)


def test_every_predict_path_gives_the_same_rows(rng):
    """A few rows (the small predict), a calling-thread predict and the team's (two
    blocks, each thread its rows of the layers' buffers) agree, float32 too."""
    for dtype in ("float64", "float32"):
        model = resnet(dtype)
        model.fit(rng.normal(size=(64, 5)), rng.integers(0, 3, 64), epochs=1)
        X = rng.normal(size=(3000, 5)).astype(dtype)
        assert_predict_paths_agree(model, X, 1e-5 if dtype == "float32" else 1e-13)


def test_residual_gradients_and_tangents(rng):
    model = resnet()
    for b in model.buffers():  # running statistics away from 0 and 1
        b[...] = rng.uniform(0.5, 2, b.shape)
    X, y = rng.normal(size=(7, 5)), rng.integers(0, 3, 7)
    check(model, X, y, "cross_entropy")
    check_modes(model, X, rng)


def test_residual_model_saves_loads_and_freezes(rng, tmp_path):
    X, y = rng.normal(size=(40, 5)), rng.integers(0, 3, 40)
    model = resnet(dropout=True)
    model.fit(X, y, epochs=2, optimizer="adam")
    model.layers[1].trainable = False  # the whole first block
    model.fit(X, y, epochs=1)
    model.save(tmp_path / "m.npz")
    copy = fnn.load(tmp_path / "m.npz")
    assert repr(copy) == repr(model)
    assert [layer.trainable for layer in copy.layers[1].layers if layer.parameters()] == \
        [False, False, False]
    np.testing.assert_array_equal(copy.predict(X), model.predict(X))
    for m in (model, copy):
        m.fit(X, y, epochs=1, shuffle=False)
    for a, b in zip(copy.parameters(), model.parameters()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("make,error,message", [
    (lambda: fnn.Sequential([fnn.Dense(4, 6), fnn.Residual(fnn.Dense(6, 5)),
                             fnn.Dense(5, 2)]), ValueError,
     "a Residual block must keep the width: it maps 6 features to 5"),
    (lambda: fnn.Residual(fnn.Dense(4, 4), 3), TypeError, "Residual's layer 1 is a int"),
])
def test_bad_blocks_are_refused(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_crafted_residual_configs_are_refused(tmp_path):
    """A saved model's config edited so that a block does not keep the width, is empty or
    nests 40 deep: refused as an invalid description, before any array is read."""
    from test_serialization import _write, fuzz_load, valid
    files = fuzz_load.members(valid(False))
    config = fuzz_load.config_of(files)  # Dense(4, 6), ...: blocks go after the first
    deep = {"kind": "relu"}
    for _ in range(40):
        deep = {"kind": "residual", "layers": [deep]}
    for block, message in (
            ({"kind": "residual", "layers": [{"kind": "dense", "in_features": 6,
                                              "out_features": 5}]},
             "a residual block that does not keep the width"),
            ({"kind": "residual", "layers": []}, "a residual block needs a list of layers"),
            (deep, "nested deeper than 32")):
        bad = dict(config, layers=config["layers"][:1] + [block] + config["layers"][1:])
        with pytest.raises(ValueError, match=message):
            fnn.load(_write(tmp_path, fuzz_load.archive(fuzz_load.with_config(files, bad))))


def test_residual_modes_match_torch_func(rng, torch64):
    model = resnet()
    for b in model.buffers():  # running statistics away from 0 and 1
        b[...] = rng.uniform(0.5, 2, b.shape)
    net = torch64.nn.Sequential(*torch_modules(model, torch64))
    X = rng.normal(size=(7, 5))
    assert_modes_match_torch(model, net, torch64, X, rng.normal(size=X.shape),
                             rng.normal(size=(7, 3)))
