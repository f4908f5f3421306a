"""Sequential: a stack of layers trained by mini-batch gradient descent.

The model validates and converts its input once per call, then hands every batch to
the compiled engine (fastnn._engine), which runs with the GIL released. A final
Softmax (with cross_entropy) or Sigmoid (with binary_cross_entropy) is the loss's own
link: training and evaluation see the logits before it; predict applies it.
"""
import contextlib
import threading
import time

import numpy as np

from . import _engine
from ._model_file import write_model_file
from ._threads import get_num_threads
from ._validation import (
    INT32_MAX,
    as_features,
    as_sample_weight,
    check_batch_rows,
    check_int,
    is_sparse,
)
from .callbacks import check_callbacks
from .class_weight import row_weights
from .distributed import Group
from .layers import Dense, Layer, Sigmoid, Softmax, get_activation, layer_from_config
from .losses import get_loss, loss_from_config, split_code
from .optim import SGD, LRSchedule, Optimizer, get_optimizer
from .preprocessing import TablePreprocessor
from .training import chunk_rows, diverged, seed_for_dropout, train_epoch

__all__ = ["Sequential", "History"]

_DTYPES = {"float32": np.float32, "float64": np.float64}
class History:
    """What fit measured, one entry per epoch: `history["loss"]` (mean training loss over
    the epoch's batches, each before its update), "lr" (the epoch's learning rate),
    "seconds", "samples_per_second", and with validation data "val_loss" and, for
    classification losses, "val_accuracy"."""

    def __init__(self):
        self.epoch = []
        self.history = {"loss": [], "lr": [], "seconds": [], "samples_per_second": []}

    def __getitem__(self, key):
        return self.history[key]

    def _append(self, epoch, **values):
        self.epoch.append(epoch)
        for key, value in values.items():
            self.history.setdefault(key, []).append(value)

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, loss={self.history['loss']})"


def _clip_settings(clip_grad_norm, clip_grad_value):
    """(max norm, max value) for the engine (0: no clipping), checked."""
    clip = []
    for value, name in ((clip_grad_norm, "clip_grad_norm"), (clip_grad_value, "clip_grad_value")):
        if value is None:
            clip.append(0.0)
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) \
                or not np.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        clip.append(float(value))
    return tuple(clip)


