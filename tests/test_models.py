"""The tabular reference builders: the published layer sequence, training as torch's
version of the same network, and `fastnn train --arch resnet`."""
import pytest
from conftest import assert_same_parameters, torch_train
from test_cli import labelled_data, run, write_data
from test_forward import torch_modules

import fastnn as fnn
from fastnn.models import tabular_mlp, tabular_resnet


def kinds(layers):
    return [[kinds(layer.layers)] if layer.kind == "residual" else layer.kind
            for layer in layers]


def test_the_architectures():
    mlp = tabular_mlp(10, 3, n_blocks=2, d_block=32, dropout=0.2)
    assert kinds(mlp.layers) == ["dense", "relu", "dropout", "dense", "relu", "dropout",
                                 "dense"]
    assert [p.shape for p in mlp.parameters()][::2] == [(32, 10), (32, 32), (3, 32)]
    resnet = tabular_resnet(10, 3, n_blocks=2, d_main=16, d_hidden_factor=1.5,
                            dropout_first=0.3, dropout_second=0.1)
    block = [["batchnorm", "dense", "relu", "dropout", "dense", "dropout"]]
    assert kinds(resnet.layers) == ["dense", block, block, "batchnorm", "relu", "dense"]
    assert resnet.layers[1].layers[1].weight.shape == (24, 16)
    assert [layer.p for layer in resnet.layers[1].layers if layer.kind == "dropout"] == \
        [0.3, 0.1]
    layered = tabular_resnet(10, 3, n_blocks=1, d_main=16, normalization="layernorm")
    assert kinds(layered.layers) == [
        "dense", [["layernorm", "dense", "relu", "dropout", "dense"]], "layernorm", "relu",
        "dense"]
    with pytest.raises(ValueError, match="normalization must be one of"):
        tabular_resnet(10, 3, normalization="groupnorm")


@pytest.mark.parametrize("normalization", ["batchnorm", "layernorm"])
def test_resnet_trains_as_torch(rng, torch64, normalization):
    """SGD with momentum over 12 steps (dropout off: masks are not torch's), float64.
    (Not Adam: the biases of the Dense layers just before a batch norm have a gradient of
    rounding noise, which Adam's normalisation turns into steps of 1e-11.)"""
    torch = torch64
    model = tabular_resnet(6, 3, n_blocks=2, d_main=8, dropout_first=0.0, dtype="float64",
                           seed=3, normalization=normalization)
    net = torch.nn.Sequential(*torch_modules(model, torch))
    X, y = rng.normal(size=(64, 6)), rng.integers(0, 3, 64)
    torch_train(torch, net, X, y, torch.nn.CrossEntropyLoss(),
                torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9), batch_size=16)
    model.fit(X, y, optimizer=fnn.optim.SGD(lr=0.05, momentum=0.9), epochs=3, batch_size=16,
              shuffle=False)
    assert_same_parameters(model, net)


def test_command_line_resnet(tmp_path, capsys):
    X, labels, _ = labelled_data(n=446)  # 401 training rows: batches of 200 would leave 1
    data = write_data(tmp_path, "csv", X, labels, "animal")
    model_path = tmp_path / "model.npz"
    code, out, err = run(capsys, "train", *data, "--arch", "resnet", "--hidden", "32,32",
                         "--epochs", "20", "--lr", "0.01", "--verbose", "0", "--save",
                         model_path)
    assert code == 0, err
    model = fnn.load(model_path)
    assert kinds(model.layers)[:3] == ["dense", [["batchnorm", "dense", "relu", "dense"]],
                                       [["batchnorm", "dense", "relu", "dense"]]]
    code, out, err = run(capsys, "evaluate", model_path, *data)
    assert code == 0, err
    assert float(out.split("accuracy")[1].split()[0].strip(",")) > 0.8
