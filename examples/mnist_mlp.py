"""Train an MLP on MNIST to >= 98% test accuracy.

Recipe: 784-512-256-10 with ReLU and dropout 0.2, SGD (lr 0.05, momentum 0.9) with a
cosine learning-rate schedule over 10 epochs, batch size 128, float32.

    python examples/mnist_mlp.py [MNIST_FOLDER]        # default: $FASTNN_DATA or the cache
    python examples/mnist_mlp.py --kind fashion_mnist FOLDER   # the same code on Fashion-MNIST
"""
import argparse
import time

import fastnn as fnn
from fastnn.datasets import load_mnist


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=None)
    parser.add_argument("--kind", default="mnist", choices=["mnist", "fashion_mnist"])
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    X, y = load_mnist(args.folder, args.kind, "train")
    X_test, y_test = load_mnist(args.folder, args.kind, "test")

    model = fnn.Sequential([
        fnn.Dense(784, 512), fnn.ReLU(), fnn.Dropout(0.2),
        fnn.Dense(512, 256), fnn.ReLU(), fnn.Dropout(0.2),
        fnn.Dense(256, 10),
    ], seed=0)
    start = time.perf_counter()
    model.fit(X, y, loss="cross_entropy",
              optimizer=fnn.optim.SGD(lr=0.05, momentum=0.9),
              lr_schedule=fnn.optim.CosineAnnealingLR(T_max=args.epochs),
              epochs=args.epochs, batch_size=128, validation_data=(X_test, y_test), verbose=1)
    result = model.evaluate(X_test, y_test)
    print(f"{args.kind}: test accuracy {result['accuracy']:.4f} after {args.epochs} epochs, "
          f"{time.perf_counter() - start:.1f} s with {fnn.get_num_threads()} threads")


if __name__ == "__main__":
    main()
