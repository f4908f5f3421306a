"""Layers a Sequential model is built from: Dense (affine) and activations.

Parameters follow torch.nn.Linear's layout: weight (out_features, in_features) and
bias (out_features,). They are plain numpy arrays owned by the layer and used in place
by the compiled engine: assigning `layer.weight = w` copies w into the existing array.
"""
from typing import NamedTuple, Optional

import numpy as np

from . import _engine
from ._validation import INT32_MAX, check_int

__all__ = ["Layer", "Dense", "Identity", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax",
           "GELU", "SiLU", "ELU", "Softplus", "Dropout", "BatchNorm1d", "LayerNorm",
           "get_activation"]

INITS = ("he", "he_uniform", "glorot", "glorot_normal")
DRAW_BLOCK = 1 << 20  # entries of float64 a weight initialisation draws at a time


class LayerSpec(NamedTuple):
    """What the compiled engine is told of a layer (it reads it in one place, read_spec in
    csrc/engine/plan.pxi, for training and forward mode alike)."""
    kind: int                   # the kind's code, _engine.LAYER_KINDS[name]
    n_in: int
    n_out: int
    slope: float                # LeakyReLU's slope, ELU's alpha, Softplus's beta, Dropout's p
    weight: Optional[np.ndarray]  # used in place: C-contiguous, the model's dtype
    bias: Optional[np.ndarray]
    l2: float                   # the weight's penalty gradient coefficient (2 lambda)
    extra: Optional[dict]       # batch norm: eps, momentum, running_mean, running_var;
                                # layer norm: eps; Softplus: threshold
    trainable: bool = True      # False: weight and bias are constants (a frozen layer)


class Layer:
    """Base class. A layer maps (n, in_width) to (n, out_width). `trainable` (a layer
    with parameters): False freezes it, as torch's requires_grad=False on its
    parameters: fit neither updates them nor gives them optimizer state (they are
    constants of the loss); a frozen BatchNorm1d still updates its running statistics
    in fit, as torch's does in train mode."""

    kind = None  # name of the compiled kernel, a key of _engine.LAYER_KINDS

    @property
    def trainable(self):
        return self.__dict__.get("_trainable", True)

    @trainable.setter
    def trainable(self, value):
        self._trainable = check_trainable(value)

    def parameters(self):
        return []

    def output_width(self, in_width):
        return in_width

    def _build(self, in_width, dtype, rng):
        """Prepare parameters of `dtype`, initialised from `rng`, for inputs of in_width."""

    def _config(self):
        """The constructor arguments, as JSON-able values, with the layer kind."""
        return {"kind": self.kind}

    def _frozen(self):
        """What _config adds for a frozen layer."""
        return {} if self.trainable else {"trainable": False}

    def _plan_layers(self):
        """The layer as the engine's plan lists it: itself (a residual block: its layers
        between two markers, fastnn.residual)."""
        return [self]

    def _spec(self, in_width):
        """The layer as the engine takes it (LayerSpec)."""
        return LayerSpec(_engine.LAYER_KINDS[self.kind], in_width, self.output_width(in_width),
                         self._slope(), None, None, 0.0, None)

    def _slope(self):
        """The one scalar setting an elementwise kernel reads (LeakyReLU's slope, Dropout's p)."""
        return 0.0

    def buffers(self):
        """State that is not learned by gradient but saved with the model."""
        return []

    def penalty(self):
        """The layer's regularization term of the loss (0 for most layers)."""
        return 0.0

    def __repr__(self):
        return f"{type(self).__name__}()"


