"""Time one training epoch of fastnn against the GEMM floor (and torch, if installed).

The GEMM floor is the time of only the matrix products that the same training step
needs (forward x @ W.T, weight gradient g.T @ x, input gradient g @ W for all but the
first layer), made through the same BLAS from compiled code with nothing else. The
ratio fastnn / floor says how much the rest of the step costs (bias, activations,
loss, optimizer update, batch gathering). Repeats are interleaved and the minimum of
each is reported, so a noisy machine affects both sides alike.

    fastnn bench                        # both networks, batch 32/128/512, all threads
    fastnn bench --quick                # a subset: 784-256-128-10, batch 32 and 512, 1 repeat
    fastnn bench --threads 1,all --json results.json
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE fastnn bench   # newest OpenBLAS kernels

(`python bench/bench_mlp.py` in a checkout runs the same.) MNIST is used when found
(../shared/data/mnist beside a checkout, $FASTNN_DATA, or the cache folder; never
downloaded for this), else synthetic data of the same shape, and the output says which.
"""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np

import fastnn as fnn
from fastnn import _engine, _kernels
from fastnn._threads import describe_blas
from fastnn.datasets import data_folder, load_mnist

NETWORKS = {"784-256-128-10": [784, 256, 128, 10], "784-1024-1024-10": [784, 1024, 1024, 10]}
# ../shared/data/mnist beside a checkout (this file's or the working directory's)
MNIST_CANDIDATES = [os.path.join(root, "..", "shared", "data", "mnist") for root in
                    (os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.getcwd())]


def load_data(n_samples, data_path=None):
    """(X, y, description): MNIST's training set from data_path when given (an error if
    it is not there), else when found beside the checkout, in $FASTNN_DATA or the cache
    folder; else synthetic data of MNIST's shape, the description saying where it looked."""
    if data_path is not None:
        X, y = load_mnist(data_path, download=False)
        return X[:n_samples], y[:n_samples], f"MNIST from {os.path.abspath(data_path)}"
    looked = []
    for folder in MNIST_CANDIDATES + [None]:  # then $FASTNN_DATA or the cache
        looked.append(os.path.abspath(data_folder(folder)))
        try:
            X, y = load_mnist(folder, download=False)
            return X[:n_samples], y[:n_samples], f"MNIST from {looked[-1]}"
        except (OSError, ValueError):
            continue
    rng = np.random.default_rng(0)
    X = rng.random((n_samples, 784), dtype=np.float32)
    return X, rng.integers(0, 10, n_samples), (
        f"synthetic data of MNIST's shape (random pixels and labels: no MNIST found in "
        f"{', '.join(dict.fromkeys(looked))}; give --data-path)")


def mlp_layers(widths, extra=()):
    """Dense layers of these widths with ReLU between, each hidden ReLU followed by the
    layers `extra` makes for its width (e.g. a Dropout or a BatchNorm1d)."""
    layers = []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        layers += [fnn.Dense(n_in, n_out), fnn.ReLU()] + [make(n_out) for make in extra]
    return layers[:-1 - len(extra)]


def time_fit(widths, X, y, batch_size, optimizer, extra=()):
    """Seconds of one warm epoch of fastnn, as fit's History reports it: the faster of
    two consecutive epochs.

    A short fit first allocates the engine's buffers and the optimizer's state (done
    once per model); the timed epochs then exclude that and fit's one-off validation of
    X (measured separately: `validation_seconds`).
    """
    model = fnn.Sequential(mlp_layers(widths, extra), seed=0)
    model.fit(X[:2 * batch_size], y[:2 * batch_size], optimizer=optimizer(),
              batch_size=batch_size)
    return min(model.fit(X, y, epochs=2, batch_size=batch_size)["seconds"])


def validation_seconds(X, y):
    """What one fit call spends before its first batch: validating X and y."""
    model = fnn.Sequential([fnn.Dense(X.shape[1], 10)], seed=0)
    start = time.perf_counter()
    model.fit(X, y, epochs=0)
    return time.perf_counter() - start


