"""fit's training features: schedules, validation, callbacks, early stopping, progress,
and save / load / resume."""
import math
import os

import numpy as np
import pytest

import fastnn as fnn


def model(seed=0, dtype="float32"):
    return fnn.Sequential([fnn.Dense(6, 16), fnn.ReLU(), fnn.Dense(16, 3)], dtype=dtype,
                          seed=seed)


@pytest.fixture
def Xy(rng):
    X = rng.normal(size=(300, 6)).astype(np.float32)
    return X, (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1)


def lrs(schedule, epochs, lr=0.1, losses=None, Xy=None):
    """The learning rate fit used in each epoch."""
    X, y = Xy
    m = model()
    history = m.fit(X, y, optimizer=fnn.optim.SGD(lr=lr), epochs=epochs, lr_schedule=schedule)
    return history["lr"]


@pytest.mark.parametrize("make,formula", [
    (lambda: fnn.optim.StepLR(step_size=3, gamma=0.5), lambda e: 0.1 * 0.5 ** (e // 3)),
    (lambda: fnn.optim.ExponentialLR(gamma=0.9), lambda e: 0.1 * 0.9 ** e),
    (lambda: fnn.optim.CosineAnnealingLR(T_max=4, eta_min=0.01),
     lambda e: 0.01 + 0.09 * (1 + math.cos(math.pi * e / 4)) / 2),
])
def test_schedules_follow_torch_formulas(Xy, make, formula):
    assert lrs(make(), 9, Xy=Xy) == pytest.approx([formula(e) for e in range(9)], rel=1e-12)


def test_reduce_on_plateau(Xy):
    X, y = Xy
    m = model()
    opt = fnn.optim.SGD(lr=0.0)  # no learning: the monitored loss never improves
    schedule = fnn.optim.ReduceLROnPlateau(patience=2, factor=0.5)
    opt.lr = 1e-12  # effectively frozen, but a visible lr to reduce
    history = m.fit(X, y, optimizer=opt, epochs=8, lr_schedule=schedule,
                    validation_data=(X, y), shuffle=False)
    # epoch 0 sets the best; epochs 1, 2, 3 are bad -> reduce after epoch 3, then 6
    assert history["lr"] == pytest.approx([1e-12] * 4 + [5e-13] * 3 + [2.5e-13])


def test_validation_split_is_taken_from_the_end(Xy):
    X, y = Xy
    a, b = model(seed=4), model(seed=4)
    ha = a.fit(X, y, epochs=2, validation_split=0.2, shuffle=False)
    hb = b.fit(X[:240], y[:240], epochs=2, validation_data=(X[240:], y[240:]), shuffle=False)
    assert ha["val_loss"] == hb["val_loss"] and ha["val_accuracy"] == hb["val_accuracy"]
    assert ha["val_loss"][-1] == pytest.approx(a.evaluate(X[240:], y[240:])["loss"])
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p, q)


def test_callbacks_can_stop_training(Xy):
    X, y = Xy
    seen = []

    class StopAfterTwo(fnn.Callback):
        def on_epoch_end(self, epoch, logs):
            seen.append((epoch, sorted(logs)))
            return epoch == 1

    history = model().fit(X, y, epochs=10, callbacks=[StopAfterTwo()])
    assert history.epoch == [0, 1]
    assert seen[0][1] == ["loss", "lr", "samples_per_second", "seconds"]

    class Flag(fnn.Callback):
        def on_train_begin(self, m):
            self.m = m

        def on_epoch_end(self, epoch, logs):
            self.m.stop_training = epoch == 2

    assert model().fit(X, y, epochs=10, callbacks=[Flag()]).epoch == [0, 1, 2]


def test_early_stopping_restores_best_weights(Xy, rng):
    X, y = Xy
    m = model()
    snapshots = []

    class Snapshot(fnn.Callback):
        def on_epoch_end(self, epoch, logs):
            snapshots.append([p.copy() for p in m.parameters()])

    noisy = rng.integers(0, 3, len(y))  # validation labels unrelated to X: no real progress
    stopper = fnn.EarlyStopping(monitor="val_loss", patience=2)
    history = m.fit(X, y, optimizer=fnn.optim.SGD(lr=0.5, momentum=0.9), epochs=50,
                    validation_data=(X, noisy), callbacks=[Snapshot(), stopper])
    best = int(np.argmin(history["val_loss"]))
    assert len(history.epoch) == best + 3 < 50
    for p, q in zip(m.parameters(), snapshots[best]):
        np.testing.assert_array_equal(p, q)


def test_early_stopping_needs_its_metric(Xy):
    X, y = Xy
    with pytest.raises(ValueError, match="EarlyStopping monitors 'val_loss'"):
        model().fit(X, y, epochs=2, callbacks=[fnn.EarlyStopping()])


def test_verbose_2_draws_a_progress_bar(Xy, capsys):
    X, y = Xy
    model().fit(X, y, epochs=1, batch_size=8, verbose=2, validation_split=0.1)
    out = capsys.readouterr().out
    assert "\r" in out and "[" in out and "270/270" in out and "val_loss" in out


def test_chunked_progress_trains_identically(Xy):
    X, y = Xy
    a, b = model(seed=2), model(seed=2)
    a.fit(X, y, epochs=2, batch_size=8, verbose=2)
    b.fit(X, y, epochs=2, batch_size=8)
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p, q)