class Dense(Layer):
    """Affine layer: out = x @ weight.T + bias.

    Args:
        in_features, out_features: input and output widths.
        bias: whether to add a learnable bias (initialised to zero).
        init: weight initialisation, drawn from the model's seed:
            "he" (normal, std sqrt(2 / in_features)), "he_uniform"
            (bound sqrt(6 / in_features)), "glorot" (uniform, bound
            sqrt(6 / (in_features + out_features))), "glorot_normal"
            (std sqrt(2 / (in_features + out_features))).
        l2: lambda of an L2 penalty: the loss gains lambda * sum(weight ** 2) and the
            weight's gradient 2 * lambda * weight; the bias is not penalised. (This is
            the textbook penalty, distinct from an optimizer's decoupled weight decay.)

    Shape: (n, in_features) -> (n, out_features).
    """

    kind = "dense"

    def __init__(self, in_features, out_features, bias=True, init="he", l2=0.0):
        self._settle(in_features, out_features, bias, init, l2)
        self.reset_parameters(np.random.default_rng(), np.float32)

    def _settle(self, in_features, out_features, bias, init, l2):
        """Check the settings and allocate zeroed parameters (no random draw)."""
        self.in_features = check_int(in_features, "in_features")
        self.out_features = check_int(out_features, "out_features")
        if self.in_features * self.out_features > INT32_MAX:  # before any allocation
            raise ValueError(f"Dense({self.in_features}, {self.out_features}) has "
                             f"{self.in_features * self.out_features} weights, more than "
                             f"BLAS's 32-bit limit of {INT32_MAX}")
        if isinstance(l2, bool) or not isinstance(l2, (int, float, np.floating)) \
                or not np.isfinite(l2) or l2 < 0:
            raise ValueError(f"l2 must be a finite number >= 0, got {l2!r}")
        self.l2 = float(l2)
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; expected one of {INITS}")
        self.init = init
        if not isinstance(bias, (bool, np.bool_)):
            raise ValueError(f"bias must be True or False, got {bias!r}")
        self._weight = np.zeros((self.out_features, self.in_features), dtype=np.float32)
        self._bias = np.zeros(self.out_features, dtype=np.float32) if bias else None

    @property
    def weight(self):
        return self._weight

    @weight.setter
    def weight(self, value):
        self._assign(self._weight, value, "weight")

    @property
    def bias(self):
        return self._bias

    @bias.setter
    def bias(self, value):
        if self._bias is None:
            raise ValueError("this Dense layer was built with bias=False")
        self._assign(self._bias, value, "bias")

    @staticmethod
    def _assign(target, value, name):
        value = np.asarray(value)
        if value.shape != target.shape:
            raise ValueError(f"{name} must have shape {target.shape}, got {value.shape}")
        if not np.isfinite(value).all():
            raise ValueError(f"{name} contains NaN or inf")
        target[...] = value

    def reset_parameters(self, rng, dtype):
        """Draw new weights (and zero the bias) in `dtype` from the generator rng."""
        fan_in, fan_out = self.in_features, self.out_features
        if self.init == "he":
            sample, low_or_mean, high_or_std = rng.normal, 0.0, np.sqrt(2.0 / fan_in)
        elif self.init == "he_uniform":
            bound = np.sqrt(6.0 / fan_in)
            sample, low_or_mean, high_or_std = rng.uniform, -bound, bound
        elif self.init == "glorot":
            bound = np.sqrt(6.0 / (fan_in + fan_out))
            sample, low_or_mean, high_or_std = rng.uniform, -bound, bound
        else:
            sample, low_or_mean, high_or_std = rng.normal, 0.0, np.sqrt(2.0 / (fan_in + fan_out))
        if self._weight.dtype != dtype:  # the old array goes first: one weight at a time
            self._weight = None
            self._weight = np.empty((fan_out, fan_in), dtype=dtype)
            if self._bias is not None:
                self._bias = np.zeros(fan_out, dtype=dtype)
        # in place (a model's engine holds these arrays), a block of rows at a time: the
        # generator's stream is the same as one draw of the whole shape, and the float64
        # draw never needs more than DRAW_BLOCK entries beside the weight
        rows = max(1, DRAW_BLOCK // fan_in)
        for first in range(0, fan_out, rows):
            self._weight[first:first + rows] = sample(low_or_mean, high_or_std,
                                                      (min(rows, fan_out - first), fan_in))
        if self._bias is not None:
            self._bias[...] = 0

    def parameters(self):
        return [self._weight] if self._bias is None else [self._weight, self._bias]

    def _config(self):
        return {"kind": self.kind, "in_features": self.in_features,
                "out_features": self.out_features, "bias": self._bias is not None,
                "init": self.init, "l2": self.l2, **self._frozen()}

    def output_width(self, in_width):
        return self.out_features

    def _build(self, in_width, dtype, rng):
        if in_width != self.in_features:
            raise ValueError(f"Dense({self.in_features}, {self.out_features}) expects "
                             f"{self.in_features} input features but receives {in_width}")
        if rng is not None:
            self.reset_parameters(rng, dtype)
        elif self._weight.dtype != dtype:  # to be filled by the caller (a file's values)
            shape, self._weight = self._weight.shape, None
            self._weight = np.zeros(shape, dtype=dtype)
            if self._bias is not None:
                self._bias = np.zeros(self._bias.shape, dtype=dtype)

    def _spec(self, in_width):
        return LayerSpec(_engine.LAYER_KINDS["dense"], self.in_features, self.out_features,
                         0.0, self._weight, self._bias, 2 * self.l2, None, self.trainable)

    def penalty(self):
        if not self.l2:
            return 0.0
        w = self._weight.ravel()
        return self.l2 * float(np.dot(w, w))

    def __repr__(self):
        l2 = f", l2={self.l2}" if self.l2 else ""
        return (f"Dense({self.in_features}, {self.out_features}, "
                f"bias={self._bias is not None}, init={self.init!r}{l2})")


class Identity(Layer):
    """f(z) = z."""
    kind = "identity"


class ReLU(Layer):
    """f(z) = max(z, 0); derivative 0 at z = 0, as torch."""
    kind = "relu"


class LeakyReLU(Layer):
    """f(z) = z if z > 0 else negative_slope * z."""
    kind = "leaky_relu"

    def __init__(self, negative_slope=0.01):
        if isinstance(negative_slope, bool) or not np.isfinite(negative_slope):
            raise ValueError(f"negative_slope must be a finite number, got {negative_slope!r}")
        self.negative_slope = float(negative_slope)

    def _slope(self):
        return self.negative_slope

    def _config(self):
        return {"kind": self.kind, "negative_slope": self.negative_slope}

    def __repr__(self):
        return f"LeakyReLU(negative_slope={self.negative_slope})"


class Sigmoid(Layer):
    """f(z) = 1 / (1 + exp(-z)). As the last layer with binary_cross_entropy it is fused
    into the loss: training sees the logits, predict returns probabilities."""
    kind = "sigmoid"


class Tanh(Layer):
    """f(z) = tanh(z)."""
    kind = "tanh"


def check_trainable(value):
    """value as a bool: True, False or NumPy's bools (a string such as "no" would be
    truthy, so anything else is a TypeError)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"trainable must be True or False, got {value!r}")
    return bool(value)


def _finite_number(value, name, positive=False):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) \
            or not np.isfinite(value) or (positive and value <= 0):
        raise ValueError(f"{name} must be a finite{' positive' if positive else ''} number, "
                         f"got {value!r}")
    return float(value)


class GELU(Layer):
    """f(z) = z * Phi(z), Phi the standard normal CDF, as torch.nn.GELU; approximate="tanh"
    is torch's tanh form, 0.5 z (1 + tanh(sqrt(2 / pi) (z + 0.044715 z^3)))."""
    kind = "gelu"

    def __init__(self, approximate="none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def _spec(self, in_width):
        code = _engine.LAYER_KINDS["gelu_tanh" if self.approximate == "tanh" else "gelu"]
        return LayerSpec(code, in_width, in_width, 0.0, None, None, 0.0, None)

    def _config(self):
        return {"kind": self.kind, "approximate": self.approximate}

    def __repr__(self):
        return f"GELU(approximate={self.approximate!r})"


class SiLU(Layer):
    """f(z) = z * sigmoid(z) (swish), as torch.nn.SiLU."""
    kind = "silu"


class ELU(Layer):
    """f(z) = z if z > 0 else alpha * (exp(z) - 1), as torch.nn.ELU."""
    kind = "elu"

    def __init__(self, alpha=1.0):
        self.alpha = _finite_number(alpha, "alpha")

    def _slope(self):
        return self.alpha

    def _config(self):
        return {"kind": self.kind, "alpha": self.alpha}

    def __repr__(self):
        return f"ELU(alpha={self.alpha})"


class Softplus(Layer):
    """f(z) = log(1 + exp(beta z)) / beta, and z itself where beta z > threshold, as
    torch.nn.Softplus."""
    kind = "softplus"

    def __init__(self, beta=1.0, threshold=20.0):
        self.beta = _finite_number(beta, "beta", positive=True)
        self.threshold = _finite_number(threshold, "threshold")

    def _spec(self, in_width):
        return LayerSpec(_engine.LAYER_KINDS["softplus"], in_width, in_width, self.beta, None,
                         None, 0.0, {"threshold": self.threshold})

    def _config(self):
        return {"kind": self.kind, "beta": self.beta, "threshold": self.threshold}

    def __repr__(self):
        return f"Softplus(beta={self.beta}, threshold={self.threshold})"


class Softmax(Layer):
    """Row-wise softmax. As the last layer with cross_entropy it is fused into the loss:
    training sees the logits, predict returns probabilities."""
    kind = "softmax"


class Dropout(Layer):
    """Inverted dropout: during fit, each value is zeroed with probability p and the
    others scaled by 1 / (1 - p), so the expected output equals the input; predict,
    evaluate and gradients use the identity. Masks are drawn from the model's seed, so
    training is reproducible (one thread)."""
    kind = "dropout"

    def __init__(self, p=0.5):
        if isinstance(p, bool) or not isinstance(p, (int, float, np.floating)) \
                or not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p!r}")
        self.p = float(p)

    def _slope(self):
        return self.p

    def _config(self):
        return {"kind": self.kind, "p": self.p}

    def __repr__(self):
        return f"Dropout(p={self.p})"


class BatchNorm1d(Layer):
    """Batch normalization over the features, as torch.nn.BatchNorm1d.

    In fit: y = weight * (x - mean) / sqrt(var + eps) + bias with the batch's mean and
    biased variance, and running_mean/running_var move toward them by `momentum`
    (the running variance takes the unbiased batch variance). Elsewhere (predict,
    evaluate, gradients) the running statistics are used. `weight` (ones) and `bias`
    (zeros) are learnable when affine=True and appear in parameters().

    Shape: (n, num_features) -> (n, num_features); fit needs batches of 2 rows or more.
    """
    kind = "batchnorm"

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True):
        self.num_features = check_int(num_features, "num_features")
        if not np.isfinite(eps) or eps <= 0:
            raise ValueError(f"eps must be positive, got {eps!r}")
        if not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
        self.eps, self.momentum, self.affine = float(eps), float(momentum), bool(affine)
        self._allocate(np.float32)

    def _allocate(self, dtype):
        n = self.num_features
        self.weight = np.ones(n, dtype) if self.affine else None
        self.bias = np.zeros(n, dtype) if self.affine else None
        self.running_mean = np.zeros(n, dtype)
        self.running_var = np.ones(n, dtype)

    def _build(self, in_width, dtype, rng):
        if in_width != self.num_features:
            raise ValueError(f"BatchNorm1d({self.num_features}) receives {in_width} features")
        self._allocate(dtype)

    def parameters(self):
        return [self.weight, self.bias] if self.affine else []

    def buffers(self):
        return [self.running_mean, self.running_var]

    def _spec(self, in_width):
        extra = {"eps": self.eps, "momentum": self.momentum,
                 "running_mean": self.running_mean, "running_var": self.running_var}
        return LayerSpec(_engine.LAYER_KINDS["batchnorm"], in_width, in_width, 0.0,
                         self.weight, self.bias, 0.0, extra, self.trainable)

    def _config(self):
        return {"kind": self.kind, "num_features": self.num_features, "eps": self.eps,
                "momentum": self.momentum, "affine": self.affine, **self._frozen()}

    def __repr__(self):
        return (f"BatchNorm1d({self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine})")


