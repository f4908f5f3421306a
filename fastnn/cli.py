"""The `fastnn` command: train on your own data (or MNIST), predict, evaluate, export, info,
bench.

    fastnn train data.csv --target label --save model.npz
    fastnn predict model.npz new.csv -o predictions.csv
    fastnn evaluate model.npz test.csv
"""
import argparse
import contextlib
import os
import platform
import sys
import time

from . import __version__
from ._files import check_output, write_file
from .layers import INITS

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta", "nadam")
ACTIVATIONS = ("relu", "tanh", "sigmoid", "leaky_relu", "gelu", "silu", "elu", "softplus")
SCHEDULES = ("none", "step", "exponential", "cosine", "plateau", "onecycle")
LOSSES = {"classification": ("cross_entropy",), "regression": ("mse", "l1", "huber")}


def info(args):
    from . import _engine, _threads
    print(f"fastnn {__version__} (python {platform.python_version()}, {platform.machine()})")
    blas = _threads.blas_info()
    print(f"BLAS: {blas.get('internal_api', '?')} {blas.get('version', '?')} (kernel "
          f"{blas.get('architecture', '?')}, {blas.get('num_threads', '?')} threads outside "
          f"fastnn), from scipy.linalg.cython_blas: {blas.get('filepath', '?')}")
    from threadpoolctl import threadpool_info
    for other in threadpool_info():  # numpy's own BLAS, which fastnn does not call
        if other["user_api"] == "blas" and other.get("filepath") != blas.get("filepath"):
            print(f"other BLAS in this process (numpy's; not used by fastnn): "
                  f"{other.get('internal_api', '?')} {other.get('version', '?')}, "
                  f"{other.get('filepath', '?')}")
    grain = _engine.tuning()["grain_flops"]
    print(f"threads: up to {_threads.get_num_threads()} (cores available: "
          f"{_threads.available_cores()}, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}); each call runs on a team sized "
          f"to its work (one thread per {grain / 1e6:g} MFLOP of a step's products)")
    print("busy machine: " + ("training runs on as many of those threads as the machine "
                              "leaves free, and where that is one, the others help it "
                              "tile by tile (no count fixed; the same results bit for bit)"
                              if _threads.adapts_to_load()
                              else "the fixed count is used as given"))
    group = _engine.neighbours_registry()
    print("other fastnn processes: " + (
        f"training with no count fixed, each takes its share of the CPUs it shares with "
        f"them (group {group}, seen through socket names, no file; FASTNN_NEIGHBOURS=off "
        f"turns it off)" if group
        else "not seen (FASTNN_NEIGHBOURS is off); each process sizes itself to the cores "
             "it gets"))
    pinned = ("pinned to 1 thread during fastnn's calls" if _engine.blas_controlled()
              else "limited to 1 thread by threadpoolctl during fastnn's calls")
    print(f"thread design: fastnn's own pthreads team runs every pass, each Dense layer's "
          f"products cut into a grid of row x unit tiles, one per thread; BLAS {pinned}; "
          f"no OpenMP")
    print("compiled dtypes: float32, float64")
    return 0


class CommandError(Exception):
    """A problem to report on one line (exit status 2), nothing written."""


# -- train ------------------------------------------------------------------------------

