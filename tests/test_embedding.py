"""Embedding: torch's per-column nn.Embedding concatenated with the numeric columns,
trained together over several steps on one- and two-block plans; every predict path;
central differences; forward and reverse mode; ONNX, save/load; bad codes refused."""
import numpy as np
import pytest
from conftest import assert_modes_match_torch, assert_predict_paths_agree, plan_of, torch_train
from test_gradients import check

import fastnn as fnn


def coded(rng, n=64):
    """Rows of a number, a code of 4 categories, a number, a code of 3."""
    return np.column_stack([rng.normal(size=n), rng.integers(0, 4, n), rng.normal(size=n),
                            rng.integers(0, 3, n)]).astype(float)


def model(dtype="float64", seed=1):
    return fnn.Sequential([fnn.Embedding(4, [1, 3], [4, 3], 2), fnn.Dense(6, 8), fnn.ReLU(),
                           fnn.Dense(8, 3)], dtype=dtype, seed=seed)


def torch_twin(model, torch):
    table = torch.from_numpy(model.layers[0].weight)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.first = torch.nn.Embedding.from_pretrained(table[:4].clone(), freeze=False)
            self.second = torch.nn.Embedding.from_pretrained(table[4:].clone(), freeze=False)
            self.head = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(),
                                            torch.nn.Linear(8, 3))
            with torch.no_grad():
                for ours, theirs in zip(model.parameters()[1:], self.head.parameters()):
                    theirs.copy_(torch.from_numpy(ours))

        def forward(self, x):
            return self.head(torch.cat([x[:, [0, 2]], self.first(x[:, 1].long()),
                                        self.second(x[:, 3].long())], dim=1))
    return Net()


@pytest.mark.parametrize("blocks", [1, 2])
def test_embedding_trains_as_torch(rng, torch64, blocks):
    torch = torch64
    ours = model()
    net = torch_twin(ours, torch)
    X, y = coded(rng), rng.integers(0, 3, 64)
    np.testing.assert_allclose(ours.predict(X), net(torch.from_numpy(X)).detach().numpy(),
                               rtol=1e-13, atol=1e-14)
    torch_train(torch, net, X, y, torch.nn.CrossEntropyLoss(),
                torch.optim.Adam(net.parameters(), lr=0.01), batch_size=16)
    with plan_of(blocks, ours):
        ours.fit(X, y, optimizer=fnn.optim.Adam(lr=0.01), epochs=3, batch_size=16,
                 shuffle=False)
    table = torch.cat([net.first.weight, net.second.weight]).detach().numpy()
    np.testing.assert_allclose(ours.layers[0].weight, table, rtol=1e-10, atol=1e-12)
    for got, want in zip(ours.parameters()[1:], net.head.parameters()):
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_every_predict_path_and_the_gradient(rng):
    m = model()
    X = coded(rng, 3000)
    assert_predict_paths_agree(m, X, 1e-13)
    check(m, X[:9], rng.integers(0, 3, 9), "cross_entropy")


def test_forward_and_reverse_mode(rng):
    """Along the numeric columns, jvp is predict's central differences; the codes'
    derivative is zero; vjp, jvp and the jacobian agree."""
    m = model()
    X = coded(rng, 7)
    V = rng.normal(size=X.shape)
    V[:, [1, 3]] = 0
    _, JV = m.jvp(X, V)
    eps = 1e-6
    np.testing.assert_allclose(JV, (m.predict(X + eps * V) - m.predict(X - eps * V))
                               / (2 * eps), rtol=1e-6, atol=1e-8)
    J = m.jacobian(X)
    assert not J[:, :, [1, 3]].any()
    U = rng.normal(size=(7, 3))
    _, UJ = m.vjp(X, U)
    np.testing.assert_allclose(UJ, np.einsum("io,iod->id", U, J), rtol=1e-12, atol=1e-14)


