"""fastnn processes training at once on the same cores (csrc/neighbours.h).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/bench_neighbours.py \
        [--rounds R] [--processes P] [--json F]

P processes (default: as many as cores) each train the same 3 epochs of 784-256-128-10
(float32, SGD momentum, batch 256, MNIST or synthetic data of its shape), started
together (each loads and warms up first, then waits for a common start time). Four ways:
- "default": no count fixed, neighbours counted (csrc/neighbours.h): each process's team
  is capped at its share of the cores, helpers only where the share is more than one;
- "no registry": no count fixed, FASTNN_NEIGHBOURS=off (no neighbours counted): each
  process alone with what it measures (the team sized to the cores it gets, a lead with
  helpers where one thread would run alone);
- "fixed 1": fnn.threads(1) in every process;
- "alone": one process, default, nothing else running (the reference).
Rounds alternate the ways; reported, per way, the fastest round's slowest process and the
mean over its processes (seconds for the 3 epochs, from fit's History), and how the
slowest compares with "fixed 1".
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

EPOCHS = 3


def worker(mode, start_at):
    """Train as `mode` says, starting at wall time start_at; prints the epochs' seconds."""
    import fastnn as fnn
    from fastnn.benchmark import load_data, mlp_layers
    X, y, _ = load_data(60000)
    model = fnn.Sequential(mlp_layers([784, 256, 128, 10]), seed=0)
    model.fit(X[:512], y[:512], batch_size=256,
              optimizer=fnn.optim.SGD(lr=0.01, momentum=0.9))
    time.sleep(max(0.0, start_at - time.time()))
    if mode == "fixed 1":
        with fnn.threads(1):
            seconds = model.fit(X, y, epochs=EPOCHS, batch_size=256)["seconds"]
    else:
        seconds = model.fit(X, y, epochs=EPOCHS, batch_size=256)["seconds"]
    stretches = model._engine.last_stretches
    print(json.dumps({"seconds": seconds, "helpers": model._engine.last_helpers,
                      "threads": [n for n, _ in stretches]}))


def run_together(mode, processes):
    """Per process, (total seconds, last epoch's stretch threads) of one round of `mode`."""
    env = dict(os.environ)
    if mode == "no registry":
        env["FASTNN_NEIGHBOURS"] = "off"
    count = 1 if mode == "alone" else processes
    start_at = time.time() + 4.0
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", mode, str(start_at)],
                              stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(count)]
    out = []
    for p in procs:
        stdout, _ = p.communicate(timeout=600)
        if p.returncode != 0:
            raise RuntimeError(f"a {mode!r} worker failed")
        result = json.loads(stdout.strip().splitlines()[-1])
        out.append((sum(result["seconds"]), result["threads"], result["helpers"]))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=None)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], float(args.worker[1]))
        return
    from fastnn._threads import available_cores, describe_blas
    from fastnn.benchmark import load_data
    cores = available_cores()
    processes = args.processes or cores
    modes = ["default", "no registry", "fixed 1", "alone"]
    rounds = {m: [] for m in modes}
    for _ in range(args.rounds):
        for mode in modes:
            rounds[mode].append(run_together(mode, processes))
    print(f"BLAS: {describe_blas()}; {cores} cores; data: {load_data(10)[2]}; "
          f"{processes} processes x {EPOCHS} epochs; fastest of {args.rounds} rounds")
    slowest = {m: min(max(s for s, _, _ in r) for r in rounds[m]) for m in modes}
    for mode in modes:
        best = min(rounds[mode], key=lambda r: max(s for s, _, _ in r))
        mean = float(np.mean([s for s, _, _ in best]))
        line = (f"{mode:>12}: slowest {slowest[mode]:.3f} s, mean {mean:.3f} s, slowest / "
                f"fixed 1 {slowest[mode] / slowest['fixed 1']:.2f}")
        if mode != "fixed 1":  # a fixed count runs no stretches
            threads = ["/".join(str(n) for n in sorted(set(t))) for _, t, _ in best]
            line += f"; last epoch's stretch threads per process: {', '.join(threads)}"
        print(line)
    for mode in ("default", "no registry"):
        print(f"{mode}, slowest process per round: "
              + " ".join(f"{max(s for s, _, _ in r):.2f}" for r in rounds[mode]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"blas": describe_blas(), "cores": cores, "processes": processes,
                       "epochs": EPOCHS, "rounds": rounds, "slowest": slowest}, f, indent=1)


if __name__ == "__main__":
    main()