def _training_data(args, group=None):
    """(X, y, X_test, y_test or None, task, why that task, classes, feature names, target
    name, the TablePreprocessor of a table with missing cells or categorical columns or
    None).
    Data-parallel (group), X and y are this process's shard of the rows: a .npy file's
    features are memory-mapped so only the shard is read, the other formats are parsed
    whole and sliced; targets are encoded over every process's rows."""
    import numpy as np

    from .tabular import TablePreprocessor, choose_task, concat_columns, encode_target, read_table
    rows = None
    if group is not None:
        from .distributed import shard
        rows = lambda n: shard(n, group.comm)  # noqa: E731
    if args.data_files:
        # every process reads its part, and all raise if one of them cannot
        with group.collective() if group is not None else contextlib.nullcontext():
            table = read_table(args.data_files, target=args.target,
                               features=_names(args.features), rows=rows, sep=args.sep,
                               decimal=args.decimal)
        y, lines = table.y, table.lines
        if group is not None:  # the same classes (and task) on every process
            shards = group.comm.allgather(y)
            y, lines = np.concatenate(shards), None
        why = choose_task(y)[1] if args.task == "auto" else "--task"
        task, y, classes = encode_target(
            y, args.task, lines, args.data_files[-1] if group is None else None,
            table.target_name)
        if group is not None:
            start = sum(len(part) for part in shards[:group.rank])
            y = y[start:start + len(table)]
        X, preprocessing = table.X, None
        if _needs_preprocessing(table, group):
            # fitted on the rows fit trains on (each process's first rows), not on the
            # validation rows; data-parallel, on every process's, gathered in rank order
            n_rows = len(y) if group is None else sum(len(part) for part in shards)
            train_rows = int(len(table) * (1 - validation_fraction(args, n_rows)))
            columns = table.rows(0, train_rows).as_columns()
            if group is not None:
                columns = concat_columns(group.comm.allgather(columns))
            preprocessing = TablePreprocessor(max_one_hot=args.one_hot_max).fit(columns)
            X = preprocessing.transform(table.as_columns())
        return (X, y, None, None, task, why, classes, table.feature_names,
                table.target_name, preprocessing)
    from .datasets import load_mnist
    X, y = load_mnist(args.data_path, args.data, "train", download=args.download)
    X_test, y_test = load_mnist(args.data_path, args.data, "test", download=args.download)
    if args.task == "regression":
        raise CommandError(f"--data {args.data} is a classification task")
    if rows is not None:
        start, stop = rows(len(X))
        X, y = X[start:stop], y[start:stop]
    return (X, y.astype(np.int64), X_test, y_test.astype(np.int64), "classification",
            "--data", list(range(10)), None, None, None)


def _needs_preprocessing(table, group):
    """Whether a table has missing cells or text columns: on any process, data-parallel
    (where one shard may have none)."""
    needs = table.columns is not None
    return needs if group is None else any(group.comm.allgather(needs))


def _names(text):
    return None if text is None else [name.strip() for name in text.split(",") if name.strip()]


def embedding_dim(cardinalities):
    """The width of the learned vectors for coded columns of these cardinalities: fast.ai's
    rule of thumb round(1.6 n^0.56) for the largest n, at most MAX_EMBEDDING_DIM."""
    return min(MAX_EMBEDDING_DIM, max(2, round(1.6 * max(cardinalities) ** 0.56)))


# A text column with more distinct values than ONE_HOT_MAX is embedded, in vectors at
# most MAX_EMBEDDING_DIM wide. `python bench/bench_embedding.py --values 128,256,512,1000`
# (5,000 rows, Zen 4): one-hot and embedded score alike up to 256 values; at 512 the
# embedding scores R^2 0.973 against 0.965 and fits 1.7x faster, at 1000 0.957 against
# 0.949 and 2.9x faster.
ONE_HOT_MAX, MAX_EMBEDDING_DIM = 128, 16


def resnet_norm(args, data_parallel):
    """--resnet-norm, or by default "batch" (the paper's), "layer" when data-parallel
    (batch norm's batch statistics would be each process's: fit refuses it)."""
    return args.resnet_norm or ("layer" if data_parallel else "batch")


def build_model(n_features, n_outputs, args, preprocessing=None, data_parallel=False):
    """Dense layers of --hidden widths (--init), each hidden one followed by batch norm
    (with --batch-norm) or layer norm (--layer-norm), the activation, and dropout (with
    --dropout); or, --arch resnet, fastnn.models.tabular_resnet of --hidden's first width
    and one block per width (--dropout inside each block), normalized by --resnet-norm
    (default batch norm, layer norm when data-parallel). Where the preprocessing codes
    categorical columns (more values than --one-hot-max), an Embedding of them comes
    first (--embedding-dim), the vector of a value never seen in training zero."""
    import fastnn as fnn

    from .models import _embedding, tabular_resnet
    hidden = args.hidden
    columns = cardinalities = ()
    if preprocessing is not None and preprocessing.code_columns:
        columns, cardinalities = preprocessing.code_columns, preprocessing.cardinalities
    dim = args.embedding_dim or (embedding_dim(cardinalities) if columns else 0)
    if args.arch == "resnet":
        model = tabular_resnet(n_features, n_outputs, n_blocks=len(hidden), d_main=hidden[0],
                               dropout_first=args.dropout, init=args.init, dtype=args.dtype,
                               seed=args.seed, cat_columns=columns,
                               cat_cardinalities=cardinalities, d_embedding=dim,
                               normalization=resnet_norm(args, data_parallel) + "norm")
        return _unseen_codes_zero(model)
    layers, width = _embedding(n_features, columns, cardinalities, dim)
    for h in hidden:
        layers.append(fnn.Dense(width, h, init=args.init))
        if args.batch_norm:
            layers.append(fnn.BatchNorm1d(h))
        if args.layer_norm:
            layers.append(fnn.LayerNorm(h))
        layers.append(args.activation)
        if args.dropout > 0:
            layers.append(fnn.Dropout(args.dropout))
        width = h
    layers.append(fnn.Dense(width, n_outputs, init=args.init))
    return _unseen_codes_zero(fnn.Sequential(layers, dtype=args.dtype, seed=args.seed))


