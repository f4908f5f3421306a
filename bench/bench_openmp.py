"""Why fastnn runs its own team of threads and not OpenMP (issue 10, point 3): the design
card's "BLAS with OpenMP" timed against fastnn's team, on the same epoch.

The same MLP epoch (ReLU, softmax cross-entropy, SGD with momentum 0.9, float32, rows in
order) in four ways, each in a fresh process:

- team: fastnn's fit (its own team of threads; BLAS called on one thread per tile);
- serial: bench/openmp_step.c, its matrix products on BLAS's threads and every other
  pass on the calling thread (fastnn before its team; like it, momentum folded into the
  weight-gradient product);
- openmp: the same, every other pass an OpenMP loop between the BLAS calls (libgomp's
  default wait policy: its threads spin a while after each loop). So slow that it is
  timed on its first --spin-rows rows, scaled to the epoch's steps;
- openmp-passive: the same with OMP_WAIT_POLICY=passive (its threads sleep at once).

The C epoch's products are the floor's own BLAS calls (scipy's sgemm, the address from
scipy.linalg.cython_blas); "floor" is fastnn's GEMM floor (those products alone,
fastnn.benchmark.time_floor). Variants run in turn, round after round (interleaved), and
each figure is the fastest round's warm epoch. Needs a C compiler with -fopenmp.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/bench_openmp.py \
        --json docs/results/openmp-2cores.json
"""
import argparse
import ctypes
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "openmp_step.c"
VARIANTS = ("team", "serial", "openmp", "openmp-passive")
MAX_LAYERS = 8
LR, MOMENTUM = 0.01, 0.9


class Net(ctypes.Structure):
    """openmp_step.c's Net."""
    _fields_ = ([("n_layers", ctypes.c_int), ("width", ctypes.c_int * (MAX_LAYERS + 1))]
                + [(name, ctypes.c_void_p * MAX_LAYERS)
                   for name in ("weight", "bias", "weight_mom", "bias_mom", "out", "grad")]
                + [("step", ctypes.c_int64)])