def time_floor(widths, X, batch_size):
    """The faster of two epochs of only the matrix products (see the module docstring)."""
    return min(_kernels.gemm_floor_epoch(widths, batch_size, len(X), np.float32, X)
               for _ in range(2))


def planned_threads(widths, batch_size):
    """The threads fastnn's plan gives a training epoch of this network and batch size at
    the current setting (fnn.set_num_threads)."""
    model = fnn.Sequential(mlp_layers(widths), seed=0)
    return model.engine.plan_threads(batch_size, len(model.layers), True,
                                      fnn.get_num_threads())


def planned_grid(widths, batch_size, n_threads):
    """The rows of each Dense layer's grid of tiles on n_threads planned threads (the
    engine's rule, csrc/engine/dense.pxi, dense_grid; 1: a block of units per thread)."""
    return [_engine.grid_rows(n_in, n_out, batch_size, n_threads)
            for n_in, n_out in zip(widths[:-1], widths[1:])]


def time_torch(widths, X, y, batch_size, optimizer="momentum"):
    """One epoch of the same network and optimizer step in torch (eager), or None;
    optimizer: "sgd", "momentum" (0.9) or "adam" (torch's defaults, lr 1e-3)."""
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    torch.set_num_threads(fnn.get_num_threads())
    layers = []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1])
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.01,
                              momentum=0.9 if optimizer == "momentum" else 0)
    loss_fn = torch.nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def epoch(perm):
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(Xt[idx]), yt[idx]).backward()
            opt.step()

    epoch(torch.randperm(len(Xt))[:2 * batch_size])  # warm-up, as for fastnn
    seconds = []
    for _ in range(2):  # the faster of two epochs, as for fastnn
        start = time.perf_counter()
        epoch(torch.randperm(len(Xt)))
        seconds.append(time.perf_counter() - start)
    return min(seconds)


def time_numpy(widths, X, y, batch_size):
    """One epoch of the same network and SGD-with-momentum step written in plain NumPy
    (float32, the textbook forward/backward with matrix products), after a warm-up."""
    rng = np.random.default_rng(0)
    Ws = [(rng.normal(0, np.sqrt(2 / a), (b, a))).astype(np.float32)
          for a, b in zip(widths[:-1], widths[1:])]
    bs = [np.zeros(b, np.float32) for b in widths[1:]]
    params = Ws + bs
    bufs = [np.zeros_like(p) for p in params]
    onehot = np.eye(widths[-1], dtype=np.float32)

    def step(xb, yb):
        acts = [xb]
        for i, (W, b) in enumerate(zip(Ws, bs)):
            z = acts[-1] @ W.T + b
            acts.append(np.maximum(z, 0) if i < len(Ws) - 1 else z)
        logits = acts[-1]
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        g = (p - onehot[yb]) / len(xb)
        grads_W, grads_b = [None] * len(Ws), [None] * len(bs)
        for i in range(len(Ws) - 1, -1, -1):
            grads_W[i], grads_b[i] = g.T @ acts[i], g.sum(axis=0)
            if i:
                g = (g @ Ws[i]) * (acts[i] > 0)
        for param, buf, grad in zip(params, bufs, grads_W + grads_b):
            buf *= 0.9
            buf += grad
            param -= 0.01 * buf

    def epoch(perm):
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            step(X[idx], y[idx])

    epoch(rng.permutation(len(X))[:2 * batch_size])
    start = time.perf_counter()
    epoch(rng.permutation(len(X)))
    return time.perf_counter() - start


def time_sklearn(widths, X, y, batch_size):
    """One epoch of scikit-learn's MLPClassifier, same network and SGD with momentum, or
    None when scikit-learn is not installed."""
    try:
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier
    except ImportError:
        return None
    model = MLPClassifier(hidden_layer_sizes=tuple(widths[1:-1]), solver="sgd",
                          batch_size=batch_size, learning_rate_init=0.01, momentum=0.9,
                          nesterovs_momentum=False, alpha=0.0, max_iter=1, shuffle=True,
                          random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X[:2 * batch_size], y[:2 * batch_size])  # warm-up (setup, imports)
        start = time.perf_counter()
        model.fit(X, y)  # max_iter=1: one epoch
        return time.perf_counter() - start


