"""Callbacks: on_epoch_begin and on_batch_end called (the same training bits), the
ModelCheckpoint, and batch hooks refused in a data-parallel fit."""
import numpy as np
import pytest

import fastnn as fnn


class Recorder:
    """Records the hooks fit calls."""

    def __init__(self):
        self.calls = []

    def on_epoch_begin(self, epoch):
        self.calls.append(("epoch", epoch))

    def on_batch_end(self, batch, logs):
        self.calls.append(("batch", batch, logs["size"], logs["loss"]))

    def on_epoch_end(self, epoch, logs):
        self.calls.append(("end", epoch, logs["loss"]))


@pytest.mark.parametrize("weighted", [False, True])
def test_batch_callbacks_see_every_batch_and_change_nothing(rng, weighted):
    """on_epoch_begin before each epoch, on_batch_end after each batch with its size and
    mean loss (the epoch's loss their weighted mean); the parameters are those of a fit
    without callbacks, bit for bit (shuffled, with dropout)."""
    X, y = rng.normal(size=(50, 4)), rng.integers(0, 3, 50)
    w = rng.uniform(0.5, 2, 50) if weighted else None
    runs = []
    for callbacks in ([], [Recorder()]):
        model = fnn.Sequential([fnn.Dense(4, 8), fnn.ReLU(), fnn.Dropout(0.3),
                                fnn.Dense(8, 3)], dtype="float64", seed=5)
        model.fit(X, y, epochs=2, batch_size=16, callbacks=callbacks, sample_weight=w)
        runs.append(model.parameters())
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    calls = callbacks[0].calls
    assert [c[0] for c in calls] == ["epoch"] + ["batch"] * 4 + ["end"] + \
        ["epoch"] + ["batch"] * 4 + ["end"]
    batches = [c for c in calls if c[0] == "batch"]
    assert [c[1] for c in batches] == [0, 1, 2, 3] * 2
    assert [c[2] for c in batches] == [16, 16, 16, 2] * 2
    # sample weights are taken in the shuffled order: check the unweighted mean only
    if not weighted:
        first = batches[:4]
        epoch_loss = sum(c[2] * c[3] for c in first) / 50
        assert epoch_loss == pytest.approx(calls[5][2], rel=1e-12)


def test_model_checkpoint(rng, tmp_path):
    X, y = rng.normal(size=(40, 4)), rng.integers(0, 3, 40)
    model = fnn.Sequential([fnn.Dense(4, 8), fnn.ReLU(), fnn.Dense(8, 3)], dtype="float64",
                           seed=5)
    every = fnn.ModelCheckpoint(tmp_path / "m-{epoch}.npz", monitor="loss")
    model.fit(X, y, epochs=3, batch_size=8, optimizer="adam", callbacks=[every])
    assert every.saved == [str(tmp_path / f"m-{e}.npz") for e in (1, 2, 3)]
    np.testing.assert_array_equal(fnn.load(every.saved[-1]).predict(X), model.predict(X))

    class Rising:  # a monitored value that improves only at the second epoch
        def on_epoch_end(self, epoch, logs):
            logs["score"] = [3.0, 1.0, 2.0][epoch]
    best = fnn.ModelCheckpoint(tmp_path / "best-{epoch}.npz", monitor="score",
                               save_best_only=True)
    model.fit(X, y, epochs=3, batch_size=8, callbacks=[Rising(), best])
    assert best.saved == [str(tmp_path / "best-1.npz"), str(tmp_path / "best-2.npz")]


def test_batch_callbacks_refused_in_data_parallel_fit(rng):
    MPI = pytest.importorskip("mpi4py.MPI")
    model = fnn.Sequential([fnn.Dense(4, 3)], seed=1)
    before = [p.copy() for p in model.parameters()]
    with pytest.raises(ValueError, match="on_batch_end callbacks are not run in data-parallel"):
        model.fit(rng.normal(size=(8, 4)), rng.integers(0, 3, 8), callbacks=[Recorder()],
                  comm=MPI.COMM_SELF)
    for a, b in zip(before, model.parameters()):
        np.testing.assert_array_equal(a, b)



def test_callback_settings_fit_cannot_meet_are_refused_before_training(rng, tmp_path):
    """A monitored key or a path field that fit will not log (no validation data, or
    accuracy for a regression), a path that cannot be formatted or whose folder is
    missing: ValueError before the first step, the model and its optimizer unchanged and
    no file written. A key another callback adds is still taken (test_model_checkpoint)."""
    X, y = rng.normal(size=(40, 4)), rng.integers(0, 3, 40)
    model = fnn.Sequential([fnn.Dense(4, 8), fnn.ReLU(), fnn.Dense(8, 3)], dtype="float64",
                           seed=5)
    model.fit(X, y, epochs=1, optimizer="adam")
    before = [p.copy() for p in model.parameters()]
    optimizer, steps = model.optimizer, model.optimizer.steps
    cases = [
        ({}, fnn.EarlyStopping(), "EarlyStopping monitors 'val_loss', which the epoch "
                                  "logs will lack"),
        ({"loss": "mse", "y": X[:, :3]}, fnn.EarlyStopping(monitor="val_accuracy"),
         "monitors 'val_accuracy'"),
        ({}, fnn.ModelCheckpoint(tmp_path / "best.npz", save_best_only=True),
         "ModelCheckpoint monitors 'val_loss'"),
        ({}, fnn.ModelCheckpoint(tmp_path / "m-{val_loss:.3f}.npz"),
         "cannot be formatted .* KeyError: 'val_loss'"),
        ({}, fnn.ModelCheckpoint(tmp_path / "m-{epoch:q}.npz"), "cannot be formatted"),
        ({}, fnn.ModelCheckpoint(tmp_path / "missing" / "m-{epoch}.npz"), "no folder"),
    ]
    for extra, callback, message in cases:
        settings = {"y": y, **extra}
        with pytest.raises(ValueError, match=message):
            model.fit(X, settings.pop("y"), epochs=2, callbacks=[callback],
                      optimizer=optimizer, **settings)
        for a, b in zip(before, model.parameters()):
            np.testing.assert_array_equal(a, b)
        assert model.optimizer is optimizer and optimizer.steps == steps
    assert list(tmp_path.iterdir()) == []
    # with validation data the same settings are met
    saved = fnn.ModelCheckpoint(tmp_path / "m-{epoch}-{val_loss:.3f}.npz", save_best_only=True)
    model.fit(X, y, epochs=1, validation_data=(X, y), callbacks=[fnn.EarlyStopping(), saved])
    assert len(saved.saved) == 1 and (tmp_path / saved.saved[0]).exists()
