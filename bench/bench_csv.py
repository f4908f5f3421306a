"""Reading a CSV: fastnn.tabular.read_table's two paths on the same files, interleaved,
fastest of the repeats: pyarrow's reader (fastnn._csv_arrow, every file it takes where
pyarrow is installed) and the record loop (every other file, and the errors). Two files:
numbers only, and the same with two text columns (40 and 1,000 values) and 5% blank
cells in a numeric column.

    python bench/bench_csv.py [--rows 1000000] [--columns 20] [--repeats 3]
"""
import argparse
import os
import tempfile
import time
from unittest import mock

import numpy as np

from fastnn import tabular


def write_numbers(path, rng, rows, columns):
    X = rng.normal(size=(rows, columns))
    y = rng.integers(0, 5, rows)
    header = ",".join([f"x{i}" for i in range(columns)] + ["y"])
    np.savetxt(path, np.column_stack([X, y]), delimiter=",", header=header, comments="",
               fmt=["%.17g"] * columns + ["%d"])


def write_cells(path, rng, rows, columns):
    """The numbers file's layout, x0 with 5% blank cells, x1 and x2 text."""
    X = rng.normal(size=(rows, columns)).astype("U24")
    X[rng.random(rows) < 0.05, 0] = ""
    X[:, 1] = np.char.add("city", rng.integers(0, 1000, rows).astype(str))
    X[:, 2] = np.char.add("kind", rng.integers(0, 40, rows).astype(str))
    y = rng.integers(0, 5, rows).astype(str)
    with open(path, "w") as f:
        f.write(",".join([f"x{i}" for i in range(columns)] + ["y"]) + "\n")
        for row, label in zip(X, y):
            f.write(",".join(row) + "," + label + "\n")


def same(a, b):
    if a.columns is not None:
        return all((a.columns[k] == b.columns[k]) if isinstance(b.columns[k], list)
                   else np.array_equal(a.columns[k], b.columns[k], equal_nan=True)
                   for k in b.columns)
    return np.array_equal(a.X, b.X) and np.array_equal(a.y, b.y) and \
        np.array_equal(a.lines, b.lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--columns", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        for kind, write in (("numbers", write_numbers), ("text and blanks", write_cells)):
            path = os.path.join(folder, "table.csv")
            write(path, rng, args.rows, args.columns)
            size = os.path.getsize(path) / 2**20
            times = {"pyarrow": [], "record loop": []}
            tables = {}
            for _ in range(args.repeats):
                for way in times:
                    context = mock.patch.object(tabular, "_read_csv_fast",
                                                lambda *a: None) \
                        if way == "record loop" else mock.patch.dict({})
                    with context:
                        start = time.perf_counter()
                        tables[way] = tabular.read_table([path], target="y")
                        times[way].append(time.perf_counter() - start)
            best = {way: min(t) for way, t in times.items()}
            print(f"{kind}: {args.rows:,} rows x {args.columns} columns + a target, "
                  f"{size:.0f} MB; fastest of {args.repeats}: pyarrow "
                  f"{best['pyarrow']:.2f} s, record loop {best['record loop']:.2f} s, "
                  f"{best['record loop'] / best['pyarrow']:.1f}x; the same table: "
                  f"{same(tables['pyarrow'], tables['record loop'])}")


if __name__ == "__main__":
    main()
