"""What LayerNorm and GELU add to an epoch, against the time their memory traffic takes:
784-256-128-10 on MNIST with plain SGD, a LayerNorm (or a GELU, exact and tanh) after
each hidden layer's ReLU, interleaved with the plain network, fastest of the repeats.

The traffic: each of these layers reads its input and writes its output going forward,
and reads the incoming gradient and its saved input and writes its gradient going back:
5 passes over its (rows x width) activations, 60,000 x (256 + 128) entries of 4 bytes an
epoch. Its time is those bytes at the bandwidth measured in the same run for a buffer of
one batch's activations (a copy's read and write, per thread, times the threads): what
the passes cost at the least, with nothing computed.

    python bench/bench_norm_traffic.py [--batch-size 512] [--repeats 5]
"""
import argparse
import time

import numpy as np

import fastnn as fnn
from fastnn.benchmark import blas_description, load_data, planned_threads

KINDS = {"LayerNorm": lambda width: fnn.LayerNorm(width),
         "GELU (exact)": lambda width: fnn.GELU(),
         "GELU (tanh)": lambda width: fnn.GELU(approximate="tanh")}
PASSES = 5


def epoch_seconds(X, y, batch_size, extra):
    layers, width = [], 784
    for hidden in (256, 128):
        layers += [fnn.Dense(width, hidden), fnn.ReLU()]
        layers += [extra(hidden)] if extra else []
        width = hidden
    model = fnn.Sequential(layers + [fnn.Dense(width, 10)], seed=0)
    model.fit(X[:2 * batch_size], y[:2 * batch_size], optimizer="sgd", batch_size=batch_size)
    return model.fit(X, y, epochs=1, batch_size=batch_size)["seconds"][0]


def copy_bandwidth(entries, seconds=0.2):
    """Bytes a second that one thread reads and writes copying a float32 buffer of
    `entries` (fastest of several timed loops)."""
    source, target = np.ones(entries, np.float32), np.empty(entries, np.float32)
    best = np.inf
    for _ in range(5):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 5:
            np.copyto(target, source)
            count += 1
        best = min(best, (time.perf_counter() - start) / count)
    return 2 * source.nbytes / best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    X, y, source = load_data(60000)
    threads = planned_threads((784, 256, 128, 10), args.batch_size)
    bandwidth = copy_bandwidth(args.batch_size * 256) * threads
    traffic = PASSES * len(X) * (256 + 128) * 4 / bandwidth
    print(f"# {source}; {blas_description()}; {threads} threads; batch {args.batch_size}; "
          f"copy bandwidth of a batch's activations {bandwidth / 1e9:.1f} GB/s over the "
          f"threads; {PASSES} passes over the activations take {traffic:.4f} s")
    times = {name: [] for name in ["plain"] + list(KINDS)}
    for _ in range(args.repeats):  # interleaved: the machine's drift hits each alike
        for name in times:
            times[name].append(epoch_seconds(X, y, args.batch_size, KINDS.get(name)))
    plain = min(times["plain"])
    print("| layers after each ReLU | epoch s | added s | added / traffic |")
    print("|---|---|---|---|")
    print(f"| none | {plain:.3f} | | |")
    for name in KINDS:
        added = min(times[name]) - plain
        print(f"| {name} | {min(times[name]):.3f} | {added:.4f} | {added / traffic:.2f} |")


if __name__ == "__main__":
    main()