class LayerNorm(Layer):
    """Layer normalization over the features, as torch.nn.LayerNorm(num_features): each
    row y = (x - mean) / sqrt(var + eps) * weight + bias with the row's own mean and
    biased variance, the same in fit and predict (no running statistics). `weight` (ones)
    and `bias` (zeros) are learnable with elementwise_affine=True (bias=False: no bias).

    Shape: (n, num_features) -> (n, num_features).
    """
    kind = "layernorm"

    def __init__(self, num_features, eps=1e-5, elementwise_affine=True, bias=True):
        self.num_features = check_int(num_features, "num_features")
        self.eps = _finite_number(eps, "eps", positive=True)
        self.elementwise_affine, self.has_bias = bool(elementwise_affine), bool(bias)
        self._allocate(np.float32)

    def _allocate(self, dtype):
        n = self.num_features
        self.weight = np.ones(n, dtype) if self.elementwise_affine else None
        self.bias = np.zeros(n, dtype) if self.elementwise_affine and self.has_bias else None

    def _build(self, in_width, dtype, rng):
        if in_width != self.num_features:
            raise ValueError(f"LayerNorm({self.num_features}) receives {in_width} features")
        self._allocate(dtype)

    def parameters(self):
        return [p for p in (self.weight, self.bias) if p is not None]

    def _spec(self, in_width):
        return LayerSpec(_engine.LAYER_KINDS["layernorm"], in_width, in_width, 0.0,
                         self.weight, self.bias, 0.0, {"eps": self.eps}, self.trainable)

    def _config(self):
        return {"kind": self.kind, "num_features": self.num_features, "eps": self.eps,
                "elementwise_affine": self.elementwise_affine, "bias": self.has_bias,
                **self._frozen()}

    def __repr__(self):
        return (f"LayerNorm({self.num_features}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.has_bias})")