class Sequential:
    """Layers applied in order, compiled into one engine.

    Args:
        layers: a list of fastnn layers (an activation may be given by name, "relu");
            at least one Dense. Widths must chain.
        dtype: "float32" (default) or "float64": the parameters' and computation's type.
        seed: seeds the weight initialisation, the shuffling and dropout's masks in fit.
            With the same seed, data and thread count, training is bitwise reproducible.
        loss: the model's loss (a name or fastnn.losses.Loss), used by fit, evaluate and
            gradients when they are given none; None until the first fit sets it.

    Example:
        >>> model = Sequential([Dense(784, 256), ReLU(), Dense(256, 10)], seed=0)
        >>> history = model.fit(X, y, loss="cross_entropy",
        ...                     optimizer=fastnn.optim.SGD(lr=0.1, momentum=0.9))
    """

    def __init__(self, layers, dtype="float32", seed=None, loss=None):
        self._assemble(layers, dtype, seed, loss, initialise=True)

    @classmethod
    def _uninitialised(cls, layers, dtype, seed, loss=None):
        """A model whose parameters are zero, for a caller that fills them (loading a file):
        no random initialisation is drawn."""
        model = cls.__new__(cls)
        model._assemble(layers, dtype, seed, loss, initialise=False)
        return model

    def _assemble(self, layers, dtype, seed, loss, initialise):
        loss = None if loss is None else get_loss(loss)
        layers = [get_activation(layer) if isinstance(layer, str) else layer for layer in layers]
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layer {i} is a {type(layer).__name__}, not a fastnn layer "
                                f"or an activation name")
        plan = [p for layer in layers for p in layer._plan_layers()]
        dense = [layer for layer in plan if isinstance(layer, Dense)]
        if not dense:
            raise ValueError("a Sequential model needs at least one Dense layer")
        key = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
        if key not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; expected 'float32' or 'float64'")
        self.dtype = np.dtype(_DTYPES[key])
        self.layers = layers
        self._plan = plan  # the engine's layers: residual blocks' inner layers and markers
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        # the input's width: the first layer that states one (Dense, or an Embedding)
        width = self.n_features = next(layer.in_features for layer in plan
                                       if hasattr(layer, "in_features"))
        # an Embedding (the first layer only) reads codes that every X is checked for
        self._codes = plan[0] if plan[0].kind == "embedding" else None
        specs = []
        for i, layer in enumerate(layers):
            try:
                layer._build(width, self.dtype, self._rng if initialise else None)
            except ValueError as exc:
                raise ValueError(f"layer {i}: {exc}") from None
            for plan_layer in layer._plan_layers():
                specs.append(plan_layer._spec(width))
                width = plan_layer.output_width(width)
            if width > INT32_MAX:
                raise ValueError(f"layer {i} is wider than BLAS supports ({width})")
        self.n_outputs = width
        for i, p in enumerate(self.parameters()):
            if p.size > INT32_MAX:  # BLAS and the update kernels count in 32-bit ints
                raise ValueError(f"parameter {i} has {p.size} entries, more than BLAS's "
                                 f"32-bit limit of {INT32_MAX}")
        self._engine = _engine.Engine(specs, self.dtype)
        self._engine_trainable = self._trainable_flags()
        self._widest = max([self.n_features] + [spec[2] for spec in specs])
        self._lock = threading.Lock()          # fit, evaluate, gradients, team predicts
        self._activity = threading.Condition()  # calling-thread predicts against fit
        self._trainer = None  # the thread running fit (the engine knows it too)
        self._infer_buffers = threading.local()
        self._group = None   # set by a data-parallel fit: save writes on its rank 0 only
        self.optimizer = None
        self.loss = loss
        # what the command line learns about the data, saved with the model: the output
        # units' class names, the feature columns' names and the target column's name
        self.classes = self.feature_names = self.target_name = None
        # the command line's TablePreprocessor of a table with missing cells or
        # categorical columns (fastnn.preprocessing): feature_names are then its columns
        self.preprocessing = None
        self.stop_training = False

    @property
    def engine(self):
        """The model's compiled plan (fastnn._engine.Engine), for fastnn's own front ends
        that drive it with conventions of their own (fastnn.sklearn's per-row scaling and
        losses, the benchmarks' thread plans); a model's own methods are the API."""
        return self._engine

    @property
    def last_threads(self):
        """The threads fastnn's last fit, predict, evaluate or gradients call ran on: the
        plan sized to the work (at most fnn.get_num_threads())."""
        return self._engine.last_threads

    # -- parameters -----------------------------------------------------------------

    def _features(self, X, **settings):
        """X as the model reads it (as_features), its code columns checked when the model
        starts with an Embedding."""
        X = as_features(X, self.n_features, self.dtype, **settings)
        if self._codes is not None and X.shape[0]:
            self._codes.check_codes(X)
        return X

    def parameters(self):
        """[W1, b1, W2, b2, ...]: the live arrays; editing them in place edits the model."""
        return [p for layer in self.layers for p in layer.parameters()]

    def buffers(self):
        """Saved state that is not learned by gradient (batch norm's running statistics),
        live arrays like parameters()."""
        return [b for layer in self.layers for b in layer.buffers()]

    def trainable_parameters(self):
        """The parameters fit updates (those of layers not frozen), in parameters()'s
        order; the optimizer's state and gradients() follow this list."""
        return [p for layer in self._plan if layer.trainable for p in layer.parameters()]

    def freeze(self, stop=None):
        """Freeze the layers with parameters before index `stop` (layer.trainable =
        False), the rest trainable; stop None: all but the last Dense layer (fine-tuning
        a loaded model's head: fnn.load(path).freeze(), then fit). Returns the model. The
        next fit starts a new optimizer state for the parameters it trains."""
        if stop is None:
            stop = max(i for i, layer in enumerate(self.layers) if isinstance(layer, Dense))
        stop = check_int(stop, "stop", minimum=-len(self.layers))
        stop = stop + len(self.layers) if stop < 0 else stop
        for i, layer in enumerate(self.layers):
            if layer.parameters():
                layer.trainable = i >= stop
        return self

    def unfreeze(self):
        """Every layer trainable again. Returns the model."""
        return self.freeze(0)

    def _trainable_flags(self):
        return tuple(bool(layer.trainable) for layer in self._plan)

    def _follow_trainable(self):
        """Rebuild the engine's plan when a layer was frozen or unfrozen since it was
        made (its parameters and gradient buffers are the trainable ones)."""
        if self._engine_trainable == self._trainable_flags():
            return
        specs, width = [], self.n_features
        for layer in self._plan:
            specs.append(layer._spec(width))
            width = layer.output_width(width)
        self._engine = _engine.Engine(specs, self.dtype)
        self._engine_trainable = self._trainable_flags()

    def penalty(self):
        """The regularization part of the loss: the sum of the layers' L2 penalties."""
        return sum(layer.penalty() for layer in self.layers)

    # -- training -------------------------------------------------------------------

    def fit(self, X, y, loss=None, optimizer=None, epochs=1, batch_size=32,
            shuffle=True, verbose=0, validation_data=None, validation_split=0.0,
            lr_schedule=None, callbacks=None, initial_epoch=0, sample_weight=None,
            comm=None, class_weight=None, clip_grad_norm=None, clip_grad_value=None):
        """Train by mini-batch gradient descent and return a History.

        Each epoch visits the rows in batches of batch_size (the last one may be smaller):
        in order X[0:B], X[B:2B], ... when shuffle is False, else in a fresh permutation
        drawn from the model's seed. One optimizer update per batch, on the gradient of
        the batch's mean loss. batch_size=len(X) is batch gradient descent, batch_size=1
        per-example SGD.

        Args:
            X: (n_samples, n_features) numbers, converted once to the model's dtype; or a
                scipy.sparse matrix or array, whose rows the engine copies into each
                batch (no dense copy of X is made).
            y: targets for `loss` (class labels (n,) or targets (n, n_outputs)).
            loss: a name ("cross_entropy", "binary_cross_entropy", "mse", "l1") or Loss;
                None: the model's loss (the last fit's, or Sequential's `loss`), else
                "cross_entropy". The model remembers it for evaluate and gradients.
            optimizer: a fastnn.optim optimizer, or its name ("sgd", "adam", "adamw",
                "rmsprop", "adagrad": a new one with torch's defaults); None continues
                with the model's current optimizer and its state (a new SGD(lr=0.01) if
                it has none).
            epochs: train until this epoch count (Keras' meaning: with initial_epoch=k,
                epochs k, ..., epochs - 1 run).
            batch_size, shuffle: as above.
            verbose: 0 silent, 1 a line per epoch, 2 also a live progress bar.
            validation_data: (X_val, y_val) or (X_val, y_val, sample_weight_val),
                evaluated after every epoch.
            validation_split: or the fraction of rows, taken from the end of X before any
                shuffling (as Keras), held out for validation (with their weights).
            lr_schedule: a fastnn.optim schedule, stepped after every epoch, or after
                every update for a per-step one (LinearLR, OneCycleLR,
                CosineAnnealingLR(per_step=True)): fit gives the engine each epoch's
                learning rates (and momenta) as a table, no Python between steps.
            callbacks: objects with on_epoch_end(epoch, logs) (see fastnn.callbacks);
                returning True, or setting model.stop_training, stops training. Optional
                hooks: on_train_begin(model), on_epoch_begin(epoch), on_batch_end(batch,
                logs) (one engine call per batch while one is given: Python between
                batches, the same results), on_train_end(model).
            initial_epoch: the epoch to start from (when resuming).
            sample_weight: one non-negative weight per row: each batch's loss becomes
                torch's weighted mean, sum_i w_i l_i / sum_i w_i (for the elementwise
                losses l_i is the row's mean over outputs), i.e.
                (loss_fn(reduction="none") * w).sum() / w.sum() per batch; a batch whose
                weights are all zero contributes a zero gradient. The epoch's "loss" is
                the weighted mean over the epoch.
            class_weight: "balanced" or {label: weight} for class labels y (n,): each
                training row's weight is its class's (fastnn.class_weight), times its
                sample_weight; "balanced" counts the training rows (after
                validation_split; data-parallel, every process's).
            clip_grad_norm: clip each step's gradient (every parameter's, of the batch's
                mean loss) to this 2-norm, as torch's clip_grad_norm_ between backward
                and step: scaled by max_norm / (norm + 1e-6) when that is below 1.
            clip_grad_value: clamp each gradient entry to [-value, value] first (torch's
                clip_grad_value_). A Dense layer's l2 term and weight decay enter the
                update after clipping, as an optimizer's weight_decay does in torch.
            comm: an mpi4py communicator (or fastnn.distributed.Group): train
                data-parallel over its processes, X and y (and sample_weight,
                validation_data) being this process's shard; batch_size is the global
                batch. See fastnn.distributed for the semantics.

        Raises:
            ValueError/TypeError for bad input (before anything changes);
            FloatingPointError when the loss becomes NaN or inf, leaving the parameters
            of the last finite step.
        """
        arguments = (X, y, loss, optimizer, epochs, batch_size, shuffle, verbose,
                     validation_data, validation_split, lr_schedule, callbacks,
                     initial_epoch, sample_weight, class_weight, clip_grad_norm,
                     clip_grad_value)
        if comm is None:
            return self._fit(None, *arguments)
        group = Group.of(comm)
        with group.interrupts_deferred():  # Ctrl-C stops every process at one step
            return self._fit(group, *arguments)

    def _fit(self, group, X, y, loss, optimizer, epochs, batch_size, shuffle, verbose,
             validation_data, validation_split, lr_schedule, callbacks, initial_epoch,
             sample_weight, class_weight, clip_grad_norm, clip_grad_value):
        """fit, on its own process or data-parallel over `group`."""
        # data-parallel: every process validates its shard, and all raise if one fails
        with group.collective() if group is not None else contextlib.nullcontext():
            setup = self._fit_setup(X, y, loss, optimizer, epochs, batch_size,
                                    validation_data, validation_split, lr_schedule,
                                    callbacks, initial_epoch, sample_weight, group,
                                    class_weight)
            clip = _clip_settings(clip_grad_norm, clip_grad_value)
        (X, targets, labels, weights, loss, kind, n_run, optimizer, epochs, batch_size,
         validation, callbacks, initial_epoch, balanced_later) = setup
        if group is not None:
            group.agree_on_settings({
                "layers": [layer._config() for layer in self.layers],
                "parameter shapes": [list(p.shape) for p in self.parameters()],
                "dtype": self.dtype.name, "features": X.shape[1], "loss": loss._config(),
                "optimizer": [type(optimizer).__name__, repr(optimizer._config())],
                "batch_size": batch_size, "epochs": [initial_epoch, epochs],
                "shuffle": bool(shuffle), "sample_weight": weights is not None,
                "clipping (norm, value)": list(clip),
                "class_weight": class_weight if not isinstance(class_weight, dict)
                else sorted((str(k), float(v)) for k, v in class_weight.items())})
        if balanced_later is not None:  # the classes' rows counted over every process
            y_here, sample_weight_here = balanced_later
            weights = row_weights("balanced", y_here, max(self.n_outputs, 2),
                                  sample_weight_here, self.dtype, total=group.sum)
        rows = X.shape[0] if weights is None else float(np.sum(weights, dtype=np.float64))
        if group is not None:
            rows = float(group.sum([rows])[0])
            batch_size = min(batch_size, int(group.sum([X.shape[0]])[0]))
        divisor = loss.mean_divisor(rows, self.n_outputs)
        history = History()
        if not self._lock.acquire(blocking=False):
            raise RuntimeError("this model is being used by another thread")
        try:
            self._begin_training()
            self._follow_trainable()
            optimizer._bind(self.trainable_parameters())
            self.optimizer = optimizer
            self.loss = loss
            if lr_schedule is not None:
                lr_schedule._attach(optimizer)
            self.stop_training = False
            if group is not None:
                group.bind(self._engine)
                self._broadcast_state(group)
                self._group = group
            self._on_root(group, self._call_callbacks, callbacks, "on_train_begin")
            for epoch in range(initial_epoch, epochs):
                self._on_root(group, self._call_callbacks, callbacks, "on_epoch_begin",
                              epoch)
                lr = optimizer.lr  # the schedule may have changed it since the last epoch
                start = time.perf_counter()
                if group is None:
                    loss_sum = self._train_epoch(X, targets, labels, weights, batch_size,
                                                 kind, n_run, shuffle, epoch, epochs,
                                                 verbose == 2, callbacks, loss, clip,
                                                 lr_schedule)
                else:
                    loss_sum = self._train_epoch_parallel(group, X, targets, labels, weights,
                                                          batch_size, kind, n_run, shuffle,
                                                          epoch, lr_schedule, clip)
                seconds = time.perf_counter() - start
                logs = {"loss": loss_sum / divisor + self.penalty(), "lr": lr,
                        "seconds": seconds,
                        "samples_per_second": X.shape[0] / seconds}
                if group is not None:
                    metrics = self._validation_metrics_parallel(group, validation, loss,
                                                                n_run)
                elif validation is not None:
                    X_val, prepared, val_weights = validation
                    metrics = self._metrics(X_val, prepared, loss, n_run, 1024, val_weights)
                else:
                    metrics = {}
                logs.update({f"val_{key}": value for key, value in metrics.items()})
                history._append(epoch, **logs)
                stop, lr = self._on_root(group, self._end_epoch, epoch, epochs, logs,
                                         verbose, lr_schedule, callbacks)
                optimizer.lr = lr  # rank 0's, when data-parallel
                if stop:
                    break
            self._on_root(group, self._call_callbacks, callbacks, "on_train_end")
            if group is not None:  # a callback may have restored earlier weights
                group.broadcast_arrays(self.parameters() + self.buffers())
        finally:
            if group is not None:
                self._engine.set_reducer(0)
            self._end_training()
            self._lock.release()
        return history

    def _fit_setup(self, X, y, loss, optimizer, epochs, batch_size, validation_data,
                   validation_split, lr_schedule, callbacks, initial_epoch, sample_weight,
                   group, class_weight=None):
        """fit's arguments validated and converted (nothing changes if one is bad)."""
        loss = get_loss(self._loss_or_default(loss))
        epochs = check_int(epochs, "epochs", minimum=0)
        initial_epoch = check_int(initial_epoch, "initial_epoch", minimum=0)
        batch_size = check_int(batch_size, "batch_size")
        if isinstance(optimizer, str):
            optimizer = get_optimizer(optimizer)
        if optimizer is not None and not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a fastnn.optim optimizer or its name, "
                            f"got {type(optimizer).__name__}")
        if lr_schedule is not None and not isinstance(lr_schedule, LRSchedule):
            raise TypeError(f"lr_schedule must be a fastnn.optim schedule, "
                            f"got {type(lr_schedule).__name__}")
        callbacks = list(callbacks or [])
        if group is not None and any(hasattr(c, "on_batch_end") for c in callbacks):
            raise ValueError("on_batch_end callbacks are not run in data-parallel training "
                             "(a step is every process's); use on_epoch_end")
        check_batch_rows(batch_size, X)
        X, names = self._by_name(X)
        X = self._features(X)
        if not 0 <= validation_split < 1:
            raise ValueError(f"validation_split must be in [0, 1), got {validation_split!r}")
        if validation_split and validation_data is not None:
            raise ValueError("give validation_data or validation_split, not both")
        y = np.asarray(y)
        if y.ndim == 0 or len(y) != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but y has shape {y.shape}")
        weights = None if sample_weight is None else \
            as_sample_weight(sample_weight, X.shape[0], self.dtype)
        if validation_split:
            split = int(X.shape[0] * (1 - validation_split))
            if split < 1 or split == X.shape[0]:
                raise ValueError(f"validation_split={validation_split} leaves no rows for "
                                 f"training or none for validation ({X.shape[0]} rows)")
            validation_data = (X[split:], y[split:]) + (
                () if weights is None else (weights[split:],))
            X, y = X[:split], y[:split]
            weights = None if weights is None else weights[:split]
            if weights is not None and not weights.any():
                raise ValueError("sample_weight is zero for every training row")
        balanced_later = None
        if class_weight is not None:
            if not loss.classification:
                raise ValueError(f"class_weight needs a classification loss, not {loss.name}")
            weighted = row_weights(class_weight, y, max(self.n_outputs, 2), weights,
                                   self.dtype)  # (checks the labels and class_weight)
            if group is not None and class_weight == "balanced":
                # counted over every process's rows once setup is agreed (_fit)
                balanced_later = (y, weights)
            else:
                weights = weighted
        kind, targets, labels = loss.prepare(y, X.shape[0], self.n_outputs, self.dtype)
        validation = None
        if validation_data is not None:
            validation = self._validation_set(validation_data, loss, names)
        if group is None:
            batch_size = min(batch_size, X.shape[0])
        elif any(layer.kind == "batchnorm" for layer in self._plan):
            raise ValueError("BatchNorm1d is not supported in data-parallel training: its "
                             "batch statistics would be each process's, not the global "
                             "batch's")
        if any(layer.kind == "batchnorm" for layer in self._plan) and (
                batch_size == 1 or X.shape[0] % batch_size == 1):
            raise ValueError(f"BatchNorm1d needs batches of at least 2 rows; batch_size="
                             f"{batch_size} with {X.shape[0]} rows leaves a batch of 1")
        log_keys = ["loss", "lr", "seconds", "samples_per_second"]
        if validation is not None:
            log_keys += ["val_loss"] + (["val_accuracy"] if loss.classification else [])
        check_callbacks(callbacks, log_keys)
        n_run = self._trained_layers(loss)
        optimizer = optimizer or self.optimizer or SGD(lr=0.01)
        if names is not None:  # (the call is accepted: the model learns the names)
            self.feature_names = names
        return (X, targets, labels, weights, loss, kind, n_run, optimizer, epochs,
                batch_size, validation, callbacks, initial_epoch, balanced_later)

    @staticmethod
    def _on_root(group, fn, *args):
        """fn(*args) here, or when data-parallel on rank 0, its result broadcast."""
        return fn(*args) if group is None else group.on_root(fn, *args)

    def _call_callbacks(self, callbacks, method, *args):
        """callback.method(*args) of each callback that has it (on_train_begin and
        on_train_end take the model)."""
        for callback in callbacks:
            hook = getattr(callback, method, None)
            if hook is not None:
                hook(*(args or (self,)))

    def _end_epoch(self, epoch, epochs, logs, verbose, lr_schedule, callbacks):
        """Report the epoch, step the schedule, run the callbacks; returns (whether to
        stop, the next epoch's learning rate)."""
        if verbose:
            self._print_epoch(epoch, epochs, logs)
        if lr_schedule is not None:
            lr_schedule.step(logs.get("val_loss", logs["loss"]))
        for callback in callbacks:
            hook = getattr(callback, "on_epoch_end", None)
            if hook is not None and hook(epoch, logs):
                self.stop_training = True
        return self.stop_training, self.optimizer.lr

    def _begin_training(self):
        """Let the predicts running on their callers' threads finish, and hold new ones
        (except from this thread: a callback may predict) until _end_training."""
        me = threading.get_ident()
        with self._activity:
            self._trainer = me
            self._engine.set_trainer(me)
            while self._engine.readers:  # readers leave without notifying: poll
                self._activity.wait(0.001)

    def _end_training(self):
        with self._activity:
            self._trainer = None
            self._engine.set_trainer(0)
            self._activity.notify_all()

    def _validation_set(self, validation_data, loss, names=None):
        """(X_val, prepared targets, weights or None) from (X_val, y_val[, weights])."""
        if not isinstance(validation_data, (tuple, list)) or \
                len(validation_data) not in (2, 3):
            raise ValueError("validation_data must be a pair (X_val, y_val) or a triple "
                             "(X_val, y_val, sample_weight_val)")
        X_val = self._features(self._by_name(validation_data[0], names)[0])
        prepared = loss.prepare(validation_data[1], X_val.shape[0], self.n_outputs,
                                self.dtype)
        weights = None
        if len(validation_data) == 3 and validation_data[2] is not None:
            weights = as_sample_weight(validation_data[2], X_val.shape[0], self.dtype)
        return X_val, prepared, weights

    def _train_epoch(self, X, targets, labels, weights, batch_size, kind, n_run, shuffle,
                     epoch, epochs, progress, callbacks=(), loss=None, clip=(0.0, 0.0),
                     lr_schedule=None):
        """One epoch through the training driver, in a fresh permutation of the rows from
        the model's generator (or in order); with `progress`, a bar drawn between about
        30 pieces of whole batches; with callbacks that have on_batch_end, one engine call
        per batch and on_batch_end(batch, logs) after each (logs: the batch's "size" and
        mean "loss"). Returns the summed training loss."""
        n = X.shape[0]
        order = self._rng.permutation(n) if shuffle else None
        seed = seed_for_dropout(self._rng) if self._has_dropout() else None
        batch_hooks = [c.on_batch_end for c in callbacks if hasattr(c, "on_batch_end")]
        done_before = [0]

        def after_piece(done, piece_loss):
            if batch_hooks:
                rows = order[done_before[0]:done] if order is not None else \
                    np.arange(done_before[0], done)
                size = done - done_before[0]
                denominator = size if weights is None else float(np.sum(weights[rows]))
                logs = {"size": size, "loss": piece_loss / loss.mean_divisor(
                    denominator, self.n_outputs) if denominator else 0.0}
                for hook in batch_hooks:
                    hook(done_before[0] // batch_size, logs)
                done_before[0] = done
            if progress:
                ticks = done * 30 // n
                print(f"\repoch {epoch + 1}/{epochs} [{'=' * ticks}{' ' * (30 - ticks)}] "
                      f"{done}/{n}", end="", flush=True)
        pieces = -(-n // batch_size) if batch_hooks else 30 if progress else 1
        per_step = lr_schedule is not None and lr_schedule.per_step
        schedule = lr_schedule._tables(-(-n // batch_size)) if per_step else (None, None)
        result = train_epoch(self._engine, self.optimizer, X, targets, labels, weights,
                             batch_size, kind, n_run, order=order, dropout_seed=seed,
                             pieces=pieces, after_piece=after_piece, clip=clip,
                             schedule=schedule)
        if per_step:
            lr_schedule._advance(-(-n // batch_size))
        if progress:
            print("\r", end="")
        if result.failed:
            raise FloatingPointError(diverged(
                result.failure, f"epoch {epoch}, batch {result.failed_batch}"))
        return result.loss_sum

    def _train_epoch_parallel(self, group, X, targets, labels, weights, batch_size, kind,
                              n_run, shuffle, epoch, lr_schedule=None, clip=(0.0, 0.0)):
        """One epoch of data-parallel training: this process's rows of each global batch
        from the shared permutation (Group.epoch_plan), its own dropout stream; returns
        the global summed loss. Clipping (clip: max norm, max value) clips the summed
        gradient, the global batch's, as one process would. A failed global batch raises
        FloatingPointError on every process (the parameters are those before it)."""
        order, step_rows, denoms = group.epoch_plan(X.shape[0], batch_size, shuffle,
                                                    self._rng, weights)
        seed = seed_for_dropout(self._rng, group.dropout_offset) \
            if self._has_dropout() else None
        per_step = lr_schedule is not None and lr_schedule.per_step
        schedule = lr_schedule._tables(len(step_rows)) if per_step else (None, None)
        with group.epoch_errors():
            result = train_epoch(self._engine, self.optimizer, X, targets, labels, weights,
                                 batch_size, kind, n_run, order=order, dropout_seed=seed,
                                 step_rows=step_rows, step_denoms=denoms, schedule=schedule,
                                 clip=clip)
        if per_step:
            lr_schedule._advance(len(step_rows))
        if result.failed:
            raise FloatingPointError(diverged(
                result.failure, f"epoch {epoch}, global batch {result.failed_batch}"))
        return float(result.loss_sum)

    def _validation_metrics_parallel(self, group, validation, loss, n_run):
        """fit's validation metrics over every process's validation rows ({} when no
        process has any): sums of the loss, correct predictions and rows (or weights)."""
        sums = [0.0, 0.0, 0.0]
        if validation is not None:
            X_val, (kind, targets, labels), weights = validation
            loss_sum, correct = self._engine.run(
                X_val, None, targets, labels, kind, False, n_run, chunk_rows(X_val, 1024),
                get_num_threads(), weights)
            rows = X_val.shape[0] if weights is None else float(np.sum(weights,
                                                                       dtype=np.float64))
            sums = [loss_sum, correct, rows]
        loss_sum, correct, rows = (float(v) for v in group.sum(sums))
        if rows == 0:
            return {}
        return self._summarise(loss, loss_sum, correct, rows, None)

    def _broadcast_state(self, group):
        """Rank 0's parameters, batch-norm buffers, optimizer state and step count, and
        random generator, on every process."""
        group.broadcast_arrays(self.parameters() + self.buffers())
        group.broadcast_arrays([a for arrays in self.optimizer.state for a in arrays])
        self.optimizer.steps = group.bcast(self.optimizer.steps)
        self._rng.bit_generator.state = group.bcast(self._rng.bit_generator.state)

    def _has_dropout(self):
        return any(layer.kind == "dropout" for layer in self._plan)

    @staticmethod
    def _print_epoch(epoch, epochs, logs):
        extra = "".join(f"  {key} {logs[key]:.4g}" for key in ("val_loss", "val_accuracy")
                        if key in logs)
        print(f"epoch {epoch + 1}/{epochs}  loss {logs['loss']:.6g}{extra}  lr {logs['lr']:.3g}"
              f"  {logs['seconds']:.2f}s  {logs['samples_per_second']:,.0f} samples/s",
              flush=True)

    def export_onnx(self, path, network_only=False):
        """Write what predict computes as an ONNX graph (needs the onnx package); see
        fastnn.onnx_export (network_only: a model with preprocessing, the network alone)."""
        from .onnx_export import export_onnx
        return export_onnx(self, path, network_only=network_only)

    def save(self, path, include_optimizer=True):
        """Write the model (get_config and state_dict) to one .npz file, atomically;
        fastnn.load reads it (see fastnn.serialization)."""
        if self._group is not None and not self._group.is_root:
            return  # after data-parallel training, rank 0 writes the file
        write_model_file(path, self.get_config(include_optimizer),
                         self.state_dict(include_optimizer))

    def _saves_optimizer(self, include_optimizer):
        return include_optimizer and self.optimizer is not None \
            and self.optimizer.state is not None

    def get_config(self, include_optimizer=True):
        """The model as JSON-able data: dtype, seed, layers, the shuffling generator's
        state, and what it has learned to name (loss, class names, feature and target
        names, preprocessing); with include_optimizer, its optimizer's class, settings
        and step count (once it has state). Sequential.from_config rebuilds the model
        from it, and state_dict's arrays complete it."""
        config = {
            "dtype": self.dtype.name,
            "seed": self.seed if isinstance(self.seed, (int, type(None))) else None,
            "layers": [layer._config() for layer in self.layers],
            "rng": self._rng.bit_generator.state,
        }
        if self.loss is not None:
            config["loss"] = self.loss._config()
        if self.classes is not None:
            config["classes"] = [c.item() if isinstance(c, np.generic) else c
                                 for c in self.classes]
        if self.feature_names is not None:
            config["features"] = [str(name) for name in self.feature_names]
        if self.target_name is not None:
            config["target"] = str(self.target_name)
        if self.preprocessing is not None:
            config["preprocessing"] = self.preprocessing.to_config()
        if self._saves_optimizer(include_optimizer):
            opt = self.optimizer
            config["optimizer"] = {"class": type(opt).__name__, "config": opt._config(),
                                   "steps": opt.steps}
        return config

    def state_dict(self, include_optimizer=True):
        """The model's arrays by name, the live arrays themselves (write into them to
        load): parameters "param_<i>", buffers "buffer_<i>" (batch norm's running
        statistics), and with include_optimizer the optimizer's state "opt_<i>_<j>"
        (parameter i's j-th state array, once it has state)."""
        arrays = {f"param_{i}": p for i, p in enumerate(self.parameters())}
        arrays.update({f"buffer_{i}": b for i, b in enumerate(self.buffers())})
        if self._saves_optimizer(include_optimizer):
            for i, state in enumerate(self.optimizer.state):
                arrays.update({f"opt_{i}_{j}": a for j, a in enumerate(state)})
        return arrays

    @classmethod
    def from_config(cls, config, optimizer=None):
        """A model as get_config described it, its arrays allocated but not initialised
        (no random draw: fill them through state_dict()). `optimizer`: the optimizer the
        config describes, bound to the parameters at the config's step count. Raises
        ValueError naming what does not fit together."""
        try:
            layers = [layer_from_config(c, initialise=False) for c in config["layers"]]
            loss = None if config.get("loss") is None else loss_from_config(config["loss"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"invalid model description: {exc}") from None
        model = cls._uninitialised(layers, config["dtype"], config["seed"], loss)
        if "classes" in config:
            if len(config["classes"]) != model.n_outputs and not (
                    len(config["classes"]) == 2 and model.n_outputs == 1):
                raise ValueError(f"invalid model description: {len(config['classes'])} "
                                 f"class names for {model.n_outputs} outputs")
            model.classes = list(config["classes"])
        if "preprocessing" in config:
            try:
                model.preprocessing = TablePreprocessor.from_config(config["preprocessing"])
            except ValueError as exc:
                raise ValueError(f"invalid model description: {exc}") from None
            if model.preprocessing.n_outputs != model.n_features or \
                    config.get("features") != model.preprocessing.input_names:
                raise ValueError("invalid model description: its preprocessing does not "
                                 "match its features")
            first = model.layers[0]
            codes = (model.preprocessing.code_columns, model.preprocessing.cardinalities)
            if codes[0] and (first.kind != "embedding"
                             or (first.columns, first.cardinalities) != codes):
                raise ValueError("invalid model description: its preprocessing codes "
                                 "columns that its first layer does not embed")
        if "features" in config:
            if "preprocessing" not in config and len(config["features"]) != model.n_features:
                raise ValueError(f"invalid model description: {len(config['features'])} "
                                 f"feature names for {model.n_features} inputs")
            model.feature_names = list(config["features"])
        model.target_name = config.get("target")
        try:
            model._rng.bit_generator.state = config["rng"]
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            raise ValueError(f"invalid generator state ({exc})") from None
        if optimizer is not None:
            optimizer._bind(model.trainable_parameters())
            optimizer.steps = config["optimizer"]["steps"]
            model.optimizer = optimizer
        return model

    # -- inference ------------------------------------------------------------------

    def predict(self, X, batch_size=1024):
        """The last layer's outputs, (n_samples, n_outputs), computed in batches (X dense,
        or scipy.sparse: see fit).

        Work too small for a second thread (one row to a few dozen, by the plan) runs on
        the calling thread with buffers of its own, as does a predict that finds the
        model's team busy with another: predicts from several Python threads run at
        once (the GIL released). A predict started while another thread fits waits
        until the fit ends.

        The result's bits depend on X's values, the weights, X's shape, batch_size and
        the thread setting only: the work is cut into the blocks that plan fixes, and each
        block is computed the same way on whichever thread runs it, however many threads
        predict at once or however busy the team is."""
        threads = get_num_threads()
        if type(X) is np.ndarray and type(batch_size) is int and self._codes is None:
            # a few rows: microseconds (an Embedding's codes are checked first, below)
            out = self._engine.predict_small(X, batch_size, threads)
            if out is not None:
                return out
        batch_size = check_int(batch_size, "batch_size")
        check_batch_rows(batch_size, X)
        X, _ = self._by_name(X)
        given = X
        X = self._features(X, allow_empty=True, check_finite=False)
        if X.shape[0] == 0:
            return np.empty((0, self.n_outputs), dtype=self.dtype)
        dense = isinstance(X, np.ndarray)  # (a sparse X was checked as it was converted)
        if dense and (X is not given or self._codes is not None):  # converted or checked
            out = self._engine.predict_small(X, batch_size, threads)
            if out is not None:
                return out
        out = np.empty((X.shape[0], self.n_outputs), dtype=self.dtype)
        chunk = chunk_rows(X, batch_size)
        n_run = len(self._plan)
        block = self._engine.predict_rows(chunk, n_run, threads)

        def on_team():
            small = self._engine.predict_small(X, batch_size, threads) if dense else None
            if small is not None:  # a few rows that waited for another thread's fit
                out[...] = small
                return
            self._engine.run(X, out, None, None, -1, False, n_run, chunk, threads,
                             check_finite=dense)

        try:
            self._dispatch(X, chunk, n_run,
                           lambda: self._infer(X, out, block, n_run, check_finite=True),
                           on_team)
        except _engine.NonFiniteRow as error:  # the message names X as given
            as_features(given, self.n_features, self.dtype, allow_empty=True)
            raise ValueError(str(error)) from None
        return out

    def _dispatch(self, X, chunk, n_run, here, team):
        """Run here() on the calling thread when a forward pass of `chunk` rows is below
        the team's grain, or when the team is busy with another call (not another
        thread's fit); else team() under the model's lock. Sparse X always goes to the
        team."""
        if isinstance(X, np.ndarray):
            if self._engine.plan_threads(chunk, n_run, False, get_num_threads()) == 1:
                return here()
            if not self._lock.acquire(blocking=False):
                if self._trainer in (None, threading.get_ident()):
                    return here()
                self._lock.acquire()
        else:
            self._lock.acquire()
        try:
            return team()
        finally:
            self._lock.release()

    def _infer(self, X, out, chunk, n_run, check_finite=False):
        """Layers [0, n_run) on the calling thread, through this thread's buffers."""
        local = self._infer_buffers
        buffers = getattr(local, "buffers", None)
        if buffers is None or buffers[0] < chunk:
            size = chunk * self._widest  # (residual blocks: their inputs, per depth)
            buffers = local.buffers = (chunk, np.empty(size, self.dtype),
                                       np.empty(size, self.dtype),
                                       np.empty(max(1, size * self._engine.residual_depth),
                                                self.dtype))
        me = threading.get_ident()
        with self._activity:
            while not self._engine.enter_reader(me):
                self._activity.wait()
        try:
            self._engine.infer(X, out, buffers[1], buffers[2], chunk, n_run, check_finite,
                               buffers[3])
        finally:
            self._engine.leave_reader()  # a starting fit polls the count

    def predict_proba(self, X, batch_size=1024):
        """Class probabilities for a model with a classification loss: the softmax of
        the logits (cross_entropy) or their sigmoid, per output (binary_cross_entropy);
        (n_samples, n_outputs). A model whose last layer is Softmax or Sigmoid already
        predicts them."""
        loss = self.loss
        link = type(self.layers[-1])
        if loss is None and link in (Softmax, Sigmoid):
            return self.predict(X, batch_size)
        if loss is None or not loss.classification:
            raise ValueError(f"predict_proba needs a model trained with a classification "
                             f"loss (cross_entropy or binary_cross_entropy); its loss is "
                             f"{None if loss is None else loss.name!r}")
        out = self.predict(X, batch_size)
        if link is loss.link:  # the model's last layer applies it already
            return out
        if loss.link is Softmax:
            out -= out.max(axis=1, keepdims=True)
            np.exp(out, out=out)
            out /= out.sum(axis=1, keepdims=True)
            return out
        return 1.0 / (1.0 + np.exp(-out))

    def summary(self, print_fn=print):
        """Print each layer with its output shape and parameter count, then the totals
        (learned parameters, and buffers such as batch norm's running statistics)."""
        rows, width = [], self.n_features
        for i, layer in enumerate(self.layers):
            width = layer.output_width(width)
            rows.append((f"{i}: {layer!r}", f"(None, {width})",
                         sum(p.size for p in layer.parameters())))
        name_width = max(len("layer"), *(len(r[0]) for r in rows))
        line = "-" * (name_width + 32)
        print_fn(f"{'layer':<{name_width}}  {'output shape':>16}  {'parameters':>12}")
        print_fn(line)
        for name, shape, count in rows:
            print_fn(f"{name:<{name_width}}  {shape:>16}  {count:>12,}")
        print_fn(line)
        trained = sum(p.size for p in self.parameters())
        buffers = sum(b.size for b in self.buffers())
        print_fn(f"parameters: {trained:,} learned, {buffers:,} in buffers (not learned), "
                 f"{trained + buffers:,} in all; {self.dtype.name}, "
                 f"{(trained + buffers) * self.dtype.itemsize:,} bytes")

    def evaluate(self, X, y, loss=None, batch_size=1024, sample_weight=None):
        """{"loss": mean loss (plus the L2 penalty), "accuracy": fraction correct
        (classification losses)}; with sample_weight, the weighted means.

        loss: None is the model's loss (see fit). Accuracy: argmax equals the label for
        cross_entropy; logit > 0 equals target > 0.5, per element, for
        binary_cross_entropy.
        """
        loss = get_loss(self._loss_or_default(loss))
        X, prepared, weights, n_run, batch_size = self._prepare(X, y, loss, batch_size,
                                                                sample_weight)
        chunk = chunk_rows(X, batch_size)
        return self._dispatch(X, chunk, n_run,
                              lambda: self._metrics_here(X, prepared, loss, n_run, chunk,
                                                         weights),
                              lambda: self._metrics(X, prepared, loss, n_run, batch_size,
                                                    weights))

    def gradients(self, X, y, loss=None, batch_size=1024, sample_weight=None,
                  training=False):
        """Gradients of the mean loss over all of X (the weighted mean with
        sample_weight), in the order of trainable_parameters() (parameters() unless a
        layer is frozen; copies); loss None is the model's.

        training=False (the default) differentiates the function predict computes: batch
        norm uses its running statistics, dropout passes its input through. training=True
        differentiates what a training step descends, as torch does in train mode: batch
        norm normalises with the statistics of all of X (one batch; its running
        statistics are left unchanged) and dropout draws masks from the model's
        generator (advancing it, as fit does).
        """
        loss = get_loss(self._loss_or_default(loss))
        X, (kind, targets, labels), weights, n_run, batch_size = self._prepare(
            X, y, loss, batch_size, sample_weight)
        chunk = chunk_rows(X, batch_size)
        if training:
            if any(layer.kind == "batchnorm" for layer in self._plan[:n_run]):
                if X.shape[0] < 2:
                    raise ValueError("BatchNorm1d in training mode needs at least 2 rows")
                chunk = X.shape[0]  # the statistics are those of all of X
            if any(layer.kind == "dropout" for layer in self._plan[:n_run]):
                self._engine.seed_dropout(int(self._rng.integers(2**63)))
        with self._lock:
            self._follow_trainable()
            self._engine.run(X, None, targets, labels, kind, True, n_run, chunk,
                             get_num_threads(), weights, training)
            return [g.copy() for g in self._engine.grads]

    # -- forward and reverse mode (fastnn.forward) -------------------------------------

    def jvp(self, X, V):
        """(outputs, JV): predict's outputs and their derivative along V (shaped like X),
        by forward mode. See fastnn.forward."""
        from . import forward
        return forward.jvp(self, X, V)

    def vjp(self, X, U):
        """(outputs, U^T J): predict's outputs and, per row, U's pull-back to the inputs
        (U shaped like the outputs), by reverse mode. See fastnn.forward."""
        from . import forward
        return forward.vjp(self, X, U)

    def jacobian(self, X, mode="auto"):
        """Each row's input Jacobian (n_samples, n_outputs, n_features), by forward or
        reverse mode ("auto": the fewer passes). See fastnn.forward."""
        from . import forward
        return forward.jacobian(self, X, mode)

    def jvp_parameters(self, X, y, directions, loss=None):
        """The mean loss's derivative along a direction in parameter space (a list shaped
        like parameters()), by forward mode: the dot product of gradients() with it."""
        from . import forward
        return forward.jvp_parameters(self, X, y, directions, loss)

    def _by_name(self, X, known=None):
        """(X with its columns in the model's feature order, their names or None): for a
        table with named columns (a pandas DataFrame), the columns are taken by name, as
        the command line reads a file's: once the model knows its features' names (from an
        earlier fit on a table, or a file), a table with the columns in another order
        gives the same predictions, and one lacking any is refused. Arrays are taken as
        they are. `known`: the names to match (default the model's)."""
        known = self.feature_names if known is None else known
        columns = getattr(X, "columns", None)
        if columns is None or is_sparse(X) or isinstance(X, np.ndarray):
            return X, None
        names = [str(c) for c in columns]
        if len(set(names)) != len(names):
            raise ValueError("X has columns with the same name")
        if known is None or names == list(known):
            return X, names
        missing = [f for f in known if f not in set(names)]
        if missing:
            raise ValueError(f"X lacks columns the model was trained on: {missing[:10]}"
                             + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
                             + f" (its features: {list(known)[:10]})")
        label = dict(zip(names, columns))
        return X[[label[f] for f in known]], list(known)

    def _loss_or_default(self, loss):
        """The loss a call uses: the one given, else the model's, else cross-entropy."""
        if loss is not None:
            return loss
        return self.loss if self.loss is not None else "cross_entropy"

    def _prepare(self, X, y, loss, batch_size, sample_weight=None):
        """Validated inputs for a loss pass: (X, loss.prepare(...), weights, layers run,
        batch)."""
        batch_size = check_int(batch_size, "batch_size")
        check_batch_rows(batch_size, X)
        X, _ = self._by_name(X)
        X = self._features(X)
        prepared = loss.prepare(y, X.shape[0], self.n_outputs, self.dtype)
        weights = None if sample_weight is None else \
            as_sample_weight(sample_weight, X.shape[0], self.dtype)
        return X, prepared, weights, self._trained_layers(loss), batch_size

    def _metrics(self, X, prepared, loss, n_run, batch_size, weights=None):
        """{"loss": mean loss plus the L2 penalty, "accuracy" for classification} over X,
        already validated (weighted means with weights); the caller holds the lock."""
        kind, targets, labels = prepared
        loss_sum, correct = self._engine.run(X, None, targets, labels, kind, False, n_run,
                                             chunk_rows(X, batch_size), get_num_threads(),
                                             weights)
        return self._summarise(loss, loss_sum, correct, X.shape[0], weights)

    def _metrics_here(self, X, prepared, loss, n_run, chunk, weights):
        """_metrics on the calling thread: the logits through this thread's buffers, then
        the loss kernel over them (the GIL released in both)."""
        from . import _kernels
        kind, targets, labels = prepared
        code, setting = split_code(kind)
        out = np.empty((X.shape[0], self.n_outputs), dtype=self.dtype)
        self._infer(X, out, chunk, n_run)
        loss_sum, correct = _kernels.loss(code, out, targets, labels, None, 1.0, weights,
                                          setting)
        return self._summarise(loss, loss_sum, correct, X.shape[0], weights)

    def _summarise(self, loss, loss_sum, correct, n_rows, weights):
        rows = n_rows if weights is None else float(np.sum(weights, dtype=np.float64))
        divisor = loss.mean_divisor(rows, self.n_outputs)  # samples or elements
        result = {"loss": loss_sum / divisor + self.penalty()}
        if loss.classification:
            result["accuracy"] = correct / divisor
        return result

    def _trained_layers(self, loss):
        """How many of the plan's layers training runs: all but a final layer the loss
        fuses."""
        n = len(self._plan)
        if loss.link is not None and type(self.layers[-1]) is loss.link:
            n -= 1
        if not any(isinstance(layer, Dense) for layer in self._plan[:n]):
            raise ValueError("no Dense layer before the loss: nothing to train")
        return n

    def __repr__(self):
        inner = ",\n    ".join(repr(layer) for layer in self.layers)
        loss = "" if self.loss is None else f", loss={self.loss.name!r}"
        return (f"Sequential([\n    {inner}\n], dtype={self.dtype.name!r}, "
                f"seed={self.seed!r}{loss})")
