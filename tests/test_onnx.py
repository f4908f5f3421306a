"""ONNX export, run in onnxruntime against predict, for every layer kind."""
import os

import numpy as np
import pytest

import fastnn as fnn

onnx = pytest.importorskip("onnx")  # the test extra installs onnx and onnxruntime
ort = pytest.importorskip("onnxruntime")

ALL_KINDS = [
    lambda: [fnn.Dense(5, 7), fnn.BatchNorm1d(7), fnn.LeakyReLU(0.1), fnn.Dropout(0.2),
             fnn.Dense(7, 6, bias=False), fnn.Tanh(), fnn.Dense(6, 5), fnn.Sigmoid(),
             fnn.Dense(5, 4), fnn.ReLU(), fnn.Identity(), fnn.Dense(4, 3), fnn.Softmax()],
    lambda: [fnn.Dense(5, 6), fnn.BatchNorm1d(6, eps=0.1, affine=False), fnn.ReLU(),
             fnn.Dense(6, 2)],
    lambda: [fnn.Dense(5, 1), fnn.Sigmoid()],
    lambda: [fnn.Dense(5, 6), fnn.Residual(fnn.Residual(fnn.Dense(6, 6), fnn.Tanh()),
                                           fnn.BatchNorm1d(6)), fnn.Dense(6, 2)],
    lambda: [fnn.Dense(5, 6), fnn.LayerNorm(6), fnn.ReLU(), fnn.Dense(6, 4),
             fnn.LayerNorm(4, elementwise_affine=False), fnn.Dense(4, 2)],
    lambda: [fnn.Dense(5, 6), fnn.GELU("tanh"), fnn.Dense(6, 6), fnn.SiLU(), fnn.Dense(6, 6),
             fnn.ELU(0.7), fnn.Dense(6, 6), fnn.Softplus(1.5, 2.0), fnn.Dense(6, 3)],
]


def test_exact_gelu_in_onnxruntime(rng, tmp_path):
    """Exact GELU: float32 as predict; float64 to 1e-7, its erf taken in float32 (the
    runtime has no float64 Erf)."""
    for dtype, rtol in (("float32", 1e-5), ("float64", 1e-7)):
        model = fnn.Sequential([fnn.Dense(5, 8), fnn.GELU(), fnn.Dense(8, 3)], dtype=dtype,
                               seed=0)
        X = (3 * rng.normal(size=(33, 5))).astype(dtype)
        got = run_onnx(model.export_onnx(tmp_path / f"{dtype}.onnx"), X)
        np.testing.assert_allclose(got, model.predict(X), rtol=rtol, atol=rtol)


def run_onnx(path, X):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": X})[0]


@pytest.mark.parametrize("dtype,rtol", [("float32", 1e-5), ("float64", 1e-12)])
@pytest.mark.parametrize("layers", ALL_KINDS)
def test_onnxruntime_computes_what_predict_computes(rng, tmp_path, dtype, rtol, layers):
    model = fnn.Sequential(layers(), dtype=dtype, seed=0)
    for layer in model.layers:  # every term visible: biases, statistics away from 0/1
        for p in layer.parameters():
            p[...] = rng.normal(size=p.shape)
        for b in layer.buffers():
            b[...] = rng.uniform(0.5, 2, b.shape)
    X = rng.normal(size=(33, 5)).astype(dtype)
    path = model.export_onnx(tmp_path / "m.onnx")
    got = run_onnx(path, X)
    assert got.dtype == model.dtype
    np.testing.assert_allclose(got, model.predict(X), rtol=rtol, atol=rtol)
    graph = onnx.load(str(path)).graph
    assert "Dropout" not in {node.op_type for node in graph.node}
    assert run_onnx(path, X[:1]).shape == (1, model.n_outputs)  # any batch size


def test_command_line_export(tmp_path, capsys):
    from fastnn import cli
    model = fnn.Sequential([fnn.Dense(4, 3)], seed=0, loss="cross_entropy")
    model.save(tmp_path / "m.npz")
    assert cli.main(["export", str(tmp_path / "m.npz"), str(tmp_path / "m.onnx")]) == 0
    X = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(run_onnx(tmp_path / "m.onnx", X), model.predict(X), rtol=1e-5)
    assert cli.main(["export", str(tmp_path / "m.npz"), str(tmp_path / "no" / "m.onnx")]) == 2
    assert "no folder" in capsys.readouterr().err


def test_unwritable_path_and_unknown_layer_leave_no_file(tmp_path):
    model = fnn.Sequential([fnn.Dense(4, 3), fnn.ReLU()], seed=0)
    with pytest.raises(FileNotFoundError, match="no folder"):
        model.export_onnx(tmp_path / "missing" / "m.onnx")
    model.layers[1].kind = "swish"  # a layer ONNX export does not know
    with pytest.raises(ValueError, match=r"layer 1 \(.*\) has no ONNX equivalent"):
        model.export_onnx(tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []
