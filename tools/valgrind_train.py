"""A short training run for valgrind memcheck (tools/valgrind.sh): every layer kind, loss
family and optimizer path once, on a few rows."""
import numpy as np

import fastnn as fnn

rng = np.random.default_rng(0)
X = rng.normal(size=(40, 6)).astype(np.float32)
y = rng.integers(0, 3, 40)
model = fnn.Sequential([fnn.Dense(6, 16, l2=0.01), fnn.BatchNorm1d(16), "relu",
                        fnn.Dropout(0.2), fnn.Dense(16, 8), "tanh", fnn.Dense(8, 3),
                        "softmax"], seed=0)
for opt in (fnn.optim.SGD(lr=0.1), fnn.optim.SGD(lr=0.1, momentum=0.9),
            fnn.optim.Adam(amsgrad=True), fnn.optim.RMSprop(centered=True, momentum=0.5),
            fnn.optim.Adagrad()):
    model.fit(X, y, optimizer=opt, epochs=2, batch_size=16, validation_split=0.2)
model.predict(X)
model.gradients(X, y)
model.evaluate(X, np.eye(3)[y], "cross_entropy")
reg = fnn.Sequential([fnn.Dense(6, 4), "sigmoid", fnn.Dense(4, 2)], dtype="float64", seed=1)
for loss in ("mse", "l1", "binary_cross_entropy"):
    reg.fit(X, rng.random((40, 2)), loss=loss, epochs=1, batch_size=7)
print("done")
