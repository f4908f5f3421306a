"""What the adaptive optimizers cost: the Adam, RMSprop and Adagrad update passes alone,
and an epoch with Adam next to plain SGD and the GEMM floor, on scikit-learn's default
network for MNIST (784-100-10, batch 200).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/bench_updates.py
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


def update_seconds(dtype, kind, repeats):
    """Seconds for STEPS updates of N_PARAMS entries by optimizer `kind` (kernel alone)."""
    rng = np.random.default_rng(0)
    p, g, s0, s1, s2 = (rng.random(N_PARAMS).astype(dtype) for _ in range(5))
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for step in range(STEPS):
            _kernels.optimizer_step(_engine.OPTIMIZER_KINDS[kind], HYPER[kind], step, p, g,
                                    s0, s1, s2)
        best = min(best, time.perf_counter() - start)
    return best


def epoch_seconds(X, y, dtype, make_optimizer):
    """The fastest of epochs 2 and 3 of a fit."""
    model = fnn.Sequential([fnn.Dense(784, 100), fnn.ReLU(), fnn.Dense(100, 10)],
                           dtype=dtype, seed=0)
    history = model.fit(X, y, optimizer=make_optimizer(), epochs=3, batch_size=200)
    return min(history["seconds"][1:])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
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
