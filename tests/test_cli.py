"""The fastnn command and the dataset lookup."""
import os

import pytest
from conftest import MNIST_DIR, run_python

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


@pytest.mark.slow
def test_train_on_mnist_and_save(mnist, tmp_path):
    path = tmp_path / "m.npz"
    result = run_python(["-m", "fastnn", "train", "--data-path", MNIST_DIR, "--hidden", "64",
                         "--epochs", "1", "--save", str(path)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("epoch 1/1") and "val_accuracy" in lines[0]
    accuracy = float(lines[-2].split()[2].rstrip(","))
    assert accuracy > 0.9 and path.exists()


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
                         "--peers", "", "--json", str(path)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
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
