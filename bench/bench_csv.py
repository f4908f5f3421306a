"""Reading a numeric CSV: fastnn.tabular.read_table's two paths on the same file,
interleaved, fastest of the repeats: pyarrow's reader (taken for a file of numbers where
pyarrow is installed) and the record loop (every other file, and the errors).

    python bench/bench_csv.py [--rows 1000000] [--columns 20] [--repeats 3]
"""
import argparse
import os
import tempfile
import time
from unittest import mock

import numpy as np

from fastnn import tabular


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--columns", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "numbers.csv")
        X = rng.normal(size=(args.rows, args.columns))
        y = rng.integers(0, 5, args.rows)
        header = ",".join([f"x{i}" for i in range(args.columns)] + ["y"])
        np.savetxt(path, np.column_stack([X, y]), delimiter=",", header=header,
                   comments="", fmt=["%.17g"] * args.columns + ["%d"])
        size = os.path.getsize(path) / 2**20
        times = {"pyarrow": [], "record loop": []}
        tables = {}
        for _ in range(args.repeats):
            for way in times:
                context = mock.patch.object(tabular, "_read_csv_fast", lambda *a: None) \
                    if way == "record loop" else mock.patch.dict({})
                with context:
                    start = time.perf_counter()
                    tables[way] = tabular.read_table([path], target="y")
                    times[way].append(time.perf_counter() - start)
        same = np.array_equal(tables["pyarrow"].X, tables["record loop"].X) and \
            np.array_equal(tables["pyarrow"].y, tables["record loop"].y) and \
            np.array_equal(tables["pyarrow"].lines, tables["record loop"].lines)
        best = {way: min(t) for way, t in times.items()}
        print(f"{args.rows:,} rows x {args.columns} numeric columns + a target, "
              f"{size:.0f} MB; fastest of {args.repeats}: pyarrow {best['pyarrow']:.2f} s, "
              f"record loop {best['record loop']:.2f} s, "
              f"{best['record loop'] / best['pyarrow']:.1f}x; the same table: {same}")


if __name__ == "__main__":
    main()
