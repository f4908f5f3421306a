"""ONNX export: a Sequential model as a standard ONNX graph of what predict computes.

Dense -> Gemm (transB=1, torch's weight layout), ReLU -> Relu, LeakyReLU -> PRelu,
Sigmoid, Tanh, Softmax (axis 1), Identity, a residual block as its layers and an Add;
GELU, SiLU, ELU and Softplus as their formulas in standard operators (Erf, Tanh,
Sigmoid, Exp, Where: the opset has no Gelu before 20, and Elu's alpha attribute is
32-bit; onnxruntime has no float64 Erf, so a float64 model's exact GELU takes its erf in
float32, about 1e-7 relative); BatchNorm1d ->
BatchNormalization with the running statistics (inference mode; affine=False exports
scale 1 and bias 0; in float64 Sub, Mul and Add, because BatchNormalization's epsilon
attribute is 32-bit); Dropout is the identity at inference and is omitted. The graph's
input "input" is (batch, features) with a free batch dimension, its output "output" is
(batch, outputs), in the model's dtype.

A model with a TablePreprocessor (the command line's, for tables with missing cells or
text columns) gets it in the graph: one input per table column, named as the column,
(batch, 1): a numeric column's cells as numbers of the model's dtype, NaN where missing
(replaced by the training median, with the indicator column where there is one); a
categorical column's as strings, each as fastnn.preprocessing.category_key gives it
(stripped text, or a number's repr), "" or any of MISSING where missing (an ai.onnx.ml
LabelEncoder to the value's index, then one-hot columns, an unknown value all zeros, or
for a coded column the index itself, read by the Embedding's Gather). A classifier with class names
(model.classes) also outputs "probabilities" (batch, classes) and "label" (batch,) its
class as text, as skl2onnx's classifiers do, so onnxruntime on a table's raw columns
gives what `fastnn predict` gives.

Needs the `onnx` package (pip install "fastnn[onnx]"); `import fastnn` does not import
it. The file is checked by onnx.checker and written atomically: a failed export leaves no
partial file.
"""
import numpy as np

from ._files import write_file

OPSET = 17
_ACTIVATIONS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "identity": "Identity"}


def export_onnx(model, path, opset=OPSET, network_only=False):
    """Write `model` to `path` as ONNX (see the module docstring); returns the path.
    network_only: the network alone, reading the preprocessed features ("input") of a
    model with a TablePreprocessor, and no label outputs."""
    try:
        import onnx
        from onnx import TensorProto, helper
    except ImportError as exc:
        raise ImportError('ONNX export needs the onnx package: pip install "fastnn[onnx]"') \
            from exc
    elem = TensorProto.FLOAT if model.dtype == np.float32 else TensorProto.DOUBLE
    nodes, weights = [], []
    preprocessing = None if network_only else model.preprocessing
    current = "input" if preprocessing is None else "features"

    def constant(name, array):  # a parameter, in the model's dtype
        return _constant(weights, name, np.asarray(array, model.dtype))

    graph_inputs = [helper.make_tensor_value_info("input", elem, ["batch", model.n_features])]
    if preprocessing is not None:
        graph_inputs = _preprocessing_nodes(preprocessing, elem, model.dtype, nodes, weights)
    block_inputs = []  # the open residual blocks' inputs
    for i, layer in enumerate(model._plan):
        out = f"layer{i}_{layer.kind}"
        if layer.kind == "residual_begin":
            block_inputs.append(current)
            continue
        if layer.kind == "embedding":
            nodes += _embedding_nodes(layer, current, out, constant,
                                      lambda name, a: _constant(weights, name,
                                                                np.asarray(a, np.int64)), i)
        elif layer.kind == "residual_end":  # the block's output plus its input
            nodes.append(helper.make_node("Add", [current, block_inputs.pop()], [out],
                                          name=out))
        elif layer.kind == "dense":
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
        elif layer.kind in _FORMULAS:
            def scalar(name, value, prefix=out):  # a named constant of the layer's
                return constant(f"{prefix}_{name}", np.atleast_1d(value))
            nodes += _FORMULAS[layer.kind](layer, current, out, scalar, elem)
        else:
            raise ValueError(f"layer {i} ({layer!r}) has no ONNX equivalent here")
        current = out
    if current in ("input", "features"):  # only dropout layers: still a graph to output
        nodes.append(helper.make_node("Identity", [current], ["output"], name="output"))
    else:
        nodes[-1].output[0] = "output"
    outputs = [helper.make_tensor_value_info("output", elem, ["batch", model.n_outputs])]
    if not network_only and model.classes is not None and model.loss is not None \
            and model.loss.classification:
        outputs += _label_nodes(model, elem, nodes, weights)
    graph = helper.make_graph(nodes, "fastnn_sequential", graph_inputs, outputs,
                              initializer=weights)
    from . import __version__
    proto = helper.make_model(graph, producer_name="fastnn", producer_version=__version__,
                              opset_imports=[helper.make_opsetid("", opset),
                                             helper.make_opsetid("ai.onnx.ml", 3)])
    onnx.checker.check_model(proto, full_check=True)
    write_file(path, lambda f: f.write(proto.SerializeToString()))
    return path


