"""Checks at the public boundary, done once per call before any work."""
import numpy as np

from . import _kernels


def check_finite_rows(a, name):
    """Raise ValueError naming the first row of the 2-D float array `a` with NaN or inf."""
    row = _kernels.first_nonfinite_row(a)
    if row >= 0:
        raise ValueError(f"{name} contains NaN or inf (first in row {row}: {a[row]})")


def as_features(X, n_features, dtype, allow_empty=False):
    """X as a C-contiguous 2-D array of `dtype` with n_features columns, finite.

    Converts (once) when the dtype or memory layout differ; a read-only or memory-mapped
    array that already fits is used as it is and never written to.
    """
    if not isinstance(X, np.ndarray):
        if isinstance(X, (str, bytes, dict, set)) or not hasattr(X, "__len__") \
                and not hasattr(X, "__array__"):
            raise TypeError(f"X must be a 2-D array of numbers, got {type(X).__name__}")
        X = np.asarray(X)
    if X.dtype.kind not in "biuf":
        raise TypeError(f"X must hold real numbers, got dtype {X.dtype}")
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
    if X.shape[1] != n_features:
        raise ValueError(f"X has {X.shape[1]} features but the model's first layer expects "
                         f"{n_features}")
    if X.shape[0] == 0 and not allow_empty:
        raise ValueError("X has no rows")
    converted = X.dtype != dtype
    with np.errstate(over="ignore"):  # values beyond float32's range are reported below
        X = np.ascontiguousarray(X, dtype=dtype)
    check_finite_rows(X, f"X (as {X.dtype.name})" if converted else "X")
    return X


INT32_MAX = 2**31 - 1  # BLAS dimensions are 32-bit ints


def check_batch_rows(batch_size, X):
    """Refuse, before any work, a batch (min(batch_size, rows of X)) that one BLAS call
    could not take: its row count is a 32-bit int. X is not converted here."""
    rows = X.shape[0] if isinstance(X, np.ndarray) and X.ndim else len(X) \
        if hasattr(X, "__len__") else 0
    if min(batch_size, rows) > INT32_MAX:
        raise ValueError(f"batch_size={batch_size} on {rows} rows makes matrix products of "
                         f"{min(batch_size, rows)} rows, beyond BLAS's 32-bit limit of "
                         f"{INT32_MAX}; use a batch_size of at most {INT32_MAX}")


def check_int(value, name, minimum=1):
    """value as an int >= minimum, else ValueError naming it (bools are not ints here)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return int(value)
