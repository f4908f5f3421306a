"""Threads: the setting, fastnn's team (csrc/team.h) and BLAS pinned to one thread."""
import ctypes
import os
import threading
import time

import numpy as np
import pytest
from conftest import run_python, run_to_ok
from threadpoolctl import threadpool_info

import fastnn as fnn
from fastnn import _engine, _kernels, _threads


def blas_threads():
    return {lib["filepath"]: lib["num_threads"] for lib in threadpool_info()
            if lib["user_api"] == "blas"}


@pytest.fixture
def every_call_on_the_team():
    """Plan a thread per flop: every call runs on as many threads as it is allowed."""
    _engine.tune(grain_flops=1.0)  # (conftest restores the settings after the test)
    yield


def test_default_is_the_available_cores():
    fnn.set_num_threads(None)
    assert fnn.get_num_threads() == fnn._threads.available_cores()
    assert fnn.get_num_threads() == min(len(os.sched_getaffinity(0)),
                                        fnn._threads.available_cores())


def test_set_num_threads_limits_blas_too():
    fnn.set_num_threads(1)
    assert fnn.get_num_threads() == 1
    assert set(blas_threads().values()) == {1}


def test_threads_context_manager_restores():
    fnn.set_num_threads(2)
    before = blas_threads()
    with fnn.threads(1) as n:
        assert n == 1 and fnn.get_num_threads() == 1
        assert set(blas_threads().values()) == {1}
    assert fnn.get_num_threads() == 2 and blas_threads() == before


@pytest.mark.parametrize("bad", [0, -2, 1.5, "2", True])
def test_bad_thread_counts(bad):
    with pytest.raises(ValueError, match="number of threads"):
        fnn.set_num_threads(bad)


def test_omp_num_threads_is_respected(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert fnn._threads.available_cores() == 1


# -- the team ----------------------------------------------------------------------------

OPTIMIZERS = {
    "sgd": lambda: fnn.optim.SGD(lr=0.05, weight_decay=1e-3),
    "momentum": lambda: fnn.optim.SGD(lr=0.05, momentum=0.9, dampening=0.1),
    "nesterov": lambda: fnn.optim.SGD(lr=0.05, momentum=0.9, nesterov=True),
    "adam": lambda: fnn.optim.Adam(lr=1e-2, amsgrad=True),
    "adamw": lambda: fnn.optim.AdamW(lr=1e-2, weight_decay=0.1),
    # eps 1e-3: with the default 1e-8, g / (sqrt(v) + eps) turns the rounding noise of
    # gradients that are nearly zero into steps of size lr, so two runs that differ only in
    # rounding drift apart over a few dozen steps (as torch's would between thread counts)
    "rmsprop": lambda: fnn.optim.RMSprop(lr=1e-2, momentum=0.5, centered=True, eps=1e-3),
    "adagrad": lambda: fnn.optim.Adagrad(lr=0.05, lr_decay=1e-3),
}


def every_kind_of_layer(dtype):
    """Every layer kind, widths that split into uneven blocks of 16 units (50 = 16+16+18,
    and a 10-unit layer that one thread owns), an L2 penalty, and a hidden softmax, which
    works on whole rows."""
    return fnn.Sequential([
        fnn.Dense(12, 50, l2=1e-3), fnn.ReLU(), fnn.BatchNorm1d(50), fnn.Dropout(0.2),
        fnn.Dense(50, 40), fnn.LeakyReLU(0.1), fnn.BatchNorm1d(40, affine=False),
        fnn.Dense(40, 33), fnn.Tanh(), fnn.Dense(33, 10), fnn.Softmax(),
        fnn.Dense(10, 20), fnn.Sigmoid(), fnn.Dense(20, 4)], dtype=dtype, seed=3)


def train_everything(X, y, optimizer, n_threads, dtype="float64"):
    """Parameters, buffers, predictions, evaluation and gradients after training on
    n_threads threads."""
    with fnn.threads(n_threads):
        model = every_kind_of_layer(dtype)
        model.fit(X, y, optimizer=OPTIMIZERS[optimizer](), epochs=2, batch_size=37,
                  validation_data=(X[:50], y[:50]))
        assert model.last_threads == n_threads  # the validation pass ran on the team too
        results = model.parameters() + model.buffers() + [model.predict(X)]
        results += model.gradients(X, y)
        results.append(np.array([model.evaluate(X, y)["loss"]]))
    return results


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_one_two_and_more_threads_agree(rng, optimizer, every_call_on_the_team):
    """Every optimizer and layer kind, float64: the same training on 1, 2, 3 and 5
    threads ends with the same weights, statistics, predictions and gradients, up to the
    rounding of BLAS's blocking and of the loss's partial sums (one step agrees to 1e-13;
    22 steps of these optimizers grow that to at most 1e-10)."""
    X = rng.normal(size=(400, 12))
    y = rng.integers(0, 4, 400)
    one = train_everything(X, y, optimizer, 1)
    for n in (2, 3, 5):
        for a, b in zip(one, train_everything(X, y, optimizer, n)):
            np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12)


