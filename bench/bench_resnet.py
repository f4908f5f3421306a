"""The tabular ResNet (fastnn.models.tabular_resnet) against its GEMM floor and torch: one
training epoch of synthetic rows, AdamW, float32, the same network in each, interleaved
(fastnn, floor, torch, ...), fastest of the repeats.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/bench_resnet.py
    python bench/bench_resnet.py --rows 100000 --features 50 --width 256 --blocks 4 \
        --batch-size 256 --repeats 3

The floor is the same matrix products alone: the ResNet's Dense layers in order (input,
each block's two, the head) through BLAS (fastnn._kernels.gemm_floor_epoch).
"""
import argparse
import sys
import time

import numpy as np

import fastnn as fnn
from fastnn import _kernels
from fastnn.benchmark import blas_description
from fastnn.models import tabular_resnet


def fastnn_epoch(X, y, args):
    model = tabular_resnet(X.shape[1], 2, n_blocks=args.blocks, d_main=args.width, seed=0)
    model.fit(X[:2 * args.batch_size], y[:2 * args.batch_size], optimizer="adamw",
              batch_size=args.batch_size)
    return model.fit(X, y, epochs=1, batch_size=args.batch_size)["seconds"][0]


def torch_epoch(X, y, args):
    import torch
    torch.set_num_threads(fnn.get_num_threads())

    class Block(torch.nn.Module):
        def __init__(self, d, h):
            super().__init__()
            self.f = torch.nn.Sequential(torch.nn.BatchNorm1d(d), torch.nn.Linear(d, h),
                                         torch.nn.ReLU(), torch.nn.Dropout(0.1),
                                         torch.nn.Linear(h, d))

        def forward(self, x):
            return x + self.f(x)
    d = args.width
    net = torch.nn.Sequential(torch.nn.Linear(X.shape[1], d),
                              *[Block(d, 2 * d) for _ in range(args.blocks)],
                              torch.nn.BatchNorm1d(d), torch.nn.ReLU(), torch.nn.Linear(d, 2))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    start = time.perf_counter()
    for rows in torch.randperm(len(y)).split(args.batch_size):
        optimizer.zero_grad()
        loss_fn(net(Xt[rows]), yt[rows]).backward()
        optimizer.step()
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    fnn.set_num_threads(fnn._threads.available_cores())
    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.rows, args.features)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(np.int64)
    d = args.width
    widths = [args.features, d] + [2 * d, d] * args.blocks + [2]
    try:
        import torch  # noqa: F401
        tools = ("fastnn", "floor", "torch")
    except ImportError:
        tools = ("fastnn", "floor")
    times = {tool: [] for tool in tools}
    for _ in range(args.repeats):
        times["fastnn"].append(fastnn_epoch(X, y, args))
        times["floor"].append(_kernels.gemm_floor_epoch(widths, args.batch_size, len(X),
                                                        np.float32, X))
        if "torch" in tools:
            times["torch"].append(torch_epoch(X, y, args))
    best = {tool: min(values) for tool, values in times.items()}
    print(f"# {blas_description()}; {fnn.get_num_threads()} threads; {args.rows} x "
          f"{args.features}, ResNet width {d}, {args.blocks} blocks (hidden {2 * d}), "
          f"batch {args.batch_size}, AdamW, float32; fastest of {args.repeats}")
    print(f"fastnn {best['fastnn']:.3f} s, floor {best['floor']:.3f} s, fastnn / floor "
          f"{best['fastnn'] / best['floor']:.2f}" + (
              f", torch {best['torch']:.3f} s, torch / fastnn "
              f"{best['torch'] / best['fastnn']:.2f}" if "torch" in best else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
