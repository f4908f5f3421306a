"""The fastnn command and the dataset lookup."""
import csv
import os
import signal
import tracemalloc

import numpy as np
import pytest
from conftest import MNIST_DIR, run_python

import fastnn as fnn
from fastnn import cli
from fastnn.datasets import data_folder, load_mnist


def test_info(capsys):
    """info names the BLAS behind scipy.linalg.cython_blas as threadpoolctl describes it
    (not numpy's BLAS, which may be another OpenBLAS), and the thread design."""
    from threadpoolctl import threadpool_info

    import fastnn
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"fastnn {fastnn.__version__}" in out and "float32, float64" in out
    blas_line = next(line for line in out.splitlines() if line.startswith("BLAS: "))
    ours = [i for i in threadpool_info() if i.get("filepath") and i["filepath"] in blas_line]
    assert len(ours) == 1 and ours[0]["user_api"] == "blas"
    assert f"{ours[0]['internal_api']} {ours[0]['version']}" in blas_line
    assert "scipy" in os.path.basename(os.path.dirname(ours[0]["filepath"]))
    assert "no OpenMP" in out
    others = [i for i in threadpool_info() if i["user_api"] == "blas" and i is not ours[0]
              and i["filepath"] != ours[0]["filepath"]]
    for other in others:  # numpy's BLAS, named apart from fastnn's
        assert f"not used by fastnn): {other['internal_api']} {other['version']}" in out
    # the group of fastnn processes it counts (the test session's own), or that none
    from fastnn import _engine
    group = _engine.neighbours_registry()
    assert group == os.environ["FASTNN_NEIGHBOURS"]
    assert f"(group {group}," in out
    try:
        _engine.set_neighbours("off")
        assert cli.main(["info"]) == 0
        assert "other fastnn processes: not seen" in capsys.readouterr().out
    finally:
        _engine.set_neighbours(None)