def test_bad_training_options(Xy):
    X, y = Xy
    m = model()
    for kwargs, message in [
        (dict(validation_split=1.0), r"validation_split must be in \[0, 1\)"),
        (dict(validation_split=0.1, validation_data=(X, y)), "not both"),
        (dict(validation_data=X), "validation_data must be a pair"),
        (dict(validation_data=(X[:, :2], y)), "2 features"),
        (dict(lr_schedule="cosine"), "lr_schedule must be"),
    ]:
        with pytest.raises((ValueError, TypeError), match=message):
            m.fit(X, y, **kwargs)
    assert m.optimizer is None


# -- save / load / resume -------------------------------------------------------------

@pytest.mark.parametrize("opt", [fnn.optim.SGD(lr=0.05, momentum=0.9), fnn.optim.Adam(),
                                 fnn.optim.Adagrad(initial_accumulator_value=0.1)])
def test_save_load_predicts_bitwise_equal(Xy, tmp_path, opt):
    X, y = Xy
    m = fnn.Sequential([fnn.Dense(6, 8), fnn.LeakyReLU(0.2), fnn.Dense(8, 5, bias=False),
                        "tanh", fnn.Dense(5, 3), "softmax"], dtype="float64", seed=3)
    m.fit(X, y, optimizer=opt, epochs=2)
    path = tmp_path / "model.npz"
    m.save(path)
    loaded = fnn.load(path)
    np.testing.assert_array_equal(loaded.predict(X), m.predict(X))
    assert type(loaded.optimizer) is type(opt) and loaded.optimizer.steps == opt.steps
    assert repr(loaded) == repr(m)
    for a, b in zip(loaded.optimizer.state, opt.state):
        for p, q in zip(a, b):
            np.testing.assert_array_equal(p, q)
    m.save(tmp_path / "bare.npz", include_optimizer=False)
    assert fnn.load(tmp_path / "bare.npz").optimizer is None


def test_resume_equals_uninterrupted(Xy, tmp_path):
    X, y = Xy
    with fnn.threads(1):
        full = model(seed=11)
        full.fit(X, y, optimizer=fnn.optim.SGD(lr=0.05, momentum=0.9), epochs=4)
        part = model(seed=11)
        part.fit(X, y, optimizer=fnn.optim.SGD(lr=0.05, momentum=0.9), epochs=2)
        part.save(tmp_path / "ckpt.npz")
        resumed = fnn.load(tmp_path / "ckpt.npz")
        history = resumed.fit(X, y, epochs=4, initial_epoch=2)
    assert history.epoch == [2, 3]
    for p, q in zip(resumed.parameters(), full.parameters()):
        np.testing.assert_array_equal(p, q)