def time_jax(widths, X, y, batch_size):
    """One epoch of the same network and SGD-with-momentum step as one jit-compiled JAX
    function (float32, XLA's CPU backend), or None when JAX is not installed. Both batch
    shapes (full and the last partial one) are compiled before timing."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    rng = np.random.default_rng(0)
    params = [(jnp.asarray(rng.normal(0, np.sqrt(2 / a), (b, a)), jnp.float32),
               jnp.zeros(b, jnp.float32)) for a, b in zip(widths[:-1], widths[1:])]
    bufs = jax.tree_util.tree_map(jnp.zeros_like, params)

    def loss(params, xb, yb):
        h = xb
        for i, (W, b) in enumerate(params):
            h = h @ W.T + b
            if i < len(params) - 1:
                h = jax.nn.relu(h)
        logp = jax.nn.log_softmax(h)
        return -jnp.mean(jnp.take_along_axis(logp, yb[:, None], axis=1))

    @jax.jit
    def step(params, bufs, xb, yb):
        grads = jax.grad(loss)(params, xb, yb)
        bufs = jax.tree_util.tree_map(lambda b, g: 0.9 * b + g, bufs, grads)
        params = jax.tree_util.tree_map(lambda p, b: p - 0.01 * b, params, bufs)
        return params, bufs

    def epoch(params, bufs, perm):
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            params, bufs = step(params, bufs, X[idx], y[idx])
        jax.block_until_ready(params)
        return params, bufs

    last = len(X) % batch_size or batch_size
    params, bufs = epoch(params, bufs, rng.permutation(len(X))[:batch_size + last])
    start = time.perf_counter()
    epoch(params, bufs, rng.permutation(len(X)))
    return time.perf_counter() - start


blas_description = describe_blas  # the BLAS fastnn calls (the bench scripts' name)


def machine_description():
    """CPU model, logical CPUs and the cores this process may use."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} logical CPUs, {fnn._threads.available_cores()} available"


def scaling_table(rows):
    """Per network, batch and optimizer: each thread count's epoch, its speed-up over the
    fewest threads measured, fastnn / floor, and torch at the same count."""
    table = []
    keys = sorted({(r["network"], r["batch_size"], r["optimizer"]) for r in rows},
                  key=lambda k: (list(NETWORKS).index(k[0]), k[1], k[2]))
    for network, batch, optimizer in keys:
        same = sorted((r for r in rows if (r["network"], r["batch_size"], r["optimizer"])
                       == (network, batch, optimizer)), key=lambda r: r["threads"])
        base = same[0]["fastnn_s"]
        for r in same:
            table.append({"network": network, "batch_size": batch, "optimizer": optimizer,
                          "threads": r["threads"], "plan_threads": r["plan_threads"],
                          "fastnn_s": r["fastnn_s"], "speedup": base / r["fastnn_s"],
                          "speedup_over_threads": same[0]["threads"], "ratio": r["ratio"],
                          "torch_s": r["torch_s"],
                          "torch_over_fastnn": (r["torch_s"] / r["fastnn_s"]
                                                if r["torch_s"] is not None else None)})
    return table


