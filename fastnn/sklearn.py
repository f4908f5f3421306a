"""MLPClassifier and MLPRegressor for scikit-learn, trained by fastnn's compiled engine.

Drop-in replacements for sklearn.neural_network's estimators: the same constructor
parameters and defaults, fitted attributes and methods, and the same definitions, so the
same settings learn the same model:
- weights: Glorot uniform, drawn from `random_state` in scikit-learn's order;
- loss: log-loss (softmax over several classes, logistic for two classes and for
  multi-label targets), half squared error, or half Poisson deviance; each the mean over
  the batch's rows plus 0.5 * alpha * sum(W^2) / rows (biases are not penalised);
- solvers: "sgd" (momentum, Nesterov, the "constant", "invscaling" and "adaptive"
  learning rates), "adam" (epsilon added to sqrt(v), as scikit-learn does) and "lbfgs"
  (scipy's L-BFGS-B on the full-batch loss);
- the shuffling, the early-stopping split and the stopping rule are scikit-learn's,
  drawn from the same random numbers, so with the same random_state training takes the
  same steps, equal to rounding (tests/test_sklearn.py checks this).
What differs is where the time goes: every batch of an epoch runs in fastnn's engine
with the GIL released (scikit-learn runs a NumPy step per batch), predict runs there
too, and the extras `dtype` ("float32" trains in single precision) and `n_threads`.
fit and partial_fit take `sample_weight` as scikit-learn 1.9 defines it: each batch's
loss is the weighted mean (sum_i w_i l_i / sum_i w_i), the penalty's share is
0.5 * alpha * |W|^2 / sum_i w_i, the early-stopping split carries the weights and the
validation score is weighted. Sparse X (CSR, CSC and the other scipy.sparse formats) is
read row by row into each batch, never densified.
A loss that stops being finite: without early stopping, ValueError with scikit-learn's
message, the weights those before the step that diverged; with early stopping, the fit
runs on as scikit-learn's does (each later epoch scores NaN) and the best weights are
restored, without spending time on training a diverged network.
One deliberate difference: with warm_start the early-stopping split stays the one drawn
at the first fit (scikit-learn draws a new one, so rows it trained on can become
validation rows).

Needs scikit-learn (pip install "fastnn[sklearn]"); `import fastnn` does not import it.
"""
import contextlib
import numbers
import warnings

import numpy as np

try:
    import sklearn  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError('fastnn.sklearn needs scikit-learn: pip install "fastnn[sklearn]"') \
        from exc
import scipy.optimize
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPRegressor as _ScikitMLPRegressor
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state
from sklearn.utils import shuffle as _shuffle
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import type_of_target, unique_labels
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
    column_or_1d,
    validate_data,
)

from . import _engine
from ._threads import get_num_threads, threads
from ._validation import CSRRows, is_sparse
from .layers import Dense, Identity, ReLU, Sigmoid, Softmax, Tanh
from .model import Sequential
from .optim import SGD, Adam
from .training import train_epoch

__all__ = ["MLPClassifier", "MLPRegressor"]

_HIDDEN = {"identity": Identity, "logistic": Sigmoid, "tanh": Tanh, "relu": ReLU}
_OUTPUT = {"softmax": Softmax, "logistic": Sigmoid, "identity": None, "exp": None}
# engine loss on the last Dense layer's output, for each output activation
_LOSS = {"softmax": "cross_entropy_labels", "logistic": "binary_cross_entropy",
         "identity": "mse", "exp": "poisson_nll"}


class _ScikitAdam(Adam):
    """Adam with scikit-learn's placement of epsilon: p -= lr sqrt(1 - beta2^t) /
    (1 - beta1^t) * m / (sqrt(v) + eps)."""

    def hyperparameters(self):
        return super().hyperparameters() + (1.0,)

    @property
    def learning_rate(self):
        """The step size of the last update, as scikit-learn's AdamOptimizer shows it."""
        beta1, beta2 = self.betas
        t = max(self.steps, 1)
        return self.lr * np.sqrt(1 - beta2**t) / (1 - beta1**t)


class _ScikitSGD(SGD):
    """SGD whose current rate is also visible as `learning_rate` (scikit-learn's name)."""

    @property
    def learning_rate(self):
        return self.lr


_DIVERGED = ("Solver produced non-finite parameter weights. The input data may contain "
             "large values and need to be preprocessed.")