@pytest.mark.slow
def test_train_on_mnist_and_save(mnist, tmp_path):
    path = tmp_path / "m.npz"
    result = run_python(["-m", "fastnn", "train", "--data-path", MNIST_DIR, "--hidden", "64",
                         "--epochs", "1", "--save", str(path)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("classification: 60000 rows, 784 features, 10 classes")
    assert any(line.startswith("epoch 1/1") and "val_accuracy" in line for line in lines)
    test_line = next(line for line in lines if line.startswith("test: "))
    assert float(test_line.split("accuracy ")[1]) > 0.9 and path.exists()
    (X, y), _ = mnist
    loaded = fnn.load(path)  # the standardization is folded in: raw pixels in
    assert loaded.evaluate(X[:2000], y[:2000])["accuracy"] > 0.9


def test_train_says_where_to_put_missing_data(tmp_path, capsys):
    assert cli.main(["train", "--data-path", str(tmp_path), "--no-download"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "put the four IDX files" in err


def test_lookup_order(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTNN_DATA", str(tmp_path))
    assert data_folder() == str(tmp_path)
    assert data_folder("/explicit") == "/explicit"
    monkeypatch.delenv("FASTNN_DATA")
    assert data_folder(kind="fashion_mnist").endswith(os.path.join("fastnn", "fashion_mnist"))
    with pytest.raises(ValueError, match="kind must be one of"):
        load_mnist(tmp_path, kind="cifar")
    with pytest.raises(ValueError, match="split must be"):
        load_mnist(tmp_path, split="validation")


@pytest.mark.slow
def test_bench_command_describes_its_run_in_json(tmp_path):
    """The JSON holds a row per thread count asked for, in seconds, with the plan each ran
    on, the same figures the table printed, and the scaling table over the counts."""
    import json
    path = tmp_path / "bench.json"
    result = run_python(["-m", "fastnn", "bench", "--quick", "--threads", "1,2",
                         "--batch-sizes", "512", "--optimizers", "sgd", "--no-torch",
                         "--peers", "", "--json", str(path), "--data-path", MNIST_DIR],
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"data: MNIST from {os.path.abspath(MNIST_DIR)}, 60000 ")
    assert "kernel=" in result.stdout
    data = json.loads(path.read_text())
    rows = data["rows"]
    assert [r["threads"] for r in rows] == [1, 2]
    table, scaling_part = result.stdout.split("\nscaling (")
    printed = [line.split() for line in table.splitlines()
               if line.startswith("784-256-128-10") and " sgd " in line]
    assert len(printed) == 2
    for row, line in zip(rows, printed):
        assert (row["network"], row["batch_size"], row["optimizer"]) == (
            "784-256-128-10", 512, "sgd")
        assert 1 <= row["plan_threads"] <= row["threads"]
        assert row["samples"] == 60000 and row["torch_s"] is None
        assert 0 < row["fastnn_s"] < 60 and 0 < row["floor_s"] < 60  # seconds an epoch
        assert line[1:4] == [str(row["threads"]), str(row["plan_threads"]), "512"]
        assert float(line[5]) == pytest.approx(row["fastnn_s"], abs=5e-4)
        assert float(line[7]) == pytest.approx(row["floor_s"], abs=5e-4)
    scaling = data["scaling"]
    assert len([line for line in scaling_part.splitlines()
                if line.startswith("784-256-128-10")]) == len(scaling)
    assert [s["threads"] for s in scaling] == [1, 2]
    assert [s["fastnn_s"] for s in scaling] == [r["fastnn_s"] for r in rows]
    assert scaling[0]["speedup"] == 1.0 and scaling[1]["speedup_over_threads"] == 1


def test_bench_names_the_data_it_times(tmp_path, monkeypatch, capsys):
    """--data-path without MNIST is an error (nothing timed); without --data-path and no
    MNIST anywhere, the synthetic data is named with every folder that was searched."""
    from fastnn import benchmark
    assert cli.main(["bench", "--data-path", str(tmp_path)]) == 2
    assert f"no MNIST in --data-path {tmp_path}" in capsys.readouterr().err
    monkeypatch.setattr(benchmark, "MNIST_CANDIDATES", [str(tmp_path / "a")])
    monkeypatch.setenv("FASTNN_DATA", str(tmp_path / "b"))
    X, y, source = benchmark.load_data(100)
    assert X.shape == (100, 784) and source.startswith("synthetic data of MNIST's shape")
    assert str(tmp_path / "a") in source and str(tmp_path / "b") in source


def test_bench_plot_draws_a_panel_per_network_and_a_line_per_tool(tmp_path):
    pytest.importorskip("matplotlib")
    from fastnn.benchmark import plot
    rows = [{"network": net, "threads": 2, "batch_size": b, "optimizer": opt,
             "samples": 60000, "fastnn_s": s, "samples_per_s": 60000 / s, "floor_s": s,
             "ratio": 1.0, "torch_s": 2 * s if opt == "momentum" else None,
             "numpy_s": 1.5 * s, "sklearn_s": None, "jax_s": 1.2 * s}
            for net in ("784-256-128-10", "784-1024-1024-10")
            for b, s in [(32, 0.6), (128, 0.4), (512, 0.35)] for opt in ("sgd", "momentum")]
    path = tmp_path / "bench.png"
    fig = plot(rows, path, "synthetic")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [ax.get_title() for ax in fig.axes] == ["784-1024-1024-10, 2 thread(s)",
                                                   "784-256-128-10, 2 thread(s)"]
    for ax in fig.axes:  # fastnn's two optimizers, torch, numpy and jax (no sklearn time)
        labels = sorted(line.get_label() for line in ax.get_lines())
        assert labels == ["fastnn (momentum)", "fastnn (sgd)", "jax", "numpy", "torch"]
        fastnn_sgd = next(line for line in ax.get_lines() if line.get_label() == "fastnn (sgd)")
        assert list(fastnn_sgd.get_xdata()) == [32, 128, 512]
        assert list(fastnn_sgd.get_ydata()) == pytest.approx([1e5, 1.5e5, 60000 / 0.35])


def test_an_unbuilt_source_folder_says_what_to_run(tmp_path):
    """Python started inside a checkout whose extensions were never built imports the
    source folder: the error says how to install or build, not a circular import."""
    import shutil
    import subprocess
    import sys
    source = os.path.dirname(__import__("fastnn").__file__)
    shutil.copytree(source, tmp_path / "fastnn",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def python(code):
        return subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60, env=env)

    hooks = python("import sys; print([f.__module__ for f in sys.meta_path "
                   "if 'editable' in getattr(f, '__module__', '') and 'fastnn' in f.__module__])")
    if hooks.stdout.strip() != "[]":
        pytest.skip(f"fastnn is installed editable here ({hooks.stdout.strip()}): its import "
                    f"hook finds the built extensions from any folder")
    result = python("import fastnn")
    assert result.returncode != 0
    assert "pip install -e ." in result.stderr and "compiled extensions" in result.stderr


# -- your own data on the command line ---------------------------------------------------

def labelled_data(n=400, seed=0):
    """Four features on very different scales; a string label and a float target."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)) * [1, 10, 100, 0.1] + [0, 5, 50, 0]
    labels = np.where(X[:, 0] + X[:, 1] / 10 > 0.5, "cat",
                      np.where(X[:, 2] > 50, "dog", "bird"))
    target = 3 * X[:, 0] + np.sin(X[:, 1]) + 0.01 * X[:, 2]
    return X, labels, target


def write_csv(path, X, target, name):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["a", "b", "c", "d", name])
        for row, t in zip(X, target):
            writer.writerow([repr(float(v)) for v in row] + [t])


def write_data(folder, fmt, X, target, name):
    """The data in format fmt; returns the DATA arguments."""
    if fmt == "csv":
        write_csv(folder / "data.csv", X, target, name)
        return [str(folder / "data.csv")]
    if fmt == "npz":
        np.savez(folder / "data.npz", X=X, y=target)
        return [str(folder / "data.npz")]
    if fmt == "npy":
        np.save(folder / "X.npy", X)
        np.save(folder / "y.npy", target)
        return [str(folder / "X.npy"), str(folder / "y.npy")]
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    frame[name] = target
    frame.to_parquet(folder / "data.parquet")
    return [str(folder / "data.parquet")]


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("fmt", ["csv", "npz", "npy", "parquet"])
def test_classification_round_trip(tmp_path, capsys, fmt):
    """train (string labels) -> save -> predict gives the labels back as strings, agrees
    with the saved model's own predictions, and evaluate's accuracy is what they score."""
    X, labels, _ = labelled_data()
    data = write_data(tmp_path, fmt, X, labels, "animal")
    model_path = tmp_path / "model.npz"
    code, out, err = run(capsys, "train", *data, "--epochs", "25", "--hidden", "32", "--lr", "0.01",
                         "--verbose", "0", "--save", model_path)
    assert code == 0, err
    first, second = out.splitlines()[:2]
    assert first == ("task: classification, as the target holds text: its values are class "
                     "labels (--task regression to change it)")
    assert second.startswith("classification: 400 rows, 4 features, 3 classes")
    model = fnn.load(model_path)
    assert model.classes == ["bird", "cat", "dog"] and model.loss.name == "cross_entropy"
    code, out, err = run(capsys, "predict", model_path, *data[:1], "-o", tmp_path / "p.csv")
    assert code == 0, err
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.reader(f))
    predicted = np.array([r[0] for r in rows[1:]])
    assert rows[0] == (["animal"] if fmt in ("csv", "parquet") else ["prediction"])
    expected = np.array(model.classes)[model.predict(X).argmax(1)]  # raw X: scaling folded
    np.testing.assert_array_equal(predicted, expected)
    accuracy = np.mean(predicted == labels)
    assert accuracy > 0.9
    code, out, err = run(capsys, "evaluate", model_path, *data)
    assert code == 0, err
    assert f"accuracy {accuracy:.4f}" in out
    code, out, err = run(capsys, "predict", model_path, *data[:1], "--proba")
    lines = out.splitlines()
    assert lines[0] == "p(bird),p(cat),p(dog)"
    proba = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
    np.testing.assert_array_equal(np.array(model.classes)[proba.argmax(1)], predicted)


@pytest.mark.parametrize("fmt", ["csv", "npz", "npy", "parquet"])
def test_regression_round_trip(tmp_path, capsys, fmt):
    """Float targets train a regressor; predict returns values on the target's scale and
    evaluate's RMSE and R^2 are those of these predictions."""
    X, _, target = labelled_data()
    data = write_data(tmp_path, fmt, X, target, "price")
    model_path = tmp_path / "model.npz"
    code, out, err = run(capsys, "train", *data, "--epochs", "40", "--hidden", "32",
                         "--verbose", "0", "--dtype", "float64", "--save", model_path)
    assert code == 0, err
    first, second = out.splitlines()[:2]
    assert first == ("task: regression, as the target holds fractional numbers (--task "
                     "classification to change it)")
    assert second.startswith("regression: 400 rows, 4 features;")
    code, out, err = run(capsys, "predict", model_path, *data[:1])
    assert code == 0, err
    predicted = np.array([float(v) for v in out.splitlines()[1:]])
    np.testing.assert_allclose(predicted, fnn.load(model_path).predict(X)[:, 0], rtol=1e-12)
    rmse = np.sqrt(np.mean((predicted - target) ** 2))
    r2 = 1 - np.sum((predicted - target) ** 2) / np.sum((target - target.mean()) ** 2)
    assert r2 > 0.8
    code, out, err = run(capsys, "evaluate", model_path, *data)
    assert code == 0, err
    assert f"rmse {rmse:.6g}, r2 {r2:.4f}" in out


def test_standardization_is_folded_into_the_model(tmp_path, capsys):
    """The saved model of a standardized fit maps raw features to the outputs of the
    network trained on standardized ones (first and last Dense absorb the scalings)."""
    X, _, target = labelled_data()
    model = fnn.Sequential([fnn.Dense(4, 8), "tanh", fnn.Dense(8, 1)], dtype="float64", seed=1)
    mean, std = X.mean(0), X.std(0)
    y_mean, y_std = target.mean(), target.std()
    want = model.predict((X - mean) / std)[:, 0] * y_std + y_mean
    cli.fold_standardization(model, mean, std, y_mean, y_std)
    np.testing.assert_allclose(model.predict(X)[:, 0], want, rtol=1e-10)


@pytest.mark.parametrize("content,message", [
    ("a,b,y\n1,2,x\n3,4\n", "bad.csv, line 3: 2 fields, but the header has 3"),
    ("a,b,y\n1,2,x\n3,4,\n", "bad.csv, line 3, column 'y': the target is missing"),
    ("a,b,y\n1,2,x\n3,inf,y\n", "bad.csv, line 3, column 'b': inf is not a finite number"),
    ("a,b,y\n1,2,0.5\n3,4,1e400\n", "bad.csv, line 3, column 'y': the target 1e400 is not "
                                   "a finite number"),
    ("", "bad.csv: the file is empty"),
    ("a,b,y\n", "bad.csv: no data rows"),
    ("a,a,y\n1,2,x\n", "bad.csv, line 1: column names appear twice: ['a']"),
])
def test_bad_files_are_named_with_line_and_column(tmp_path, capsys, content, message):
    (tmp_path / "bad.csv").write_text(content)
    code, out, err = run(capsys, "train", tmp_path / "bad.csv", "--save", tmp_path / "m.npz")
    assert code == 2 and message in err
    assert not (tmp_path / "m.npz").exists()


def test_missing_columns_and_files(tmp_path, capsys):
    X, labels, _ = labelled_data(50)
    write_csv(tmp_path / "d.csv", X, labels, "animal")
    code, _, err = run(capsys, "train", tmp_path / "d.csv", "--target", "label")
    assert code == 2 and "no target column 'label' (columns: a, b, c, d, animal)" in err
    code, _, err = run(capsys, "train", tmp_path / "d.csv", "--features", "a,zz")
    assert code == 2 and "no feature column(s) ['zz']" in err
    code, _, err = run(capsys, "train", tmp_path / "nothing.csv")
    assert code == 2 and "nothing.csv: no such file" in err
    code, _, err = run(capsys, "predict", tmp_path / "nothing.npz", tmp_path / "d.csv")
    assert code == 2 and "nothing.npz: no such model file" in err


def test_features_target_and_task_flags(tmp_path, capsys):
    """--features picks columns (saved with the model, so predict reads them by name from
    a file with others), --task regression overrides integer targets."""
    X, _, target = labelled_data(120)
    write_csv(tmp_path / "d.csv", X, np.round(target), "price")
    code, out, err = run(capsys, "train", tmp_path / "d.csv", "--features", "c,a",
                         "--task", "regression", "--epochs", "2", "--verbose", "0",
                         "--save", tmp_path / "m.npz")
    assert code == 0, err
    assert out.startswith("regression: 120 rows, 2 features;")
    model = fnn.load(tmp_path / "m.npz")
    assert model.feature_names == ["c", "a"] and model.target_name == "price"
    code, out, err = run(capsys, "predict", tmp_path / "m.npz", tmp_path / "d.csv")
    predicted = np.array([float(v) for v in out.splitlines()[1:]])
    np.testing.assert_allclose(predicted, model.predict(X[:, [2, 0]])[:, 0], rtol=1e-6)


def test_help_shows_every_default_and_version(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag, default in [("--epochs", "200"), ("--optimizer", "adam"), ("--patience", "10"),
                          ("--hidden", "256,128"), ("--dropout", "0.0"), ("--seed", "0"),
                          ("--tol", "0.0001"), ("--init", "glorot"), ("--dtype", "float32"),
                          ("--momentum", "0.9"), ("--activation", "relu")]:
        assert f"(default: {default})" in text.split(flag, 2)[-1].split(" --")[0], flag
    for flag, default in [("--batch-size", "(default: 200, or every row of a smaller table)"),
                          ("--validation-split", "(default: 0.1 where that is at least 30 "
                                                 "rows and early stopping uses it, else none)")]:
        assert default in text.split(flag, 2)[-1].split(" --")[0], flag
    assert "learning rate (default: the optimizer's" in text
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.strip() == f"fastnn {fnn.__version__}"


def test_every_option_reaches_the_model(tmp_path, capsys):
    """Hidden widths, activation, batch norm, dropout, optimizer and dtype build the model
    they name (summary's counts are the parameters')."""
    X, labels, _ = labelled_data(100)
    write_csv(tmp_path / "d.csv", X, labels, "animal")
    code, out, err = run(capsys, "train", tmp_path / "d.csv", "--hidden", "16,8",
                         "--activation", "tanh", "--batch-norm", "--dropout", "0.2",
                         "--optimizer", "rmsprop", "--lr", "0.005", "--dtype", "float64",
                         "--epochs", "3", "--schedule", "cosine", "--patience", "2",
                         "--threads", "1", "--save", tmp_path / "m.npz")
    assert code == 0, err
    model = fnn.load(tmp_path / "m.npz")
    assert [layer.kind for layer in model.layers] == [
        "dense", "batchnorm", "tanh", "dropout", "dense", "batchnorm", "tanh", "dropout",
        "dense"]
    assert model.dtype == np.float64 and type(model.optimizer).__name__ == "RMSprop"
    assert model.optimizer.lr < 0.005  # the cosine schedule lowered it
    total = sum(p.size for p in model.parameters())
    assert f"parameters: {total:,} learned" in out


def test_bench_table_writes_the_readme_table_from_the_json(tmp_path):
    """tools/bench_table.py --readme: the rows between README's markers are the JSON's
    (SGD with momentum, the most threads), and nothing outside the markers changes."""
    import importlib.util
    import json

    from conftest import ROOT
    spec = importlib.util.spec_from_file_location(
        "bench_table", os.path.join(ROOT, "tools", "bench_table.py"))
    bench_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_table)
    rows = [{"network": "784-256-128-10", "threads": t, "batch_size": 32, "optimizer": opt,
             "plan_threads": t, "fastnn_s": 0.5 / t, "floor_s": 0.4, "ratio": 1.25 / t,
             "torch_s": 1.0 if opt == "momentum" else None}
            for t in (1, 2) for opt in ("sgd", "momentum")]
    data = {"rows": rows, "blas": "openblas", "data": "MNIST", "repeats": 2,
            "machine": "test machine"}
    (tmp_path / "r.json").write_text(json.dumps(data))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{bench_table.START}\nold table\n{bench_table.END}\noutro\n")
    assert bench_table.main([str(tmp_path / "r.json"), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old table" not in text
    table = [line for line in text.splitlines() if line.startswith("| 784")]
    assert table == ["| 784-256-128-10 | 32 | momentum | 2 | 0.250 | 0.400 | 0.62 | 1.000 | "
                     "4.00 |"]


# -- hostile CSV files: refused at the first bad record, in bounded memory ----------------

def _read_error(path):
    from fastnn.tabular import DataError, read_table
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as error:
            read_table([path])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return str(error.value), peak


def test_a_file_of_blank_cells_stops_at_its_first_row_without_holding_the_file(tmp_path):
    """8 MB of empty cells: blank features are missing values, a blank target is reported
    at its line at once, and the read never holds the file as strings (reading it whole
    first took ~10x the file's size)."""
    path = tmp_path / "empty.csv"
    with open(path, "w") as f:
        f.write("a,b,c,d,y\n")
        f.write(",,,,\n" * (8 * 2**20 // 5))
    message, peak = _read_error(path)
    assert "empty.csv, line 2, column 'y': the target is missing" in message
    assert peak < 2**20


def test_an_unclosed_quote_is_reported_at_the_line_where_its_record_starts(tmp_path):
    path = tmp_path / "quote.csv"
    path.write_text('a,b,y\n1,2,x\n3,4,y\n5,"6,y\n7,8,x\n' + "9,10,y\n" * 1000)
    message, _ = _read_error(path)
    assert "quote.csv, line 4: 2 fields, but the header has 3" in message


def test_a_huge_field_is_refused_at_its_line_before_it_is_read_whole(tmp_path):
    from fastnn.tabular import MAX_LINE_CHARS
    path = tmp_path / "field.csv"
    with open(path, "w") as f:
        f.write("a,b,y\n1,2,x\n\n3,")
        f.write("9" * (MAX_LINE_CHARS + 10))
        f.write(",y\n")
    message, peak = _read_error(path)
    assert f"field.csv, line 4: longer than {MAX_LINE_CHARS:,} characters" in message
    assert peak < 3 * MAX_LINE_CHARS


def test_lines_are_counted_across_blank_lines_and_quoted_newlines(tmp_path):
    path = tmp_path / "lines.csv"
    path.write_text('a,b,y\n1,2,"two\nlines"\n\n3,inf,x\n')
    message, _ = _read_error(path)
    assert "lines.csv, line 5, column 'b': inf is not a finite number" in message


def test_duplicate_columns_among_100000_are_found_in_linear_time(tmp_path):
    """A 1.5 MB header of 100,000 names (two of them twice). Counting each name's
    occurrences by scanning the header took 92 s here; a hash count takes well under a
    second. The alarm bounds a quadratic check, not this machine's speed."""
    names = [f"c{i}" for i in range(100000)] + ["c7", "c99"]
    path = tmp_path / "wide.csv"
    path.write_text(",".join(names) + "\n" + ",".join("1" for _ in names) + "\n")

    def too_slow(signum, frame):
        raise TimeoutError("the duplicate-column check is not linear")

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(20)
    try:
        message, _ = _read_error(path)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert "wide.csv, line 1: column names appear twice: ['c7', 'c99']" in message


# -- which task a target means -----------------------------------------------------------

@pytest.mark.parametrize("name, task", [("diabetes", "regression"), ("iris", "classification"),
                                        ("wine", "classification"),
                                        ("breast_cancer", "classification"),
                                        ("digits", "classification")])
def test_the_bundled_tables_get_their_task(name, task):
    """Whole-number targets: diabetes' 214 values in 442 rows are a regression (it trained
    a 214-class classifier before); iris' 3 and digits' 10 are class labels."""
    from sklearn import datasets

    from fastnn.tabular import choose_task
    assert choose_task(getattr(datasets, f"load_{name}")().target)[0] == task


@pytest.mark.parametrize("values, task", [
    ([42, 37, 37, 28, 18, 18, 19, 20, 15, 14, 14, 13, 11, 12, 8, 7, 8, 8, 9, 15, 15],
     "regression"),                            # stackloss: 14 values in 21 rows
    (list(range(60000, 60016)), "regression"),  # longley: every row its own value
    ([0, 1, 1, 0, 1], "classification"),       # two values, however few rows
    ([0, 1, 2] * 3, "classification"),         # 3 values, 3 rows each
    ([0, 1, 2, 3] * 2, "regression"),          # 4 values, 2 rows each
    (list(range(21)) * 10, "regression"),      # 21 values: more than 20
    (["1", "2", "3"] * 5, "classification"),   # numbers as text are numbers
    ([0.5, 1.0] * 5, "regression")])
def test_whole_number_targets_are_classes_only_when_few_with_rows_each(values, task):
    from fastnn.tabular import choose_task, encode_target
    assert choose_task(np.array(values))[0] == task
    assert encode_target(np.array(values))[0] == task


def test_a_text_cell_in_a_numeric_target_is_an_error_at_its_line(tmp_path, capsys):
    """One "NA" among numbers: before, 188 classes (the numbers and "NA"); now an error
    naming the line, and --task classification still takes every value as a label."""
    rng = np.random.default_rng(0)
    path = tmp_path / "prices.csv"
    with open(path, "w") as f:
        f.write("a,b,price\n")
        for i in range(200):
            f.write(f"{rng.normal()},{rng.normal()},{'NA' if i == 57 else i % 190}\n")
            if i == 10:
                f.write("\n")  # a blank line: lines are counted in the file
    code, out, err = run(capsys, "train", path, "--epochs", "1")
    assert code == 2
    assert "prices.csv, line 60, column 'price': the target 'NA' is not a number, in a " \
        "target of numbers" in err and out == ""
    code, out, err = run(capsys, "train", path, "--epochs", "1", "--verbose", "0",
                         "--task", "classification")
    assert code == 0, err


def test_a_whole_number_regression_table_trains_a_regressor(tmp_path, capsys):
    from sklearn.datasets import load_diabetes
    X, y = load_diabetes(return_X_y=True)
    write_csv(tmp_path / "d.csv", X[:, :4], y.astype(int), "progression")
    code, out, err = run(capsys, "train", tmp_path / "d.csv", "--epochs", "1",
                         "--verbose", "0")
    assert code == 0, err
    first, second = out.splitlines()[:2]
    assert first.startswith("task: regression, as the target holds 214 distinct whole "
                            "numbers in 442 rows: too many for classes")
    assert first.endswith("(--task classification to change it)")
    assert second.startswith("regression: 442 rows")


# -- CSV dialects ------------------------------------------------------------------------

def _dialect_file(path, sep=",", decimal=".", bom=False, quote=False):
    """The same 30 rows of two features and a string label, in a dialect."""
    rng = np.random.default_rng(1)
    X = np.round(rng.normal(size=(30, 2)), 3)
    labels = np.where(X[:, 0] > 0, "yes", "no")

    def number(v):
        return repr(float(v)).replace(".", decimal)

    with open(path, "w", encoding="utf-8-sig" if bom else "utf-8", newline="") as f:
        f.write(sep.join(['"x one"' if quote else "x one", "x2", "label"]) + "\n")
        for row, label in zip(X, labels):
            cells = [number(v) for v in row] + [label]
            if quote:
                cells[0] = f'"{cells[0]}"'
            f.write(sep.join(cells) + "\n")
    return X, labels


@pytest.mark.parametrize("dialect", [dict(), dict(bom=True), dict(sep=";"),
                                     dict(sep="\t"), dict(sep=";", decimal=","),
                                     dict(sep="|", quote=True)],
                         ids=["plain", "bom", "semicolon", "tab", "decimal-comma", "pipe"])
def test_csv_dialects_train_predict_and_evaluate(tmp_path, capsys, dialect):
    """Excel's "CSV UTF-8" (a byte-order mark), ; and tab and | separators found from the
    header, decimal commas with --decimal: the same table reads to the same numbers, and
    the model predicts from a file of its own dialect by column name."""
    path = tmp_path / "d.csv"
    X, labels = _dialect_file(path, **dialect)
    extra = ["--decimal", ","] if dialect.get("decimal") == "," else []
    from fastnn.tabular import read_table
    table = read_table([path], decimal=extra[1] if extra else ".")
    assert table.feature_names == ["x one", "x2"] and table.target_name == "label"
    np.testing.assert_array_equal(table.X, X)
    np.testing.assert_array_equal(table.y, labels)
    model = tmp_path / "m.npz"
    code, _, err = run(capsys, "train", path, "--epochs", "2", "--verbose", "0",
                       "--save", model, *extra)
    assert code == 0, err
    code, out, err = run(capsys, "predict", model, path, *extra)
    assert code == 0, err
    assert out.splitlines()[0] == "label" and len(out.splitlines()) == 31
    code, out, err = run(capsys, "evaluate", model, path, *extra)
    assert code == 0 and out.startswith("30 rows: loss"), err


def test_a_decimal_comma_without_the_option_says_which_option(tmp_path, capsys):
    _dialect_file(tmp_path / "d.csv", sep=";", decimal=",")
    code, _, err = run(capsys, "train", tmp_path / "d.csv")
    assert code == 2 and "is not a number (a decimal comma? give --decimal ,)" in err
    code, _, err = run(capsys, "train", tmp_path / "d.csv", "--sep", ",", "--decimal", ",")
    assert code == 2 and "sep must be one character other than" in err


@pytest.mark.parametrize("option, value, expected", [
    ("--hidden", "abc", "argument --hidden: expected comma-separated positive layer widths"),
    ("--hidden", "64,0", "argument --hidden: expected comma-separated positive"),
    ("--epochs", "0", "argument --epochs: expected a whole number of at least 1, got '0'"),
    ("--batch-size", "-3", "argument --batch-size: expected a whole number of at least 1"),
    ("--dropout", "1", "argument --dropout: expected a number in [0, 1), got '1'"),
    ("--validation-split", "x", "argument --validation-split: expected a number in [0, 1)"),
    ("--lr", "0", "argument --lr: expected a number above 0, got '0'"),
    ("--threads", "0", "argument --threads: expected a whole number of at least 1"),
])
def test_a_bad_option_value_names_the_option_and_writes_nothing(tmp_path, capsys, option,
                                                                value, expected):
    """argparse's one line and exit status 2, before anything is read or trained (--epochs
    0 saved an untrained model; --hidden abc said "invalid literal for int()")."""
    X, labels, _ = labelled_data(50)
    write_csv(tmp_path / "d.csv", X, labels, "animal")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", str(tmp_path / "d.csv"), option, value,
                  "--save", str(tmp_path / "m.npz")])
    assert exit_.value.code == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "m.npz").exists()


def test_a_folder_given_as_the_model_is_one_line(tmp_path, capsys):
    X, labels, _ = labelled_data(50)
    write_csv(tmp_path / "d.csv", X, labels, "animal")
    code, _, err = run(capsys, "predict", tmp_path, tmp_path / "d.csv")
    assert code == 2 and "not a fastnn model file (a directory)" in err
    assert len(err.strip().splitlines()) == 1


def test_the_defaults_stop_early_and_say_on_what_they_trained(tmp_path, capsys):
    """With no options: Glorot initialisation; a 10% validation split only where it holds
    at least 30 rows, judging early stopping by the validation loss there and by the
    training loss otherwise; batches of 200 rows or the whole table; and a line saying
    so and why training stopped (with the best epoch's weights kept)."""
    X, labels, _ = labelled_data(400)
    write_csv(tmp_path / "big.csv", X, labels, "animal")
    code, out, err = run(capsys, "train", tmp_path / "big.csv", "--target", "animal",
                         "--verbose", "0", "--patience", "2", "--save", tmp_path / "big.npz")
    assert code == 0, err
    assert "trained on 360 rows, validated on 40, batches of 200, " in out
    assert ("early stopping: the validation loss did not improve by 0.0001 in 2 epochs" in out
            or "the validation loss was still improving" in out)
    model = fnn.load(tmp_path / "big.npz")
    assert {layer.init for layer in model.layers if isinstance(layer, fnn.Dense)} == {"glorot"}
    write_csv(tmp_path / "small.csv", X[:150], labels[:150], "animal")
    code, out, err = run(capsys, "train", tmp_path / "small.csv", "--target", "animal",
                         "--verbose", "0", "--patience", "3", "--epochs", "500")
    assert code == 0, err
    assert "trained on 150 rows, batches of 150, " in out and "validated" not in out
    epochs = int(out.split("batches of 150, ")[1].split(" epochs")[0])
    assert "early stopping: the training loss did not improve" in out and epochs < 500
    code, out, err = run(capsys, "train", tmp_path / "small.csv", "--target", "animal",
                         "--verbose", "0", "--patience", "0", "--epochs", "7")
    assert "7 epochs (--patience 0: all 7)" in out


def test_pyarrows_reader_reads_decimal_commas_as_the_record_loop(tmp_path, monkeypatch):
    pytest.importorskip("pyarrow")
    from fastnn import tabular
    path = tmp_path / "t.csv"
    path.write_text("a;b;c;y\n1,5;x;;k\n-2,25;y;3;l\n1e3;z;4,5;k\n", encoding="utf-8")
    assert tabular._read_csv_fast(str(path), "y", None, True, None, ",") is not None
    quick = tabular.read_table([path], target="y", decimal=",")
    monkeypatch.setattr(tabular, "_read_csv_fast", lambda *args: None)
    loop = tabular.read_table([path], target="y", decimal=",")
    np.testing.assert_array_equal(quick.columns["a"], [1.5, -2.25, 1000.0])
    np.testing.assert_array_equal(quick.columns["c"], loop.columns["c"])
    assert quick.columns["b"] == loop.columns["b"] == ["x", "y", "z"]


@pytest.mark.parametrize("content, fast", [
    ("a,b,y\n1,2.5,x\n3,-4e3,z\n7,0.1,x\n", True),        # ints and floats, a text target
    ("\ufeffa;b;y\n1;2;3\n4;5;6\n", True),                   # a BOM, semicolons, numbers
    ('a,b,y\n1,"2",x\n3,4,z\n', None),                       # a quoted number
    ("a,b,y\n1,2,x\n\n3,4,z\n", False),                      # a blank line
    ("a,b,y\n1, 2,x\n3,4, z \n", None),                      # spaces around cells
    ("a,b,y\n1,inf,x\n", False),                             # an error either way
    ("a,b,y\n1,,x\n3,NA,z\n", True),                        # missing cells
    ("a,b,y\n1, S ,x\n3,M,z\n4,,x\n5,2,x\n", True),           # text, blank and a number
    ("a,b,y\n1,2,x\n3,4,z\n5,6,x\n7,8,x\n9,10,x\n11,12,x\n13,u,x\n", True),  # late text
    ("a,b,y\n1_0,2,x\n3,1e1,z\n", True),                     # numbers only Python reads
    ("a,b,y\n1,NAN,x\n2,u,z\n", False),                       # a NaN read by position
    ("a,b,y\n1,2,x\n3,,\n", False),                           # a missing target
    ("a,b,y\n1,1,5,x\n", False),                              # four fields (error)
    ("a,b,y\n1,2\n", False),                                 # too few fields (error)
    ('a,b,y\n1,"two\nlines",x\n', False),                     # a field spanning lines
])
@pytest.mark.parametrize("block", [None, 24])
def test_pyarrows_reader_gives_the_record_loops_table(tmp_path, monkeypatch, content, fast,
                                                      block):
    """A file goes through pyarrow's reader (fast: True, it must; False, it must not;
    None, either), in one block or blocks of a row or two (a column that turns to text
    in a later block), and whichever way it goes the table (or the error) is the one the
    record loop makes of it: numbers, category keys and missing cells alike."""
    pytest.importorskip("pyarrow")
    from fastnn import _csv_arrow, tabular
    if block:
        monkeypatch.setattr(_csv_arrow, "_BLOCK_BYTES", block)
    path = tmp_path / "t.csv"
    path.write_text(content, encoding="utf-8")
    if fast is not None:
        taken = tabular._read_csv_fast(str(path), "y", None, True, None, ".")
        assert (taken is not None) == fast

    def read():
        try:
            return tabular.read_table([path], target="y")
        except tabular.DataError as exc:
            return str(exc)
    quick = read()
    monkeypatch.setattr(tabular, "_read_csv_fast", lambda *args: None)
    loop = read()
    if isinstance(loop, str):
        assert quick == loop
        return
    assert (quick.feature_names, quick.target_name) == (loop.feature_names, loop.target_name)
    for a, b in [(quick.X, loop.X), (quick.y, loop.y), (quick.lines, loop.lines)]:
        assert (a is None) == (b is None) and (a is None or np.array_equal(a, b))
    assert (quick.columns is None) == (loop.columns is None)
    for name, cells in (loop.columns or {}).items():
        if isinstance(cells, list):
            assert quick.columns[name] == cells
        else:
            np.testing.assert_array_equal(quick.columns[name], cells)
