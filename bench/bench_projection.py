"""Projection of fastnn's epoch against the GEMM floor on more cores than this machine has,
from times measured here on one thread (issue 10, until a 16-core machine is at hand).

On T threads the team (csrc/engine/dense.pxi) gives thread t one tile of each
layer's products (before developer session 9: one block of its units), so a step costs
about

    products of the largest tile (measured: the same one-thread BLAS calls one team
    thread makes, units and inputs in blocks of 16)
  + the rest of the step on one thread / T  (bias, activations, loss, gather, update:
    measured as the one-thread epoch minus its one-thread products)
  + barriers per step x the cost of one barrier on T threads (measured here on 2 threads;
    assumed to grow linearly with T: one shared counter)

and the floor is the one-thread products / T (BLAS scaling perfectly: a floor lower than
any real one, so the projected ratio errs high). The 2-thread column is also measured, to
show how far the model is from a real run.

Since developer session 9 the engine cuts each Dense layer's products into a grid of
tiles (csrc/engine/dense.pxi, dense_grid): R blocks of rows by C blocks of units, R C = T, R
chosen per layer and batch. The first projection ("units") is the partition before that
(R = 1: a block of units per thread, which on many threads re-packs the whole batch for
every thin block); the second ("grid") is the engine's, with the largest tile of every
product measured the same way.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/bench_projection.py
"""
import argparse
import json
import sys
import time

import numpy as np

import fastnn as fnn
from fastnn import _engine, _kernels
from fastnn.benchmark import (
    NETWORKS,
    blas_description,
    load_data,
    planned_grid,
    time_fit,
    time_floor,
)

OPTIMIZERS = {"momentum": lambda: fnn.optim.SGD(lr=0.01, momentum=0.9),
              "adam": lambda: fnn.optim.Adam(lr=1e-3)}
UNIT_ALIGN = 16


