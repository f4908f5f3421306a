"""Training on a busy machine: the same work with and without another process spinning.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/bench_busy.py [--rounds R]
        [--json F]

Each round measures everything idle, then again while a `while True: pass` process runs
(started 0.3 s before, killed after), so idle and busy alternate. Reported: the fastest
of the rounds for each, and busy / idle.
- fit100: the issue's small scikit-learn-style fit, `fastnn.sklearn.MLPClassifier(
  solver="sgd", max_iter=3000, ...)` on the first 100 rows of load_digits(n_class=2)
  scaled to [0, 1] (needs scikit-learn), default threads.
- epoch256: one epoch of 784-256-128-10 (float32, SGD momentum) at batch 256 on MNIST
  (synthetic data of its shape without it), six ways: the default (no count fixed:
  the team sized to the cores the machine leaves, a lead with helpers where one thread
  would run alone), "no helpers" (the stretches alone: one thread where the machine
  leaves one), "unpinned helpers" (helpers, but the lead not kept on one CPU nor the
  helpers off it), "helpers always" (every stretch, idle or busy, a lead whose helpers
  claim the tiles of each pass as they come, a late one computed again), `fnn.threads(
  cores)` (fixed: every stretch on all of them), and `fnn.threads(1)`. "busy / idle"
  divides each busy time by the default's idle time.
  Each busy round also gives busy default / busy fixed 1, the pair timed closest
  together. The default's busy epoch reports the share of its stretches that ran below
  the plan (Engine.last_stretches) and the tiles its helpers handed in and the lead
  took back (Engine.last_helpers).
- predict60k: predict of the 60,000 rows with the same model, default threads (its
  blocks of rows go to whichever thread is free), fastest of 3 calls.
- torch epoch256 (when torch is installed): the same epoch in torch with as many threads
  as cores (fastnn.benchmark.time_torch), divided by torch's own idle time: how far a
  framework whose threads meet at every operator gets on the same busy machine.
"""
import argparse
import contextlib
import importlib.util
import json
import subprocess
import sys
import time
import warnings

import numpy as np

import fastnn as fnn
from fastnn import _engine
from fastnn._threads import available_cores, describe_blas
from fastnn.benchmark import load_data, mlp_layers, time_torch


def small_fit_seconds():
    from sklearn.datasets import load_digits

    from fastnn.sklearn import MLPClassifier
    X, y = load_digits(n_class=2, return_X_y=True)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        MLPClassifier(solver="sgd", max_iter=3000, n_iter_no_change=float("inf"), tol=1e9,
                      random_state=0).fit(X[:100] / 16.0, y[:100])
    return time.perf_counter() - start


@contextlib.contextmanager
def helping(mode, pin):
    """Adapting training's helpers set for the block (the engine's helping settings)."""
    old = _engine.tune(helping=mode, help_pin=pin)
    try:
        yield
    finally:
        _engine.tune(**old)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    cores = available_cores()
    X, y, source = load_data(60000)
    model = fnn.Sequential(mlp_layers([784, 256, 128, 10]), seed=0)
    model.fit(X[:512], y[:512], batch_size=256, optimizer=fnn.optim.SGD(lr=0.01, momentum=0.9))
    try:
        import sklearn  # noqa: F401
        with_sklearn = True
    except ImportError:
        with_sklearn = False
    modes = {"default": contextlib.nullcontext, "no helpers": lambda: helping(0, True),
             "unpinned helpers": lambda: helping(1, False),
             "helpers always": lambda: helping(2, True),
             f"fixed {cores}": lambda: fnn.threads(cores), "fixed 1": lambda: fnn.threads(1)}
    with_torch = importlib.util.find_spec("torch") is not None
    times = {state: {"fit100": [], "predict60k": [], "torch": [], **{m: [] for m in modes}}
             for state in ("idle", "busy")}
    below, tiles = [], []
    for _ in range(args.rounds):
        for state in ("idle", "busy"):
            spinner = None
            if state == "busy":
                spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(0.3)
            try:
                if with_sklearn:
                    times[state]["fit100"].append(small_fit_seconds())
                best = np.inf
                for _ in range(3):
                    start = time.perf_counter()
                    model.predict(X)
                    best = min(best, time.perf_counter() - start)
                times[state]["predict60k"].append(best)
                for mode, context in modes.items():
                    time.sleep(0.25)  # what the last epoch learned is stale (0.2 s)
                    with context():
                        times[state][mode].append(
                            model.fit(X, y, epochs=1, batch_size=256)["seconds"][0])
                    if mode == "default" and state == "busy":
                        stretches = model._engine.last_stretches
                        below.append(sum(n < cores for n, _ in stretches) / len(stretches)
                                     if stretches else 0.0)
                        helped = model._engine.last_helpers
                        tiles.append((helped["tiles"], helped["retaken"]))
                if with_torch:
                    with fnn.threads(cores):  # time_torch gives torch fastnn's count
                        times[state]["torch"].append(
                            time_torch([784, 256, 128, 10], X, y, 256, "momentum"))
            finally:
                if spinner is not None:
                    spinner.kill()
                    spinner.wait()
    best = {state: {k: min(v) for k, v in d.items() if v} for state, d in times.items()}
    print(f"BLAS: {describe_blas()}; {cores} cores; data: {source}; {args.rounds} rounds, "
          f"fastest of each")
    if with_sklearn:
        i, b = best["idle"]["fit100"], best["busy"]["fit100"]
        print(f"fit100: idle {i:.3f} s, busy {b:.3f} s, busy / idle {b / i:.2f}")
    i, b = best["idle"]["predict60k"], best["busy"]["predict60k"]
    print(f"predict60k: idle {i * 1e3:.1f} ms, busy {b * 1e3:.1f} ms, busy / idle {b / i:.2f}")
    idle = best["idle"]["default"]
    for mode in modes:
        i, b = best["idle"][mode], best["busy"][mode]
        print(f"epoch256 {mode:>8}: idle {i:.3f} s, busy {b:.3f} s, busy / default's idle "
              f"{b / idle:.2f}")
    print(f"default's busy epochs: {100 * float(np.mean(below)):.0f}% of stretches below "
          f"{cores} threads; tiles its helpers handed in / the lead took back, per round: "
          + ", ".join(f"{t}/{r}" for t, r in tiles))
    per_round = [b / f for b, f in zip(times["busy"]["default"], times["busy"]["fixed 1"])]
    print("busy default / busy fixed 1, per round: "
          + " ".join(f"{r:.2f}" for r in per_round) + f"; median {np.median(per_round):.2f}")
    if with_torch:
        i, b = best["idle"]["torch"], best["busy"]["torch"]
        print(f"torch epoch256 ({cores} threads): idle {i:.3f} s, busy {b:.3f} s, busy / "
              f"torch's idle {b / i:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"blas": describe_blas(), "cores": cores, "data": source,
                       "rounds": args.rounds, "seconds": times, "fastest": best,
                       "busy_stretches_below_plan": below,
                       "busy_helper_tiles_and_retaken": tiles,
                       "busy_default_over_fixed1": per_round}, f, indent=1)


if __name__ == "__main__":
    main()