def _unseen_codes_zero(model):
    """Zero the vector of each coded column's last code (a value never seen in training,
    so never trained): such a value then adds nothing, as its one-hot columns would."""
    first = model.layers[0]
    if first.kind == "embedding":
        offsets = first._arrays["offsets"]
        first.weight[offsets + first._arrays["cardinalities"] - 1] = 0
    return model


# The command line's defaults for tables of any size: at most --epochs passes, ended by
# early stopping; a validation split only where it holds enough rows to judge by (and
# early stopping uses it), else the training loss decides, as scikit-learn's MLP does by
# default; batches of at most BATCH_ROWS rows (scikit-learn's 200).
VALIDATION_FRACTION, VALIDATION_ROWS, BATCH_ROWS = 0.1, 30, 200


def validation_fraction(args, n_rows):
    """The fraction of the rows held out for validation: --validation-split, or by
    default VALIDATION_FRACTION where early stopping uses it and it is at least
    VALIDATION_ROWS rows, else none."""
    if args.validation_split is not None:
        return args.validation_split
    if args.patience and n_rows * VALIDATION_FRACTION >= VALIDATION_ROWS:
        return VALIDATION_FRACTION
    return 0.0


def _optimizer(args):
    from .optim import get_optimizer
    settings = {}
    if args.lr is not None:
        settings["lr"] = args.lr
    if args.optimizer in ("sgd", "rmsprop"):
        settings["momentum"] = args.momentum
    if args.weight_decay is not None:
        settings["weight_decay"] = args.weight_decay
    return get_optimizer(args.optimizer, **settings)