def _engine_rows(X, dtype):
    """X as the engine reads it: a C-contiguous array of `dtype`, or CSRRows."""
    if isinstance(X, CSRRows):
        return X
    if is_sparse(X):
        return CSRRows.of(X, X.shape[1], dtype, allow_empty=False)
    return np.ascontiguousarray(X, dtype=dtype)


def _poisson_constants(targets):
    """Per row, the terms of scikit-learn's half Poisson deviance that do not depend on
    the model: sum over outputs of t log t - t."""
    return np.sum(targets * np.log(np.where(targets > 0, targets, 1)) - targets, axis=1)


def _epoch_constant(constants, weights, order, batch_size):
    """What those terms add to scikit-learn's loss_ over an epoch: per batch its weighted
    mean times its rows, summed over batches and divided by the rows."""
    c = constants[order]
    w = weights[order].astype(np.float64)
    starts = np.arange(0, len(order), batch_size)
    rows = np.diff(np.append(starts, len(order)))
    with np.errstate(divide="ignore", invalid="ignore"):
        means = np.add.reduceat(w * c, starts) / np.add.reduceat(w, starts)
    return float(np.sum(rows * means)) / len(order)


def _keep_parameters(estimator, values):
    """Store each constructor argument as the attribute of its name, as scikit-learn
    requires (no validation or conversion in __init__)."""
    for name, value in values.items():
        if name != "self":
            setattr(estimator, name, value)


@contextlib.contextmanager
def _maybe_threads(n_threads):
    if n_threads is None:
        yield
    else:
        with threads(n_threads):
            yield


def _stochastic_solver(estimator):
    """partial_fit exists only for the stochastic solvers (as in scikit-learn)."""
    if estimator.solver == "lbfgs":
        raise AttributeError("partial_fit is only available for stochastic optimizers. "
                             "lbfgs is not stochastic.")
    return True


