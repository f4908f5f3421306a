"""Class weights: each class's rows count `weight` times in the loss, as scikit-learn's
class_weight defines them ("balanced": n_samples / (n_classes * rows of the class), or a
dict from class label to weight, absent classes 1). Training takes them as per-row
sample weights, multiplied into any the caller gives, so a batch's loss is the weighted
mean sum_i w_i l_i / sum_i w_i (torch's CrossEntropyLoss(weight=...) for a batch of
labels)."""
import numbers

import numpy as np

__all__ = ["class_weights", "row_weights"]


def class_weights(class_weight, labels, classes, total=None):
    """One weight per entry of `classes` (the labels a model knows) from class_weight
    ("balanced" or {label: weight}) and the training labels; raises ValueError naming a
    label or weight that does not fit. total: a function from the labels' counts per
    class to the counts "balanced" takes (data-parallel: summed over the processes)."""
    classes = list(classes)
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ValueError(f"class_weight must be 'balanced' or a dict, got {class_weight!r}")
        index = {c: i for i, c in enumerate(classes)}
        counts = np.bincount([index[c] for c in labels.tolist()], minlength=len(classes))
        if total is not None:
            counts = np.asarray(total(counts))
        present = counts > 0
        weights = np.ones(len(classes))
        weights[present] = counts.sum() / (present.sum() * counts[present])
        return weights
    if not isinstance(class_weight, dict):
        raise TypeError(f"class_weight must be 'balanced' or a dict, "
                        f"got {type(class_weight).__name__}")
    weights = np.ones(len(classes))
    for label, weight in class_weight.items():
        if label not in classes:
            raise ValueError(f"class_weight names class {label!r}, which is not among the "
                             f"labels {classes[:20]}")
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real) \
                or not np.isfinite(weight) or weight < 0:
            raise ValueError(f"class_weight[{label!r}] must be a finite number >= 0, "
                             f"got {weight!r}")
        weights[classes.index(label)] = weight
    return weights


def row_weights(class_weight, labels, n_classes, sample_weight, dtype, total=None):
    """Per-row weights for integer labels in [0, n_classes): the class's weight, times
    sample_weight's where given (total: as class_weights takes it)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iub" and not (
            labels.dtype.kind == "f" and np.all(labels == np.round(labels))):
        raise ValueError("class_weight needs class labels: y of shape (n,) holding integers")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"class labels must be in [0, {n_classes}) for class_weight")
    per_class = class_weights(class_weight, labels, range(n_classes), total)
    weights = per_class[labels]
    if sample_weight is not None:
        weights = weights * sample_weight
    return np.ascontiguousarray(weights, dtype=dtype)
