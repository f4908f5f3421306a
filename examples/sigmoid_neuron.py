"""The textbook example: one sigmoid neuron (logistic regression) telling 1s from 7s,
trained with binary cross-entropy.

    python examples/sigmoid_neuron.py [MNIST_FOLDER]
"""
import sys

import numpy as np

import fastnn as fnn
from fastnn.datasets import load_mnist


def ones_and_sevens(folder, split):
    X, y = load_mnist(folder, split=split)
    keep = (y == 1) | (y == 7)
    return X[keep], (y[keep] == 7).astype(np.float32)  # target 1 for a seven


def main():
    folder = sys.argv[1] if len(sys.argv) > 1 else None
    X, t = ones_and_sevens(folder, "train")
    X_test, t_test = ones_and_sevens(folder, "test")
    neuron = fnn.Sequential([fnn.Dense(784, 1, init="glorot"), fnn.Sigmoid()], seed=0)
    neuron.fit(X, t, loss="binary_cross_entropy", optimizer=fnn.optim.SGD(lr=0.5),
               epochs=3, batch_size=32, verbose=1)
    result = neuron.evaluate(X_test, t_test, "binary_cross_entropy")
    p_seven = neuron.predict(X_test)[:, 0]  # the final Sigmoid gives probabilities
    print(f"1 vs 7: test accuracy {result['accuracy']:.4f} on {len(X_test)} images; "
          f"mean P(seven) for the sevens {p_seven[t_test == 1].mean():.3f}, "
          f"for the ones {p_seven[t_test == 0].mean():.3f}")


if __name__ == "__main__":
    main()
