"""What the adaptive optimizers cost: the Adam, RMSprop and Adagrad update passes alone,
and an epoch with Adam next to plain SGD and the GEMM floor, on scikit-learn's default
network for MNIST (784-100-10, batch 200).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/bench_updates.py

--entry-costs: nanoseconds per entry of each update on one thread, in float32, for a
parameter block that stays in cache (30,000 entries) and for one thread's half of
784-1024-1024-10's 1.85 million (925,000): equal costs mean the loop is bound by its
arithmetic (square roots and divisions), not by memory.
"""
import argparse
import time

import numpy as np

import fastnn as fnn
from fastnn import _engine, _kernels
from fastnn.benchmark import blas_description, load_data

WIDTHS = [784, 100, 10]
N_PARAMS = 784 * 100 + 100 + 100 * 10 + 10  # 79,510
STEPS = 300  # one epoch of 60,000 rows at batch 200


HYPER = {"adam": (fnn.optim.Adam().hyperparameters()),
         "rmsprop": fnn.optim.RMSprop().hyperparameters(),
         "adagrad": fnn.optim.Adagrad().hyperparameters()}


def update_seconds(dtype, kind, repeats, n=N_PARAMS, steps=STEPS):
    """Seconds for `steps` updates of n entries by optimizer `kind` (kernel alone, one
    thread, the fastest of `repeats`)."""
    rng = np.random.default_rng(0)
    p, g, s0, s1, s2 = (rng.random(n).astype(dtype) for _ in range(5))
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for step in range(steps):
            _kernels.optimizer_step(_engine.OPTIMIZER_KINDS[kind], HYPER[kind], step, p, g,
                                    s0, s1, s2)
        best = min(best, time.perf_counter() - start)
    return best


def entry_nanoseconds(n, kind, repeats):
    """Nanoseconds per entry of `kind`'s float32 update over n entries, timed over enough
    steps to pass about 50 million entries."""
    steps = max(1, 50_000_000 // n)
    return update_seconds(np.float32, kind, repeats, n, steps) / steps / n * 1e9


def epoch_seconds(X, y, dtype, make_optimizer):
    """The fastest of epochs 2 and 3 of a fit."""
    model = fnn.Sequential([fnn.Dense(784, 100), fnn.ReLU(), fnn.Dense(100, 10)],
                           dtype=dtype, seed=0)
    history = model.fit(X, y, optimizer=make_optimizer(), epochs=3, batch_size=200)
    return min(history["seconds"][1:])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--entry-costs", action="store_true",
                        help="only ns per entry of each update, in and beyond cache")
    args = parser.parse_args(argv)
    if args.entry_costs:
        print(f"BLAS: {blas_description()}; float32, one thread, fastest of {args.repeats}")
        for n in (30_000, 925_000):
            costs = ", ".join(f"{kind} {entry_nanoseconds(n, kind, args.repeats):.3f}"
                              for kind in HYPER)
            print(f"{n:>8} entries: ns per entry: {costs}")
        return
    X32, y, source = load_data(60000)
    print(f"data: {source}; BLAS: {blas_description()}")
    for dtype in (np.float64, np.float32):
        X = X32.astype(dtype)
        rows = []
        for _ in range(args.repeats):  # interleaved
            rows.append((_kernels.gemm_floor_epoch(WIDTHS, 200, len(X), dtype, X),
                         epoch_seconds(X, y, dtype, lambda: fnn.optim.SGD(lr=0.01)),
                         epoch_seconds(X, y, dtype, lambda: fnn.optim.Adam(lr=1e-3))))
        floor, sgd, adam = np.min(rows, axis=0)
        updates = ", ".join(f"{kind} {update_seconds(dtype, kind, args.repeats) * 1e3:.1f} ms"
                            for kind in HYPER)
        print(f"{np.dtype(dtype).name}: {STEPS} updates of {N_PARAMS} entries: {updates}; "
              f"epoch: floor {floor:.3f} s, SGD {sgd:.3f} s ({sgd / floor:.2f}x), "
              f"Adam {adam:.3f} s ({adam / floor:.2f}x)")


if __name__ == "__main__":
    main()
