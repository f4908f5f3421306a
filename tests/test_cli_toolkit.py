"""The toolkit from the command line: layer norm, NAdam, one-cycle, clipping, label
smoothing, class weights and the Huber loss reach the saved model and its training; a
loss that does not fit the task is refused with exit status 2 and nothing written."""
import numpy as np
import pytest
from test_cli import labelled_data, run, write_data

import fastnn as fnn


def test_classification_with_the_toolkit(tmp_path, capsys):
    X, labels, _ = labelled_data()
    data = write_data(tmp_path, "csv", X, labels, "animal")
    model_path = tmp_path / "model.npz"
    code, out, err = run(capsys, "train", *data, "--epochs", "8", "--hidden", "32,16",
                         "--layer-norm", "--activation", "gelu", "--optimizer", "nadam",
                         "--lr", "0.01", "--schedule", "onecycle", "--clip-grad-norm", "1",
                         "--label-smoothing", "0.1", "--class-weight", "balanced",
                         "--verbose", "0", "--save", model_path)
    assert code == 0, err
    model = fnn.load(model_path)
    assert [layer.kind for layer in model.layers] == [
        "dense", "layernorm", "gelu", "dense", "layernorm", "gelu", "dense"]
    assert model.loss.label_smoothing == 0.1
    assert type(model.optimizer).__name__ == "NAdam"
    code, out, err = run(capsys, "evaluate", model_path, *data)
    assert code == 0, err
    assert float(out.split("accuracy")[1].split()[0].strip(",")) > 0.8


def test_regression_with_huber(tmp_path, capsys):
    X, _, target = labelled_data()
    data = write_data(tmp_path, "csv", X, target, "price")
    model_path = tmp_path / "model.npz"
    code, out, err = run(capsys, "train", *data, "--epochs", "5", "--hidden", "16",
                         "--loss", "huber", "--verbose", "0", "--save", model_path)
    assert code == 0, err
    assert "loss huber" in out
    assert fnn.load(model_path).loss.delta == 1.0


@pytest.mark.parametrize("argv,message", [
    (["--loss", "huber"], "--loss huber is not a classification loss"),
    (["--task", "regression", "--label-smoothing", "0.1"],
     "--label-smoothing is for classification"),
    (["--task", "regression", "--class-weight", "balanced"],
     "--class-weight is for classification"),
])
def test_options_that_do_not_fit_the_task(tmp_path, capsys, argv, message):
    X, labels, _ = labelled_data()
    data = write_data(tmp_path, "csv", X, (np.arange(len(X)) % 3).astype(str)
                      if "--task" not in argv else np.arange(len(X)) % 7, "y")
    code, out, err = run(capsys, "train", *data, *argv, "--save", tmp_path / "m.npz")
    assert code == 2
    assert message in err
    assert not (tmp_path / "m.npz").exists()