@pytest.fixture
def grid_rows():
    """force(rows): cut every Dense layer's products into `rows` rows of tiles where the
    plan's blocks divide so (the engine's grid_rows setting); the rule again afterwards."""
    old = _engine.tune(grid_rows=0)
    yield lambda rows: _engine.tune(grid_rows=rows)
    _engine.tune(**old)


def no_batch_norm(dtype="float64"):
    """Every activation and dropout between Dense layers of uneven widths (50 = 16+16+18
    units, a 10-unit layer), an L2 penalty, a hidden softmax: no batch norm, so every
    Dense layer may cut rows as well as units."""
    return fnn.Sequential([
        fnn.Dense(12, 50, l2=1e-3), fnn.ReLU(), fnn.Dropout(0.2), fnn.Dense(50, 40),
        fnn.LeakyReLU(0.1), fnn.Dense(40, 33), fnn.Tanh(), fnn.Dropout(0.3),
        fnn.Dense(33, 10), fnn.Softmax(), fnn.Dense(10, 20), fnn.Sigmoid(),
        fnn.Dense(20, 4)], dtype=dtype, seed=3)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_every_grid_of_tiles_agrees_with_one_thread(rng, optimizer, grid_rows,
                                                    every_call_on_the_team):
    """Each Dense layer's products cut into R x C tiles (R blocks of rows by C of units in
    forward and the input gradient, units by R blocks of inputs in the weight gradient,
    the bias in the grid's first row), activations and dropout run on the tiles (the
    masks those of the element's place in the layer): 4 and 6 threads in
    every grid end with one thread's weights, predictions, gradients and loss, to the
    rounding of BLAS's blocking (R = 1 is the plan's blocks of units, R = threads its
    blocks of rows)."""
    X = rng.normal(size=(400, 12))
    y = rng.integers(0, 4, 400)

    def train(n_threads, rows):
        grid_rows(rows)
        with fnn.threads(n_threads):
            model = no_batch_norm()
            model.fit(X, y, optimizer=OPTIMIZERS[optimizer](), epochs=2, batch_size=37)
            assert model.last_threads == n_threads
            return model.parameters() + [model.predict(X)] + model.gradients(X, y) + [
                np.array([model.evaluate(X, y)["loss"]])]
    one = train(1, 0)
    for n_threads, rows in ((4, 1), (4, 2), (4, 4), (6, 2), (6, 3), (6, 0)):
        for a, b in zip(one, train(n_threads, rows)):
            np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12,
                                       err_msg=f"{n_threads} threads, {rows} rows of tiles")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_fixed_thread_count_is_bitwise_reproducible(rng, dtype, every_call_on_the_team):
    X = rng.normal(size=(300, 12)).astype(dtype)
    y = rng.integers(0, 4, 300)
    first, second = (train_everything(X, y, "adam", 3, dtype) for _ in range(2))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def train_capped(X, y, w, optimizer, plan, cap, dtype):
    """Parameters, buffers and per-epoch losses after training planned for `plan`
    threads while the team runs at most `cap` of them (the engine's team_cap)."""
    old = _engine.tune(team_cap=cap)
    try:
        with fnn.threads(plan):
            model = every_kind_of_layer(dtype)
            history = model.fit(X, y, optimizer=OPTIMIZERS[optimizer](), epochs=2,
                                batch_size=37, sample_weight=w)
    finally:
        _engine.tune(**old)
    assert model.last_threads == min(plan, cap or plan)
    return model.parameters() + model.buffers() + [np.array(history["loss"])]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_a_plan_on_fewer_threads_ends_bit_for_bit_where_it_does_on_its_own(
        rng, dtype, optimizer, grid_rows, every_call_on_the_team):
    """A step's plan fixes its blocks; a stretch that runs on fewer threads (a busy
    machine, or the team held by another call) runs several blocks per thread, each
    block's products and partial sums made as before: weights, batch-norm statistics and
    the epoch losses are the plan's exactly, for every layer kind and sample weights,
    and with the Dense layers' products in tiles of 2 x 3 (6 blocks)."""
    X = rng.normal(size=(300, 12)).astype(dtype)
    y = rng.integers(0, 4, 300)
    w = rng.uniform(0.5, 2.0, 300)
    for plan, caps, rows in ((3, (1, 2), 0), (5, (2, 4), 0), (6, (1, 4), 2)):
        grid_rows(rows)
        own = train_capped(X, y, w, optimizer, plan, 0, dtype)
        for cap in caps:
            for a, b in zip(own, train_capped(X, y, w, optimizer, plan, cap, dtype)):
                np.testing.assert_array_equal(b, a)