def test_saved_exported_and_frozen(rng, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    X, y = coded(rng), rng.integers(0, 3, 64)
    m = model("float32")
    m.fit(X, y, epochs=2, optimizer="adam")
    m.save(tmp_path / "m.npz")
    copy = fnn.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(copy.predict(X), m.predict(X))
    session = ort.InferenceSession(str(m.export_onnx(tmp_path / "m.onnx")),
                                   providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": X.astype(np.float32)})[0]
    np.testing.assert_allclose(got, m.predict(X), rtol=1e-5, atol=1e-5)
    table = m.layers[0].weight.copy()
    m.layers[0].trainable = False
    m.fit(X, y, epochs=1)
    np.testing.assert_array_equal(m.layers[0].weight, table)


def test_bad_codes_and_layouts_are_refused(rng):
    m = model()
    X, y = coded(rng, 10), rng.integers(0, 3, 10)
    before = [p.copy() for p in m.parameters()]
    for value, where in ((4.0, 1), (-1.0, 3), (1.5, 1), (np.nan, 3)):
        bad = X.copy()
        bad[6, where] = value
        message = rf"X\[:, {where}\] must hold category codes 0 .. {3 if where == 1 else 2}; " \
                  rf"row (6|2) holds" + ("|X contains NaN or inf" if np.isnan(value) else "")
        for call, args in ((m.predict, (bad,)), (m.predict, (bad[4:8],)), (m.fit, (bad, y)),
                           (m.evaluate, (bad, y)), (m.jvp, (bad, bad))):
            with pytest.raises(ValueError, match=message):
                call(*args)
    for a, b in zip(before, m.parameters()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="an Embedding must be the first layer"):
        fnn.Sequential([fnn.Dense(4, 4), fnn.Embedding(4, [0], [3], 2), fnn.Dense(5, 1)])
    with pytest.raises(ValueError, match="code columns must be distinct and below"):
        fnn.Embedding(4, [1, 4], [3, 3], 2)
    with pytest.raises(ValueError, match="one cardinality for each"):
        fnn.Embedding(4, [1], [3, 3], 2)


def test_codes_float32_cannot_hold_are_refused():
    """float32 holds the integers up to 2^24 exactly: code 2^24 + 1 would read as 2^24,
    another category. A table with such codes needs float64; up to 2^24 + 1 categories
    a float32 model reads every code as given."""
    top = 2**24 + 1
    with pytest.raises(ValueError, match="float32 cannot hold exactly .* use dtype='float64'"):
        fnn.Sequential([fnn.Embedding(2, [0], [top + 1], 1), fnn.Dense(2, 1)])
    wide = fnn.Sequential([fnn.Embedding(2, [0], [top + 1], 1), fnn.Dense(2, 1)],
                          dtype="float64", seed=0)
    fits = fnn.Sequential([fnn.Embedding(2, [0], [top], 1), fnn.Dense(2, 1)], seed=0)
    for m, code in ((wide, top), (fits, top - 1)):
        X = np.array([[code, 0.0], [code - 1, 0.0]])
        W, table = m.layers[1].weight, m.layers[0].weight
        expected = np.c_[X[:, 1], table[X[:, 0].astype(np.int64), 0]] @ W.T + m.layers[1].bias
        np.testing.assert_allclose(m.predict(X), expected, rtol=1e-6)


def test_a_crafted_embedding_config_is_refused(tmp_path):
    from test_serialization import _write, fuzz_load, valid
    files = fuzz_load.members(valid(False))
    config = fuzz_load.config_of(files)
    for layer in ({"kind": "embedding", "in_features": 4, "columns": [9],
                   "cardinalities": [3], "embedding_dim": 2},
                  {"kind": "embedding", "in_features": 4, "columns": [1],
                   "cardinalities": [2**31], "embedding_dim": 2}):
        bad = dict(config, layers=[layer] + config["layers"])
        with pytest.raises(ValueError, match="invalid model description: layer 0"):
            fnn.load(_write(tmp_path, fuzz_load.archive(fuzz_load.with_config(files, bad))))


def test_embedding_modes_match_torch_func(rng, torch64):
    """Along the numeric columns (the codes' tangents zero, as their derivative is)."""
    m = model()
    X = coded(rng, 7)
    V = rng.normal(size=X.shape)
    V[:, [1, 3]] = 0
    U = rng.normal(size=(7, 3))
    assert_modes_match_torch(m, torch_twin(m, torch64), torch64, X, V, U)
