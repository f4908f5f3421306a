"""fastnn.sklearn.MLPClassifier against scikit-learn's MLPClassifier on MNIST.

Both with scikit-learn's default settings (hidden_layer_sizes=(100,), relu, adam,
batch_size=min(200, n), alpha=1e-4, learning_rate_init=1e-3) and the same
random_state, so they take the same steps. Timed:
- per epoch: fits with max_iter=1 and with max_iter=1 + EPOCHS, each the fastest of
  interleaved repeats; their difference divided by EPOCHS is the epoch, and the rest of
  the one-epoch fit is the fixed cost of a fit (input validation, conversion, set-up);
- `--full`: one complete default fit each (max_iter=200 with scikit-learn's stopping
  rule), wall time and epochs run.
Three data cases: float64 X (what fetch_openml gives; both train in float64), float32
X (both train in float32), and float64 X with fastnn's dtype="float32" (scikit-learn
in float64). The GEMM floor of the same epoch (the matrix products alone, fastnn's
BLAS) is shown for each precision.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/bench_sklearn.py
"""
import argparse
import os
import platform
import sys
import time
import warnings

import numpy as np

from fastnn import _kernels, get_num_threads
from fastnn.benchmark import blas_description, load_data

try:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier as ScikitMLP

    from fastnn.sklearn import MLPClassifier as FastMLP
except ImportError:
    sys.exit('needs scikit-learn: pip install "fastnn[sklearn]"')


def fit_seconds(make, X, y, max_iter):
    est = make(max_iter=max_iter)
    start = time.perf_counter()
    est.fit(X, y)
    return time.perf_counter() - start, est




def timed_pair(make, X, y, args):
    """Seconds of a 1-epoch and a (1 + epochs)-epoch fit, after an untimed 1-epoch fit:
    the first fit after switching tools runs up to 2x slower on this VM (each tool's
    BLAS threads and memory settle), which would otherwise charge the switch to one."""
    fit_seconds(make, X, y, 1)
    return fit_seconds(make, X, y, 1)[0], fit_seconds(make, X, y, 1 + args.epochs)[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--full", action="store_true", help="also time complete default fits")
    args = parser.parse_args(argv)

    X32, y, source = load_data(60000)
    X64 = X32.astype(np.float64)
    print(f"data: {source}, {X32.shape[0]} x {X32.shape[1]}; {platform.processor() or '?'}, "
          f"{os.cpu_count()} CPUs, fastnn threads {get_num_threads()}")
    print(f"BLAS: {blas_description()}")
    settings = dict(random_state=0, tol=0.0)  # tol=0: no early stop inside the timed fits
    cases = [
        ("float64 X", X64, lambda **k: ScikitMLP(**settings, **k),
         lambda **k: FastMLP(**settings, **k), np.float64),
        ("float32 X", X32, lambda **k: ScikitMLP(**settings, **k),
         lambda **k: FastMLP(**settings, **k), np.float32),
        ("float64 X, fastnn dtype=float32", X64, lambda **k: ScikitMLP(**settings, **k),
         lambda **k: FastMLP(dtype="float32", **settings, **k), np.float32),
    ]
    print(f"\nseconds per epoch (default MLPClassifier, batch 200, Adam; min of "
          f"{args.repeats} interleaved repeats of {args.epochs} epochs)")
    print(f"{'case':34} {'floor':>7} {'sklearn':>8} {'fastnn':>8} {'sklearn/fastnn':>15} "
          f"{'fastnn/floor':>13} {'fixed:sk':>9} {'fixed:fn':>9}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for name, X, make_sk, make_fn, dtype in cases:
            Xc = np.ascontiguousarray(X, dtype=dtype)
            times = []
            for _ in range(args.repeats):  # interleaved, so drifts of speed hit all
                times.append(
                    [_kernels.gemm_floor_epoch([784, 100, 10], 200, len(Xc), dtype, Xc)]
                    + [t for make in (make_sk, make_fn) for t in timed_pair(make, X, y, args)])
            floor, sk1, skn, fn1, fnn = np.min(times, axis=0)
            sk, fn = (skn - sk1) / args.epochs, (fnn - fn1) / args.epochs
            print(f"{name:34} {floor:7.3f} {sk:8.3f} {fn:8.3f} {sk / fn:15.2f} "
                  f"{fn / floor:13.2f} {sk1 - sk:9.3f} {fn1 - fn:9.3f}")
        if args.full:
            print("\ncomplete default fits (max_iter=200, tol=1e-4, n_iter_no_change=10)")
            for name, X, _, _, _ in cases:
                t_sk, sk = fit_seconds(lambda **k: ScikitMLP(random_state=0, **k), X, y, 200)
                fast = (lambda **k: FastMLP(random_state=0, dtype="float32", **k)) \
                    if "dtype" in name else (lambda **k: FastMLP(random_state=0, **k))
                t_fn, fn = fit_seconds(fast, X, y, 200)
                print(f"{name:34} sklearn {t_sk:7.1f} s ({sk.n_iter_} epochs)  fastnn "
                      f"{t_fn:7.1f} s ({fn.n_iter_} epochs)  ratio {t_sk / t_fn:.2f}")


if __name__ == "__main__":
    main()