def _gelu_nodes(layer, x, out, constant, elem):
    """z Phi(z) = 0.5 z (1 + erf(z / sqrt 2)), or the tanh form."""
    from onnx import TensorProto, helper
    if layer.approximate == "tanh":  # 0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3)))
        return [helper.make_node("Mul", [x, x], [f"{out}_sq"]),
                helper.make_node("Mul", [f"{out}_sq", constant("kappa", 0.044715)],
                                 [f"{out}_ksq"]),
                helper.make_node("Mul", [f"{out}_ksq", x], [f"{out}_cube"]),
                helper.make_node("Add", [x, f"{out}_cube"], [f"{out}_sum"]),
                helper.make_node("Mul", [f"{out}_sum", constant("c", np.sqrt(2 / np.pi))],
                                 [f"{out}_inner"]),
                helper.make_node("Tanh", [f"{out}_inner"], [f"{out}_t"]),
                helper.make_node("Add", [f"{out}_t", constant("one", 1.0)], [f"{out}_1t"]),
                helper.make_node("Mul", [x, f"{out}_1t"], [f"{out}_x1t"]),
                helper.make_node("Mul", [f"{out}_x1t", constant("half", 0.5)], [out])]
    erf = [helper.make_node("Erf", [f"{out}_scaled"], [f"{out}_erf"])]
    if elem == TensorProto.DOUBLE:
        erf = [helper.make_node("Cast", [f"{out}_scaled"], [f"{out}_scaled32"],
                                to=TensorProto.FLOAT),
               helper.make_node("Erf", [f"{out}_scaled32"], [f"{out}_erf32"]),
               helper.make_node("Cast", [f"{out}_erf32"], [f"{out}_erf"], to=elem)]
    return [helper.make_node("Mul", [x, constant("r", np.sqrt(0.5))], [f"{out}_scaled"]),
            *erf,
            helper.make_node("Add", [f"{out}_erf", constant("one", 1.0)], [f"{out}_1e"]),
            helper.make_node("Mul", [x, f"{out}_1e"], [f"{out}_x1e"]),
            helper.make_node("Mul", [f"{out}_x1e", constant("half", 0.5)], [out])]


def _silu_nodes(layer, x, out, constant, elem):
    from onnx import helper
    return [helper.make_node("Sigmoid", [x], [f"{out}_s"]),
            helper.make_node("Mul", [x, f"{out}_s"], [out])]


def _elu_nodes(layer, x, out, constant, elem):
    """z where z > 0, else alpha (exp(z) - 1)."""
    from onnx import helper
    return [helper.make_node("Exp", [x], [f"{out}_e"]),
            helper.make_node("Sub", [f"{out}_e", constant("one", 1.0)], [f"{out}_em1"]),
            helper.make_node("Mul", [f"{out}_em1", constant("alpha", layer.alpha)],
                             [f"{out}_neg"]),
            helper.make_node("Greater", [x, constant("zero", 0.0)], [f"{out}_pos"]),
            helper.make_node("Where", [f"{out}_pos", x, f"{out}_neg"], [out])]