def print_scaling(table):
    print(f"\nscaling (speed-up over {table[0]['speedup_over_threads']} thread(s)):")
    print(f"{'network':<18} {'batch':>5} {'optimizer':>9} {'thr':>3} {'plan':>4} "
          f"{'fastnn s':>9} {'speed-up':>8} {'/ floor':>7} {'torch s':>8} {'torch/fastnn':>12}")
    for r in table:
        torch_s = (f"{r['torch_s']:8.3f} {r['torch_over_fastnn']:12.2f}"
                   if r["torch_s"] is not None else f"{'-':>8} {'-':>12}")
        print(f"{r['network']:<18} {r['batch_size']:>5} {r['optimizer']:>9} {r['threads']:>3} "
              f"{r['plan_threads']:>4} {r['fastnn_s']:9.3f} {r['speedup']:8.2f} "
              f"{r['ratio']:7.2f} {torch_s}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastnn bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a subset: small network, batch sizes 32 and 512, one repeat")
    parser.add_argument("--repeats", type=int, default=None, help="default 3; --quick: 1")
    parser.add_argument("--threads", default="all",
                        help="comma-separated thread counts; 'all' = the available cores")
    parser.add_argument("--networks", default=None,
                        help=f"comma-separated, of {', '.join(NETWORKS)} (default both; "
                             f"--quick: the first)")
    parser.add_argument("--batch-sizes", default=None,
                        help="comma-separated (default 32,128,512; --quick: 32,512)")
    parser.add_argument("--optimizers", default="sgd,momentum",
                        help="comma-separated: sgd (plain), momentum (0.9), adam")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--peers", default="numpy,sklearn,jax",
                        help="other peers timed with SGD momentum: numpy, sklearn, jax "
                             "('' for none)")
    parser.add_argument("--data-path", default=None,
                        help="folder holding MNIST's IDX files (default: beside the "
                             "checkout, $FASTNN_DATA or the cache folder, else synthetic "
                             "data)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--plot", default=None,
                        help="draw samples/s against batch size per tool to this PNG "
                             "(needs matplotlib)")
    args = parser.parse_args(argv)

    repeats = args.repeats or (1 if args.quick else 3)
    batch_sizes = [int(b) for b in (args.batch_sizes or
                                    ("32,512" if args.quick else "32,128,512")).split(",")]
    names = (args.networks.split(",") if args.networks
             else list(NETWORKS)[:1] if args.quick else list(NETWORKS))
    for name in names:
        if name not in NETWORKS:
            parser.error(f"unknown network {name!r}; expected one of {', '.join(NETWORKS)}")
    networks = {name: NETWORKS[name] for name in names}
    thread_counts = [fnn._threads.available_cores() if t == "all" else int(t)
                     for t in args.threads.split(",")]
    try:
        X, y, source = load_data(60000, args.data_path)
    except (OSError, ValueError) as exc:
        print(f"fastnn bench: no MNIST in --data-path {args.data_path}: {exc}",
              file=sys.stderr)
        return 2
    optimizers = {"sgd": lambda: fnn.optim.SGD(lr=0.01),
                  "momentum": lambda: fnn.optim.SGD(lr=0.01, momentum=0.9),
                  "adam": lambda: fnn.optim.Adam(lr=1e-3)}
    chosen = args.optimizers.split(",")
    for k in chosen:
        if k not in optimizers:
            parser.error(f"unknown optimizer {k!r}; expected one of {sorted(optimizers)}")
    torch_for = [k for k in chosen if k != "sgd"]  # torch timed beside these
    peers = [p for p in args.peers.split(",") if p] if "momentum" in chosen else []
    for peer in peers:
        if peer not in PEERS:
            parser.error(f"unknown peer {peer!r}; expected one of {sorted(PEERS)}")
    fnn.set_num_threads(thread_counts[0])
    print(f"data: {source}, {len(X)} samples, float32, shuffled")
    print(f"fastnn {fnn.__version__}, python {platform.python_version()}, "
          f"{platform.machine()}, {os.cpu_count()} cpus")
    print(f"BLAS: {blas_description()}")
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    print(f"each figure the fastest warm epoch of {repeats} interleaved repeats of 2 "
          f"epochs")
    print(f"per fit call, before the first batch (validating X, y): "
          f"{min(validation_seconds(X, y) for _ in range(3)) * 1e3:.1f} ms")
    print("optimizers: " + "; ".join(f"{k} = {optimizers[k]()}" for k in chosen))
    print(f"{'network':<18} {'thr':>3} {'plan':>4} {'batch':>5} {'optimizer':>9} "
          f"{'fastnn s':>9} {'samples/s':>10} {'floor s':>8} {'ratio':>6} {'torch s':>8} "
          f"{'torch/fastnn':>12}")
    rows = []
    for n_threads in thread_counts:
        fnn.set_num_threads(n_threads)
        for name, widths in networks.items():
            for batch_size in batch_sizes:
                floor, fit = [], {k: [] for k in chosen}
                torch_t = {k: [] for k in torch_for}
                peer_t = {peer: [] for peer in peers}
                for _ in range(repeats):
                    floor.append(time_floor(widths, X, batch_size))
                    for k in chosen:
                        fit[k].append(time_fit(widths, X, y, batch_size, optimizers[k]))
                    for k in torch_for if not args.no_torch else ():
                        t = time_torch(widths, X, y, batch_size, k)
                        if t is not None:
                            torch_t[k].append(t)
                    for peer in peers:
                        t = PEERS[peer](widths, X, y, batch_size)
                        peer_t[peer].append(t)
                g = min(floor)
                plan = planned_threads(widths, batch_size)
                for k in chosen:
                    f = min(fit[k])
                    torch_s = min(torch_t[k]) if torch_t.get(k) else None
                    if torch_s is not None:
                        tt = f"{torch_s:8.3f} {torch_s / f:12.2f}"
                    elif k not in torch_for:
                        tt = f"{'-':>8} {'-':>12}"
                    else:
                        tt = f"{'n/a':>8} {'skipped' if args.no_torch else 'not installed':>12}"
                    print(f"{name:<18} {n_threads:>3} {plan:>4} {batch_size:>5} {k:>9} "
                          f"{f:9.3f} {len(X) / f:10,.0f} {g:8.3f} {f / g:6.2f} {tt}",
                          flush=True)
                    row = {"network": name, "threads": n_threads, "plan_threads": plan,
                           "plan_grid_rows": planned_grid(widths, batch_size, plan),
                           "batch_size": batch_size, "optimizer": k, "samples": len(X),
                           "fastnn_s": f, "samples_per_s": len(X) / f,
                           "floor_s": g, "ratio": f / g, "torch_s": torch_s}
                    if k == "momentum":
                        for peer, times in peer_t.items():
                            best = None if None in times else min(times)
                            row[f"{peer}_s"] = best
                            print(f"{'':<18} {'':>3} {'':>5} {peer:>9} "
                                  + (f"{'':>4} {best:9.3f} {len(X) / best:10,.0f}   "
                                     f"{peer}/fastnn {best / f:.2f}" if best is not None
                                     else f"{'not installed':>20}"), flush=True)
                    rows.append(row)
    scaling = scaling_table(rows) if len(thread_counts) > 1 else []
    if scaling:
        print_scaling(scaling)
    if args.plot:
        plot(rows, args.plot, source)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"fastnn": fnn.__version__, "blas": blas_description(),
                       "data": source, "repeats": repeats, "machine": machine_description(),
                       "rows": rows, "scaling": scaling}, out, indent=1)
        print(f"results written to {args.json}")
    return 0


