"""Forward mode against reverse mode, measured: the textbook argument in numbers.

Forward mode carries one tangent along the forward pass, so a full gradient of a loss
with P parameters takes P passes (one per parameter direction); reverse mode takes one
forward and one backward pass. For an input Jacobian (n_outputs x n_features) the count
flips: forward mode needs a tangent per feature, reverse mode a cotangent per output.

    python examples/forward_vs_reverse.py [--plot cost.png] [--quick]

Prints the times (fastest of 3) and checks that both modes give the same numbers; with
--plot (and matplotlib) it draws the gradient's cost against the number of parameters.
"""
import argparse
import time

import numpy as np

import fastnn as fnn


def fastest(fn, repeats=3):
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def mlp(widths, seed=0):
    layers = []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        layers += [fnn.Dense(n_in, n_out), fnn.Tanh()]
    return fnn.Sequential(layers[:-1], dtype="float64", seed=seed)


def gradient_both_ways(model, X, y):
    """(forward seconds, reverse seconds, largest difference): the full parameter
    gradient by one jvp_parameters per parameter entry, and by gradients()."""
    params = model.parameters()

    def forward_mode():
        grads = [np.zeros_like(p) for p in params]
        direction = [np.zeros_like(p) for p in params]
        for d, g in zip(direction, grads):
            for index in np.ndindex(d.shape):  # the unit direction of one parameter entry
                d[index] = 1.0
                g[index] = model.jvp_parameters(X, y, direction)
                d[index] = 0.0
        return grads

    forward_s, forward_g = fastest(forward_mode, repeats=1)
    reverse_s, reverse_g = fastest(lambda: model.gradients(X, y))
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(forward_g, reverse_g))
    return forward_s, reverse_s, diff


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", default=None, help="write the cost plot here (PNG)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (for the tests)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)

    X = rng.normal(size=(64, 20))
    y = rng.integers(0, 3, 64)
    small = mlp([20, 16, 8, 3])
    n_params = sum(p.size for p in small.parameters())
    forward_s, reverse_s, diff = gradient_both_ways(small, X, y)
    print(f"gradient of the mean loss, 20-16-8-3 ({n_params} parameters), 64 rows:")
    print(f"  forward mode ({n_params} passes): {forward_s * 1e3:9.2f} ms")
    print(f"  reverse mode (1 backward pass):  {reverse_s * 1e3:9.2f} ms   "
          f"{forward_s / reverse_s:,.0f}x faster; largest difference {diff:.1e}")

    rows = 8 if args.quick else 100
    big = mlp([784, 256, 128, 10])
    X = rng.normal(size=(rows, 784))
    forward_s, J_forward = fastest(lambda: big.jacobian(X, mode="forward"))
    reverse_s, J_reverse = fastest(lambda: big.jacobian(X, mode="reverse"))
    print(f"input Jacobian of 784-256-128-10 (10 x 784 per row), {rows} rows:")
    print(f"  forward mode (784 tangents):  {forward_s * 1e3:9.2f} ms")
    print(f"  reverse mode (10 cotangents): {reverse_s * 1e3:9.2f} ms   "
          f"{forward_s / reverse_s:,.1f}x faster; largest difference "
          f"{float(np.max(np.abs(J_forward - J_reverse))):.1e}")

    widths = [2, 4, 8] if args.quick else [2, 4, 8, 16, 32]
    sizes, forward_times, reverse_times = [], [], []
    X = rng.normal(size=(64, 20))
    print("gradient cost against parameters (20-h-h-3 networks, 64 rows):")
    for h in widths:
        model = mlp([20, h, h, 3])
        n = sum(p.size for p in model.parameters())
        forward_s, reverse_s, _ = gradient_both_ways(model, X, y)
        sizes.append(n)
        forward_times.append(forward_s)
        reverse_times.append(reverse_s)
        print(f"  {n:6d} parameters: forward {forward_s * 1e3:9.2f} ms, "
              f"reverse {reverse_s * 1e3:7.3f} ms")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.loglog(sizes, forward_times, "o-", label="forward mode (a pass per parameter)")
        ax.loglog(sizes, reverse_times, "s-", label="reverse mode (one backward pass)")
        ax.set_xlabel("parameters")
        ax.set_ylabel("seconds for the full gradient")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"plot written to {args.plot}")


if __name__ == "__main__":
    main()
