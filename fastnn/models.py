"""Reference architectures for tables (Gorishniy et al., "Revisiting Deep Learning Models
for Tabular Data", 2021; the `rtdl` packages), as Sequential models:

    MLP:    (Dense -> ReLU -> Dropout) x n_blocks -> Dense
    ResNet: Dense -> Residual(BatchNorm1d -> Dense -> ReLU -> Dropout -> Dense -> Dropout)
            x n_blocks -> BatchNorm1d -> ReLU -> Dense
            (normalization="layernorm": LayerNorm in place of each BatchNorm1d, as rtdl's
            ResNet allows; data-parallel training takes that one, BatchNorm1d's batch
            statistics being each process's)

The paper tunes the sizes per dataset; the defaults here are a middle of its search
spaces (the ResNet's: width 256, hidden factor 2, 4 blocks), trained in the paper with
AdamW. Categorical columns reach them one-hot encoded, or as the paper's embeddings: give
`cat_columns` (the input columns holding category codes 0 .. n - 1) and
`cat_cardinalities` (each one's n), and the model starts with an Embedding of
`d_embedding`-vectors, concatenated after the numeric columns, as rtdl's models do
(fastnn.tabular.TablePreprocessor(max_one_hot=...) makes such code columns from text).
"""
from .embedding import Embedding
from .layers import BatchNorm1d, Dense, Dropout, LayerNorm, ReLU
from .model import Sequential
from .residual import Residual

__all__ = ["tabular_mlp", "tabular_resnet"]

NORMALIZATIONS = {"batchnorm": BatchNorm1d, "layernorm": LayerNorm}


def _dropout(p):
    return [Dropout(p)] if p else []


def _embedding(n_features, cat_columns, cat_cardinalities, d_embedding):
    """([an Embedding of the code columns], its output width), or ([], n_features)."""
    if not cat_columns and not cat_cardinalities:
        return [], n_features
    layer = Embedding(n_features, cat_columns, cat_cardinalities, d_embedding)
    return [layer], layer.output_width(n_features)


def tabular_mlp(n_features, n_outputs, n_blocks=3, d_block=256, dropout=0.1, init="he",
                dtype="float32", seed=None, loss=None, cat_columns=(), cat_cardinalities=(),
                d_embedding=8):
    """The MLP baseline: n_blocks of Dense(d_block) -> ReLU -> Dropout(dropout), then a
    Dense output layer (every Dense initialised by `init`); an Embedding first where
    cat_columns are given (see the module docstring)."""
    layers, width = _embedding(n_features, cat_columns, cat_cardinalities, d_embedding)
    for _ in range(n_blocks):
        layers += [Dense(width, d_block, init=init), ReLU()] + _dropout(dropout)
        width = d_block
    return Sequential(layers + [Dense(width, n_outputs, init=init)], dtype=dtype, seed=seed,
                      loss=loss)


def tabular_resnet(n_features, n_outputs, n_blocks=4, d_main=256, d_hidden_factor=2.0,
                   dropout_first=0.1, dropout_second=0.0, init="he", dtype="float32",
                   seed=None, loss=None, cat_columns=(), cat_cardinalities=(),
                   d_embedding=8, normalization="batchnorm"):
    """The ResNet baseline: Dense(n_features, d_main), n_blocks residual blocks
    x + Dropout(Dense(Dropout(ReLU(Dense(BatchNorm1d(x)))))) with hidden width
    d_main * d_hidden_factor, then BatchNorm1d -> ReLU -> Dense(n_outputs) (every Dense
    initialised by `init`); an Embedding first where cat_columns are given (see the
    module docstring). normalization: "batchnorm" (the paper's) or "layernorm" (LayerNorm
    in each BatchNorm1d's place)."""
    d_hidden = int(d_main * d_hidden_factor)
    if d_hidden < 1:
        raise ValueError(f"d_main * d_hidden_factor must be at least 1, got {d_hidden}")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {sorted(NORMALIZATIONS)}, got "
                         f"{normalization!r}")
    norm = NORMALIZATIONS[normalization]
    layers, width = _embedding(n_features, cat_columns, cat_cardinalities, d_embedding)
    layers.append(Dense(width, d_main, init=init))
    for _ in range(n_blocks):
        layers.append(Residual(norm(d_main), Dense(d_main, d_hidden, init=init),
                               ReLU(), *_dropout(dropout_first),
                               Dense(d_hidden, d_main, init=init), *_dropout(dropout_second)))
    layers += [norm(d_main), ReLU(), Dense(d_main, n_outputs, init=init)]
    return Sequential(layers, dtype=dtype, seed=seed, loss=loss)
