"""The grid of tiles against blocks of units alone, in real epochs: each Dense layer's
products cut as the engine's rule says (csrc/engine/dense.pxi, dense_grid) and with every grid
forced to one row of tiles (_engine.tune(grid_rows=1): a block of units per thread),
interleaved in one process.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/bench_grid.py \
        [--threads 2] [--networks 784-256-128-10,784-1024-1024-10] \
        [--batch-sizes 32,128,512] [--repeats 3] [--json F]

Each cell: epoch / GEMM floor (BLAS's own threads at the same count), fastest of the
repeats, for SGD, SGD momentum and Adam; "rule" and "units" side by side.
"""
import argparse
import json
import sys

import fastnn as fnn
from fastnn import _engine
from fastnn.benchmark import (
    NETWORKS,
    blas_description,
    load_data,
    planned_grid,
    time_fit,
    time_floor,
)

OPTIMIZERS = {"sgd": lambda: fnn.optim.SGD(lr=0.01),
              "momentum": lambda: fnn.optim.SGD(lr=0.01, momentum=0.9),
              "adam": lambda: fnn.optim.Adam(lr=1e-3)}
PARTITIONS = {"rule": 0, "units": 1}   # grid_rows: 0 the rule, 1 one row of tiles


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default=None,
                        help="comma-separated thread counts (default: the available cores)")
    parser.add_argument("--networks", default="784-256-128-10,784-1024-1024-10")
    parser.add_argument("--batch-sizes", default="32,128,512")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    counts = ([int(t) for t in args.threads.split(",")] if args.threads
              else [fnn._threads.available_cores()])
    X, y, source = load_data(60000)
    print(f"BLAS: {blas_description()}; data: {source}; fastest of {args.repeats} "
          f"interleaved repeats; epoch / floor, rule / units")
    rows = []
    old = _engine.tune(grid_rows=0)
    try:
        for n_threads in counts:
            fnn.set_num_threads(n_threads)
            for network in args.networks.split(","):
                widths = NETWORKS[network]
                for batch in [int(b) for b in args.batch_sizes.split(",")]:
                    times = {}
                    for _ in range(args.repeats):
                        times.setdefault("floor", []).append(time_floor(widths, X, batch))
                        for name, rows_forced in PARTITIONS.items():
                            _engine.tune(grid_rows=rows_forced)
                            for opt, make in OPTIMIZERS.items():
                                times.setdefault((name, opt), []).append(
                                    time_fit(widths, X, y, batch, make))
                        _engine.tune(grid_rows=0)
                    floor = min(times.pop("floor"))
                    grid = planned_grid(widths, batch, n_threads)
                    cells = {f"{name}/{opt}": min(t) / floor for (name, opt), t in times.items()}
                    print(f"{n_threads:>2} threads {network:<17} batch {batch:>3} (rule's "
                          f"rows {'/'.join(map(str, grid))}): " + "  ".join(
                              f"{opt} {cells['rule/' + opt]:.2f} / {cells['units/' + opt]:.2f}"
                              for opt in OPTIMIZERS), flush=True)
                    rows.append({"threads": n_threads, "network": network, "batch_size": batch,
                                 "floor_s": floor, "rule_rows": grid, "ratio": cells})
    finally:
        _engine.tune(**old)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"blas": blas_description(), "data": source, "repeats": args.repeats,
                       "rows": rows}, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