def _softplus_nodes(layer, x, out, constant, elem):
    """z where beta z > threshold, else softplus(beta z) / beta, softplus(y) as
    max(y, 0) + log(1 + exp(-|y|)) (onnxruntime has no float64 Softplus)."""
    from onnx import helper
    return [helper.make_node("Mul", [x, constant("beta", layer.beta)], [f"{out}_bz"]),
            helper.make_node("Abs", [f"{out}_bz"], [f"{out}_abs"]),
            helper.make_node("Neg", [f"{out}_abs"], [f"{out}_nabs"]),
            helper.make_node("Exp", [f"{out}_nabs"], [f"{out}_e"]),
            helper.make_node("Add", [f"{out}_e", constant("one", 1.0)], [f"{out}_1e"]),
            helper.make_node("Log", [f"{out}_1e"], [f"{out}_log"]),
            helper.make_node("Relu", [f"{out}_bz"], [f"{out}_pos"]),
            helper.make_node("Add", [f"{out}_pos", f"{out}_log"], [f"{out}_sp"]),
            helper.make_node("Div", [f"{out}_sp", f"{out}_beta"], [f"{out}_curve"]),
            helper.make_node("Greater", [f"{out}_bz", constant("threshold", layer.threshold)],
                             [f"{out}_linear"]),
            helper.make_node("Where", [f"{out}_linear", x, f"{out}_curve"], [out])]


def _layernorm_nodes(layer, x, out, constant, elem):
    """(x - mean) / sqrt(var + eps) * weight + bias over the features, as operators (the
    LayerNormalization operator's epsilon is 32-bit, and onnxruntime has it for float32
    only)."""
    from onnx import helper
    nodes = [helper.make_node("ReduceMean", [x], [f"{out}_mean"], axes=[1], keepdims=1),
             helper.make_node("Sub", [x, f"{out}_mean"], [f"{out}_dev"]),
             helper.make_node("Mul", [f"{out}_dev", f"{out}_dev"], [f"{out}_sq"]),
             helper.make_node("ReduceMean", [f"{out}_sq"], [f"{out}_var"], axes=[1],
                              keepdims=1),
             helper.make_node("Add", [f"{out}_var", constant("eps", layer.eps)],
                              [f"{out}_vareps"]),
             helper.make_node("Sqrt", [f"{out}_vareps"], [f"{out}_std"]),
             helper.make_node("Div", [f"{out}_dev", f"{out}_std"], [f"{out}_xhat"])]
    current = f"{out}_xhat"
    for name, array, op in (("weight", layer.weight, "Mul"), ("bias", layer.bias, "Add")):
        if array is not None:
            nodes.append(helper.make_node(op, [current, constant(name, array)],
                                          [f"{out}_{name}ed"]))
            current = f"{out}_{name}ed"
    nodes.append(helper.make_node("Identity", [current], [out]))
    return nodes


_FORMULAS = {"gelu": _gelu_nodes, "silu": _silu_nodes, "elu": _elu_nodes,
             "softplus": _softplus_nodes, "layernorm": _layernorm_nodes}


def _embedding_nodes(layer, x, out, constant, index_constant, i):
    """The numeric columns (Gather on axis 1), then each code column's table rows (its
    codes cast to int64, Gather on axis 0 of its table, (batch, 1, d) flattened),
    concatenated."""
    from onnx import TensorProto, helper
    nodes, parts = [], []
    numeric = layer._arrays["numeric"]
    if numeric.size:
        nodes.append(helper.make_node(
            "Gather", [x, index_constant(f"layer{i}_numeric", numeric)],
            [f"{out}_numeric"], axis=1))
        parts.append(f"{out}_numeric")
    for j, (column, first, n) in enumerate(zip(layer.columns, layer._arrays["offsets"],
                                                layer.cardinalities)):
        name = f"{out}_{j}"
        nodes += [
            helper.make_node("Gather", [x, index_constant(f"{name}_column",
                                                         np.array(column))],
                             [f"{name}_value"], axis=1),
            helper.make_node("Cast", [f"{name}_value"], [f"{name}_code"],
                             to=TensorProto.INT64),
            helper.make_node("Gather", [constant(f"{name}_table",
                                                 layer.weight[first:first + n]),
                                        f"{name}_code"], [f"{name}_rows"], axis=0),
            helper.make_node("Flatten", [f"{name}_rows"], [f"{name}_vectors"], axis=1)]
        parts.append(f"{name}_vectors")
    nodes.append(helper.make_node("Concat", parts, [out], axis=1))
    return nodes


