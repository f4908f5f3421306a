"""The training toolkit's cost: every optimizer, and dropout / batch-norm / layer-norm
networks and a GELU after each hidden ReLU,
against the GEMM floor of the same matrix products, each epoch on fastnn's team.

    python bench/bench_toolkit.py          # 784-256-128-10, batch sizes 32 and 512
    python bench/bench_toolkit.py --networks 784-256-128-10,784-1024-1024-10 \
        --batch-sizes 32,128,512 --json toolkit.json
"""
import argparse
import json
import sys

import fastnn as fnn
from fastnn.benchmark import NETWORKS as WIDTHS
from fastnn.benchmark import blas_description, load_data, planned_threads, time_fit, time_floor

OPTIMIZERS = {
    "SGD": lambda: fnn.optim.SGD(lr=0.01),
    "SGD momentum": lambda: fnn.optim.SGD(lr=0.01, momentum=0.9),
    "Adam": lambda: fnn.optim.Adam(lr=1e-3),
    "AdamW": lambda: fnn.optim.AdamW(lr=1e-3),
    "RMSprop": lambda: fnn.optim.RMSprop(lr=1e-3),
    "Adagrad": lambda: fnn.optim.Adagrad(lr=1e-2),
    "Adadelta": lambda: fnn.optim.Adadelta(lr=1.0),
    "NAdam": lambda: fnn.optim.NAdam(lr=2e-3),
}
NETWORKS = {
    "plain": (),
    "dropout 0.2": (lambda width: fnn.Dropout(0.2),),
    "batch norm": (lambda width: fnn.BatchNorm1d(width),),
    "layer norm": (lambda width: fnn.LayerNorm(width),),
    "+ GELU": (lambda width: fnn.GELU(),),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", default="32,512")
    parser.add_argument("--networks", default="784-256-128-10",
                        help=f"comma-separated, of {', '.join(WIDTHS)}; dropout and batch "
                             f"norm are timed on the first only")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    # the available cores, fixed: every epoch on the whole team, never fewer threads
    # because the machine looked busy (fastnn's default adapts)
    fnn.set_num_threads(fnn._threads.available_cores())
    X, y, source = load_data(60000)
    print(f"BLAS: {blas_description()}; {fnn.get_num_threads()} threads; data: {source}; "
          f"one warm epoch, min of {args.repeats} interleaved repeats")
    rows = []
    for i, network in enumerate(args.networks.split(",")):
        widths = WIDTHS[network]
        for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
            floor, times = [], {}
            for _ in range(args.repeats):
                floor.append(time_floor(widths, X, batch_size))
                for name, make in OPTIMIZERS.items():
                    times.setdefault(name, []).append(time_fit(widths, X, y, batch_size, make))
                for name, extra in NETWORKS.items():
                    if name != "plain" and i == 0:
                        times.setdefault(name, []).append(
                            time_fit(widths, X, y, batch_size, OPTIMIZERS["SGD"], extra))
            f, sgd = min(floor), min(times["SGD"])
            print(f"\n{network}, batch {batch_size}: GEMM floor {f:.3f} s, plan "
                  f"{planned_threads(widths, batch_size)} threads")
            print(f"{'':<22} {'epoch s':>8} {'/ floor':>8} {'/ SGD':>7}")
            for name, values in times.items():
                label = name if name in OPTIMIZERS else f"SGD, {name}"
                t = min(values)
                print(f"{label:<22} {t:8.3f} {t / f:8.2f} {t / sgd:7.2f}", flush=True)
                rows.append({"network": network, "batch_size": batch_size, "config": label,
                             "seconds": t, "floor_s": f, "ratio": t / f})
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"blas": blas_description(), "threads": fnn.get_num_threads(),
                       "data": source, "repeats": args.repeats, "rows": rows}, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
