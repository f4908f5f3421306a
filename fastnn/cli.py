"""The `fastnn` command: `info`, `train` and `bench`."""
import argparse
import os
import platform
import sys
import time

from . import __version__


def info(args):
    from . import _engine, _threads
    print(f"fastnn {__version__} (python {platform.python_version()}, {platform.machine()})")
    blas = _threads.blas_info()
    print(f"BLAS: {blas.get('internal_api', '?')} {blas.get('version', '?')} (kernel "
          f"{blas.get('architecture', '?')}, {blas.get('num_threads', '?')} threads outside "
          f"fastnn), from scipy.linalg.cython_blas: {blas.get('filepath', '?')}")
    from threadpoolctl import threadpool_info
    for other in threadpool_info():  # numpy's own BLAS, which fastnn does not call
        if other["user_api"] == "blas" and other.get("filepath") != blas.get("filepath"):
            print(f"other BLAS in this process (numpy's; not used by fastnn): "
                  f"{other.get('internal_api', '?')} {other.get('version', '?')}, "
                  f"{other.get('filepath', '?')}")
    print(f"threads: up to {_threads.get_num_threads()} (cores available: "
          f"{_threads.available_cores()}, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}); each call runs on a team sized "
          f"to its work (one thread per {_engine.get_grain() / 1e6:g} MFLOP of a step's "
          f"products)")
    pinned = ("pinned to 1 thread during fastnn's calls" if _engine.blas_controlled()
              else "limited to 1 thread by threadpoolctl during fastnn's calls")
    print(f"thread design: fastnn's own pthreads team runs every pass; BLAS {pinned}; "
          f"no OpenMP")
    print("compiled dtypes: float32, float64")
    return 0


def train(args):
    import fastnn as fnn

    from .datasets import load_mnist
    try:
        X, y = load_mnist(args.data_path, args.data, "train", download=args.download)
        X_test, y_test = load_mnist(args.data_path, args.data, "test", download=args.download)
    except (FileNotFoundError, ValueError) as exc:
        print(f"fastnn train: {exc}", file=sys.stderr)
        return 2
    hidden = [int(h) for h in args.hidden.split(",") if h]
    widths = [X.shape[1]] + hidden + [10]
    layers = []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        layers += [fnn.Dense(n_in, n_out), "relu"]
    model = fnn.Sequential(layers[:-1], seed=args.seed)
    if args.optimizer == "sgd":
        optimizer = fnn.optim.SGD(lr=args.lr, momentum=args.momentum)
    else:
        optimizer = fnn.optim.Adam(lr=args.lr)
    start = time.perf_counter()
    model.fit(X, y, optimizer=optimizer, epochs=args.epochs, batch_size=args.batch_size,
              verbose=1, validation_data=(X_test, y_test))
    result = model.evaluate(X_test, y_test)
    print(f"test accuracy {result['accuracy']:.4f}, test loss {result['loss']:.4f}, "
          f"{time.perf_counter() - start:.1f} s")
    if args.save:
        model.save(args.save)
        print(f"saved to {args.save}")
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # its own options, parsed by fastnn.benchmark
        from .benchmark import main as bench_main
        return bench_main(argv[1:])
    parser = argparse.ArgumentParser(prog="fastnn", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="version, BLAS, threads, compiled dtypes")
    t = commands.add_parser("train", help="train an MLP on MNIST or Fashion-MNIST")
    t.add_argument("--data", choices=["mnist", "fashion_mnist"], default="mnist")
    t.add_argument("--data-path", default=None, help="folder of the IDX files")
    t.add_argument("--no-download", dest="download", action="store_false",
                   help="fail instead of downloading missing MNIST files")
    t.add_argument("--hidden", default="256,128", help="hidden widths, comma-separated")
    t.add_argument("--epochs", type=int, default=5)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    t.add_argument("--lr", type=float, default=0.05)
    t.add_argument("--momentum", type=float, default=0.9)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--save", default=None, help="write the trained model to this .npz")
    commands.add_parser("bench", help="time fastnn against the GEMM floor and torch "
                                      "(`fastnn bench --help` for its options)")
    args = parser.parse_args(argv)
    return {"info": info, "train": train}[args.command](args)