def test_save_is_atomic(Xy, tmp_path, monkeypatch):
    X, y = Xy
    m = model()
    path = tmp_path / "m.npz"
    m.save(path)
    good = path.read_bytes()

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", explode)
    with pytest.raises(KeyboardInterrupt):
        model(seed=9).save(path)
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["m.npz"]  # no temporary file left behind


def test_loading_bad_files_raises_value_error(Xy, tmp_path):
    X, y = Xy
    path = tmp_path / "m.npz"
    model().save(path)
    data = path.read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.npz").write_bytes(b"\x00" * 100)
    np.savez(tmp_path / "foreign.npz", a=np.arange(3))
    np.save(tmp_path / "pickled.npy", np.array([{"evil": 1}], dtype=object))
    for name in ("truncated.npz", "garbage.npz", "foreign.npz", "pickled.npy"):
        with pytest.raises(ValueError, match="not a usable fastnn model file") as error:
            fnn.load(tmp_path / name)
        assert "allow_pickle" not in str(error.value)
    with pytest.raises(FileNotFoundError):
        fnn.load(tmp_path / "missing.npz")


def test_dropout_is_identity_outside_fit_and_reproducible(Xy):
    X, y = Xy
    plain = fnn.Sequential([fnn.Dense(6, 32), fnn.ReLU(), fnn.Dense(32, 3)], seed=1)
    dropped = fnn.Sequential([fnn.Dense(6, 32), fnn.ReLU(), fnn.Dropout(0.5), fnn.Dense(32, 3)],
                             seed=1)
    np.testing.assert_array_equal(plain.predict(X), dropped.predict(X))
    for a, b in zip(plain.gradients(X, y), dropped.gradients(X, y)):
        np.testing.assert_array_equal(a, b)
    runs = []
    with fnn.threads(1):
        for seed in (3, 3, 4):
            m = fnn.Sequential([fnn.Dense(6, 32), fnn.ReLU(), fnn.Dropout(0.3),
                                fnn.Dense(32, 3)], seed=seed)
            m.fit(X, y, epochs=3)
            runs.append(m.parameters())
    for a, b in zip(runs[0], runs[1]):
        np.testing.assert_array_equal(a, b)
    assert any((a != b).any() for a, b in zip(runs[0], runs[2]))


def test_dropout_zero_trains_like_no_dropout(Xy):
    X, y = Xy
    a = fnn.Sequential([fnn.Dense(6, 16), fnn.ReLU(), fnn.Dense(16, 3)], seed=2)
    b = fnn.Sequential([fnn.Dense(6, 16), fnn.ReLU(), fnn.Dropout(0.0), fnn.Dense(16, 3)],
                       seed=2)
    a.fit(X, y, epochs=2, shuffle=False)
    b.fit(X, y, epochs=2, shuffle=False)
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p, q)


def test_dropout_regularizes_and_saves(Xy, tmp_path):
    X, y = Xy
    m = fnn.Sequential([fnn.Dense(6, 64), fnn.ReLU(), fnn.Dropout(0.2), fnn.Dense(64, 3)],
                       seed=0)
    m.fit(X, y, optimizer=fnn.optim.Adam(lr=0.01), epochs=30, batch_size=32)
    assert m.evaluate(X, y)["accuracy"] > 0.9
    m.save(tmp_path / "d.npz")
    np.testing.assert_array_equal(fnn.load(tmp_path / "d.npz").predict(X), m.predict(X))
    with pytest.raises(ValueError, match=r"dropout probability must be in \[0, 1\)"):
        fnn.Dropout(1.0)


def test_saved_files_get_a_new_files_permissions_or_keep_the_old_ones(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    path = tmp_path / "m.npz"
    model().save(path)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask
    os.chmod(path, 0o640)
    model().save(path)
    assert os.stat(path).st_mode & 0o777 == 0o640