def test_threads_are_sized_to_the_work():
    """One thread for a small step, the allowed count for a large one; never more."""
    small = fnn.Sequential([fnn.Dense(8, 4), fnn.ReLU(), fnn.Dense(4, 2)], seed=0)
    large = fnn.Sequential([fnn.Dense(256, 512), fnn.ReLU(), fnn.Dense(512, 10)], seed=0)
    X = np.zeros((1024, 256), np.float32)
    with fnn.threads(3):
        small.fit(X[:64, :8], np.zeros(64, int), batch_size=32)
        assert small.last_threads == 1
        large.fit(X, np.zeros(1024, int), batch_size=512)
        assert large.last_threads == 3
        large.predict(X[:1])
        assert large.last_threads == 1
    assert large._engine.plan_threads(512, 3, True, 64) == int(
        2 * 512 * (256 * 512 + 512 * 10) * 3 // _engine.tuning()["grain_flops"])


def test_blas_is_pinned_to_one_thread_during_calls_and_restored(rng, every_call_on_the_team):
    """While fit runs, the BLAS behind scipy.linalg.cython_blas is at one thread (the
    team's threads make one-thread products: BLAS's pool never competes with them), and
    afterwards it is back at the setting."""
    assert _engine.blas_controlled()
    path, _, get_address = _threads.scipy_blas()
    assert "scipy" in os.path.basename(os.path.dirname(path))
    get_blas_threads = ctypes.CFUNCTYPE(ctypes.c_int)(get_address)
    fnn.set_num_threads(2)
    assert get_blas_threads() == 2
    model = fnn.Sequential([fnn.Dense(64, 256), fnn.ReLU(), fnn.Dense(256, 10)], seed=0)
    X = rng.random((20000, 64), dtype=np.float32)
    seen, done = set(), threading.Event()

    def watch():
        while not done.is_set():
            seen.add(get_blas_threads())

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        model.fit(X, rng.integers(0, 10, 20000), epochs=2, batch_size=32)
    finally:
        done.set()
        watcher.join()
    assert model.last_threads == 2
    assert 1 in seen
    assert get_blas_threads() == 2


def _process_cpu_seconds():
    times = os.times()
    return times.user + times.system


def test_an_idle_team_uses_no_cpu(rng, every_call_on_the_team):
    """After a call the team's workers sleep: fastnn spins no core between calls."""
    model = fnn.Sequential([fnn.Dense(64, 128), fnn.ReLU(), fnn.Dense(128, 10)], seed=0)
    X = rng.random((5000, 64), dtype=np.float32)
    with fnn.threads(2):
        model.fit(X, rng.integers(0, 10, 5000), epochs=1, batch_size=64)
        assert model.last_threads == 2
    before = _process_cpu_seconds()
    time.sleep(0.5)
    assert _process_cpu_seconds() - before < 0.1


def test_two_models_train_at_once_from_two_python_threads(rng, every_call_on_the_team):
    """The team runs one call at a time; a second call meanwhile runs on its own thread,
    through its plan's blocks. Both train bit for bit as they would alone."""
    X = rng.normal(size=(2000, 12))
    y = rng.integers(0, 4, 2000)

    def train(model):
        model.fit(X, y, optimizer=fnn.optim.Adam(lr=1e-2), epochs=3, batch_size=16)

    expected = []
    for seed in (0, 1):
        model = every_kind_of_layer("float64")
        model.seed = seed
        with fnn.threads(2):
            train(model)
        expected.append(model.parameters())
    models = [every_kind_of_layer("float64") for _ in range(2)]
    for seed, model in enumerate(models):
        model.seed = seed
    with fnn.threads(2):
        workers = [threading.Thread(target=train, args=(m,)) for m in models]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    for model, params in zip(models, expected):  # the plan's blocks, on any threads
        for a, b in zip(model.parameters(), params):
            np.testing.assert_array_equal(a, b)


def test_the_team_works_in_a_forked_child(tmp_path):
    """A child forked after the team started has none of its workers: it starts its own."""
    code = """if True:
        import os, numpy as np, fastnn as fnn
        from fastnn import _engine
        _engine.tune(grain_flops=1.0)
        X = np.random.default_rng(0).random((500, 20))
        y = np.arange(500) % 3
        def fit():
            with fnn.threads(2):
                m = fnn.Sequential([fnn.Dense(20, 32), fnn.ReLU(), fnn.Dense(32, 3)],
                                   dtype="float64", seed=0)
                m.fit(X, y, epochs=2, batch_size=50)
                assert m.last_threads == 2
                return m.parameters()[0]
        parent = fit()
        pid = os.fork()
        if pid == 0:
            os._exit(0 if np.array_equal(fit(), parent) else 3)
        _, status = os.waitpid(pid, 0)
        print("child exit", os.waitstatus_to_exitcode(status))
    """
    result = run_python(["-c", code], cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("child exit 0")


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_another_blas_is_limited_to_one_thread_through_threadpoolctl(rng):
    """Without thread functions registered (a BLAS other than scipy's OpenBLAS) every
    engine call, the scikit-learn estimators' included, runs with BLAS limited to one
    thread by threadpoolctl."""
    from fastnn.sklearn import MLPClassifier
    _, set_address, get_address = _threads.scipy_blas()
    get_blas_threads = ctypes.CFUNCTYPE(ctypes.c_int)(get_address)
    fnn.set_num_threads(2)
    seen, done = set(), threading.Event()

    def watch():
        while not done.is_set():
            seen.add(get_blas_threads())

    X = rng.random((4000, 64))
    y = rng.integers(0, 3, 4000)
    _engine.register_blas(0, 0)
    watcher = threading.Thread(target=watch)
    try:
        assert not _engine.blas_controlled()
        watcher.start()
        MLPClassifier(hidden_layer_sizes=(256,), max_iter=3, random_state=0).fit(X, y)
    finally:
        done.set()
        if watcher.is_alive():
            watcher.join()
        _engine.register_blas(set_address, get_address)
    assert 1 in seen and get_blas_threads() == 2


# -- the team sized to a busy machine ------------------------------------------------------

def calm_state():
    return {"calm": 0, "patience": 2, "trying": False}


def test_a_contended_stretch_drops_as_many_threads_as_the_waits_add_up_to():
    """threads_after's rules: a thread that waited more than 15% of a stretch for a CPU
    holds the barrier-bound team back; the next stretch drops about as many threads as
    the team's waiting adds up to, never below one."""
    wall = 0.02
    state = calm_state()
    assert _kernels.stretch_threads_after(2, 2, [0.28 * wall * 1e9, 0.30 * wall * 1e9], 2, wall,
                                  state) == 1
    assert _kernels.stretch_threads_after(16, 16, [0.5 * wall * 1e9] * 2 + [0.0] * 14, 16, wall,
                                  calm_state()) == 15
    assert _kernels.stretch_threads_after(8, 8, [0.9 * wall * 1e9] * 8, 8, wall, calm_state()) == 1
    # a little waiting (an idle machine's: under 1% here) changes nothing
    assert _kernels.stretch_threads_after(4, 4, [0.05 * wall * 1e9] * 4, 4, wall, calm_state()) == 4
    # not judged: too short, another call held the team (ran on fewer), waits unknown
    busy = [0.5 * wall * 1e9] * 2
    assert _kernels.stretch_threads_after(2, 2, busy, 2, 0.001, calm_state()) == 2
    assert _kernels.stretch_threads_after(2, 2, busy[:1], 1, wall, calm_state()) == 2
    assert _kernels.stretch_threads_after(2, 2, [-1, -1], 2, wall, calm_state()) == 2


def test_below_the_plan_the_whole_plan_is_tried_again_ever_less_often_while_busy():
    """After `patience` calm stretches one stretch tries the whole plan; each try that
    finds the machine still busy doubles the patience (to at most 8 stretches), one that
    finds it free starts it over at 2."""
    wall, calm, busy = 0.02, [0.0], [0.4 * 0.02 * 1e9] * 2
    state = calm_state()
    k, runs = 1, []
    for _ in range(40):
        runs.append(k)
        k = _kernels.stretch_threads_after(k, 2, busy[:k] if k == 2 else calm, k, wall, state)
    tries = [i for i, n in enumerate(runs) if n == 2]
    assert tries[0] == 2 and [b - a - 1 for a, b in zip(tries, tries[1:])] == [4, 8, 8, 8]
    # a try that finds the cores free keeps them, and the patience starts over
    while k == 1:
        k = _kernels.stretch_threads_after(k, 2, calm, k, wall, state)
    assert state["trying"] and state["patience"] == 8
    assert _kernels.stretch_threads_after(2, 2, [0.0, 0.0], 2, wall, state) == 2
    assert state["patience"] == 2 and not state["trying"]


def test_after_a_helped_stretch_the_lead_moves_then_backs_off():
    """after_helped's rules: no thread waited, the whole plan; the lead waited for its
    CPU, the next helped stretch keeps it off that CPU; it waited on the other too (more
    threads than CPUs), or the helpers were late more often than not: the lead runs
    alone for 4, 8, ... up to 64 stretches. Only a helped stretch that went well makes
    the next one long (not a short try), and starts the patience over."""
    wall, ns = 0.2, 0.2 * 1e9
    free, lead_waits, helper_waits = [0.01 * ns] * 2, [0.4 * ns, 0.0], [0.0, 0.5 * ns]
    state = {"solo": 0, "patience": 0, "probing": True, "avoid_cpu": -1, "lead_cpu": 3}
    assert _kernels.helped_threads_after(1, 2, free, wall, 900, 10, state) == 2
    assert state["probing"]
    assert _kernels.helped_threads_after(1, 2, helper_waits, wall, 900, 10, state) == 1
    assert state == {"solo": 0, "patience": 0, "probing": False, "avoid_cpu": -1,
                     "lead_cpu": 3}
    assert _kernels.helped_threads_after(1, 2, lead_waits, wall, 900, 10, state) == 1
    assert state["avoid_cpu"] == 3 and state["solo"] == 0 and state["probing"]
    solos = []
    for _ in range(6):  # the lead waits on the other CPU too
        state["avoid_cpu"] = 3
        assert _kernels.helped_threads_after(1, 2, lead_waits, wall, 900, 10, state) == 1
        solos.append(state["solo"])
        assert state["avoid_cpu"] == -1 and state["probing"]
    assert solos == [4, 8, 16, 32, 64, 64]
    state.update(solo=0)
    assert _kernels.helped_threads_after(1, 2, helper_waits, wall, 900, 10, state) == 1
    assert state["patience"] == 0 and state["solo"] == 0 and not state["probing"]
    # helpers late more often than not (the lead took back more than half of their tiles)
    assert _kernels.helped_threads_after(1, 2, helper_waits, wall, 100, 51, state) == 1
    assert state["solo"] == 4 and state["probing"]
    # waits unknown: not the whole plan
    state = {"solo": 0, "patience": 0, "probing": True, "avoid_cpu": -1, "lead_cpu": 0}
    assert _kernels.helped_threads_after(1, 2, [-1, -1], wall, 900, 10, state) == 1


def test_only_an_unset_count_adapts_to_the_machine(monkeypatch):
    """A count fixed by set_num_threads, threads() or OMP_NUM_THREADS is used as given
    (training with it stays bitwise reproducible); unset, training adapts."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    fnn.set_num_threads(None)  # the default again, as at import
    assert fnn._threads.adapts_to_load()
    with fnn.threads(2):
        assert not fnn._threads.adapts_to_load()
        with fnn.threads(-1):
            assert fnn._threads.adapts_to_load()
    assert fnn._threads.adapts_to_load()
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert not fnn._threads.adapts_to_load()
    monkeypatch.delenv("OMP_NUM_THREADS")
    fnn.set_num_threads(2)
    assert not fnn._threads.adapts_to_load()


def _train_adapting_or_not(X, y, adapt, monkeypatch):
    """A training run whose count is fixed at 3, with or without the stretches."""
    monkeypatch.setattr(fnn._threads, "adapts_to_load", lambda: adapt)
    with fnn.threads(3):
        model = every_kind_of_layer("float64")
        model.fit(X, y, optimizer=fnn.optim.SGD(lr=0.05, momentum=0.9), epochs=2,
                  batch_size=37)
        model.fit(X, y, optimizer=fnn.optim.Adam(lr=1e-2), epochs=1, batch_size=37)
    return model


def test_stretches_carry_on_exactly_where_the_last_stopped(rng, monkeypatch,
                                                           every_call_on_the_team):
    """An epoch run in stretches of one step each (never judged, so always on the same
    threads) ends bitwise where one job does: rows, order, momentum scaling, dropout's
    stream, batch norm and the optimizer's counters carry across the stretches."""
    X = rng.normal(size=(400, 12))
    y = rng.integers(0, 4, 400)
    whole = _train_adapting_or_not(X, y, False, monkeypatch)
    old = _engine.tune(stretch_s=1e-12, judge_s=1e9)
    try:
        stretched = _train_adapting_or_not(X, y, True, monkeypatch)
    finally:
        _engine.tune(**old)
    # the first stretch is 4 steps unless the last call (within 0.2 s) timed a step
    stretches = stretched._engine.last_stretches
    assert {n for n, _ in stretches} == {3} and len(stretches) in (-(-400 // 37) - 3,
                                                                   -(-400 // 37))
    assert whole._engine.last_stretches == []
    for a, b in zip(whole.parameters() + whole.buffers(),
                    stretched.parameters() + stretched.buffers()):
        np.testing.assert_array_equal(a, b)


@pytest.fixture
def helped_stretches(monkeypatch):
    """Adapting training whose every stretch runs a lead and helpers (set with the lead's
    grace: 0 computes again every tile a helper has not finished when the lead looks)."""
    monkeypatch.setattr(fnn._threads, "adapts_to_load", lambda: True)
    old = _engine.tune(helping=0, help_grace=1.5)

    def use(mode, grace):
        _engine.tune(helping=mode, help_grace=grace)
    yield use
    _engine.tune(**old)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_lead_with_helpers_gives_the_plan_bit_for_bit(
        rng, dtype, optimizer, helped_stretches, grid_rows, every_call_on_the_team):
    """A lead that runs every pass of the step and shares each pass's tiles with helpers
    (csrc/helping.h) ends where the team runs the same plan, bit for bit: whether the
    lead waits for every helper (grace 1e9), takes back every late tile (grace 0),
    leaves every tile but its own to the helpers (a negative grace), or something in
    between; on 2 and 3 threads, a grid of 2 x 2 tiles on 4, and
    stretches of one step each. Every layer kind, batch norm and dropout included."""
    X = rng.normal(size=(300, 12)).astype(dtype)
    y = rng.integers(0, 4, 300)

    def fit(mode, grace, n_threads, model):
        helped_stretches(mode, grace)
        with fnn.threads(n_threads):
            m = model()
            m.fit(X, y, optimizer=OPTIMIZERS[optimizer](), epochs=2, batch_size=37)
        return m.parameters() + m.buffers(), m._engine.last_helpers

    def every_kind():
        return every_kind_of_layer(dtype)

    def tiles():
        return no_batch_norm(dtype)

    handed_in = 0
    for n_threads, rows, model in [(2, 0, every_kind), (3, 0, every_kind), (4, 2, tiles)]:
        grid_rows(rows)
        team, _ = fit(0, 1.5, n_threads, model)
        for grace in (1e9, 0.0, 1.5, -1.0):
            helped, helpers = fit(2, grace, n_threads, model)
            assert set(helpers["helpers"]) == {n_threads - 1}, helpers
            if grace > 1e8 or grace < 0:
                assert helpers["retaken"] == 0, helpers
            if grace < 0:  # the helpers took every tile but the lead's own
                assert helpers["tiles"] > 0, helpers
            handed_in += helpers["tiles"]
            for a, b in zip(team, helped):
                np.testing.assert_array_equal(a, b)
    old = _engine.tune(stretch_s=1e-12, judge_s=1e9)
    try:
        grid_rows(0)
        team, _ = fit(0, 1.5, 2, every_kind)
        helped, helpers = fit(2, 1.5, 2, every_kind)
        # a stretch per step (the first 4 steps unless the last call timed a step)
        assert len(helpers["helpers"]) in (-(-300 // 37) - 3, -(-300 // 37)), helpers
    finally:
        _engine.tune(**old)
    for a, b in zip(team, helped):
        np.testing.assert_array_equal(a, b)
    assert handed_in > 0  # the helpers' tiles went in, not only the lead's


def test_a_loss_that_fails_in_a_later_stretch_names_its_batch(rng, monkeypatch,
                                                              every_call_on_the_team):
    """The batch whose loss is not finite is counted over the whole epoch, not within
    its stretch, and the parameters are those before it."""
    X = rng.normal(size=(400, 12))
    y = rng.normal(size=(400, 4))
    y[200] = 1e200  # in batch 5 of 37 rows (185-221): its squared error overflows
    old = _engine.tune(stretch_s=1e-12, judge_s=1e9)
    try:
        for adapt in (False, True):
            monkeypatch.setattr(fnn._threads, "adapts_to_load", lambda adapt=adapt: adapt)
            model = fnn.Sequential([fnn.Dense(12, 40), fnn.ReLU(), fnn.Dense(40, 4)],
                                   dtype="float64", seed=0)
            before = [p.copy() for p in model.parameters()]
            with fnn.threads(2), pytest.raises(FloatingPointError, match="batch 5;"):
                model.fit(X, y, loss="mse", epochs=1, batch_size=37, shuffle=False,
                          optimizer=fnn.optim.SGD(lr=0.0))
            assert model._engine.step == 5
            assert all(np.array_equal(a, b) for a, b in zip(before, model.parameters()))
            # adapting, the batch is in the third stretch (4 steps, then one each)
            assert len(model._engine.last_stretches) == (3 if adapt else 0)
    finally:
        _engine.tune(**old)


def test_a_team_sharing_one_core_drops_to_one_thread(tmp_path):
    """Two team threads pinned to one core wait for it half the time: adapting training
    runs the rest of the epoch on one thread, and ends bit for bit where the team of two
    does, its plan unchanged (to rounding where a plan of one thread does). With a fixed
    count the team keeps both threads."""
    if _engine_wait_unknown():
        pytest.skip("this kernel does not report run delays (/proc/thread-self/schedstat)")
    code = """if True:
        import os
        # this process's own cores alone: the registry would also count the test
        # session's process, which trained a moment ago (and cap the team at one thread)
        os.environ["FASTNN_NEIGHBOURS"] = "off"
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        import numpy as np, fastnn as fnn
        rng = np.random.default_rng(0)
        X = rng.normal(size=(12000, 256))
        y = rng.integers(0, 10, 12000)
        def fit(adapt, threads):
            fnn._threads.adapts_to_load = lambda: adapt
            m = fnn.Sequential([fnn.Dense(256, 256), fnn.ReLU(), fnn.Dense(256, 10)],
                               dtype="float64", seed=0)
            with fnn.threads(threads):
                m.fit(X, y, epochs=1, batch_size=128, shuffle=False)
            return m, m._engine.last_stretches
        one, _ = fit(False, 1)
        fixed, _ = fit(False, 2)
        assert fixed.last_threads == 2, fixed.last_threads
        adapting, stretches = fit(True, 2)
        print("stretches", stretches)
        assert stretches[0][0] == 2, stretches
        assert any(n == 2 and w > 0.15 and after == 1
                   for (n, w), (after, _) in zip(stretches, stretches[1:])), stretches
        for a, b in zip(one.parameters(), adapting.parameters()):
            np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-13)
        for a, b in zip(fixed.parameters(), adapting.parameters()):  # the same plan
            assert np.array_equal(a, b)
        print("ok")
    """
    run_to_ok(code, tmp_path)


def test_a_team_with_a_core_taken_runs_a_lead_with_helpers(tmp_path):
    """On two CPUs, one of them held by another process: adapting training drops from
    the team of two to a lead with a helper, whose tiles go in, and ends bit for bit
    where the team of two does. Every epoch's stretches are read (a callback): after a
    helped stretch in which the helper was late more often than not the lead rightly
    runs alone for a while, so on a noisy machine a later epoch may have no helper."""
    if _engine_wait_unknown():
        pytest.skip("this kernel does not report run delays (/proc/thread-self/schedstat)")
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs")
    code = """if True:
        import os, subprocess, sys
        os.environ["FASTNN_NEIGHBOURS"] = "off"  # (as above)
        cpus = sorted(os.sched_getaffinity(0))[:2]
        os.sched_setaffinity(0, set(cpus))
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"],
                                   preexec_fn=lambda: os.sched_setaffinity(0, {cpus[1]}))
        import numpy as np, fastnn as fnn

        class EveryEpoch(fnn.callbacks.Callback):
            def on_train_begin(self, model):
                self.engine, self.epochs = model._engine, []

            def on_epoch_end(self, epoch, logs):
                self.epochs.append((self.engine.last_stretches, self.engine.last_helpers))

        try:
            rng = np.random.default_rng(0)
            X = rng.normal(size=(12000, 256))
            y = rng.integers(0, 10, 12000)
            def fit(adapt):
                fnn._threads.adapts_to_load = lambda: adapt
                m = fnn.Sequential([fnn.Dense(256, 256), fnn.ReLU(), fnn.Dense(256, 10)],
                                   dtype="float64", seed=0)
                seen = EveryEpoch()
                with fnn.threads(2):
                    m.fit(X, y, epochs=2, batch_size=128, shuffle=False, callbacks=[seen],
                          optimizer=fnn.optim.SGD(lr=0.01, momentum=0.9))
                return m, seen.epochs
            fixed, _ = fit(False)
            adapting, epochs = fit(True)
        finally:
            spinner.kill()
        for stretches, helpers in epochs:
            print("stretches", stretches, helpers)
        assert any(1 in helpers["helpers"] and helpers["tiles"] > 0
                   for _, helpers in epochs), epochs
        for a, b in zip(fixed.parameters(), adapting.parameters()):  # the same plan
            assert np.array_equal(a, b)
        print("ok")
    """
    run_to_ok(code, tmp_path)


def _engine_wait_unknown():
    try:
        with open("/proc/thread-self/schedstat") as f:
            return len(f.read().split()) < 2
    except OSError:
        return True


# -- predicts in claimed blocks --------------------------------------------------------------

@pytest.mark.parametrize("batch_size", [1024, 100, 7, 1])
def test_team_predicts_claim_blocks_and_agree_with_one_thread(rng, batch_size,
                                                              every_call_on_the_team):
    """A predict on the team hands out blocks of batch_size / threads rows to whichever
    thread is free: with more threads than cores (so the scheduler takes some off their
    cores mid-block) every layer kind's predictions equal one thread's, and two runs on
    the same count are bitwise equal whichever thread took which block. A sparse X's
    blocks are densified into each thread's own rows of the buffer: the same results."""
    import scipy.sparse
    X = rng.normal(size=(3001, 12))
    model = every_kind_of_layer("float64")
    model.fit(X[:200], rng.integers(0, 4, 200), epochs=1, batch_size=50)  # BN statistics
    with fnn.threads(1):
        expected = model.predict(X, batch_size=batch_size)
    with fnn.threads(5):
        first = model.predict(X, batch_size=batch_size)
        assert model.last_threads == 5
        second = model.predict(X, batch_size=batch_size)
        sparse = model.predict(scipy.sparse.csr_matrix(X), batch_size=batch_size)
    np.testing.assert_allclose(first, expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(sparse, first)
    np.testing.assert_array_equal(first, second)


def test_engine_settings_change_by_name_and_come_back(rng):
    """tune() changes the named settings and returns what they were; a bad name or value
    changes nothing; a team cap takes effect on the next call."""
    before = _engine.tuning()
    with pytest.raises(ValueError, match="unknown engine settings"):
        _engine.tune(team_cap=1, grain_flops_typo=2.0)
    with pytest.raises(ValueError, match="grain_flops must be positive"):
        _engine.tune(team_cap=1, grain_flops=0)
    assert _engine.tuning() == before
    old = _engine.tune(team_cap=1, grain_flops=1.0)
    assert old == {"team_cap": before["team_cap"], "grain_flops": before["grain_flops"]}
    X, y = rng.normal(size=(200, 8)), rng.integers(0, 3, 200)
    model = fnn.Sequential([fnn.Dense(8, 32), fnn.ReLU(), fnn.Dense(32, 3)], seed=0)
    with fnn.threads(2):
        model.fit(X, y, epochs=1, batch_size=50)
        assert model.last_threads == 1
        _engine.tune(**old)
        model.fit(X, y, epochs=1, batch_size=50)
    assert _engine.tuning() == before
