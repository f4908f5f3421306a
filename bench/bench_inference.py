"""Inference: one row's predict, predicts from two Python threads at once, and a batch
predict of MNIST's training set against the forward products alone.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/bench_inference.py [--json F]

784-256-128-10 in float32. Single row: fastnn's predict, NumPy's three matmuls (with the
bias adds and ReLUs) and torch in inference_mode (where installed), interleaved, the
fastest of several repeats of many calls. Two threads: each Python thread predicts
batches of 64 rows; the throughput of 2 threads over 1. Batch: predict of 60,000 rows
against the three forward GEMMs of the same shapes through the same BLAS (the floor),
fastest of 5.
"""
import argparse
import json
import sys
import threading
import time

import numpy as np

import fastnn as fnn
from fastnn import _kernels
from fastnn._threads import describe_blas


def fastest(fn, calls, repeats=7):
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def threads_throughput(model, n_threads, batches, X):
    """Rows predicted per second by n_threads Python threads, each running `batches`
    predicts of X."""
    barrier = threading.Barrier(n_threads + 1)

    def work():
        barrier.wait()
        for _ in range(batches):
            model.predict(X)

    workers = [threading.Thread(target=work) for _ in range(n_threads)]
    for w in workers:
        w.start()
    barrier.wait()
    start = time.perf_counter()
    for w in workers:
        w.join()
    return n_threads * batches * len(X) / (time.perf_counter() - start)


def one_and_two_threads(model, X):
    """The best of 3 throughputs of 1 and of 2 Python threads (interleaved)."""
    one = two = 0.0
    for _ in range(3):
        one = max(one, threads_throughput(model, 1, 400, X))
        two = max(two, threads_throughput(model, 2, 200, X))
    return one, two


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    model = fnn.Sequential([fnn.Dense(784, 256), fnn.ReLU(), fnn.Dense(256, 128), fnn.ReLU(),
                            fnn.Dense(128, 10)], seed=0)
    W = [layer.weight for layer in model.layers if layer.kind == "dense"]
    b = [layer.bias for layer in model.layers if layer.kind == "dense"]

    def numpy_predict(x):
        h = np.maximum(x @ W[0].T + b[0], 0)
        h = np.maximum(h @ W[1].T + b[1], 0)
        return h @ W[2].T + b[2]

    x = rng.random((1, 784), dtype=np.float32)
    assert np.allclose(model.predict(x), numpy_predict(x), rtol=1e-5, atol=1e-6)
    tools = {"fastnn": lambda: model.predict(x), "numpy": lambda: numpy_predict(x)}
    try:
        import torch
        net = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(),
                                  torch.nn.Linear(256, 128), torch.nn.ReLU(),
                                  torch.nn.Linear(128, 10))
        tx = torch.from_numpy(x)

        def torch_predict():
            with torch.inference_mode():
                return net(tx)
        tools["torch"] = torch_predict
    except ImportError:
        pass
    single = {name: np.inf for name in tools}
    for _ in range(3):  # interleaved rounds
        for name, fn in tools.items():
            single[name] = min(single[name], fastest(fn, 2000))
    print(f"BLAS: {describe_blas()}; {fnn.get_num_threads()} threads")
    print("one row, microseconds: " + ", ".join(f"{k} {v * 1e6:.1f}"
                                                 for k, v in single.items())
          + f"; fastnn / numpy {single['fastnn'] / single['numpy']:.2f}")

    X64 = rng.random((64, 784), dtype=np.float32)
    one, two = one_and_two_threads(model, X64)
    print(f"batches of 64 rows: 1 Python thread {one:,.0f} rows/s (its predicts on "
          f"fastnn's team), 2 Python threads {two:,.0f} rows/s, {two / one:.2f}x")
    with fnn.threads(1):  # each predict on one core: the calling thread's path
        one_core, two_cores = one_and_two_threads(model, X64)
    print(f"  with fnn.set_num_threads(1): 1 Python thread {one_core:,.0f} rows/s, 2 Python "
          f"threads {two_cores:,.0f} rows/s, {two_cores / one_core:.2f}x")

    X = rng.random((60000, 784), dtype=np.float32)
    batch = floor_s = np.inf
    for _ in range(5):  # the floor: the same products in chunks of 1024 rows, same BLAS
        batch = min(batch, fastest(lambda: model.predict(X, batch_size=1024), 1, 1))
        floor_s = min(floor_s, _kernels.gemm_floor_epoch([784, 256, 128, 10], 1024, 60000,
                                                         np.float32, X, forward_only=True))
    print(f"predict of 60,000 rows (chunks of 1024): {batch * 1e3:.1f} ms, the forward "
          f"products alone {floor_s * 1e3:.1f} ms (the same BLAS, its own threads), "
          f"{batch / floor_s:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"blas": describe_blas(), "single_row_s": single,
                       "threads_rows_per_s": {"1": one, "2": two},
                       "one_core_threads_rows_per_s": {"1": one_core, "2": two_cores},
                       "batch_s": batch, "floor_s": floor_s}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