def _schedule(args, optimizer, steps_per_epoch):
    from . import optim
    return {"none": lambda: None,
            "step": lambda: optim.StepLR(step_size=max(1, args.epochs // 3), gamma=0.1),
            "exponential": lambda: optim.ExponentialLR(gamma=0.95),
            "cosine": lambda: optim.CosineAnnealingLR(T_max=max(1, args.epochs)),
            "plateau": lambda: optim.ReduceLROnPlateau(patience=2),
            "onecycle": lambda: optim.OneCycleLR(
                optimizer.lr, args.epochs * steps_per_epoch,
                cycle_momentum=args.optimizer in ("sgd", "adam", "adamw", "nadam"))}[
        args.schedule]()


def _loss(args, task):
    """The loss object for the task: --loss (checked against the task), with
    --label-smoothing (classification) or Huber's delta 1 (on the standardized target)."""
    import fastnn as fnn
    name = args.loss if args.loss != "auto" else LOSSES[task][0]
    if name not in LOSSES[task]:
        raise CommandError(f"--loss {name} is not a {task} loss; use one of "
                           f"{', '.join(LOSSES[task])}")
    if args.label_smoothing and task != "classification":
        raise CommandError("--label-smoothing is for classification")
    if args.class_weight and task != "classification":
        raise CommandError("--class-weight is for classification")
    if name == "cross_entropy":
        return fnn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    return fnn.HuberLoss() if name == "huber" else name


def _standardization(X, group=None):
    """Each column's mean and standard deviation (1 for a constant column); data-parallel,
    over every process's rows."""
    if group is None:
        mean, std = X.mean(axis=0), X.std(axis=0)
    else:
        n = group.sum([X.shape[0]])[0]
        mean = group.sum(X.sum(axis=0)) / n
        std = (group.sum(((X - mean) ** 2).sum(axis=0)) / n) ** 0.5
    std[std == 0] = 1.0
    return mean, std


def _standardized_columns(X, preprocessing, group=None):
    """_standardization of X's columns, but mean 0 and std 1 for coded columns (their
    codes index an Embedding and are never scaled)."""
    mean, std = _standardization(X, group)
    if preprocessing is not None:
        mean[preprocessing.code_columns], std[preprocessing.code_columns] = 0.0, 1.0
    return mean, std


def fold_standardization(model, mean, std, y_mean=None, y_std=None):
    """Make a model trained on (X - mean) / std (predicting (y - y_mean) / y_std) a model
    of the raw X and y: the first Dense layer absorbs the input scaling, the last the
    target's, so the saved model needs no preprocessing. Behind an Embedding, that Dense
    layer reads the numeric columns first, in order, then the vectors of the coded
    columns (whose mean is 0 and std 1)."""
    first, last = model.layers[0], model.layers[-1]
    if first.kind == "embedding":
        numeric = first._arrays["numeric"]
        mean, std, first = mean[numeric], std[numeric], model.layers[1]
    weight = first.weight[:, :len(mean)]  # (a view: the numeric columns' weights)
    first.bias -= (weight * (mean / std)).sum(axis=1).astype(first.bias.dtype)
    weight /= std.astype(first.weight.dtype)
    if y_mean is not None:
        last.weight *= last.weight.dtype.type(y_std)
        last.bias *= last.bias.dtype.type(y_std)
        last.bias += last.bias.dtype.type(y_mean)


def train(args):
    """Train and save a model. Started by mpirun with several processes, it trains
    data-parallel (fastnn.distributed): each process its shard of the rows, rank 0
    printing and saving."""
    import fastnn as fnn

    from .callbacks import EarlyStopping
    from .distributed import launched_group
    group = launched_group()
    say = print if group is None or group.is_root else (lambda *a, **k: None)
    _check_output(args.save, args.data_files, "--save")
    data = _training_data(args, group)
    X, y, X_test, y_test, task, why, classes, feature_names, target_name, prep = data
    n_outputs = len(classes) if task == "classification" else 1
    loss = _loss(args, task)
    model = build_model(X.shape[1], n_outputs, args, prep, data_parallel=group is not None)
    mean = std = y_mean = y_std = None
    X_test_raw = X_test
    if args.standardize:
        mean, std = _standardized_columns(X, prep, group)
        X = (X - mean) / std
        X_test = None if X_test is None else (X_test - mean) / std
        if task == "regression":
            y_mean, y_std = (float(v[0]) for v in _standardization(y.reshape(-1, 1), group))
            y = (y - y_mean) / y_std
            y_test = None if y_test is None else (y_test - y_mean) / y_std
    if task == "regression":
        y = y.reshape(-1, 1)
    n_rows = X.shape[0] if group is None else int(group.sum([X.shape[0]])[0])
    fraction = validation_fraction(args, n_rows)
    monitor = "val_loss" if fraction else "loss"
    stopping = EarlyStopping(monitor=monitor, patience=args.patience, min_delta=args.tol) \
        if args.patience else None
    n_val = int(n_rows - int(n_rows * (1 - fraction))) if fraction else 0
    batch_size = args.batch_size or min(BATCH_ROWS, n_rows - n_val)
    if args.batch_size is None and any(layer.kind == "batchnorm" for layer in model._plan):
        while (n_rows - n_val) % batch_size == 1 and batch_size > 2:  # no batch of 1 row
            batch_size -= 1
    if why not in ("--task", "--data"):
        other = "regression" if task == "classification" else "classification"
        say(f"task: {task}, as {why} (--task {other} to change it)")
    say(f"{task}: {n_rows} rows, {X.shape[1]} features"
        + (f", {len(classes)} classes" if task == "classification" else "")
        + _embedded_line(model)
        + f"; loss {getattr(loss, 'name', loss)}, optimizer {args.optimizer}"
        + ("" if group is None else f"; data-parallel over {group.size} processes"))
    if args.arch == "resnet" and args.resnet_norm is None and group is not None:
        say("resnet normalization: layer norm, as batch norm's batch statistics would be "
            "each process's (--resnet-norm to choose)")
    if args.verbose and say is print:
        model.summary()
    optimizer = _optimizer(args)
    steps = -(-(n_rows - n_val) // batch_size)
    start = time.perf_counter()
    with fnn.threads(args.threads) if args.threads else contextlib.nullcontext():
        history = model.fit(X, y, loss=loss, optimizer=optimizer, epochs=args.epochs,
                            batch_size=batch_size, verbose=args.verbose,
                            lr_schedule=_schedule(args, optimizer, steps),
                            validation_split=fraction,
                            callbacks=[stopping] if stopping else [], comm=group,
                            clip_grad_norm=args.clip_grad_norm,
                            class_weight=args.class_weight)
    seconds = time.perf_counter() - start
    if group is None or group.is_root:  # (the callbacks ran on rank 0)
        say(f"trained on {n_rows - n_val} rows" + (f", validated on {n_val}" if n_val else "")
            + f", batches of {batch_size}, {len(history['loss'])} epochs"
            + _stopping_line(stopping, args))
    if args.standardize:
        fold_standardization(model, mean, std, y_mean, y_std)
    model.classes = classes if task == "classification" and args.data_files else None
    model.feature_names, model.target_name = feature_names, target_name
    model.preprocessing = prep
    if X_test is not None:
        say(f"test: {_metrics_line(model, X_test_raw, y_test, task)}")
    say(f"trained in {seconds:.1f} s")
    if args.save:
        model.save(args.save)  # data-parallel: rank 0 writes it
        say(f"saved to {args.save}")
    return 0


def _embedded_line(model):
    first = model.layers[0]
    if first.kind != "embedding":
        return ""
    count = len(first.columns)
    return (f" ({count} of them text column{'s' if count > 1 else ''} with more than "
            f"--one-hot-max values, as learned vectors of {first.embedding_dim})")


def _stopping_line(stopping, args):
    if stopping is None:
        return f" (--patience 0: all {args.epochs})"
    what = "validation loss" if stopping.monitor == "val_loss" else "training loss"
    if stopping.stopped_epoch is None:
        return f" (the most, --epochs {args.epochs}: the {what} was still improving)"
    return (f"; early stopping: the {what} did not improve by {args.tol:g} in "
            f"{stopping.patience} epochs after epoch {stopping.best_epoch + 1}, whose "
            f"weights are kept")


def _metrics_line(model, X, y, task):
    import numpy as np
    if task == "classification":
        result = model.evaluate(X, y)
        return f"loss {result['loss']:.4f}, accuracy {result['accuracy']:.4f}"
    pred = model.predict(X)[:, 0].astype(np.float64)
    rmse = float(np.sqrt(np.mean((pred - y) ** 2)))
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1 - float(np.sum((pred - y) ** 2)) / total if total > 0 else float("nan")
    return f"mse {rmse ** 2:.6g}, rmse {rmse:.6g}, r2 {r2:.4f}"


# -- predict and evaluate ---------------------------------------------------------------

def _check_output(path, inputs, option):
    try:
        check_output(path, inputs, option)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _load_model(path):
    from .serialization import load
    try:
        return load(path)
    except FileNotFoundError:
        raise CommandError(f"{path}: no such model file") from None
    except ValueError as exc:
        raise CommandError(f"{path}: {exc}") from None


def _model_task(model):
    if model.loss is None:
        raise CommandError("the model file does not say which loss it was trained with")
    return "classification" if model.loss.classification else "regression"


def _model_data(model, args, need_target):
    """(the table in DATA, the features the model reads): its saved feature columns when
    it has them (CSV, Parquet), through its preprocessing when it has one; the target
    column when asked."""
    import numpy as np

    from .tabular import read_table
    table = read_table(args.data_files, target=args.target or model.target_name,
                       features=model.feature_names, need_target=need_target, sep=args.sep,
                       decimal=args.decimal)
    if model.preprocessing is not None:
        try:
            return table, model.preprocessing.transform(table.as_columns())
        except ValueError as exc:
            raise CommandError(f"{args.data_files[0]}: {exc}") from None
    if table.X is None:
        missing = [name for name, cells in table.columns.items()
                   if not isinstance(cells, np.ndarray) or np.isnan(cells).any()]
        raise CommandError(f"{args.data_files[0]}: column {missing[0]!r} has missing cells "
                           f"or text, but the model was trained on numbers only")
    if table.X.shape[1] != model.n_features:
        raise CommandError(f"{args.data_files[0]}: {table.X.shape[1]} feature columns, but "
                           f"the model reads {model.n_features}")
    return table, table.X


def predict(args):

    from .tabular import decode_labels
    _check_output(args.output, [args.model] + args.data_files, "-o/--output")
    model = _load_model(args.model)
    task = _model_task(model)
    table, X = _model_data(model, args, need_target=False)
    if task == "classification":
        proba = model.predict_proba(X)
        if args.proba:
            names = model.classes if model.classes is not None else range(proba.shape[1])
            header, columns = [f"p({c})" for c in names], proba.T
        else:
            header = [model.target_name or "prediction"]
            columns = [decode_labels(proba.argmax(axis=1), model.classes)]
    else:
        if args.proba:
            raise CommandError("--proba is for classification models; this one regresses")
        header, columns = [model.target_name or "prediction"], [model.predict(X)[:, 0]]
    _write_csv(args.output, header, columns)
    return 0


def _write_csv(path, header, columns):
    """Write the columns as CSV to path (fastnn._files: all or nothing, and never over a
    special file) or to stdout."""
    import csv
    rows = zip(*[[_cell(v) for v in column] for column in columns])

    def write(f):
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)

    if path is None:
        write(sys.stdout)
    else:
        write_file(path, write, text=True)


def _cell(value):
    import numpy as np
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return value.item() if isinstance(value, np.generic) else value


def evaluate(args):
    import numpy as np

    from .tabular import encode_target
    model = _load_model(args.model)
    task = _model_task(model)
    table, X = _model_data(model, args, need_target=True)
    if task == "classification":
        if model.classes is not None:
            index = {str(c): i for i, c in enumerate(model.classes)}
            names = [str(_label_key(v)) for v in table.y]
            unknown = sorted({n for n in names if n not in index})
            if unknown:
                raise CommandError(f"{args.data_files[0]}: labels the model never saw: "
                                   f"{unknown[:10]}")
            y = np.array([index[n] for n in names], dtype=np.int64)
        else:
            _, y, _ = encode_target(table.y, "classification")
    else:
        _, y, _ = encode_target(table.y, "regression")
    print(f"{len(y)} rows: {_metrics_line(model, X, y, task)}")
    return 0


def _label_key(value):
    """A label as the classes were saved: "1.0" and 1 name class 1, "cat" names "cat"."""
    try:
        number = float(value)
        return int(number) if number == int(number) else value
    except (TypeError, ValueError, OverflowError):
        return value


def export(args):
    _check_output(args.output, [args.model], "output")
    model = _load_model(args.model)
    model.export_onnx(args.output)
    print(f"wrote {args.output}")
    return 0


# -- the parser -------------------------------------------------------------------------

class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help lines end with "(default: ...)" unless the help text already says what
    happens by default, or the option is a flag or has no value by default."""

    def _get_help_string(self, action):
        if action.default is None or action.default is argparse.SUPPRESS \
                or action.nargs == 0 or "default" in action.help:
            return action.help
        return super()._get_help_string(action)


def _widths(text):
    """--hidden: comma-separated positive widths ("" for none)."""
    try:
        widths = [int(w) for w in _names(text)]
    except ValueError:
        widths = None
    if widths is None or any(w <= 0 for w in widths):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive layer widths, like 256,128; got {text!r}")
    return widths


def _number_in(kind, low, high=None, low_open=False, high_open=False, what=""):
    """An argparse type: a `kind` number in [low, high] (ends open as asked)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        ok = value is not None and (value > low if low_open else value >= low) and (
            high is None or (value < high if high_open else value <= high))
        if not ok:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return parse


_POSITIVE = _number_in(int, 1, what="a whole number of at least 1")
_COUNT = _number_in(int, 0, what="a whole number of at least 0")
_FRACTION = _number_in(float, 0.0, 1.0, high_open=True, what="a number in [0, 1)")
_RATE = _number_in(float, 0.0, low_open=True, what="a number above 0")
_NONNEGATIVE = _number_in(float, 0.0, what="a number of at least 0")


def _csv_options(command):
    command.add_argument("--sep", default=None,
                         help="a CSV's field separator (default: the one of , ; tab | that "
                              "its header line uses, else ,)")
    command.add_argument("--decimal", choices=[".", ","], default=".",
                         help="the decimal mark of a CSV's numbers")


def _parser():
    formatter = _DefaultsFormatter
    parser = argparse.ArgumentParser(prog="fastnn", description=__doc__.splitlines()[0],
                                     formatter_class=formatter)
    parser.add_argument("--version", action="version", version=f"fastnn {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="version, BLAS, threads, compiled dtypes")

    t = commands.add_parser(
        "train", formatter_class=formatter, help="train an MLP on your data or MNIST",
        description="Train an MLP on a CSV, .npz, .npy pair or Parquet file (or MNIST). "
                    "Integer or string targets make a classifier (cross-entropy), other "
                    "numbers a regressor (MSE).")
    t.add_argument("data_files", nargs="*", metavar="DATA",
                   help="a .csv (header row), .npz (arrays X, y) or .parquet file, or "
                        "two .npy files (X, y); none: --data")
    t.add_argument("--data", choices=["mnist", "fashion_mnist"], default="mnist",
                   help="the built-in data set, when no DATA is given")
    t.add_argument("--data-path", default=None,
                   help="folder of the MNIST IDX files (default: $FASTNN_DATA, else the "
                        "cache folder, downloading them there)")
    t.add_argument("--no-download", dest="download", action="store_false",
                   help="fail instead of downloading missing MNIST files")
    t.add_argument("--target", default=None,
                   help="the target column (CSV, Parquet: default the last column) or "
                        "the .npz key (default y)")
    t.add_argument("--features", default=None,
                   help="comma-separated feature columns (default: all but the target)")
    _csv_options(t)
    t.add_argument("--task", choices=["auto", "classification", "regression"],
                   default="auto", help="auto: follow the target's values")
    t.add_argument("--one-hot-max", type=_COUNT, default=ONE_HOT_MAX,
                   help="a text column with more distinct values than this gets learned "
                        "vectors (an Embedding) instead of one-hot columns")
    t.add_argument("--embedding-dim", type=_POSITIVE, default=None,
                   help="the width of those vectors (default: round(1.6 n^0.56) for the "
                        f"largest column's n values, at most {MAX_EMBEDDING_DIM})")
    t.add_argument("--arch", choices=["mlp", "resnet"], default="mlp",
                   help="mlp: Dense layers of the hidden widths; resnet: the tabular "
                        "ResNet (fastnn.models) as wide as the first hidden width, a "
                        "residual block per hidden width")
    t.add_argument("--resnet-norm", choices=["batch", "layer"], default=None,
                   help="--arch resnet's normalization: batch norm (the paper's) or layer "
                        "norm (default: batch; layer when trained data-parallel under "
                        "mpirun, where batch norm is refused)")
    t.add_argument("--hidden", type=_widths, default="256,128",
                   help="hidden layer widths, comma-separated")
    t.add_argument("--activation", choices=ACTIVATIONS, default="relu",
                   help="the hidden layers' activation")
    t.add_argument("--dropout", type=_FRACTION, default=0.0,
                   help="dropout probability after each hidden layer (0: none)")
    t.add_argument("--batch-norm", action="store_true",
                   help="batch normalization after each hidden Dense layer")
    t.add_argument("--layer-norm", action="store_true",
                   help="layer normalization after each hidden Dense layer")
    t.add_argument("--optimizer", choices=OPTIMIZERS, default="adam", help="the optimizer")
    t.add_argument("--lr", type=_RATE, default=None,
                   help="learning rate (default: the optimizer's: sgd 0.01, adam/adamw "
                        "0.001, rmsprop/adagrad 0.01)")
    t.add_argument("--momentum", type=_NONNEGATIVE, default=0.9,
                   help="momentum (sgd, rmsprop)")
    t.add_argument("--weight-decay", type=_NONNEGATIVE, default=None,
                   help="weight decay (default: the optimizer's: 0, adamw 0.01)")
    t.add_argument("--epochs", type=_POSITIVE, default=200,
                   help="the most passes over the data (early stopping, see patience, "
                        "usually ends the fit sooner)")
    t.add_argument("--batch-size", type=_POSITIVE, default=None,
                   help="rows per step (default: 200, or every row of a smaller table)")
    t.add_argument("--validation-split", type=_FRACTION, default=None,
                   help="fraction of rows (from the end) held out to validate each epoch "
                        f"(default: {VALIDATION_FRACTION} where that is at least "
                        f"{VALIDATION_ROWS} rows and early stopping uses it, else none)")
    t.add_argument("--patience", type=_COUNT, default=10,
                   help="stop after this many epochs in which the loss did not improve by "
                        "the tolerance (tol), keeping the best weights: the validation loss "
                        "where there are validation rows, else the training loss (0: never "
                        "stop early)")
    t.add_argument("--tol", type=_NONNEGATIVE, default=1e-4,
                   help="the least improvement of the loss that counts (see patience)")
    t.add_argument("--init", choices=INITS, default="glorot",
                   help="weight initialisation of the Dense layers")
    t.add_argument("--schedule", choices=SCHEDULES, default="none",
                   help="learning-rate schedule: step (x0.1 every third of the epochs), "
                        "exponential (x0.95 an epoch), cosine, plateau (x0.1 after 2 "
                        "epochs without improvement), onecycle (per step, peaking at the "
                        "learning rate, over --epochs)")
    t.add_argument("--loss", choices=["auto"] + [n for v in LOSSES.values() for n in v],
                   default="auto",
                   help="auto: cross_entropy (classification), mse (regression); huber "
                        "and l1 for regression with outliers")
    t.add_argument("--label-smoothing", type=_FRACTION, default=0.0,
                   help="cross-entropy's label smoothing (classification)")
    t.add_argument("--class-weight", choices=["balanced"], default=None,
                   help="weight each class's rows by n / (classes x its rows)")
    t.add_argument("--clip-grad-norm", type=_RATE, default=None,
                   help="clip each step's gradient to this norm")
    t.add_argument("--no-standardize", dest="standardize", action="store_false",
                   help="train on the raw features (default: scaled to mean 0, std 1, "
                        "the scaling folded into the saved model)")
    t.add_argument("--threads", type=_POSITIVE, default=None,
                   help="most threads to use (default: all available cores)")
    t.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                   help="precision of the parameters and the computation")
    t.add_argument("--seed", type=int, default=0, help="seeds initialisation and shuffling")
    t.add_argument("--verbose", type=int, choices=[0, 1, 2], default=1,
                   help="0: totals only, 1: the model and a line per epoch, 2: also a "
                        "progress bar")
    t.add_argument("--save", default=None,
                   help="write the trained model to this .npz file (default: not saved)")

    p = commands.add_parser("predict", formatter_class=formatter,
                            help="predict with a saved model",
                            description="Predict with a saved model: a CSV with the "
                                        "predicted labels (or values, or probabilities).")
    p.add_argument("model", help="a model file written by fastnn train --save")
    p.add_argument("data_files", nargs="+", metavar="DATA",
                   help="the rows to predict: .csv, .npz (X), .npy or .parquet")
    p.add_argument("-o", "--output", default=None, help="write the CSV here (default stdout)")
    p.add_argument("--proba", action="store_true",
                   help="class probabilities, a column per class (classifiers)")
    p.add_argument("--target", default=None, help=argparse.SUPPRESS)
    _csv_options(p)

    e = commands.add_parser("evaluate", formatter_class=formatter,
                            help="a saved model's loss and accuracy (or RMSE, R^2)",
                            description="Loss and accuracy (classifiers) or MSE, RMSE and "
                                        "R^2 (regressors) of a saved model on labelled "
                                        "data.")
    e.add_argument("model", help="a model file written by fastnn train --save")
    e.add_argument("data_files", nargs="+", metavar="DATA",
                   help="labelled rows: .csv, .npz (X, y), two .npy files or .parquet")
    e.add_argument("--target", default=None,
                   help="the target column (default: the one the model was trained on, "
                        "else the last)")
    _csv_options(e)
    x = commands.add_parser("export", formatter_class=formatter,
                            help="write a saved model as ONNX (needs the onnx package)",
                            description="Write what a saved model's predict computes as "
                                        "an ONNX graph (input 'input', output 'output').")
    x.add_argument("model", help="a model file written by fastnn train --save")
    x.add_argument("output", help="the .onnx file to write")
    commands.add_parser("bench", help="time fastnn against the GEMM floor and torch "
                                      "(`fastnn bench --help` for its options)")
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # its own options, parsed by fastnn.benchmark
        from .benchmark import main as bench_main
        return bench_main(argv[1:])
    args = _parser().parse_args(argv)
    from .tabular import DataError
    try:
        return {"info": info, "train": train, "predict": predict, "evaluate": evaluate,
                "export": export}[args.command](args)
    except (CommandError, DataError, FileNotFoundError, ImportError) as exc:
        print(f"fastnn {args.command}: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # settings the model or optimizer refused
        print(f"fastnn {args.command}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (| head): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as exc:  # a full disk, a read-only folder (the path is in the message)
        print(f"fastnn {args.command}: {exc.strerror or exc}", file=sys.stderr)
        return 2
