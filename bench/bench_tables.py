"""Real tables: `fastnn train` with its defaults against scikit-learn's MLP (its defaults,
in a Pipeline) and HistGradientBoosting, on the tables bundled inside scikit-learn and
statsmodels (nothing is downloaded).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/bench_tables.py \
        [--seeds 5] [--tables iris,wine,...] [--fastnn-args "--init he"] [--json F]

Each table and seed: a 75/25 split (stratified for classification), the training part
written to a CSV as a user would have it (strings, blank cells and all), then
- fastnn: `fastnn train train.csv --target T --save m.npz` (the command line, in this
  process, with its defaults and --seed), scored from `fastnn predict m.npz test.csv`;
- scikit-learn MLP: MLPClassifier / MLPRegressor with their defaults (random_state=seed)
  after a ColumnTransformer (numbers: median imputation and StandardScaler; text: most
  frequent imputation and OneHotEncoder(handle_unknown="ignore"));
- HistGradientBoosting(Classifier|Regressor) with its defaults (categorical columns as
  pandas categories, missing cells as NaN);
- torch (where installed), the network and protocol of fastnn's defaults written in torch:
  the MLP's column preprocessing, a standardized regression target, Linear layers of 256
  and 128 units with ReLU, Glorot-uniform weights and zero biases, Adam(lr=1e-3),
  shuffled batches of min(200, rows), at most 200 epochs with early stopping (patience
  10, tol 1e-4, the best epoch's weights kept) on the last 10% of the rows where that is
  at least 30 rows, else on the training loss; torch.set_num_threads as fastnn's.
Reported per table: each tool's score on the held-out 25% (accuracy, or R^2), mean and
standard deviation over the seeds, and its mean fit time; and whether fastnn's command
line chose the table's task.
"""
import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
import warnings

import numpy as np


def sklearn_table(name, task):
    from sklearn import datasets
    bunch = getattr(datasets, f"load_{name}")(as_frame=True)
    frame = bunch.frame.copy()
    target = bunch.target.name if hasattr(bunch.target, "name") else "target"
    if task == "classification":  # class names, as a user's file would hold them
        frame[target] = np.asarray(bunch.target_names)[bunch.target.to_numpy()]
    return frame, target, task


def statsmodels_table(name, target, task, drop=()):
    import statsmodels.api as sm
    data = getattr(sm.datasets, name).load_pandas().data.drop(columns=list(drop))
    return data.reset_index(drop=True), target, task


TABLES = {
    "iris": lambda: sklearn_table("iris", "classification"),
    "wine": lambda: sklearn_table("wine", "classification"),
    "breast_cancer": lambda: sklearn_table("breast_cancer", "classification"),
    "diabetes": lambda: sklearn_table("diabetes", "regression"),
    "grunfeld": lambda: statsmodels_table("grunfeld", "invest", "regression"),
    "longley": lambda: statsmodels_table("longley", "TOTEMP", "regression"),
    "stackloss": lambda: statsmodels_table("stackloss", "STACKLOSS", "regression"),
    "macrodata": lambda: statsmodels_table("macrodata", "realgdp", "regression"),
    "spector": lambda: statsmodels_table("spector", "GRADE", "classification"),
    "fair": lambda: statsmodels_table("fair", "affairs", "regression"),
    "scotland": lambda: statsmodels_table("scotland", "YES", "regression"),
}


def split(frame, target, task, seed):
    from sklearn.model_selection import train_test_split
    return train_test_split(frame, test_size=0.25, random_state=seed,
                            stratify=frame[target] if task == "classification" else None)


def score(task, truth, predicted):
    from sklearn.metrics import accuracy_score, r2_score
    if task == "classification":
        return accuracy_score([_label(v) for v in truth], [_label(v) for v in predicted])
    return r2_score(np.asarray(truth, dtype=float), np.asarray(predicted, dtype=float))


def _label(value):
    """A class label as text, numbers by value ("1", 1 and 1.0 are one class)."""
    try:
        return repr(float(value))
    except (TypeError, ValueError):
        return str(value)


