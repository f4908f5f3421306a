"""What Adam costs: its update pass alone, and an epoch with Adam next to plain SGD and
the GEMM floor, on scikit-learn's default network for MNIST (784-100-10, batch 200).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/bench_adam.py
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


def update_seconds(dtype, repeats):
    """Seconds for STEPS Adam updates of N_PARAMS entries (the kernel alone)."""
    rng = np.random.default_rng(0)
    p, g, m, v, vmax = (rng.random(N_PARAMS).astype(dtype) for _ in range(5))
    hyper = [1e-3, 0.9, 0.999, 1e-8, 0, 0, 0]
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for step in range(STEPS):
            _kernels.optimizer_step(_engine.OPTIMIZER_KINDS["adam"], hyper, step, p, g, m, v,
                                    vmax)
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
        update = update_seconds(dtype, args.repeats)
        print(f"{np.dtype(dtype).name}: {STEPS} Adam updates of {N_PARAMS} entries "
              f"{update * 1e3:.1f} ms; epoch: floor {floor:.3f} s, SGD {sgd:.3f} s "
              f"({sgd / floor:.2f}x), Adam {adam:.3f} s ({adam / floor:.2f}x)")


if __name__ == "__main__":
    main()
