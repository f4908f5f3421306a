"""What sigmoid and tanh hidden layers cost in float32: the activation pass alone, and an
epoch of 784-256-128-10 with each activation next to the GEMM floor.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/bench_activations.py
"""
import argparse
import time

import numpy as np

import fastnn as fnn
from fastnn import _engine, _kernels
from fastnn.benchmark import blas_description, load_data

WIDTHS = [784, 256, 128, 10]
LAYERS = {"relu": fnn.ReLU, "sigmoid": fnn.Sigmoid, "tanh": fnn.Tanh}


def pass_microseconds(kind, repeats, calls=2000):
    """One forward pass over a 128 x 256 float32 block."""
    z = (np.random.default_rng(0).normal(size=(128, 256)) * 3).astype(np.float32)
    a = np.empty_like(z)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            _kernels.activation(_engine.LAYER_KINDS[kind], 0.0, z, a)
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e6


def epoch_seconds(X, y, activation, batch_size):
    layers = []
    for n_in, n_out in zip(WIDTHS[:-1], WIDTHS[1:]):
        layers += [fnn.Dense(n_in, n_out), LAYERS[activation]()]
    model = fnn.Sequential(layers[:-1], seed=0)
    history = model.fit(X, y, optimizer=fnn.optim.SGD(lr=0.01), epochs=3,
                        batch_size=batch_size)
    return min(history["seconds"][1:])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args(argv)
    X, y, source = load_data(60000)
    print(f"data: {source}; BLAS: {blas_description()}")
    for kind in ("sigmoid", "tanh"):
        print(f"{kind} pass over 128 x 256 float32: {pass_microseconds(kind, args.repeats):.1f} us")
    rows = []
    for _ in range(args.repeats):  # interleaved
        rows.append([_kernels.gemm_floor_epoch(WIDTHS, args.batch_size, len(X), np.float32, X)]
                    + [epoch_seconds(X, y, name, args.batch_size) for name in LAYERS])
    best = np.min(rows, axis=0)
    print(f"epoch at batch {args.batch_size}, plain SGD: floor {best[0]:.3f} s; " + ", ".join(
        f"{name} {t:.3f} s ({t / best[0]:.2f}x)" for name, t in zip(LAYERS, best[1:])))


if __name__ == "__main__":
    main()