def plot(rows, path, source):
    """Samples/s against batch size, one line per tool, one panel per network and thread
    count; returns the figure, or says so and returns None when matplotlib is not
    installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot: matplotlib is not installed (pip install matplotlib)")
        return
    panels = sorted({(r["network"], r["threads"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (network, threads) in zip(axes[0], panels):
        mine = [r for r in rows if r["network"] == network and r["threads"] == threads]
        lines = {f"fastnn ({r['optimizer']})": {} for r in mine}
        for r in mine:
            lines[f"fastnn ({r['optimizer']})"][r["batch_size"]] = r["samples_per_s"]
            if r["optimizer"] == "momentum":
                for tool in ["torch"] + list(PEERS):
                    seconds = r.get(f"{tool}_s")
                    if seconds:
                        lines.setdefault(tool, {})[r["batch_size"]] = r["samples"] / seconds
        for label, points in lines.items():
            sizes = sorted(points)
            ax.plot(sizes, [points[b] for b in sizes], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("samples / s (one epoch)")
        ax.set_title(f"{network}, {threads} thread(s)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"fastnn {fnn.__version__} - {blas_description()} - {source}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"plot written to {path}")
    return fig


PEERS = {"numpy": time_numpy, "sklearn": time_sklearn, "jax": time_jax}


if __name__ == "__main__":
    sys.exit(main())