def largest_block(units, n_threads, align=UNIT_ALIGN):
    """The most units any thread owns (csrc/engine/plan.pxi, share())."""
    blocks = -(-units // align)
    return max(min(units, (blocks * (t + 1) // n_threads) * align)
               - min(units, (blocks * t // n_threads) * align) for t in range(n_threads))


def block_products_seconds(widths, batch, n_threads, repeats=5):
    """One thread's products in one step on n_threads threads, each Dense layer's cut in
    a grid of units (one block of units per thread, grid rows of 1)."""
    return tile_products_seconds(widths, batch, [1] * (len(widths) - 1), n_threads, repeats)


def tile_products_seconds(widths, batch, grid_rows, n_threads, repeats=5):
    """One thread's products in one step when layer l's products are cut in grid_rows[l]
    x (n_threads / grid_rows[l]) tiles: per layer, the largest tile of Y[rows, units] =
    X[rows] W[units]^T, of dW[units, inputs] = G[:, units]^T X[:, inputs] (inputs split
    grid_rows ways) and, above the first layer, of dA[rows, inputs] = G[rows] W[:, inputs]
    (inputs split n_threads / grid_rows ways); units and inputs in blocks of 16 as the
    engine aligns them; one-thread BLAS through scipy, as the team calls it."""
    rng = np.random.default_rng(0)
    calls = []
    for layer, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        rows = grid_rows[layer]
        cols = n_threads // rows
        b = largest_block(batch, rows, align=1)
        u = largest_block(n_out, cols)
        k = largest_block(n_in, rows)
        x = rng.random((batch, n_in), dtype=np.float32)
        w = rng.random((u, n_in), dtype=np.float32)
        g = rng.random((batch, u), dtype=np.float32)
        calls += [(False, True, x[:b], w, np.zeros((b, u), np.float32)),            # Y
                  (True, False, g, np.ascontiguousarray(x[:, :k]),
                   np.zeros((u, k), np.float32))]                                   # dW
        if layer > 0:
            c = largest_block(n_in, cols)
            gz = rng.random((b, n_out), dtype=np.float32)
            wc = rng.random((n_out, c), dtype=np.float32)
            calls.append((False, False, gz, wc, np.zeros((b, c), np.float32)))     # dA
    best = np.inf
    with fnn.threads(1):
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(20):
                for ta, tb, a, b, out in calls:
                    _kernels.gemm(ta, tb, 1.0, a, b, 0.0, out)
            best = min(best, (time.perf_counter() - start) / 20)
    return best


def barriers_per_step(widths):
    """Barriers in a training step of an MLP: the gather, one before each Dense layer
    but the first, two around the loss, one before each lower Dense in backward."""
    n_dense = len(widths) - 1
    return 1 + (n_dense - 1) + 2 + (n_dense - 1)


def projection(block_products, n_threads, rest_step, barriers_2, steps, floor_1):
    """Projected epoch / floor on n_threads threads (the model in the docstring): a
    thread's products, the rest of a step split n_threads ways, the barriers (barriers_2:
    a step's barriers on 2 threads), over one thread's floor / n_threads."""
    step = (block_products + rest_step / n_threads
            + barriers_2 * max(1, n_threads / 2) * (n_threads > 1))
    return step * steps / (floor_1 / n_threads)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2,4,8,16")
    parser.add_argument("--batch-sizes", default="32,128,512")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    counts = [int(t) for t in args.threads.split(",")]
    X, y, source = load_data(60000)
    barrier_2, used = _engine.barrier_seconds(2)
    print(f"BLAS: {blas_description()}; data: {source}; a barrier on {used} threads here: "
          f"{barrier_2 * 1e6:.2f} us (assumed x T/2 on T threads)")
    print(f"{'network':<18} {'batch':>5} {'optimizer':>9} {'measured 1':>10} "
          f"{'measured 2':>10} " + " ".join(f"{'proj ' + str(t):>8}" for t in counts)
          + "  |  grid: " + " ".join(f"{'proj ' + str(t):>12}" for t in counts))
    rows = []
    for name, widths in NETWORKS.items():
        for batch in [int(b) for b in args.batch_sizes.split(",")]:
            steps = -(-len(X) // batch)
            with fnn.threads(1):
                floor_1 = min(time_floor(widths, X, batch) for _ in range(args.repeats))
            with fnn.threads(2):
                floor_2 = min(time_floor(widths, X, batch) for _ in range(args.repeats))
            products = {t: block_products_seconds(widths, batch, t) for t in counts}
            grids = {t: planned_grid(widths, batch, t) for t in counts}
            tiles = {t: tile_products_seconds(widths, batch, grids[t], t) for t in counts}
            for opt, make in OPTIMIZERS.items():
                with fnn.threads(1):
                    epoch_1 = min(time_fit(widths, X, y, batch, make)
                                  for _ in range(args.repeats))
                with fnn.threads(2):
                    epoch_2 = min(time_fit(widths, X, y, batch, make)
                                  for _ in range(args.repeats))
                rest_step = max(0.0, epoch_1 - floor_1) / steps
                model = (rest_step, barriers_per_step(widths) * barrier_2, steps, floor_1)
                projected = {t: projection(products[t], t, *model) for t in counts}
                projected_grid = {t: projection(tiles[t], t, *model) for t in counts}
                print(f"{name:<18} {batch:>5} {opt:>9} {epoch_1 / floor_1:10.2f} "
                      f"{epoch_2 / floor_2:10.2f} "
                      + " ".join(f"{projected[t]:8.2f}" for t in counts) + "  |  "
                      + " ".join(f"{projected_grid[t]:5.2f} ({'/'.join(map(str, grids[t]))})"
                                 for t in counts), flush=True)
                rows.append({"network": name, "batch_size": batch, "optimizer": opt,
                             "epoch_1_s": epoch_1, "floor_1_s": floor_1,
                             "epoch_2_s": epoch_2, "floor_2_s": floor_2,
                             "rest_per_step_s": rest_step,
                             "block_products_per_step_s": {str(t): products[t]
                                                           for t in counts},
                             "projected_ratio": {str(t): projected[t] for t in counts},
                             "grid": {str(t): {"rows_per_layer": grids[t],
                                               "block_products_per_step_s": tiles[t],
                                               "projected_ratio": projected_grid[t]}
                                      for t in counts}})
    print("\ncolumns: fastnn / floor; measured on this machine at 1 and 2 threads, "
          "projected for T threads by the model in this file's docstring with a block of units "
          "per thread; then with the engine's grid of tiles, each layer's rows of the grid in "
          "brackets")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"blas": blas_description(), "barrier_2_threads_s": barrier_2,
                       "rows": rows}, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
