"""What LayerNorm and GELU add to an epoch, against the time their memory traffic takes:
784-256-128-10 on MNIST with plain SGD, a LayerNorm (or a GELU, exact and tanh) after
each hidden layer's ReLU, interleaved with the plain network, fastest of the repeats.

The traffic: each of these layers reads its input and writes its output going forward,
and reads the incoming gradient and its saved input and writes its gradient going back:
5 passes over its (rows x width) activations, 60,000 x (256 + 128) entries of 4 bytes an
epoch. Its time is those bytes at a copy's bandwidth (a read and a write, per thread,
times the threads) measured in the same run, for two buffer sizes:
- one batch's activations of one layer (512 x 256 floats, 0.5 MB: L2-resident), the
  least the passes could cost;
- one step's activations and gradients of the whole network with the extra layers
  (input batch, then every layer's output and its gradient: 6.4 MB at batch 512), where
  a layer's output is by the time the next pass reads it (it does not fit in L2).

Then the kernels alone, on one thread over one L2-resident 256 x 256 float32 block
(fastest of 7 timed loops): LayerNorm's row kernels (forward; backward with gamma's and
beta's sums) and each activation's (forward; backward, which also reads the forward's
output), in ns an entry, beside a copy of the same block: what an entry costs in
arithmetic, where its traffic costs least. "x traffic" divides a layer's forward plus
backward by 2.5 copies (the 5 passes above).

    python bench/bench_norm_traffic.py [--batch-size 512] [--repeats 5]
"""
import argparse
import time

import numpy as np

import fastnn as fnn
from fastnn import _engine, _kernels
from fastnn.benchmark import blas_description, load_data, planned_threads

KINDS = {"LayerNorm": lambda width: fnn.LayerNorm(width),
         "GELU (exact)": lambda width: fnn.GELU(),
         "GELU (tanh)": lambda width: fnn.GELU(approximate="tanh")}
PASSES = 5
KERNELS = {"ReLU": "relu", "GELU (exact)": "gelu", "GELU (tanh)": "gelu_tanh", "SiLU": "silu",
           "ELU": "elu", "Softplus": "softplus"}


def epoch_seconds(X, y, batch_size, extra):
    layers, width = [], 784
    for hidden in (256, 128):
        layers += [fnn.Dense(width, hidden), fnn.ReLU()]
        layers += [extra(hidden)] if extra else []
        width = hidden
    model = fnn.Sequential(layers + [fnn.Dense(width, 10)], seed=0)
    model.fit(X[:2 * batch_size], y[:2 * batch_size], optimizer="sgd", batch_size=batch_size)
    return model.fit(X, y, epochs=1, batch_size=batch_size)["seconds"][0]


def fastest_call(call, seconds, rounds):
    """Seconds a call of `call` takes: the fastest of `rounds` loops timed over
    seconds / rounds each."""
    best = np.inf
    for _ in range(rounds):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / rounds:
            call()
            count += 1
        best = min(best, (time.perf_counter() - start) / count)
    return best


def copy_bandwidth(entries, seconds=0.2):
    """Bytes a second that one thread reads and writes copying a float32 buffer of
    `entries` (fastest of 5 timed loops)."""
    source, target = np.ones(entries, np.float32), np.empty(entries, np.float32)
    return 2 * source.nbytes / fastest_call(lambda: np.copyto(target, source), seconds, 5)


def block(rows=256, width=256):
    return np.random.default_rng(0).normal(size=(rows, width)).astype(np.float32)


def nanoseconds_an_entry(calls, entries, seconds=0.2):
    return [fastest_call(call, seconds, 7) / entries * 1e9 for call in calls]


