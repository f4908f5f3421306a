"""ONNX export: a Sequential model as a standard ONNX graph of what predict computes.

Dense -> Gemm (transB=1, torch's weight layout), ReLU -> Relu, LeakyReLU -> PRelu,
Sigmoid, Tanh, Softmax (axis 1), Identity, BatchNorm1d -> BatchNormalization with the
running statistics (inference mode; affine=False exports scale 1 and bias 0; in float64
Sub, Mul and Add, because BatchNormalization's epsilon attribute is 32-bit); Dropout is
the identity at inference and is omitted. The graph's input "input" is (batch, features)
with a free batch dimension, its output "output" is (batch, outputs), in the model's
dtype. Needs the `onnx` package (pip install "fastnn[onnx]"); `import fastnn` does not
import it. The file is checked by onnx.checker and written atomically: a failed export
leaves no partial file.
"""
import numpy as np

from ._files import write_file

OPSET = 17
_ACTIVATIONS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "identity": "Identity"}


def export_onnx(model, path, opset=OPSET, network_only=False):
    """Write `model` to `path` as ONNX (see the module docstring); returns the path.

    A model with a TablePreprocessor (missing cells, categorical columns) is refused
    unless network_only: its preprocessing is not written into the graph yet, and a graph
    of the network alone reads the preprocessed features (TablePreprocessor.transform),
    not the table's columns."""
    if getattr(model, "preprocessing", None) is not None and not network_only:
        raise ValueError("this model's preprocessing (missing cells, categorical columns) "
                         "is not part of an ONNX graph yet; export_onnx(path, "
                         "network_only=True) writes the network alone, which reads "
                         "model.preprocessing.transform(table)")
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:
        raise ImportError('ONNX export needs the onnx package: pip install "fastnn[onnx]"') \
            from exc
    elem = TensorProto.FLOAT if model.dtype == np.float32 else TensorProto.DOUBLE
    nodes, weights = [], []
    current = "input"

    def constant(name, array):
        weights.append(numpy_helper.from_array(np.ascontiguousarray(array, model.dtype), name))
        return name

    for i, layer in enumerate(model.layers):
        out = f"layer{i}_{layer.kind}"
        if layer.kind == "dense":
            inputs = [current, constant(f"layer{i}_weight", layer.weight)]
            if layer.bias is not None:
                inputs.append(constant(f"layer{i}_bias", layer.bias))
            nodes.append(helper.make_node("Gemm", inputs, [out], transB=1, name=out))
        elif layer.kind == "batchnorm" and model.dtype == np.float32:
            n = layer.num_features
            scale = layer.weight if layer.affine else np.ones(n)
            shift = layer.bias if layer.affine else np.zeros(n)
            inputs = [current, constant(f"layer{i}_scale", scale),
                      constant(f"layer{i}_shift", shift),
                      constant(f"layer{i}_running_mean", layer.running_mean),
                      constant(f"layer{i}_running_var", layer.running_var)]
            nodes.append(helper.make_node("BatchNormalization", inputs, [out],
                                          epsilon=layer.eps, name=out))
        elif layer.kind == "batchnorm":  # float64: BatchNormalization's epsilon is 32-bit
            # (x - mean) * (gamma / sqrt(var + eps)) + beta, rounded as fastnn's kernel does
            factor = (1.0 / np.sqrt(layer.running_var.astype(np.float64) + layer.eps))
            if layer.affine:
                factor = layer.weight * factor
            shift = layer.bias if layer.affine else np.zeros(layer.num_features)
            centred, scaled = f"{out}_centred", f"{out}_scaled"
            nodes += [
                helper.make_node("Sub", [current, constant(f"layer{i}_running_mean",
                                                           layer.running_mean)], [centred]),
                helper.make_node("Mul", [centred, constant(f"layer{i}_factor", factor)],
                                 [scaled]),
                helper.make_node("Add", [scaled, constant(f"layer{i}_shift", shift)], [out],
                                 name=out)]
        elif layer.kind == "dropout":
            continue  # the identity at inference
        elif layer.kind == "leaky_relu":  # PRelu: the slope as a tensor of the model's
            # dtype (LeakyRelu's alpha attribute is 32-bit, which float64 would notice)
            slope = constant(f"layer{i}_slope", np.array([layer.negative_slope]))
            nodes.append(helper.make_node("PRelu", [current, slope], [out], name=out))
        elif layer.kind == "softmax":
            nodes.append(helper.make_node("Softmax", [current], [out], axis=1, name=out))
        elif layer.kind in _ACTIVATIONS:
            nodes.append(helper.make_node(_ACTIVATIONS[layer.kind], [current], [out],
                                          name=out))
        else:
            raise ValueError(f"layer {i} ({layer!r}) has no ONNX equivalent here")
        current = out
    if current == "input":  # only dropout layers: still a graph from input to output
        nodes.append(helper.make_node("Identity", ["input"], ["output"], name="output"))
    else:
        nodes[-1].output[0] = "output"
    graph = helper.make_graph(
        nodes, "fastnn_sequential",
        [helper.make_tensor_value_info("input", elem, ["batch", model.n_features])],
        [helper.make_tensor_value_info("output", elem, ["batch", model.n_outputs])],
        initializer=weights)
    from . import __version__
    proto = helper.make_model(graph, producer_name="fastnn", producer_version=__version__,
                              opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(proto, full_check=True)
    write_file(path, lambda f: f.write(proto.SerializeToString()))
    return path
