"""Losses, defined as torch.nn defines them with reduction "mean".

Each loss is computed by a compiled kernel fused with its gradient. A loss object turns
the user's targets into what the kernel reads (integer labels or a float block of the
model's dtype), rejecting targets whose shape or values do not fit.
"""
import numpy as np

from . import _engine
from ._validation import check_finite_rows
from .layers import Sigmoid, Softmax

__all__ = ["Loss", "CrossEntropyLoss", "BCEWithLogitsLoss", "MSELoss", "L1Loss",
           "PoissonNLLLoss", "HuberLoss", "get_loss"]


class Loss:
    """Base class. `link` is the output layer the loss fuses (trained on the logits before
    it); `classification` says whether evaluate reports accuracy."""

    name = None
    link = None
    classification = False
    setting = 0.0    # the kernel's one number (Huber's delta, label smoothing)

    def prepare(self, y, n_samples, n_outputs, dtype):
        """Return (kernel code, float targets or None, int64 labels or None); the code is
        (code, setting) for a loss with a setting (the engine takes either)."""
        targets = _float_targets(y, n_samples, n_outputs, dtype, self.name)
        return self._code(self.name), targets, None

    def _code(self, kernel):
        code = _engine.LOSS_KINDS[kernel]
        return (code, self.setting) if self.setting else code

    def _config(self):
        """The name, or {"name": ..., settings} for a loss with settings."""
        return self.name

    def mean_divisor(self, n_samples, n_outputs):
        """What the summed loss is divided by for the mean: every element."""
        return n_samples * n_outputs

    def __repr__(self):
        return f"{type(self).__name__}()"


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy on logits x (N, C), as torch.nn.CrossEntropyLoss.

    With class labels y (N,) of ints in [0, C):  loss = mean_i (logsumexp(x_i) - x_i[y_i]).
    With probability targets t (N, C):  loss = mean_i (-sum_c t_ic log_softmax(x_i)_c).
    Gradient: (softmax(x_i) * sum_c t_ic - t_i) / N, i.e. (softmax - onehot) / N for labels.
    label_smoothing eps in [0, 1] replaces each target row t (a label's one-hot row) by
    (1 - eps) t + eps / C, as torch's label_smoothing.
    """

    name = "cross_entropy"
    link = Softmax
    classification = True

    def __init__(self, label_smoothing=0.0):
        if isinstance(label_smoothing, bool) or not isinstance(
                label_smoothing, (int, float, np.floating)) or not 0 <= label_smoothing <= 1:
            raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
        self.label_smoothing = self.setting = float(label_smoothing)

    def prepare(self, y, n_samples, n_outputs, dtype):
        y = np.asarray(y)
        if y.ndim == 1:
            return self._code("cross_entropy_labels"), None, \
                _class_labels(y, n_samples, n_outputs)
        targets = _float_targets(y, n_samples, n_outputs, dtype, self.name, squeeze=False)
        _check_probabilities(targets, self.name)
        return self._code("cross_entropy_probs"), targets, None

    def _config(self):
        return {"name": self.name, "label_smoothing": self.label_smoothing} \
            if self.label_smoothing else self.name

    def __repr__(self):
        return f"CrossEntropyLoss(label_smoothing={self.label_smoothing})" \
            if self.label_smoothing else "CrossEntropyLoss()"

    def mean_divisor(self, n_samples, n_outputs):
        return n_samples


class BCEWithLogitsLoss(Loss):
    """Binary cross-entropy on logits x with targets t in [0, 1], as
    torch.nn.BCEWithLogitsLoss: loss = mean(max(x, 0) - x t + log(1 + exp(-|x|))),
    gradient (sigmoid(x) - t) / (N C). Targets (N,) are accepted for one output."""

    name = "binary_cross_entropy"
    link = Sigmoid
    classification = True

    def prepare(self, y, n_samples, n_outputs, dtype):
        code, targets, labels = super().prepare(y, n_samples, n_outputs, dtype)
        _check_probabilities(targets, self.name)
        return code, targets, labels


class MSELoss(Loss):
    """Mean squared error over all elements: mean((x - t)^2); gradient 2 (x - t) / (N C)."""
    name = "mse"


class L1Loss(Loss):
    """Mean absolute error over all elements: mean(|x - t|); gradient sign(x - t) / (N C)."""
    name = "l1"


class PoissonNLLLoss(Loss):
    """Poisson negative log-likelihood of counts t >= 0 given the log of the rate x, as
    torch.nn.PoissonNLLLoss(log_input=True, full=False): mean(exp(x) - x t); gradient
    (exp(x) - t) / (N C). The model's output is the log rate: predict's exp is the rate."""

    name = "poisson_nll"

    def prepare(self, y, n_samples, n_outputs, dtype):
        code, targets, labels = super().prepare(y, n_samples, n_outputs, dtype)
        bad = np.flatnonzero((targets < 0).any(axis=1))
        if bad.size:
            raise ValueError(f"{self.name} targets must be non-negative; row {bad[0]} is "
                             f"{targets[bad[0]]}")
        return code, targets, labels


class HuberLoss(Loss):
    """Huber loss over all elements, as torch.nn.HuberLoss: with d = x - t, 0.5 d^2 where
    |d| < delta, delta (|d| - delta / 2) elsewhere, averaged; gradient clamp(d, -delta,
    delta) / (N C). Quadratic near the target, linear (robust to outliers) far from it."""

    name = "huber"

    def __init__(self, delta=1.0):
        if isinstance(delta, bool) or not isinstance(delta, (int, float, np.floating)) \
                or not np.isfinite(delta) or delta <= 0:
            raise ValueError(f"delta must be a finite number > 0, got {delta!r}")
        self.delta = self.setting = float(delta)

    def _config(self):
        return {"name": self.name, "delta": self.delta}

    def __repr__(self):
        return f"HuberLoss(delta={self.delta})"


_BY_NAME = {cls.name: cls for cls in (CrossEntropyLoss, BCEWithLogitsLoss, MSELoss, L1Loss,
                                      PoissonNLLLoss, HuberLoss)}
LOSS_NAMES = tuple(_BY_NAME)


def split_code(code):
    """(kernel code, setting) from what Loss.prepare returned."""
    return code if isinstance(code, tuple) else (code, 0.0)


def loss_from_config(config):
    """The loss Loss._config() described: a name, or {"name": ..., settings}; raises
    ValueError for anything else."""
    if isinstance(config, str) and config in _BY_NAME:
        return _BY_NAME[config]()
    if isinstance(config, dict) and config.get("name") in _BY_NAME and all(
            isinstance(v, (int, float)) and not isinstance(v, bool)
            for k, v in config.items() if k != "name"):
        settings = {k: v for k, v in config.items() if k != "name"}
        try:
            return _BY_NAME[config["name"]](**settings)
        except TypeError:
            pass
    raise ValueError(f"loss {str(config)[:100]!r}")


def get_loss(loss):
    """A Loss instance from a name ("cross_entropy", "binary_cross_entropy", "mse", "l1",
    "poisson_nll", "huber"), with its defaults."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, type) and issubclass(loss, Loss) and loss.name in _BY_NAME:
        return loss()
    if isinstance(loss, str):
        if loss not in _BY_NAME:
            raise ValueError(f"unknown loss {loss!r}; expected one of {sorted(_BY_NAME)}")
        return _BY_NAME[loss]()
    raise TypeError(f"loss must be a name or a fastnn.losses.Loss, got {type(loss).__name__}")


def _check_rows(y, n_samples):
    if y.ndim == 0 or y.shape[0] != n_samples:
        raise ValueError(f"X has {n_samples} rows but y has shape {y.shape}")


def _class_labels(y, n_samples, n_classes):
    """int64 labels from y, which must hold integers in [0, n_classes)."""
    _check_rows(y, n_samples)
    if y.dtype.kind == "b":
        y = y.astype(np.int64)
    elif y.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(y) | (y != np.floor(y)))
        if bad.size:
            raise ValueError(f"class labels must be integers; y[{bad[0]}] = {y[bad[0]]!r}")
    elif y.dtype.kind not in "iu":
        raise TypeError(f"class labels must be integers in [0, {n_classes}), "
                        f"got dtype {y.dtype}")
    bad = np.flatnonzero((y < 0) | (y >= n_classes))
    if bad.size:
        raise ValueError(f"class label y[{bad[0]}] = {y[bad[0]]} is outside [0, {n_classes}) "
                         f"for a model with {n_classes} outputs")
    return np.ascontiguousarray(y, dtype=np.int64)


def _float_targets(y, n_samples, n_outputs, dtype, loss_name, squeeze=True):
    """A C-contiguous (n_samples, n_outputs) block of finite targets in `dtype`."""
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise TypeError(f"{loss_name} targets must be numeric, got dtype {y.dtype}")
    _check_rows(y, n_samples)
    if squeeze and y.ndim == 1 and n_outputs == 1:
        y = y.reshape(-1, 1)
    if y.shape != (n_samples, n_outputs):
        raise ValueError(f"{loss_name} targets must have shape ({n_samples}, {n_outputs})"
                         + (f" or ({n_samples},)" if squeeze and n_outputs == 1 else "")
                         + f" for a model with {n_outputs} outputs, got {y.shape}")
    with np.errstate(over="ignore"):  # values beyond float32's range are reported below
        y = np.ascontiguousarray(y, dtype=dtype)
    check_finite_rows(y, "y")
    return y


def _check_probabilities(targets, loss_name):
    bad = np.flatnonzero(((targets < 0) | (targets > 1)).any(axis=1))
    if bad.size:
        raise ValueError(f"{loss_name} targets must lie in [0, 1]; row {bad[0]} does not: "
                         f"{targets[bad[0]]}")
