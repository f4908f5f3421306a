"""Sequential: a stack of layers trained by mini-batch gradient descent.

The model validates and converts its input once per call, then hands every batch to
the compiled engine (fastnn._engine), which runs with the GIL released. A final
Softmax (with cross_entropy) or Sigmoid (with binary_cross_entropy) is the loss's own
link: training and evaluation see the logits before it; predict applies it.
"""
import threading
import time

import numpy as np

from . import _engine
from ._validation import as_features, check_int
from .layers import Dense, Layer, get_activation
from .losses import get_loss
from .optim import SGD, Optimizer

__all__ = ["Sequential", "History"]

_DTYPES = {"float32": np.float32, "float64": np.float64}
_INT32_MAX = 2**31 - 1  # BLAS dimensions are 32-bit ints


class History:
    """What fit measured, one entry per epoch: `history["loss"]` (mean training loss over
    the epoch's batches, each before its update), "lr", "seconds", "samples_per_second"."""

    def __init__(self):
        self.epoch = []
        self.history = {"loss": [], "lr": [], "seconds": [], "samples_per_second": []}

    def __getitem__(self, key):
        return self.history[key]

    def _append(self, epoch, **values):
        self.epoch.append(epoch)
        for key, value in values.items():
            self.history[key].append(value)

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, loss={self.history['loss']})"


