"""Callbacks: objects whose hooks fit calls as it trains; each hook is optional.

`on_epoch_end(epoch, logs)`: returning True (or setting
model.stop_training = True) stops training after that epoch. `logs` holds the epoch's
"loss", "lr", "seconds", "samples_per_second" and, with validation data,
"val_loss" (and "val_accuracy" for classification). Optional hooks:
`on_train_begin(model)`, `on_epoch_begin(epoch)`, `on_train_end(model)` and
`on_batch_end(batch, logs)` (logs: the batch's "size" and mean "loss"). A callback with
on_batch_end makes fit hand the engine one batch per call instead of a whole epoch, with
Python between batches: the results are the same bits, but each call copies the state
aside for its rollback, so an epoch of 784-256-128-10 on MNIST took 1.79x as long at
batch 32 and 1.18x at batch 128 (`python bench/bench_callbacks.py`, 2-core AMD EPYC Zen 4,
OpenBLAS SkylakeX). Callback itself does not define the hook: callbacks without it cost
nothing per batch.
"""
import os

import numpy as np

__all__ = ["Callback", "EarlyStopping", "ModelCheckpoint"]


# The keys fit itself may put in an epoch's logs; other callbacks may add their own.
FIT_LOG_KEYS = ("loss", "lr", "seconds", "samples_per_second", "val_loss", "val_accuracy")


def check_callbacks(callbacks, log_keys):
    """Before fit trains (so a bad setting changes nothing): each callback that can tell
    checks its settings against the keys of FIT_LOG_KEYS its epoch logs will have
    (_check_fit). A key fit does not make may still come from another callback: that is
    checked as each epoch ends."""
    for callback in callbacks:
        check = getattr(callback, "_check_fit", None)
        if check is not None:
            check(sorted(log_keys))


def _check_monitor(owner, monitor, logs, will_have=False):
    """A monitored key fit will not log (will_have: logs are the keys it will log), or
    that the epoch's logs lack."""
    if monitor not in logs and (not will_have or monitor in FIT_LOG_KEYS):
        hint = "; pass validation data?" if monitor.startswith("val_") else ""
        raise ValueError(f"{owner} monitors {monitor!r}, which the epoch logs "
                         f"{'will lack' if will_have else 'lack'} (they have "
                         f"{sorted(logs)}){hint}")


class _FitLogs(dict):
    """Format fields of a path before training: fit's keys it will log, any other key a
    placeholder (another callback may add it)."""

    def __missing__(self, key):
        if key in FIT_LOG_KEYS:
            raise KeyError(key)
        return 0.0


class Callback:
    def on_train_begin(self, model):
        pass

    def on_epoch_end(self, epoch, logs):
        return False

    def on_train_end(self, model):
        pass


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by more than min_delta for `patience` epochs.

    Args:
        monitor: a key of the epoch logs ("val_loss", "loss", "val_accuracy", ...);
            quantities named "*accuracy" are maximised, others minimised.
        patience: epochs without improvement before stopping.
        min_delta: the smallest change that counts as an improvement.
        restore_best_weights: at the end of training, put back the parameters of the
            best epoch.
    """

    def __init__(self, monitor="val_loss", patience=5, min_delta=0.0,
                 restore_best_weights=True):
        self.monitor = monitor
        self.patience = int(patience)
        self.min_delta = abs(float(min_delta))
        self.restore_best_weights = bool(restore_best_weights)
        self.sign = -1.0 if monitor.endswith("accuracy") else 1.0  # minimise sign * value

    def on_train_begin(self, model):
        self.model = model
        self.best = np.inf
        self.best_epoch = None
        self.best_weights = None
        self.wait = 0
        self.stopped_epoch = None

    def _check_fit(self, log_keys):
        _check_monitor("EarlyStopping", self.monitor, log_keys, will_have=True)

    def on_epoch_end(self, epoch, logs):
        _check_monitor("EarlyStopping", self.monitor, logs)
        value = self.sign * logs[self.monitor]
        if value < self.best - self.min_delta:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = [a.copy() for a in self._state(self.model)]
            return False
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            return True
        return False

    def on_train_end(self, model):
        if self.restore_best_weights and self.best_weights is not None:
            for a, best in zip(self._state(model), self.best_weights):
                a[...] = best

    @staticmethod
    def _state(model):
        """Everything that defines the model's predictions: parameters and buffers."""
        return model.parameters() + model.buffers()


class ModelCheckpoint(Callback):
    """Save the model (fastnn's .npz format, with its optimizer) after each epoch, or only
    when `monitor` improved (save_best_only). `path` may hold "{epoch}" (1-based) and the
    logs' keys as format fields, e.g. "model-{epoch:03d}-{val_loss:.3f}.npz"; each file
    is written atomically (model.save).

    Args:
        path: where to save, a format string as above.
        monitor: the logs' key save_best_only compares ("*accuracy" is maximised).
        save_best_only: save only when monitor improved on every earlier epoch.
    """

    def __init__(self, path, monitor="val_loss", save_best_only=False):
        self.path = str(path)
        self.monitor = monitor
        self.save_best_only = bool(save_best_only)
        self.sign = -1.0 if monitor.endswith("accuracy") else 1.0

    def on_train_begin(self, model):
        self.model = model
        self.best = np.inf
        self.saved = []

    def _check_fit(self, log_keys):
        """The monitored key, and the path's fields and folder (where it has no fields)."""
        if self.save_best_only:
            _check_monitor("ModelCheckpoint", self.monitor, log_keys, will_have=True)
        try:
            path = self.path.format_map(_FitLogs(dict.fromkeys(log_keys, 0.0), epoch=1))
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"ModelCheckpoint's path {self.path!r} cannot be formatted "
                             f"from the epoch and the epoch logs' keys {log_keys}: "
                             f"{type(exc).__name__}: {exc}") from None
        folder = os.path.dirname(self.path)
        if "{" not in folder and not os.path.isdir(os.path.dirname(path) or "."):
            raise ValueError(f"ModelCheckpoint's path {self.path!r}: no folder {folder!r}")

    def on_epoch_end(self, epoch, logs):
        if self.save_best_only:
            _check_monitor("ModelCheckpoint", self.monitor, logs)
            value = self.sign * logs[self.monitor]
            if not value < self.best:
                return False
            self.best = value
        path = self.path.format(epoch=epoch + 1, **logs)
        self.model.save(path)
        self.saved.append(path)
        return False