def run_fastnn(train, test, target, task, seed, folder, extra):
    """The command line on CSV files: (score, fit seconds, the task it chose)."""
    import pandas as pd

    from fastnn import cli
    train_csv, test_csv = os.path.join(folder, "train.csv"), os.path.join(folder, "test.csv")
    model, out = os.path.join(folder, "m.npz"), os.path.join(folder, "pred.csv")
    train.to_csv(train_csv, index=False)
    test.drop(columns=[target]).to_csv(test_csv, index=False)
    printed = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        rc = cli.main(["train", train_csv, "--target", target, "--seed", str(seed),
                       "--verbose", "0", "--save", model] + extra)
    seconds = time.perf_counter() - start
    if rc != 0:
        raise RuntimeError(f"fastnn train failed: {printed.getvalue()}")
    chosen = "classification" if "classification:" in printed.getvalue() else "regression"
    with contextlib.redirect_stdout(io.StringIO()):
        cli.main(["predict", model, test_csv, "-o", out])
    predicted = pd.read_csv(out).iloc[:, 0]
    return score(task, test[target], predicted), seconds, chosen


def sklearn_columns(frame, target):
    features = frame.drop(columns=[target])
    from pandas.api.types import is_numeric_dtype
    text = [c for c in features if not is_numeric_dtype(features[c])]
    return features, text