class Sequential:
    """Layers applied in order, compiled into one engine.

    Args:
        layers: a list of fastnn layers (an activation may be given by name, "relu");
            at least one Dense. Widths must chain.
        dtype: "float32" (default) or "float64": the parameters' and computation's type.
        seed: seeds the weight initialisation and the shuffling in fit. With the same
            seed, data and one thread, training is bitwise reproducible.

    Example:
        >>> model = Sequential([Dense(784, 256), ReLU(), Dense(256, 10)], seed=0)
        >>> history = model.fit(X, y, loss="cross_entropy",
        ...                     optimizer=fastnn.optim.SGD(lr=0.1, momentum=0.9))
    """

    def __init__(self, layers, dtype="float32", seed=None):
        layers = [get_activation(layer) if isinstance(layer, str) else layer for layer in layers]
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layer {i} is a {type(layer).__name__}, not a fastnn layer "
                                f"or an activation name")
        dense = [layer for layer in layers if isinstance(layer, Dense)]
        if not dense:
            raise ValueError("a Sequential model needs at least one Dense layer")
        key = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
        if key not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; expected 'float32' or 'float64'")
        self.dtype = np.dtype(_DTYPES[key])
        self.layers = layers
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        width = self.n_features = dense[0].in_features
        specs = []
        for i, layer in enumerate(layers):
            try:
                layer._build(width, self.dtype, self._rng)
            except ValueError as exc:
                raise ValueError(f"layer {i}: {exc}") from None
            specs.append(layer._spec(width))
            width = layer.output_width(width)
            if width > _INT32_MAX:
                raise ValueError(f"layer {i} is wider than BLAS supports ({width})")
        self.n_outputs = width
        self._engine = _engine.Engine(specs, self.dtype)
        self._lock = threading.Lock()
        self.optimizer = None

    # -- parameters -----------------------------------------------------------------

    def parameters(self):
        """[W1, b1, W2, b2, ...]: the live arrays; editing them in place edits the model."""
        return [p for layer in self.layers for p in layer.parameters()]

    # -- training -------------------------------------------------------------------

    def fit(self, X, y, loss="cross_entropy", optimizer=None, epochs=1, batch_size=32,
            shuffle=True, verbose=0):
        """Train by mini-batch gradient descent and return a History.

        Each epoch visits the rows in batches of batch_size (the last one may be smaller):
        in order X[0:B], X[B:2B], ... when shuffle is False, else in a fresh permutation
        drawn from the model's seed. One optimizer update per batch, on the gradient of
        the batch's mean loss. batch_size=len(X) is batch gradient descent, batch_size=1
        per-example SGD.

        Args:
            X: (n_samples, n_features) numbers; converted once to the model's dtype.
            y: targets for `loss` (class labels (n,) or targets (n, n_outputs)).
            loss: a name ("cross_entropy", "binary_cross_entropy", "mse", "l1") or Loss.
            optimizer: a fastnn.optim optimizer; None continues with the model's current
                optimizer and its state (a new SGD(lr=0.01) if it has none).
            epochs, batch_size, shuffle: as above. verbose=1 prints a line per epoch.

        Raises:
            ValueError/TypeError for bad input (before anything changes);
            FloatingPointError when the loss becomes NaN or inf, leaving the parameters
            of the last finite step.
        """
        loss = get_loss(loss)
        epochs = check_int(epochs, "epochs", minimum=0)
        batch_size = check_int(batch_size, "batch_size")
        if optimizer is not None and not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a fastnn.optim optimizer, "
                            f"got {type(optimizer).__name__}")
        X = as_features(X, self.n_features, self.dtype)
        kind, targets, labels = loss.prepare(y, X.shape[0], self.n_outputs, self.dtype)
        batch_size = min(batch_size, X.shape[0])
        n_run = self._trained_layers(loss)
        optimizer = optimizer or self.optimizer or SGD(lr=0.01)
        history = History()
        if not self._lock.acquire(blocking=False):
            raise RuntimeError("this model is being used by another thread")
        try:
            optimizer._bind(self.parameters())
            self.optimizer = optimizer
            for epoch in range(epochs):
                self._engine.set_optimizer(*optimizer._engine_args(), optimizer.steps)
                order = self._rng.permutation(X.shape[0]) if shuffle else None
                start = time.perf_counter()
                try:
                    loss_sum, failed = self._engine.train_epoch(
                        X, targets, labels, order, batch_size, kind, n_run)
                finally:
                    optimizer.steps = self._engine.step
                if failed >= 0:
                    raise FloatingPointError(
                        f"the loss became NaN or inf at epoch {epoch}, batch {failed}; "
                        f"the parameters are those before that batch (try a smaller lr)")
                seconds = time.perf_counter() - start
                mean_loss = loss_sum / loss.mean_divisor(X.shape[0], self.n_outputs)
                history._append(epoch, loss=mean_loss, lr=optimizer.lr, seconds=seconds,
                                samples_per_second=X.shape[0] / seconds)
                if verbose:
                    print(f"epoch {epoch + 1}/{epochs}  loss {mean_loss:.6g}  "
                          f"{seconds:.2f}s  {X.shape[0] / seconds:,.0f} samples/s", flush=True)
        finally:
            self._lock.release()
        return history

    # -- inference ------------------------------------------------------------------

    def predict(self, X, batch_size=1024):
        """The last layer's outputs, (n_samples, n_outputs), computed in batches."""
        batch_size = check_int(batch_size, "batch_size")
        X = as_features(X, self.n_features, self.dtype, allow_empty=True)
        out = np.empty((X.shape[0], self.n_outputs), dtype=self.dtype)
        if X.shape[0] == 0:
            return out
        with self._lock:
            self._engine.run(X, out, None, None, -1, False, len(self.layers),
                             min(batch_size, X.shape[0]))
        return out

    def evaluate(self, X, y, loss="cross_entropy", batch_size=1024):
        """{"loss": mean loss, "accuracy": fraction correct (classification losses)}.

        Accuracy: argmax equals the label for cross_entropy; logit > 0 equals target > 0.5,
        per element, for binary_cross_entropy.
        """
        loss = get_loss(loss)
        loss_sum, correct, n_values = self._loss_pass(X, y, loss, batch_size, False)
        result = {"loss": loss_sum / loss.mean_divisor(*n_values)}
        if loss.classification:  # counted per sample (cross-entropy) or per element
            result["accuracy"] = correct / loss.mean_divisor(*n_values)
        return result

    def gradients(self, X, y, loss="cross_entropy", batch_size=1024):
        """Gradients of the mean loss over all of X, in the order of parameters() (copies)."""
        self._loss_pass(X, y, get_loss(loss), batch_size, True)
        return [g.copy() for g in self._engine.grads]

    def _loss_pass(self, X, y, loss, batch_size, want_grads):
        batch_size = check_int(batch_size, "batch_size")
        X = as_features(X, self.n_features, self.dtype)
        kind, targets, labels = loss.prepare(y, X.shape[0], self.n_outputs, self.dtype)
        n_run = self._trained_layers(loss)
        with self._lock:
            loss_sum, correct = self._engine.run(
                X, None, targets, labels, kind, want_grads, n_run,
                min(batch_size, X.shape[0]))
        return loss_sum, correct, (X.shape[0], self.n_outputs)

    def _trained_layers(self, loss):
        """How many layers training runs: all but a final layer the loss fuses."""
        n = len(self.layers)
        if loss.link is not None and type(self.layers[-1]) is loss.link:
            n -= 1
        if not any(isinstance(layer, Dense) for layer in self.layers[:n]):
            raise ValueError("no Dense layer before the loss: nothing to train")
        return n

    def __repr__(self):
        inner = ",\n    ".join(repr(layer) for layer in self.layers)
        return f"Sequential([\n    {inner}\n], dtype={self.dtype.name!r}, seed={self.seed!r})"
