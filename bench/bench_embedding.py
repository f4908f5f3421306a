"""One-hot columns or learned vectors for a text column, from the command line: the score
and fit time of `fastnn train` on tables whose target depends on a categorical column of
K values, with the column one-hot encoded (--one-hot-max K) and embedded (--one-hot-max
0), interleaved, over seeds. The tables bundled with scikit-learn and statsmodels have no
text column of many values, so these tables are made: y = effect[city] + x0 + noise
(regression) with 2% of the city cells blank, and held-out rows scored by R^2.

    python bench/bench_embedding.py [--values 8,32,128,256,512,1000] [--rows 5000] [--seeds 3]
"""
import argparse
import contextlib
import csv
import io
import os
import tempfile
import time

import numpy as np

import fastnn as fnn
from fastnn import cli


def write_table(path, rng, effect, n):
    cities = rng.integers(0, len(effect), n)
    x = rng.normal(size=(n, 3))
    y = effect[cities] + x[:, 0] + 0.1 * rng.normal(size=n)
    blank = rng.random(n) < 0.02
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["city", "x0", "x1", "x2", "y"])
        for i in range(n):
            writer.writerow(["" if blank[i] else f"c{cities[i]}", *np.round(x[i], 5),
                             round(float(y[i]), 5)])
    return y


def r2(model_path, test_path, y):
    model = fnn.load(model_path)
    with open(test_path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = {name: [row[name] for row in rows] for name in model.feature_names}
    pred = model.predict(model.preprocessing.transform(columns))[:, 0]
    return 1 - np.sum((pred - y) ** 2) / np.sum((y - y.mean()) ** 2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", default="8,32,128,256,512,1000")
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    from threadpoolctl import threadpool_info
    kernel = next((i.get("architecture") for i in threadpool_info()
                   if i["user_api"] == "blas"), "?")
    print(f"{args.rows} training rows, {args.rows // 2} held out; BLAS kernel {kernel}; "
          f"mean (std) over {args.seeds} seeds")
    print(f"{'values':>7} {'one-hot R^2':>16} {'embedded R^2':>16} {'one-hot s':>10} "
          f"{'embedded s':>11}")
    with tempfile.TemporaryDirectory() as folder:
        for k in (int(v) for v in args.values.split(",")):
            scores = {"one-hot": [], "embedded": []}
            times = {"one-hot": [], "embedded": []}
            for seed in range(args.seeds):
                rng = np.random.default_rng(seed)
                effect = rng.normal(size=k)
                train, test = (os.path.join(folder, f"{n}.csv") for n in ("train", "test"))
                write_table(train, rng, effect, args.rows)
                y_test = write_table(test, rng, effect, args.rows // 2)
                for way, limit in (("one-hot", k), ("embedded", 0)):
                    model = os.path.join(folder, "m.npz")
                    start = time.perf_counter()
                    with contextlib.redirect_stdout(io.StringIO()):
                        cli.main(["train", train, "--verbose", "0", "--seed", str(seed),
                                  "--one-hot-max", str(limit), "--save", model])
                    times[way].append(time.perf_counter() - start)
                    scores[way].append(r2(model, test, y_test))
            cells = [f"{np.mean(scores[w]):.3f} ({np.std(scores[w]):.3f})"
                     for w in ("one-hot", "embedded")]
            print(f"{k:>7} {cells[0]:>16} {cells[1]:>16} {np.mean(times['one-hot']):>10.2f} "
                  f"{np.mean(times['embedded']):>11.2f}")


if __name__ == "__main__":
    main()
