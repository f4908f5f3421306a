"""Smoke test of an installed fastnn (a wheel in a fresh venv, cibuildwheel's test step).

Run from outside the checkout: it checks that fastnn comes from site-packages, carries its
license, trains and saves a model, and that the `fastnn` command trains on a CSV file
and predicts with the saved model. Exits non-zero on the first failure.
"""
import csv
import importlib.metadata
import os
import subprocess
import sys
import tempfile

import numpy as np

import fastnn as fnn


def check(condition, what):
    if not condition:
        sys.exit(f"smoke test failed: {what}")
    print(f"ok: {what}")


def main():
    location = os.path.dirname(fnn.__file__)
    check("site-packages" in location, f"fastnn {fnn.__version__} is installed ({location})")
    files = [str(f) for f in importlib.metadata.distribution("fastnn").files or []]
    check(any(os.path.basename(f) == "LICENSE" for f in files), "the wheel carries LICENSE")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 10)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 0.5)
    model = fnn.Sequential([fnn.Dense(10, 32), fnn.ReLU(), fnn.Dense(32, 3)], seed=0)
    model.fit(X, y, optimizer=fnn.optim.Adam(lr=0.01), epochs=20, batch_size=64)
    accuracy = model.evaluate(X, y)["accuracy"]
    check(accuracy > 0.9, f"a small MLP trains (accuracy {accuracy:.3f})")
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.npz")
        model.save(path)
        check(np.array_equal(fnn.load(path).predict(X), model.predict(X)),
              "save and load give the same predictions")
        data = os.path.join(folder, "data.csv")
        with open(data, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow([f"x{j}" for j in range(10)] + ["label"])
            for row, label in zip(X[:500], y[:500]):
                writer.writerow([repr(float(v)) for v in row] + [f"class{label}"])
        fastnn = [sys.executable, "-m", "fastnn"]
        for args in (["info"],
                     ["train", data, "--epochs", "5", "--verbose", "0", "--save", path],
                     ["predict", path, data, "-o", os.path.join(folder, "p.csv")]):
            result = subprocess.run(fastnn + args, capture_output=True, text=True,
                                    cwd=folder)
            check(result.returncode == 0, f"fastnn {args[0]} runs\n{result.stdout}"
                                          f"{result.stderr}".rstrip())
        with open(os.path.join(folder, "p.csv")) as f:
            predicted = [row[0] for row in csv.reader(f)][1:]
        check(len(predicted) == 500 and set(predicted) <= {"class0", "class1", "class2"},
              "predict writes the original labels")


if __name__ == "__main__":
    main()
