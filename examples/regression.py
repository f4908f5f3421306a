"""Regression with MSE: fit y = sin(3 x1) * cos(2 x2) + 0.5 x3^2 from noisy samples and
show how well the network matches the function on fresh points.

    python examples/regression.py
"""
import numpy as np

import fastnn as fnn


def target(X):
    return np.sin(3 * X[:, 0]) * np.cos(2 * X[:, 1]) + 0.5 * X[:, 2] ** 2


def main():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(20000, 3))
    y = target(X) + rng.normal(0, 0.05, len(X))
    model = fnn.Sequential([fnn.Dense(3, 64), fnn.Tanh(), fnn.Dense(64, 64), fnn.Tanh(),
                            fnn.Dense(64, 1)], dtype="float64", seed=0)
    model.fit(X, y, loss="mse", optimizer=fnn.optim.Adam(lr=3e-3), epochs=40, batch_size=64,
              validation_split=0.1, lr_schedule=fnn.optim.StepLR(step_size=15, gamma=0.3))
    X_new = rng.uniform(-1, 1, size=(2000, 3))
    error = model.predict(X_new)[:, 0] - target(X_new)
    print(f"on fresh points: RMSE {np.sqrt(np.mean(error ** 2)):.4f} against the noise-free "
          f"function (noise std 0.05, function std {target(X_new).std():.3f})")
    print("  x1     x2     x3   | true    fitted")
    for x, fitted in zip(X_new[:5], model.predict(X_new[:5])[:, 0]):
        print(f"{x[0]:6.2f} {x[1]:6.2f} {x[2]:6.2f} | {target(x[None])[0]:6.3f}  {fitted:6.3f}")


if __name__ == "__main__":
    main()