def _preprocessing_nodes(pre, elem, dtype, nodes, weights):
    """Nodes turning the table's columns into "features" as TablePreprocessor.transform
    does; returns the graph's inputs, one per column."""
    from onnx import TensorProto, helper

    from .preprocessing import MISSING

    def constant(name, array):
        return _constant(weights, name, array)

    inputs, parts = [], []
    missing = sorted(MISSING)
    for i, c in enumerate(pre.columns):
        name = c["name"]
        if c["kind"] == "numeric":
            inputs.append(helper.make_tensor_value_info(name, elem, ["batch", 1]))
            absent = f"col{i}_missing"
            nodes += [
                helper.make_node("IsNaN", [name], [absent]),
                helper.make_node("Where", [absent, constant(f"col{i}_fill",
                                                            np.array([c["fill"]], dtype)),
                                           name], [f"col{i}_values"])]
            parts.append(f"col{i}_values")
        else:
            inputs.append(helper.make_tensor_value_info(name, TensorProto.STRING, ["batch", 1]))
            categories = list(c["categories"])
            coded = c["kind"] == "codes"  # an unknown value: the extra code, else -1
            unknown = len(categories) if coded else -1
            fill = categories.index(c["fill"]) if c["fill"] in categories else unknown
            nodes.append(helper.make_node(
                "LabelEncoder", [name], [f"col{i}_index"], domain="ai.onnx.ml",
                keys_strings=categories + missing, values_int64s=list(
                    range(len(categories))) + [fill] * len(missing), default_int64=unknown))
            if coded:
                nodes.append(helper.make_node("Cast", [f"col{i}_index"], [f"col{i}_values"],
                                              to=elem))
            else:
                nodes += [
                    helper.make_node("Equal", [f"col{i}_index", constant(
                        f"col{i}_categories", np.arange(len(categories), dtype=np.int64))],
                                     [f"col{i}_hot"]),
                    helper.make_node("Cast", [f"col{i}_hot"], [f"col{i}_values"], to=elem)]
            parts.append(f"col{i}_values")
            if c["indicator"]:
                nodes.append(helper.make_node(
                    "LabelEncoder", [name], [f"col{i}_absent"], domain="ai.onnx.ml",
                    keys_strings=missing, values_int64s=[1] * len(missing), default_int64=0))
                absent = f"col{i}_absent"
        if c["indicator"]:
            nodes.append(helper.make_node("Cast", [absent], [f"col{i}_indicator"], to=elem))
            parts.append(f"col{i}_indicator")
    nodes.append(helper.make_node("Concat", parts, ["features"], axis=1, name="features"))
    return inputs


def _label_nodes(model, elem, nodes, weights):
    """"probabilities" and "label" (the class names as text) of a classifier, as its
    predict_proba and `fastnn predict` give them; returns the outputs' descriptions."""
    from onnx import TensorProto, helper

    from .layers import Sigmoid, Softmax
    link = type(model.layers[-1])
    if link is model.loss.link or link in (Softmax, Sigmoid) and model.loss.link is None:
        nodes.append(helper.make_node("Identity", ["output"], ["probabilities"]))
    elif model.loss.link is Softmax:
        nodes.append(helper.make_node("Softmax", ["output"], ["probabilities"], axis=1))
    else:
        nodes.append(helper.make_node("Sigmoid", ["output"], ["probabilities"]))
    _constant(weights, "class_names", np.array([str(c) for c in model.classes], dtype=object))
    if model.n_outputs == 1:  # one sigmoid output, two classes: the second above 0.5
        _constant(weights, "half", np.array([0.5], model.dtype))
        nodes += [helper.make_node("Greater", ["probabilities", "half"], ["above_half"]),
                  helper.make_node("Cast", ["above_half"], ["class_column"],
                                   to=TensorProto.INT64),
                  helper.make_node("Squeeze", ["class_column"], ["class_index"])]
    else:
        nodes.append(helper.make_node("ArgMax", ["probabilities"], ["class_index"], axis=1,
                                      keepdims=0))
    nodes.append(helper.make_node("Gather", ["class_names", "class_index"], ["label"]))
    return [helper.make_tensor_value_info("probabilities", elem,
                                          ["batch", model.n_outputs]),
            helper.make_tensor_value_info("label", TensorProto.STRING, ["batch"])]


def _constant(weights, name, array):
    """Add `array` to the graph's initializers under `name`; returns the name."""
    from onnx import numpy_helper
    weights.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
    return name