def kernel_nanoseconds(name):
    """(forward, backward) ns an entry of the activation `name` (a key of
    _engine.LAYER_KINDS, its default setting) on one thread over a float32 block."""
    kind, slope = _engine.LAYER_KINDS[name], 1.0 if name in ("elu", "softplus") else 0.0
    z = block()
    a, g, dz = np.empty_like(z), np.ones_like(z), np.empty_like(z)
    _kernels.activation(kind, slope, z, a)  # the backward reads the forward's output
    return nanoseconds_an_entry((lambda: _kernels.activation(kind, slope, z, a),
                                 lambda: _kernels.activation_grad(kind, slope, z, a, g, dz)),
                                z.size)


def layer_norm_nanoseconds():
    """(forward, backward) ns an entry of LayerNorm's row kernels (with gamma and beta) on
    one thread over a float32 block."""
    x = block()
    y, g, dx = np.empty_like(x), np.ones_like(x), np.empty_like(x)
    gamma, beta = np.ones(x.shape[1], np.float32), np.zeros(x.shape[1], np.float32)
    dgamma, dbeta = np.empty_like(gamma), np.empty_like(beta)
    mean, invstd = np.empty(len(x), np.float32), np.empty(len(x), np.float32)
    return nanoseconds_an_entry(
        (lambda: _kernels.layernorm_train(x, y, gamma, beta, mean, invstd, 1e-5),
         lambda: _kernels.layernorm_train_grad(x, g, gamma, mean, invstd, dgamma, dbeta, dx)),
        x.size)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    X, y, source = load_data(60000)
    threads = planned_threads((784, 256, 128, 10), args.batch_size)
    layer_outputs = 3 * (256 + 128) + 10  # Dense, ReLU and the extra layer; the last Dense
    step_entries = args.batch_size * (784 + 2 * layer_outputs)
    entries = PASSES * len(X) * (256 + 128) * 4
    bandwidth = copy_bandwidth(args.batch_size * 256) * threads
    step_bandwidth = copy_bandwidth(step_entries // threads) * threads
    traffic, step_traffic = entries / bandwidth, entries / step_bandwidth
    print(f"# {source}; {blas_description()}; {threads} threads; batch {args.batch_size}; "
          f"{PASSES} passes over the activations take {traffic:.4f} s at the copy bandwidth "
          f"of one layer's batch ({bandwidth / 1e9:.1f} GB/s over the threads), "
          f"{step_traffic:.4f} s at that of one step's working set "
          f"({step_entries * 4 / 1e6:.1f} MB, {step_bandwidth / 1e9:.1f} GB/s)")
    times = {name: [] for name in ["plain"] + list(KINDS)}
    for _ in range(args.repeats):  # interleaved: the machine's drift hits each alike
        for name in times:
            times[name].append(epoch_seconds(X, y, args.batch_size, KINDS.get(name)))
    plain = min(times["plain"])
    print("| layers after each ReLU | epoch s | added s | added / traffic (L2) "
          "| added / traffic (working set) |")
    print("|---|---|---|---|---|")
    print(f"| none | {plain:.3f} | | | |")
    for name in KINDS:
        added = min(times[name]) - plain
        print(f"| {name} | {min(times[name]):.3f} | {added:.4f} | {added / traffic:.2f} "
              f"| {added / step_traffic:.2f} |")
    source = block()
    target = np.empty_like(source)
    copy, = nanoseconds_an_entry((lambda: np.copyto(target, source),), source.size)
    print(f"\n# one thread, 256 x 256 float32, loops built for {_engine.instruction_set()}; "
          f"a copy of the block: {copy:.3f} ns an entry")
    print("| kernel | forward ns an entry | backward ns an entry | x traffic |")
    print("|---|---|---|---|")
    costs = {"LayerNorm": layer_norm_nanoseconds()}
    costs.update((name, kernel_nanoseconds(kind)) for name, kind in KERNELS.items())
    for name, (forward, backward) in costs.items():
        print(f"| {name} | {forward:.3f} | {backward:.3f} "
              f"| {(forward + backward) / (PASSES / 2 * copy):.2f} |")


if __name__ == "__main__":
    main()