def build_library(folder):
    """openmp_step.c compiled with OpenMP into folder; its path."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    compiler = shutil.which(compiler) or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        sys.exit("bench_openmp needs a C compiler (cc or gcc)")
    target = Path(folder) / "openmp_step.so"
    subprocess.run([compiler, "-O3", "-fopenmp", "-shared", "-fPIC", str(SOURCE), "-o",
                    str(target), "-lm"], check=True)
    return target


def sgemm_address():
    """scipy's sgemm (the BLAS fastnn's products call), from its Cython capsule."""
    from scipy.linalg import cython_blas
    capsule = cython_blas.__pyx_capi__["sgemm"]
    api = ctypes.pythonapi
    api.PyCapsule_GetName.restype = ctypes.c_char_p
    api.PyCapsule_GetName.argtypes = [ctypes.py_object]
    api.PyCapsule_GetPointer.restype = ctypes.c_void_p
    api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return api.PyCapsule_GetPointer(capsule, api.PyCapsule_GetName(capsule))


def c_network(widths, batch, seed=0):
    """An openmp_step.c Net for these layer widths and batch size, with torch.nn.Linear's
    initialisation, and its arrays by name ("weight", "bias", ...: one per layer)."""
    rng = np.random.default_rng(seed)
    net = Net()
    arrays = {name: [] for name in ("weight", "bias", "weight_mom", "bias_mom", "out",
                                    "grad")}
    net.n_layers = len(widths) - 1
    for i, w in enumerate(widths):
        net.width[i] = w
    for layer, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        bound = 1.0 / np.sqrt(n_in)
        for name, shape in (("weight", (n_out, n_in)), ("bias", n_out),
                            ("weight_mom", (n_out, n_in)), ("bias_mom", n_out),
                            ("out", (batch, n_out)), ("grad", (batch, n_out))):
            a = (rng.uniform(-bound, bound, shape) if name in ("weight", "bias")
                 else np.zeros(shape)).astype(np.float32)
            arrays[name].append(a)
            getattr(net, name)[layer] = a.ctypes.data
    return net, arrays


def c_epochs(library, net, X, y, batch, epochs, use_openmp):
    """Seconds of each of `epochs` epochs of openmp_step.c's train_epoch on net (rows in
    order), and their mean losses over the rows."""
    lib = ctypes.CDLL(str(library))
    lib.train_epoch.restype = ctypes.c_double
    lib.train_epoch.argtypes = [ctypes.c_void_p, ctypes.POINTER(Net), ctypes.c_void_p,
                                ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_float,
                                ctypes.c_float, ctypes.c_int]
    X = np.ascontiguousarray(X, dtype=np.float32)
    y = np.ascontiguousarray(y, dtype=np.int64)
    seconds, losses = [], []
    for _ in range(epochs):
        start = time.perf_counter()
        losses.append(lib.train_epoch(sgemm_address(), ctypes.byref(net), X.ctypes.data,
                                      y.ctypes.data, len(X), batch, LR, MOMENTUM,
                                      int(use_openmp)))
        seconds.append(time.perf_counter() - start)
    return seconds, losses


def child(args):
    """One variant in this process: prints a JSON line."""
    import fastnn as fnn
    from fastnn.benchmark import load_data, time_fit, time_floor
    widths = [int(w) for w in args.network.split("-")]
    X, y, _ = load_data(args.rows, args.data_path)
    if args.child == "team":
        result = {"epoch_s": time_fit(widths, X, y, args.batch,
                                      lambda: fnn.optim.SGD(lr=LR, momentum=MOMENTUM)),
                  "floor_s": time_floor(widths, X, args.batch)}
    else:
        # libgomp's spinning threads slow this variant by two orders of magnitude: it
        # runs the first spin_rows rows, its time scaled to the epoch's steps
        rows = min(len(X), args.spin_rows) if args.child == "openmp" else len(X)
        net, keep = c_network(widths, args.batch)
        seconds, losses = c_epochs(args.library, net, X[:rows], y[:rows], args.batch, 3,
                                   args.child != "serial")
        steps = -(-len(X) // args.batch) / -(-rows // args.batch)
        result = {"epoch_s": min(seconds[1:]) * steps, "losses": losses, "timed_rows": rows}
    from threadpoolctl import threadpool_info
    result["pools"] = sorted(f"{i['user_api']}:{i['internal_api']}:{i['num_threads']}"
                             for i in threadpool_info())
    print(json.dumps(result))


def run_variant(variant, library, network, batch, args):
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if variant == "openmp-passive":
        env["OMP_WAIT_POLICY"] = "passive"
    command = [sys.executable, str(Path(__file__).resolve()), "--child", variant, "--library",
               str(library), "--network", network, "--batch", str(batch), "--rows",
               str(args.rows), "--spin-rows", str(args.spin_rows)]
    if args.data_path:
        command += ["--data-path", args.data_path]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", default="784-256-128-10,784-1024-1024-10")
    parser.add_argument("--batch-sizes", default="32,128,512")
    parser.add_argument("--rows", type=int, default=15000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--spin-rows", type=int, default=2000,
                        help="rows timed for the openmp variant (scaled to the epoch)")
    parser.add_argument("--data-path")
    parser.add_argument("--json")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--library", help=argparse.SUPPRESS)
    parser.add_argument("--network", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)

    from fastnn.benchmark import blas_description, machine_description
    cells = [(network, int(b)) for network in args.networks.split(",")
             for b in args.batch_sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        library = build_library(folder)
        seen = {cell: {v: [] for v in VARIANTS} for cell in cells}
        pools = {}
        for round_ in range(args.rounds):
            for cell in cells:
                for variant in VARIANTS:
                    result = run_variant(variant, library, *cell, args)
                    seen[cell][variant].append(result)
                    pools[variant] = result["pools"]
                print(f"round {round_ + 1} of {args.rounds}: {cell[0]} at batch {cell[1]} "
                      "done", file=sys.stderr)
    header = (f"{'network':>17} {'batch':>5} {'floor s':>8} "
              + " ".join(f"{v:>15}" for v in VARIANTS) + "   (epoch / floor)")
    print(f"BLAS: {blas_description()}; {machine_description()}; {args.rows} rows, "
          f"fastest of {args.rounds} interleaved rounds")
    print(header)
    for cell in cells:
        floor = min(r["floor_s"] for r in seen[cell]["team"])
        row = {"network": cell[0], "batch_size": cell[1], "floor_s": floor}
        for variant in VARIANTS:
            row[f"{variant}_s"] = min(r["epoch_s"] for r in seen[cell][variant])
            row[f"{variant}_rounds_s"] = [r["epoch_s"] for r in seen[cell][variant]]
        losses = [r["losses"] for v in VARIANTS[1:] for r in seen[cell][v]]
        row["c_losses_finite"] = bool(np.all(np.isfinite(losses)))
        rows.append(row)
        print(f"{cell[0]:>17} {cell[1]:>5} {floor:8.3f} "
              + " ".join(f"{row[v + '_s'] / floor:15.2f}" for v in VARIANTS))
    for variant, found in pools.items():
        print(f"{variant}: thread pools {', '.join(found)}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"blas": blas_description(), "machine": machine_description(), "rows": args.rows,
             "rounds": args.rounds, "pools": pools, "cells": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