ACTIVATIONS = {cls.kind: cls for cls in (Identity, ReLU, LeakyReLU, Sigmoid, Tanh, Softmax,
                                         GELU, SiLU, ELU, Softplus)}


def get_activation(name):
    """An activation layer, with its defaults, from its name: "identity", "relu",
    "leaky_relu", "sigmoid", "tanh", "softmax", "gelu", "silu", "elu" or "softplus"."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def layer_from_config(config, initialise=True):
    """The layer that Layer._config() described; with initialise=False a Dense layer's
    parameters are left at zero for the caller to fill (no random draw)."""
    config = dict(config)
    kind = config.pop("kind")
    trainable = config.pop("trainable", True)
    if not isinstance(trainable, bool):
        raise ValueError(f"trainable must be true or false, got {trainable!r}")
    if kind == "dense":
        if not initialise:
            layer = Dense.__new__(Dense)
            layer._settle(**config)
        else:
            layer = Dense(**config)
    elif kind == "dropout":
        layer = Dropout(**config)
    elif kind == "batchnorm":
        layer = BatchNorm1d(**config)
    elif kind == "layernorm":
        layer = LayerNorm(**config)
    elif kind == "residual":
        from .residual import Residual
        layer = Residual(*[layer_from_config(c, initialise) for c in config["layers"]])
    elif kind == "embedding":
        from .embedding import Embedding
        layer = Embedding(**config)
    elif kind in ACTIVATIONS:
        layer = ACTIVATIONS[kind](**config)
    else:
        raise ValueError(f"unknown layer kind {kind!r}")
    if not trainable:
        layer.trainable = False
    return layer