def column_preprocessing(X, text, sparse=True):
    """scikit-learn's preprocessing of a table: numbers median-imputed and standardized,
    text most-frequent-imputed and one-hot encoded (unknown categories all zeros)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    numbers = [c for c in X if c not in text]
    return ColumnTransformer(
        [("numbers", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
          numbers),
         ("text", make_pipeline(SimpleImputer(strategy="most_frequent"),
                                OneHotEncoder(handle_unknown="ignore", sparse_output=sparse)),
          text)])


def run_mlp(train, test, target, task, seed):
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    X, text = sklearn_columns(train, target)
    prep = column_preprocessing(X, text)
    net = (MLPClassifier if task == "classification" else MLPRegressor)(random_state=seed)
    model = make_pipeline(prep, net)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X, train[target])
    seconds = time.perf_counter() - start
    return score(task, test[target], model.predict(test.drop(columns=[target]))), seconds


def run_hgb(train, test, target, task, seed):
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    X, text = sklearn_columns(train, target)
    X_test = test.drop(columns=[target])
    for c in text:
        kinds = X[c].astype("category").cat.categories
        X = X.assign(**{c: X[c].astype(pd_category(kinds))})
        X_test = X_test.assign(**{c: X_test[c].astype(pd_category(kinds))})
    cls = HistGradientBoostingClassifier if task == "classification" \
        else HistGradientBoostingRegressor
    model = cls(random_state=seed, categorical_features="from_dtype")
    start = time.perf_counter()
    model.fit(X, train[target])
    seconds = time.perf_counter() - start
    return score(task, test[target], model.predict(X_test)), seconds


def run_torch(train, test, target, task, seed):
    import torch
    from sklearn.preprocessing import LabelEncoder

    from fastnn import get_num_threads
    torch.manual_seed(seed)
    torch.set_num_threads(get_num_threads())
    X, text = sklearn_columns(train, target)
    prep = column_preprocessing(X, text, sparse=False)
    start = time.perf_counter()
    features = torch.tensor(np.asarray(prep.fit_transform(X), dtype=np.float32))
    if task == "classification":
        encoder = LabelEncoder().fit(train[target])
        y = torch.tensor(encoder.transform(train[target]))
        n_out, loss_fn = len(encoder.classes_), torch.nn.CrossEntropyLoss()
    else:
        values = train[target].to_numpy(np.float64)
        y_mean, y_std = values.mean(), values.std() or 1.0
        y = torch.tensor(((values - y_mean) / y_std).astype(np.float32)).reshape(-1, 1)
        n_out, loss_fn = 1, torch.nn.MSELoss()
    net = torch.nn.Sequential(torch.nn.Linear(features.shape[1], 256), torch.nn.ReLU(),
                              torch.nn.Linear(256, 128), torch.nn.ReLU(),
                              torch.nn.Linear(128, n_out))
    for module in net:
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.xavier_uniform_(module.weight)
            torch.nn.init.zeros_(module.bias)
    n = len(y)
    n_val = n - int(n * 0.9) if n * 0.1 >= 30 else 0
    fit_X, fit_y, val = features[:n - n_val], y[:n - n_val], (features[n - n_val:],
                                                              y[n - n_val:])
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    batch = min(200, n - n_val)
    best, best_state, wait = np.inf, None, 0
    for _ in range(200):
        total = 0.0
        for rows in torch.randperm(n - n_val).split(batch):
            optimizer.zero_grad()
            loss = loss_fn(net(fit_X[rows]), fit_y[rows])
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(rows)
        with torch.no_grad():
            monitored = float(loss_fn(net(val[0]), val[1])) if n_val else total / (n - n_val)
        if monitored < best - 1e-4:
            best, wait = monitored, 0
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
        else:
            wait += 1
            if wait >= 10:
                break
    net.load_state_dict(best_state)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        out = net(torch.tensor(np.asarray(prep.transform(test.drop(columns=[target])),
                                          dtype=np.float32)))
    if task == "classification":
        predicted = encoder.inverse_transform(out.argmax(dim=1).numpy())
    else:
        predicted = out[:, 0].numpy().astype(np.float64) * y_std + y_mean
    return score(task, test[target], predicted), seconds


def pd_category(categories):
    import pandas as pd
    return pd.CategoricalDtype(categories)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--tables", default=",".join(TABLES))
    parser.add_argument("--fastnn-args", default="",
                        help="more options for fastnn train (e.g. --init he)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    from fastnn._threads import describe_blas
    extra = args.fastnn_args.split()
    results = {}
    print(f"BLAS: {describe_blas()}; {args.seeds} seeds of a 75/25 split; score mean +- std "
          f"(accuracy or R^2), mean fit seconds" + (f"; fastnn {args.fastnn_args}" if extra
                                                     else ""))
    try:
        import torch  # noqa: F401
        tools = ("fastnn", "mlp", "hgb", "torch")
    except ImportError:
        tools = ("fastnn", "mlp", "hgb")
    print(f"{'table':<14} {'task':<15} {'rows':>5} {'fastnn':>17} {'sklearn MLP':>17} "
          f"{'HistGB':>17}" + (f" {'torch':>17}" if "torch" in tools else "")
          + "  fastnn's task")
    for name in args.tables.split(","):
        frame, target, task = TABLES[name]()
        runs = {tool: [] for tool in tools}
        chosen = set()
        for seed in range(args.seeds):
            train, test = split(frame, target, task, seed)
            with tempfile.TemporaryDirectory() as folder:
                s, t, c = run_fastnn(train, test, target, task, seed, folder, extra)
            runs["fastnn"].append((s, t))
            chosen.add(c)
            runs["mlp"].append(run_mlp(train, test, target, task, seed))
            runs["hgb"].append(run_hgb(train, test, target, task, seed))
            if "torch" in tools:
                runs["torch"].append(run_torch(train, test, target, task, seed))
        cells = []
        for tool in tools:
            scores = np.array([s for s, _ in runs[tool]])
            seconds = float(np.mean([t for _, t in runs[tool]]))
            cells.append(f"{scores.mean():6.3f}+-{scores.std():.3f} {seconds:5.2f}s")
        print(f"{name:<14} {task:<15} {len(frame):>5} " + " ".join(f"{c:>17}" for c in cells)
              + f"  {'/'.join(sorted(chosen))}", flush=True)
        results[name] = {"task": task, "rows": len(frame), "fastnn_task": sorted(chosen),
                         **{tool: runs[tool] for tool in runs}}
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"blas": describe_blas(), "seeds": args.seeds,
                       "fastnn_args": args.fastnn_args, "tables": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
