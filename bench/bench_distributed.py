"""Data-parallel training over MPI against threads in one process, on this machine's cores.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/bench_distributed.py \
        [--cores 2] [--rows 8192] [--json F]

784-1024-1024-10 (ReLU) in float32, SGD with momentum, global batch 512, synthetic rows
(the speed does not depend on the values). Configurations, interleaved round by round,
each the fastest epoch of its runs:
  1 x C   one process, C team threads (ordinary fit)
  R x C/R mpirun -n R, C/R threads each, fit(comm=...): the compiled MPI_Allreduce
  R x C/R (python)  the same with the per-step call back into Python for the allreduce
for R = 2, 4, ... up to C, and
  1 x 1   one process, one thread, ordinary fit and (compiled) fit(comm=...) under
          mpirun -n 1: what the data-parallel step costs by itself (its gradients
          summed from a flat buffer, then a separate update pass), and
  C x default  mpirun -n C with no thread count set (no OMP_NUM_THREADS): each process
          plans up to C threads, C*C on C cores, and its team sizes itself to what the
          others leave (its "threads" is the last stretch's count).
Also: the allreduce of the model's flat gradient buffer alone (median of 50 calls per
process count), so its share of a step can be read off.
Run it with --worker under mpirun only through this driver.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

SIZES = [784, 1024, 1024, 10]
HERE = os.path.abspath(__file__)


def build_model():
    import fastnn as fnn
    from fastnn import layers
    stack = []
    for a, b in zip(SIZES, SIZES[1:]):
        stack += [layers.Dense(a, b), layers.ReLU()]
    return fnn.Sequential(stack[:-1], dtype="float32", seed=0)


def worker(args):
    """One configuration: prints a JSON line (rank 0) with its fastest epoch."""
    import fastnn as fnn
    import fastnn.distributed as dist
    from fastnn import optim
    comm = group = None
    rank, size, start, stop = 0, 1, 0, args.rows
    if args.allreduce != "none":
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
        rank, size = comm.Get_rank(), comm.Get_size()
        group = dist.Group(comm, allreduce=args.allreduce)
        start, stop = dist.shard(args.rows, comm)
    rng = np.random.default_rng(rank)
    X = rng.normal(size=(stop - start, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], stop - start)
    model = build_model()
    if args.threads:  # 0: the default, nothing fixed
        fnn.set_num_threads(args.threads)
    history = model.fit(X, y, optimizer=optim.SGD(lr=0.01, momentum=0.9),
                        epochs=args.epochs, batch_size=args.batch_size, comm=group)
    result = {"processes": size, "threads": args.threads, "allreduce": args.allreduce,
              "epoch_seconds": min(history["seconds"][1:] or history["seconds"]),
              "team_threads": model.last_threads}
    if comm is not None:
        from mpi4py import MPI
        flat = model._engine.flat_gradients
        times = []
        for _ in range(50):
            comm.Barrier()
            t0 = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, flat)
            times.append(time.perf_counter() - t0)
        result["allreduce_seconds"] = float(np.median(times))
        result["allreduce_bytes"] = flat.nbytes
    if rank == 0:
        print("RESULT " + json.dumps(result), flush=True)


def mpirun(n):
    path = os.path.join(os.path.dirname(sys.executable), "mpirun")
    path = path if os.path.exists(path) else shutil.which("mpirun")
    command = [path, "-n", str(n), "--bind-to", "none", "--oversubscribe"]
    if "Open MPI" in subprocess.run([path, "--version"], capture_output=True,
                                    text=True).stdout:
        if os.geteuid() == 0:
            command.append("--allow-run-as-root")
    return command


def run(processes, threads, allreduce, args):
    command = [sys.executable, HERE, "--worker", "--threads", str(threads), "--allreduce",
               allreduce, "--rows", str(args.rows), "--epochs", str(args.epochs),
               "--batch-size", str(args.batch_size)]
    if allreduce != "none":
        command = mpirun(processes) + command
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{command} failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(lines[-1][7:])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--allreduce", default="none", help=argparse.SUPPRESS)
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    from fastnn._threads import describe_blas
    configs = [(1, args.cores, "none")]
    if args.cores > 1:   # the data-parallel step's own cost, apart from sharing cores
        configs += [(1, 1, "none"), (1, 1, "compiled")]
    ranks = 2
    while ranks <= args.cores:
        configs += [(ranks, args.cores // ranks, "compiled"),
                    (ranks, args.cores // ranks, "python")]
        ranks *= 2
    if args.cores > 1:
        configs.append((args.cores, 0, "compiled"))
    best = {}
    for _ in range(args.rounds):   # interleaved: A, B, C, A, B, C, ...
        for config in configs:
            result = run(*config, args)
            key = f"{config[0]}x{config[1] or 'default'} {config[2]}"
            if key not in best or result["epoch_seconds"] < best[key]["epoch_seconds"]:
                best[key] = result
    base = best[f"1x{args.cores} none"]["epoch_seconds"]
    steps = -(-args.rows // args.batch_size)
    print(f"BLAS: {describe_blas()}; OPENBLAS_CORETYPE="
          f"{os.environ.get('OPENBLAS_CORETYPE', 'unset')}")
    print(f"{'-'.join(map(str, SIZES))}, float32, global batch {args.batch_size}, "
          f"{args.rows} rows ({steps} steps), fastest epoch of {args.rounds} rounds")
    print(f"{'configuration':<26}{'epoch s':>9}{'vs 1 process':>14}{'allreduce ms':>14}"
          f"{'of a step':>10}")
    for key, result in best.items():
        reduce_ms = result.get("allreduce_seconds", 0) * 1e3
        share = reduce_ms / 1e3 * steps / result["epoch_seconds"]
        if result["threads"] == 0:
            key += f" ({result['team_threads']} at the end)"
        print(f"{key:<26}{result['epoch_seconds']:>9.3f}"
              f"{result['epoch_seconds'] / base:>13.2f}x"
              + (f"{reduce_ms:>14.2f}{share:>9.0%}" if reduce_ms else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"blas": describe_blas(), "sizes": SIZES, "rows": args.rows,
                       "batch_size": args.batch_size, "cores": args.cores,
                       "results": best}, f, indent=1)


if __name__ == "__main__":
    main()
