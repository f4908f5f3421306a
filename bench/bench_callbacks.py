"""What an on_batch_end callback costs: an epoch handed to the engine whole against the
same epoch one batch per call with a Python callback between batches (the same steps and
results), on MNIST's shape, interleaved, fastest of the repeats.

    python bench/bench_callbacks.py       # 784-256-128-10, SGD and Adam, batch sizes 32, 128
    python bench/bench_callbacks.py --batch-sizes 32,512 --repeats 5
"""
import argparse
import sys

import fastnn as fnn
from fastnn.benchmark import NETWORKS as WIDTHS
from fastnn.benchmark import blas_description, load_data, mlp_layers


class EveryBatch:
    """A callback that does nothing but be called after every batch."""

    def on_batch_end(self, batch, logs):
        pass


def epoch_seconds(widths, X, y, batch_size, callbacks, optimizer="sgd"):
    model = fnn.Sequential(mlp_layers(widths, ()), seed=0)
    model.fit(X[:2 * batch_size], y[:2 * batch_size], optimizer=optimizer,
              batch_size=batch_size)
    return model.fit(X, y, epochs=1, batch_size=batch_size, callbacks=callbacks)["seconds"][0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", default="32,128")
    parser.add_argument("--network", default="784-256-128-10", choices=list(WIDTHS))
    parser.add_argument("--optimizers", default="sgd,adam")
    args = parser.parse_args(argv)
    X, y, source = load_data(60000)
    widths = WIDTHS[args.network]
    print(f"# {source}; {blas_description()}; {fnn.get_num_threads()} threads")
    print("| network | optimizer | batch_size | whole epoch s | on_batch_end s | ratio |")
    print("|---|---|---|---|---|---|")
    for optimizer in args.optimizers.split(","):
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            whole, per_batch = [], []
            for _ in range(args.repeats):  # interleaved: the machine's drift hits both
                whole.append(epoch_seconds(widths, X, y, batch_size, [], optimizer))
                per_batch.append(epoch_seconds(widths, X, y, batch_size, [EveryBatch()],
                                               optimizer))
            print(f"| {args.network} | {optimizer} | {batch_size} | {min(whole):.3f} | "
                  f"{min(per_batch):.3f} | {min(per_batch) / min(whole):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
