"""Checks at the public boundary, done once per call before any work."""
import numpy as np

from . import _kernels


def check_finite_rows(a, name):
    """Raise ValueError naming the first row of the 2-D float array `a` with NaN or inf."""
    row = _kernels.first_nonfinite_row(a)
    if row >= 0:
        raise ValueError(f"{name} contains NaN or inf (first in row {row}: {a[row]})")


def as_features(X, n_features, dtype, allow_empty=False, check_finite=True):
    """X as a C-contiguous 2-D array of `dtype` with n_features columns, finite; or, for a
    scipy sparse matrix or array, as CSRRows (never densified). check_finite=False leaves
    a dense X's finiteness to the caller (predict checks it in the engine, where each
    thread reads its rows anyway).

    Converts (once) when the dtype or memory layout differ; a read-only or memory-mapped
    array that already fits is used as it is and never written to.
    """
    if is_sparse(X):
        return CSRRows.of(X, n_features, dtype, allow_empty)
    if isinstance(X, CSRRows):  # checked and converted already (a validation split)
        _check_shape(X.shape, n_features, allow_empty)
        return X
    if not isinstance(X, np.ndarray):
        if isinstance(X, (str, bytes, dict, set)) or not hasattr(X, "__len__") \
                and not hasattr(X, "__array__"):
            raise TypeError(f"X must be a 2-D array of numbers, got {type(X).__name__}")
        X = np.asarray(X)
    if X.dtype.kind not in "biuf":
        raise TypeError(f"X must hold real numbers, got dtype {X.dtype}")
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
    _check_shape(X.shape, n_features, allow_empty)
    converted = X.dtype != dtype
    if converted or not X.flags.c_contiguous:
        with np.errstate(over="ignore"):  # values beyond float32's range: reported below
            X = np.ascontiguousarray(X, dtype=dtype)
    if check_finite:
        check_finite_rows(X, f"X (as {X.dtype.name})" if converted else "X")
    return X


def _check_shape(shape, n_features, allow_empty):
    if shape[1] != n_features:
        raise ValueError(f"X has {shape[1]} features but the model's first layer expects "
                         f"{n_features}")
    if shape[0] == 0 and not allow_empty:
        raise ValueError("X has no rows")


def is_sparse(X):
    """Whether X is a scipy.sparse matrix or array (without importing scipy.sparse)."""
    return type(X).__module__.startswith("scipy.sparse")


class CSRRows:
    """A sparse X as the engine reads it: compressed rows, values of the model's dtype,
    int64 column indices and row pointers, all checked to lie within the shape (the
    engine's gather writes where the indices say). The engine copies a batch's rows into
    its dense batch buffer, so memory stays O(nonzeros + batch x features)."""

    __slots__ = ("data", "indices", "indptr", "shape")

    def __init__(self, data, indices, indptr, shape):
        self.data, self.indices, self.indptr, self.shape = data, indices, indptr, shape

    @classmethod
    def of(cls, X, n_features, dtype, allow_empty):
        """Check and convert a scipy sparse matrix or array (CSC and the other formats
        become CSR: a copy of the nonzeros, never a dense copy)."""
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
        _check_shape(X.shape, n_features, allow_empty)
        if X.format != "csr":
            X = X.tocsr()
        if X.dtype.kind not in "biuf":
            raise TypeError(f"X must hold real numbers, got dtype {X.dtype}")
        indptr = np.ascontiguousarray(X.indptr, dtype=np.int64)
        if indptr.shape != (X.shape[0] + 1,) or indptr[0] != 0 or (
                np.diff(indptr) < 0).any() or indptr[-1] > min(len(X.indices), len(X.data)):
            raise ValueError("X is a malformed CSR matrix: its row pointers (indptr) do not "
                             "run from 0 up to its number of stored values")
        nnz = int(indptr[-1])
        indices = np.ascontiguousarray(X.indices[:nnz], dtype=np.int64)
        if nnz and (indices.min() < 0 or indices.max() >= X.shape[1]):
            bad = int(np.flatnonzero((indices < 0) | (indices >= X.shape[1]))[0])
            raise ValueError(f"X is a malformed CSR matrix: row "
                             f"{int(np.searchsorted(indptr, bad, side='right')) - 1} has "
                             f"column index {indices[bad]}, outside [0, {X.shape[1]})")
        with np.errstate(over="ignore"):
            data = np.ascontiguousarray(X.data[:nnz], dtype=dtype)
        finite = np.isfinite(data)
        if not finite.all():
            bad = int(np.flatnonzero(~finite)[0])
            row = int(np.searchsorted(indptr, bad, side="right")) - 1
            raise ValueError(f"X contains NaN or inf (first in row {row}, column "
                             f"{indices[bad]}: {data[bad]})")
        return cls(data, indices, indptr, (X.shape[0], X.shape[1]))

    @property
    def dtype(self):
        return self.data.dtype

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, rows):
        """Rows start:stop (a slice with step 1), sharing the values."""
        start, stop, step = rows.indices(self.shape[0])
        if step != 1 or stop < start:
            raise IndexError("CSRRows takes slices with step 1")
        lo, hi = self.indptr[start], self.indptr[stop]
        return CSRRows(self.data[lo:hi], self.indices[lo:hi], self.indptr[start:stop + 1] - lo,
                       (stop - start, self.shape[1]))


def as_sample_weight(sample_weight, n_samples, dtype):
    """One finite, non-negative weight per row, as a C-contiguous array of `dtype`, not
    all zero; ValueError naming the first bad entry."""
    w = np.asarray(sample_weight)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"sample_weight must hold real numbers, got dtype {w.dtype}")
    if w.ndim != 1 or w.shape[0] != n_samples:
        raise ValueError(f"sample_weight must have one entry per row of X ({n_samples}), "
                         f"got shape {w.shape}")
    w = np.ascontiguousarray(w, dtype=dtype)
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"sample_weight must be finite and non-negative; entry {i} is {w[i]}")
    if n_samples and not w.any():
        raise ValueError("sample_weight is zero for every row")
    return w


INT32_MAX = 2**31 - 1  # BLAS dimensions are 32-bit ints


def check_batch_rows(batch_size, X):
    """Refuse, before any work, a batch (min(batch_size, rows of X)) that one BLAS call
    could not take: its row count is a 32-bit int. X is not converted here."""
    shape = getattr(X, "shape", None)  # numpy and scipy.sparse
    if shape is not None:
        rows = shape[0] if len(shape) else 0
    else:
        rows = len(X) if hasattr(X, "__len__") else 0
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
