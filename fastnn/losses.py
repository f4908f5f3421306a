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
           "PoissonNLLLoss", "get_loss"]


class Loss:
    """Base class. `link` is the output layer the loss fuses (trained on the logits before
    it); `classification` says whether evaluate reports accuracy."""

    name = None
    link = None
    classification = False

    def prepare(self, y, n_samples, n_outputs, dtype):
        """Return (kernel code, float targets or None, int64 labels or None)."""
        targets = _float_targets(y, n_samples, n_outputs, dtype, self.name)
        return _engine.LOSS_KINDS[self.name], targets, None

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
    """

    name = "cross_entropy"
    link = Softmax
    classification = True

    def prepare(self, y, n_samples, n_outputs, dtype):
        y = np.asarray(y)
        if y.ndim == 1:
            return _engine.LOSS_KINDS["cross_entropy_labels"], None, \
                _class_labels(y, n_samples, n_outputs)
        targets = _float_targets(y, n_samples, n_outputs, dtype, self.name, squeeze=False)
        _check_probabilities(targets, self.name)
        return _engine.LOSS_KINDS["cross_entropy_probs"], targets, None

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


_BY_NAME = {cls.name: cls for cls in (CrossEntropyLoss, BCEWithLogitsLoss, MSELoss, L1Loss,
                                      PoissonNLLLoss)}
LOSS_NAMES = tuple(_BY_NAME)


def get_loss(loss):
    """A Loss instance from a name ("cross_entropy", "binary_cross_entropy", "mse", "l1",
    "poisson_nll")."""
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