class _BaseMLP(BaseEstimator):
    """The training and prediction shared by MLPClassifier and MLPRegressor."""

    _parameter_constraints = {
        **{k: v for k, v in _ScikitMLPRegressor._parameter_constraints.items()
           if k != "loss"},
        "dtype": [StrOptions({"float32", "float64"}), None],
        "n_threads": [Interval(numbers.Integral, 1, None, closed="left"),
                      Options(numbers.Integral, {-1}), None],
    }

    # -- the network ----------------------------------------------------------------

    def _hidden_sizes(self):
        sizes = self.hidden_layer_sizes
        sizes = list(sizes) if hasattr(sizes, "__iter__") else [sizes]
        if any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s <= 0
               for s in sizes):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {sizes}.")
        return [int(s) for s in sizes]

    def _initialize(self, layer_units, dtype, rng):
        """Fresh weights (scikit-learn's Glorot draw, in its order) and fit state."""
        self.n_iter_ = 0
        self.t_ = 0
        self.n_layers_ = len(layer_units)
        self.n_outputs_ = layer_units[-1]
        self.out_activation_ = self._output_activation()
        factor = 2.0 if self.activation == "logistic" else 6.0
        coefs, intercepts = [], []
        for fan_in, fan_out in zip(layer_units[:-1], layer_units[1:]):
            bound = np.sqrt(factor / (fan_in + fan_out))
            coefs.append(rng.uniform(-bound, bound, (fan_in, fan_out)))
            intercepts.append(rng.uniform(-bound, bound, fan_out))
        self._build_model(coefs, intercepts, dtype)
        self._best_coefs = [c.copy() for c in self.coefs_]
        self._best_intercepts = [b.copy() for b in self.intercepts_]
        self._optimizer = None
        self._split_state = None
        if self.solver != "lbfgs":
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = None
                self.best_validation_score_ = None

    def _build_model(self, coefs, intercepts, dtype):
        """A Sequential holding these weights; coefs_/intercepts_ become views of its
        arrays (coefs_[i] is layer i's weight transposed, shape (n_in, n_out))."""
        layers = []
        for i, coef in enumerate(coefs):
            dense = Dense(coef.shape[0], coef.shape[1], l2=self.alpha / 2)
            layers.append(dense)
            if i < len(coefs) - 1:
                layers.append(_HIDDEN[self.activation]())
        output = _OUTPUT[self.out_activation_]
        if output is not None:
            layers.append(output())
        model = Sequential(layers, dtype=dtype)
        model.engine.use_per_row_scaling(True)
        dense_layers = [layer for layer in layers if isinstance(layer, Dense)]
        for dense, coef, intercept in zip(dense_layers, coefs, intercepts):
            dense.weight = np.asarray(coef).T
            dense.bias = intercept
        self._model = model
        self._dense = dense_layers
        self.coefs_ = [d.weight.T for d in dense_layers]
        self.intercepts_ = [d.bias for d in dense_layers]
        if getattr(self, "_optimizer", None) is not None:
            self._optimizer._rebind(model.parameters())

    def _current_model(self):
        """The model, rebuilt after unpickling or when coefs_/intercepts_ were replaced."""
        model = getattr(self, "_model", None)
        if model is None or len(self.coefs_) != len(self._dense) or any(
                c.base is not d.weight or b is not d.bias
                for c, b, d in zip(self.coefs_, self.intercepts_, self._dense)):
            dtype = model.dtype if model is not None else np.asarray(self.coefs_[0]).dtype
            shapes = [np.shape(c) for c in self.coefs_]
            if any(np.shape(b) != (s[1],) for b, s in zip(self.intercepts_, shapes)) or any(
                    a[1] != b[0] for a, b in zip(shapes[:-1], shapes[1:])):
                raise ValueError(f"coefs_ and intercepts_ do not chain: coefs_ shapes "
                                 f"{shapes}, intercepts_ shapes "
                                 f"{[np.shape(b) for b in self.intercepts_]}")
            self._build_model(self.coefs_, self.intercepts_, dtype)
        return self._model

    def __getstate__(self):
        state = super().__getstate__()
        for key in ("_model", "_dense"):  # compiled engine: rebuilt from coefs_ on load
            state.pop(key, None)
        return state

    def _loss_terms(self):
        """(engine loss code, layers the engine trains, and the factor that turns the
        engine's summed loss into scikit-learn's per-row loss)."""
        factor = 0.5 / self.n_outputs_ if self.out_activation_ == "identity" else 1.0
        n_run = len(self._model.layers) - (_OUTPUT[self.out_activation_] is not None)
        return _engine.LOSS_KINDS[_LOSS[self.out_activation_]], n_run, factor

    # -- fit ------------------------------------------------------------------------

    def _fit(self, X, y, sample_weight=None, incremental=False):
        self._validate_params()
        if incremental and self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True: it trains "
                             "one epoch on the data given, with no validation split")
        sizes = self._hidden_sizes()
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        X, Y = self._validate_input(X, y, incremental, reset=first_pass)
        if Y.ndim == 1:
            Y = Y.reshape(-1, 1)
        layer_units = [X.shape[1]] + sizes + [Y.shape[1]]
        if not first_pass:
            model = self._current_model()
            known = [c.shape[0] for c in self.coefs_] + [self.coefs_[-1].shape[1]]
            if known != layer_units:
                raise ValueError(f"the data and hidden_layer_sizes give layer sizes "
                                 f"{layer_units}, but the fitted network has {known}")
            dtype = model.dtype
        else:
            dtype = np.dtype(self.dtype) if self.dtype is not None else X.dtype
        if sample_weight is not None:
            sample_weight = np.ascontiguousarray(
                _check_sample_weight(sample_weight, X, dtype=np.float64), dtype=dtype)
        rng = check_random_state(self.random_state)
        if first_pass:
            self._initialize(layer_units, dtype, rng)
        # dense X is converted once; sparse X stays sparse (CSR) until the engine reads it
        X = X.tocsr().astype(dtype) if is_sparse(X) else np.ascontiguousarray(X, dtype=dtype)
        targets, labels = self._encode_targets(Y, dtype)
        with _maybe_threads(self.n_threads):
            if self.solver == "lbfgs":
                self._fit_lbfgs(X, Y, sample_weight)
            else:
                self._fit_stochastic(X, Y, targets, labels, sample_weight, rng, incremental,
                                     first_pass)
        return self

    def _encode_targets(self, Y, dtype):
        """What the engine's loss reads: int64 labels (softmax) or a float block."""
        if self.out_activation_ == "softmax":
            return None, np.ascontiguousarray(Y.argmax(axis=1), dtype=np.int64)
        if self.out_activation_ == "exp" and (Y < 0).any():
            raise ValueError("loss='poisson' needs non-negative targets y")
        return np.ascontiguousarray(Y, dtype=dtype), None

    def _new_optimizer(self):
        if self.solver == "sgd":
            nesterov = self.nesterovs_momentum and self.momentum > 0
            return _ScikitSGD(lr=self.learning_rate_init, momentum=self.momentum, nesterov=nesterov)
        return _ScikitAdam(lr=self.learning_rate_init, betas=(self.beta_1, self.beta_2),
                           eps=self.epsilon)

    def _set_learning_rate(self, lr):
        """Change SGD's rate as scikit-learn does: its velocity v = -lr * b carries the
        old rate, so the momentum buffer b is rescaled to keep v."""
        optimizer = self._optimizer
        if lr != optimizer.lr and optimizer.steps > 0 and getattr(optimizer, "momentum", 0):
            for state in optimizer.state:
                state[0] *= optimizer.lr / lr
        optimizer.lr = lr

    def _validation_split(self, n_samples, Y, rng, first_pass):
        """(train rows, validation rows): scikit-learn's train_test_split, drawn from the
        same random numbers; warm starts reuse the first fit's split."""
        if first_pass or self._split_state is None:
            self._split_state = rng.get_state()
            split_rng = rng
        else:
            split_rng = np.random.RandomState()
            split_rng.set_state(self._split_state)
        stratify = Y if is_classifier(self) and self.n_outputs_ == 1 else None
        train, val = train_test_split(np.arange(n_samples), random_state=split_rng,
                                      test_size=self.validation_fraction, stratify=stratify)
        if val.shape[0] < 2:
            raise ValueError("The validation set is too small. Increase "
                             "'validation_fraction' or the size of your dataset.")
        return train.astype(np.int64), val

    def _fit_stochastic(self, X, Y, targets, labels, weights, rng, incremental,
                        first_pass):
        model = self._current_model()
        engine = model.engine
        if not incremental or getattr(self, "_optimizer", None) is None:
            self._optimizer = self._new_optimizer()
        optimizer = self._optimizer
        optimizer._bind(model.parameters())
        w_val = None
        if self.early_stopping:
            rows, val_rows = self._validation_split(X.shape[0], Y, rng, first_pass)
            X_val = X[val_rows]
            y_val = Y[val_rows]
            if weights is not None:
                w_val = weights[val_rows]
            if is_classifier(self):
                y_val = self._label_binarizer.inverse_transform(y_val)
            elif y_val.shape[1] == 1:
                y_val = y_val.ravel()
        else:
            rows = None
            X_val = y_val = None
        n_samples = X.shape[0] if rows is None else rows.shape[0]
        kind, n_run, factor = self._loss_terms()
        constants = _poisson_constants(targets) if self.out_activation_ == "exp" else None
        if self.batch_size == "auto":
            batch_size = min(200, n_samples)
        else:
            if self.batch_size > n_samples:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. "
                              "It is going to be clipped", stacklevel=4)
            batch_size = int(np.clip(self.batch_size, 1, n_samples))
        X_rows = _engine_rows(X, model.dtype)
        sample_idx = np.arange(n_samples)
        self.n_iter_ = 0
        diverged = False
        try:
            for _ in range(self.max_iter):
                if self.shuffle:
                    sample_idx = _shuffle(sample_idx, random_state=rng)
                    order = sample_idx if rows is None else rows[sample_idx]
                else:
                    order = rows
                if order is not None:
                    order = np.ascontiguousarray(order, dtype=np.int64)
                if not diverged:
                    diverged = self._train_epoch(engine, X_rows, targets, labels, weights,
                                                 order, batch_size, kind, n_run)
                self.n_iter_ += 1
                if diverged:  # scikit-learn trains on with NaN weights: the loss is NaN
                    self.loss_ = np.nan
                else:
                    self.loss_ = self._epoch_loss(engine, factor, constants, weights, order,
                                                  n_samples, batch_size)
                self.t_ += n_samples
                self.loss_curve_.append(self.loss_)
                if self.verbose:
                    print("Iteration %d, loss = %.8f" % (self.n_iter_, self.loss_))
                self._update_no_improvement_count(X_val, y_val, w_val, diverged)
                if self.solver == "sgd" and self.learning_rate == "invscaling":
                    self._set_learning_rate(self.learning_rate_init
                                            / (self.t_ + 1) ** self.power_t)
                if self._no_improvement_count > self.n_iter_no_change:
                    if self._stop_or_slow_down():
                        break
                    self._no_improvement_count = 0
                if incremental:
                    break
                if self.n_iter_ == self.max_iter:
                    warnings.warn(f"Stochastic Optimizer: Maximum iterations "
                                  f"({self.max_iter}) reached and the optimization hasn't "
                                  f"converged yet.", ConvergenceWarning, stacklevel=4)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.", stacklevel=4)
        if self.early_stopping:  # restore the best weights
            for coef, best in zip(self.coefs_, self._best_coefs):
                coef[...] = best
            for intercept, best in zip(self.intercepts_, self._best_intercepts):
                intercept[...] = best

    def _train_epoch(self, engine, X, targets, labels, weights, order, batch_size, kind,
                     n_run):
        """One epoch in the engine; returns whether a batch's loss was not finite. Without
        early stopping that is scikit-learn's ValueError (the weights stay those before
        the step); with it, the fit goes on as scikit-learn's does."""
        engine.reset_penalty_sum()
        result = train_epoch(engine, self._optimizer, X, targets, labels, weights,
                             batch_size, kind, n_run, order=order)
        self._loss_sum = result.loss_sum
        if result.failed and not self.early_stopping:
            raise ValueError(_DIVERGED)
        return result.failed

    def _epoch_loss(self, engine, factor, constants, weights, order, n_samples, batch_size):
        """scikit-learn's loss_ for the epoch just trained: the batches' mean losses (with
        the penalty's share), weighted by their rows."""
        loss = (self._loss_sum * factor + engine.penalty_sum) / n_samples
        if constants is not None:
            order = np.arange(n_samples) if order is None else order
            if weights is None:
                loss += float(np.mean(constants[order]))
            else:
                loss += _epoch_constant(constants, weights, order, batch_size)
        return loss

    def _update_no_improvement_count(self, X_val, y_val, w_val, diverged):
        if self.early_stopping:
            score = np.nan if diverged else self._score(X_val, y_val, w_val)
            self.validation_scores_.append(score)
            if self.verbose:
                print("Validation score: %f" % score)
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_coefs = [c.copy() for c in self.coefs_]
                self._best_intercepts = [b.copy() for b in self.intercepts_]
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]

    def _stop_or_slow_down(self):
        """After n_iter_no_change epochs without improvement: True to stop, or (adaptive
        SGD) divide the learning rate by 5 and go on."""
        what = "Validation score" if self.early_stopping else "Training loss"
        msg = (f"{what} did not improve more than tol={self.tol:f} for "
               f"{self.n_iter_no_change} consecutive epochs.")
        if self.solver != "sgd" or self.learning_rate != "adaptive":
            if self.verbose:
                print(msg + " Stopping.")
            return True
        if self._optimizer.lr <= 1e-6:
            if self.verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self._set_learning_rate(self._optimizer.lr / 5.0)
        if self.verbose:
            print(msg + " Setting learning rate to %f" % self._optimizer.lr)
        return False

    def _loss_grad_lbfgs(self, packed, X, y, sample_weight=None, *work_arrays):
        """scikit-learn's objective for L-BFGS (its tests call it by this name): (loss,
        gradient) at `packed`, the coefs_ then intercepts_ raveled in scikit-learn's
        order, which become the model's weights. X and y as scikit-learn's _backprop
        takes them (y 2-D: binarized labels for classifiers); work_arrays, scikit-learn's
        buffers, are not needed here."""
        model = self._current_model()
        params = self.coefs_ + self.intercepts_
        bounds = np.cumsum([0] + [p.size for p in params])
        for p, lo, hi in zip(params, bounds[:-1], bounds[1:]):
            p[...] = packed[lo:hi].reshape(p.shape)
        Y = np.asarray(y)
        Y = Y.reshape(-1, 1) if Y.ndim == 1 else Y
        targets, labels = self._encode_targets(Y, model.dtype)
        weights = None if sample_weight is None else \
            np.ascontiguousarray(sample_weight, dtype=model.dtype)
        X = _engine_rows(X, model.dtype)
        kind, n_run, factor = self._loss_terms()
        n = X.shape[0]
        loss_sum, _ = model.engine.run(X, None, targets, labels, kind, True, n_run,
                                        min(n, 1024), get_num_threads(), weights)
        total = n if weights is None else float(np.sum(weights, dtype=np.float64))
        penalty = sum(float(np.dot(c.ravel(), c.ravel())) for c in self.coefs_)
        loss = (loss_sum * factor + 0.5 * self.alpha * penalty) / total
        if self.out_activation_ == "exp":
            loss += float(np.average(_poisson_constants(targets), weights=weights))
        grads = model.engine.grads  # W (n_out, n_in), b, ... in the model's order
        packed_grad = [g.T.ravel() for g in grads[0::2]] + [g.ravel() for g in grads[1::2]]
        return loss, np.concatenate(packed_grad).astype(np.float64)

    def _fit_lbfgs(self, X, Y, weights):
        """scipy's L-BFGS-B on the full-batch loss, the engine computing loss and gradient."""
        X = _engine_rows(X, self._current_model().dtype)
        packed = np.concatenate([p.ravel() for p in self.coefs_ + self.intercepts_])
        result = scipy.optimize.minimize(
            self._loss_grad_lbfgs, packed.astype(np.float64), args=(X, Y, weights),
            method="L-BFGS-B", jac=True,
            options={"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol})
        if result.status != 0:
            warnings.warn(f"lbfgs failed to converge after {result.nit} iterations "
                          f"(status={result.status}): {result.message}. Increase max_iter or "
                          f"scale the data.", ConvergenceWarning, stacklevel=4)
        self.n_iter_ = min(result.nit, self.max_iter)
        self._loss_grad_lbfgs(result.x, X, Y, weights)  # the weights of the result
        self.loss_ = float(result.fun)
        if not all(np.isfinite(p).all() for p in self.coefs_ + self.intercepts_):
            raise ValueError(_DIVERGED)

    # -- predict --------------------------------------------------------------------

    def _forward(self, X, check_input=True):
        """The network's output after its output activation, (n_samples, n_outputs)."""
        check_is_fitted(self)
        if check_input:
            X = validate_data(self, X, dtype=(np.float64, np.float32), reset=False,
                              accept_sparse=["csr", "csc", "coo"])
        model = self._current_model()
        with _maybe_threads(self.n_threads):
            out = model.predict(X)
        if self.out_activation_ == "exp":
            np.exp(out, out=out)
        return out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.target_tags.multi_output = True
        return tags


_PARAMETERS_DOC = """
    Parameters, defaults and fitted attributes are scikit-learn's (see its
    documentation), plus:

    dtype : {"float32", "float64"} or None, default=None
        The precision of training and prediction; None follows X (float32 X trains in
        float32, anything else in float64, as scikit-learn). "float32" is about twice as
        fast and halves the memory.
    n_threads : int or None, default=None
        Threads for fastnn's kernels and BLAS during fit and predict (None: the current
        fastnn.set_num_threads setting; -1: all cores).
"""


class MLPClassifier(ClassifierMixin, _BaseMLP):
    __doc__ = """Multi-layer perceptron classifier, scikit-learn's MLPClassifier trained by
    fastnn's engine: log-loss with softmax outputs for several classes and logistic
    outputs for two classes and multi-label (2-D 0/1) targets.
    """ + _PARAMETERS_DOC + """    class_weight : "balanced", dict or None, default=None
        Each row's loss weighted by its class's weight, as scikit-learn's classifiers
        define it ("balanced": n_samples / (n_classes * rows of the class)), times its
        sample_weight. partial_fit takes a dict only.
"""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 dtype=None, n_threads=None, class_weight=None):
        _keep_parameters(self, locals())

    def _with_class_weight(self, y, sample_weight, incremental):
        """sample_weight times each row's class weight (class_weight: None, "balanced" or
        {label: weight}, as scikit-learn's classifiers take it)."""
        if self.class_weight is None:
            return sample_weight
        if incremental and self.class_weight == "balanced":
            raise ValueError("class_weight='balanced' is not supported for partial_fit: "
                             "the class frequencies of one batch are not the data's; give "
                             "a dict of weights")
        weights = compute_sample_weight(self.class_weight, y)
        return weights if sample_weight is None else \
            weights * _check_sample_weight(sample_weight, y, dtype=np.float64)

    def _output_activation(self):
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, multi_output=True, dtype=(np.float64, np.float32),
                             accept_sparse=["csr", "csc", "coo"],
                             reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            binarizer = LabelBinarizer().fit(y)
            self._label_binarizer = binarizer
            self.classes_ = binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(f"warm_start can only be used where `y` has the same "
                                     f"classes as in the previous call to fit. Previously "
                                     f"got {self.classes_}, `y` has {classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` "
                                 f"has {self.classes_}. 'y' has {classes}.")
        return X, self._label_binarizer.transform(y).astype(bool)

    def fit(self, X, y, sample_weight=None):
        """Train on X (n_samples, n_features), dense or sparse, and labels y
        (n_samples,), or 2-D 0/1 targets (n_samples, n_labels) for multi-label
        classification; sample_weight (n_samples,) weights each row's loss, times its
        class's weight under class_weight. Returns self."""
        return self._fit(X, y, self._with_class_weight(y, sample_weight, False),
                         incremental=False)

    @available_if(_stochastic_solver)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y) (sample_weight as in fit); `classes` (every label the
        model will see) is required on the first call. Returns self."""
        if not hasattr(self, "classes_"):
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            binarizer = LabelBinarizer()
            binarizer.fit(y if type_of_target(y).startswith("multilabel") else classes)
            self._label_binarizer = binarizer
            self.classes_ = binarizer.classes_
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"`classes={classes!r}` is not the same as on the first call to "
                             f"partial_fit, was: {self.classes_!r}")
        return self._fit(X, y, self._with_class_weight(y, sample_weight, True),
                         incremental=True)

    def _predict(self, X, check_input=True):
        y_prob = self._forward(X, check_input)
        if self.n_outputs_ == 1:
            y_prob = y_prob.ravel()
        return self._label_binarizer.inverse_transform(y_prob)

    def predict(self, X):
        """Predicted class labels (n_samples,), or 0/1 (n_samples, n_labels) multi-label."""
        return self._predict(X)

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes), columns in the order of classes_."""
        y_prob = self._forward(X)
        if self.n_outputs_ == 1:
            y_prob = y_prob.ravel()
            return np.vstack([1 - y_prob, y_prob]).T
        return y_prob

    def predict_log_proba(self, X):
        """log(predict_proba(X))."""
        y_prob = self.predict_proba(X)
        return np.log(y_prob, out=y_prob)

    def _score(self, X, y, sample_weight=None):
        y_pred = self._predict(X, check_input=False)
        if y_pred.dtype.kind == "f" and not np.isfinite(y_pred).all():
            return np.nan
        return accuracy_score(y, y_pred, sample_weight=sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    __doc__ = """Multi-layer perceptron regressor, scikit-learn's MLPRegressor trained by
    fastnn's engine: loss "squared_error" (half the mean squared error, identity
    outputs) or "poisson" (half the Poisson deviance, exp outputs).
    """ + _PARAMETERS_DOC

    _parameter_constraints = {**_BaseMLP._parameter_constraints,
                              "loss": [StrOptions({"squared_error", "poisson"})]}

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 dtype=None, n_threads=None):
        _keep_parameters(self, locals())

    def _output_activation(self):
        return "exp" if self.loss == "poisson" else "identity"

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True,
                             accept_sparse=["csr", "csc", "coo"],
                             dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return X, y

    def fit(self, X, y, sample_weight=None):
        """Train on X (n_samples, n_features), dense or sparse, and targets y
        (n_samples,) or (n_samples, n_outputs); sample_weight (n_samples,) weights each
        row's loss. Returns self."""
        return self._fit(X, y, sample_weight, incremental=False)

    @available_if(_stochastic_solver)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y) (sample_weight as in fit). Returns self."""
        return self._fit(X, y, sample_weight, incremental=True)

    def _predict(self, X, check_input=True):
        y_pred = self._forward(X, check_input)
        return y_pred.ravel() if y_pred.shape[1] == 1 else y_pred

    def predict(self, X):
        """Predictions (n_samples,) or (n_samples, n_outputs)."""
        return self._predict(X)

    def _score(self, X, y, sample_weight=None):
        y_pred = self._predict(X, check_input=False)
        if not np.isfinite(y_pred).all():
            return np.nan
        return r2_score(y, y_pred, sample_weight=sample_weight)
