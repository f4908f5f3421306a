"""Embedding: learned vectors for integer-coded categorical columns, as torch.nn.Embedding
gives one table per column, for a model's first layer.

Embedding(in_features, columns, cardinalities, embedding_dim) reads rows of in_features
values whose `columns` hold category codes 0 .. cardinality - 1 (as numbers); each row's
output is its other columns, in order, then each code column's embedding_dim-vector. The
tables are one weight of sum(cardinalities) rows (column j's rows from the sum of the
cardinalities before it), drawn from N(0, 1) as torch's are. The engine gathers the rows
in the batch loop (csrc/engine/embedding.pxi): no one-hot matrix is built.
"""
import numpy as np

from . import _engine
from ._validation import INT32_MAX, check_int
from .layers import Layer, LayerSpec

__all__ = ["Embedding"]


class Embedding(Layer):
    """Learned vectors for the code columns of the input (see the module docstring).

    Args:
        in_features: the input's width (code and numeric columns together).
        columns: the code columns' indices, distinct, in [0, in_features).
        cardinalities: each code column's number of categories (codes 0 .. n - 1).
        embedding_dim: the vectors' width.

    Shape: (n, in_features) -> (n, in_features - len(columns) * (1 - embedding_dim)).
    """

    kind = "embedding"

    def __init__(self, in_features, columns, cardinalities, embedding_dim):
        self.in_features = check_int(in_features, "in_features")
        self.columns = [check_int(c, "a code column", minimum=0) for c in columns]
        self.cardinalities = [check_int(n, "a cardinality") for n in cardinalities]
        self.embedding_dim = check_int(embedding_dim, "embedding_dim")
        if not self.columns or len(self.columns) != len(self.cardinalities):
            raise ValueError("give one cardinality for each of one or more code columns")
        if len(set(self.columns)) != len(self.columns) or max(self.columns) >= in_features:
            raise ValueError(f"code columns must be distinct and below in_features="
                             f"{in_features}, got {self.columns}")
        if sum(self.cardinalities) * self.embedding_dim > INT32_MAX:
            raise ValueError("the embedding tables exceed BLAS's 32-bit limit of entries")
        self._arrays = {
            "columns": np.array(self.columns, dtype=np.int64),
            "cardinalities": np.array(self.cardinalities, dtype=np.int64),
            "offsets": np.concatenate([[0], np.cumsum(self.cardinalities)[:-1]]).astype(
                np.int64),
            "numeric": np.array([c for c in range(in_features) if c not in self.columns],
                                dtype=np.int64)}
        self.weight = np.zeros((sum(self.cardinalities), self.embedding_dim), np.float32)

    def parameters(self):
        return [self.weight]

    def output_width(self, in_width):
        return in_width + len(self.columns) * (self.embedding_dim - 1)

    def _build(self, in_width, dtype, rng):
        if in_width != self.in_features:
            raise ValueError(f"Embedding expects {self.in_features} input features but "
                             f"receives {in_width}")
        exact = 2 ** (np.finfo(dtype).nmant + 1) + 1  # codes 0 .. this - 1 are exact
        if max(self.cardinalities) > exact:
            raise ValueError(f"Embedding: a cardinality of {max(self.cardinalities)} has codes "
                             f"that {np.dtype(dtype).name} cannot hold exactly (it holds "
                             f"0 .. {exact - 1}); use dtype='float64'")
        self.weight = np.zeros(self.weight.shape, dtype)
        if rng is not None:
            self.weight[...] = rng.normal(size=self.weight.shape)

    def _spec(self, in_width):
        return LayerSpec(_engine.LAYER_KINDS["embedding"], in_width,
                         self.output_width(in_width), 0.0, self.weight, None, 0.0,
                         dict(self._arrays, dim=self.embedding_dim), self.trainable)

    def check_codes(self, X):
        """Refuse an X whose code columns hold anything but codes 0 .. cardinality - 1
        (ValueError naming the column, row and value)."""
        if hasattr(X, "indptr"):
            raise TypeError("an Embedding reads its codes from a dense X, not a sparse one")
        for column, n in zip(self.columns, self.cardinalities):
            codes = X[:, column]
            # n - 1, exact in X's dtype (_build), not n: NumPy compares in X's dtype, where
            # float32 reads 2^24 + 1 as 2^24
            bad = np.flatnonzero(~((codes >= 0) & (codes <= n - 1)
                                   & (codes == np.floor(codes))))
            if bad.size:
                raise ValueError(f"X[:, {column}] must hold category codes 0 .. {n - 1}; "
                                 f"row {bad[0]} holds {float(codes[bad[0]])!r}")

    def _config(self):
        return {"kind": self.kind, "in_features": self.in_features, "columns": self.columns,
                "cardinalities": self.cardinalities, "embedding_dim": self.embedding_dim,
                **self._frozen()}

    def __repr__(self):
        return (f"Embedding({self.in_features}, columns={self.columns}, cardinalities="
                f"{self.cardinalities}, embedding_dim={self.embedding_dim})")
