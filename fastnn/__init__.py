"""fastnn: multilayer perceptrons trained on multicore CPUs by compiled kernels over BLAS.

    import fastnn as fnn
    model = fnn.Sequential([fnn.Dense(784, 256), fnn.ReLU(), fnn.Dense(256, 10)], seed=0)
    history = model.fit(X, y, loss="cross_entropy",
                        optimizer=fnn.optim.SGD(lr=0.1, momentum=0.9), epochs=5)
"""
__version__ = "0.1.0"

try:
    from . import _engine  # noqa: F401  the compiled extension everything else needs
except ImportError as exc:  # e.g. python run inside a checkout that was never built
    raise ImportError(
        f"fastnn's compiled extensions are not importable from {__path__[0]} ({exc}). "
        f"Install fastnn (pip install .) and run from another folder, or build them in "
        f"this checkout for development: pip install -e .") from exc

from . import callbacks, losses, optim
from ._threads import get_num_threads, set_num_threads, threads
from .callbacks import Callback, EarlyStopping, ModelCheckpoint
from .embedding import Embedding
from .layers import (
    ELU,
    GELU,
    BatchNorm1d,
    Dense,
    Dropout,
    Identity,
    LayerNorm,
    LeakyReLU,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Tanh,
)
from .losses import BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, L1Loss, MSELoss, PoissonNLLLoss
from .model import History, Sequential
from .residual import Residual
from .serialization import load

__all__ = [
    "__version__", "Sequential", "History", "Dense", "Dropout", "BatchNorm1d", "LayerNorm",
    "Residual", "Embedding", "Identity",
    "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax", "GELU", "SiLU", "ELU", "Softplus",
    "CrossEntropyLoss", "BCEWithLogitsLoss", "MSELoss", "L1Loss", "PoissonNLLLoss",
    "HuberLoss", "losses", "optim",
    "callbacks", "Callback", "EarlyStopping", "ModelCheckpoint", "load", "get_num_threads",
    "set_num_threads",
    "threads",
]
