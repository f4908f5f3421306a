"""fastnn processes training on the same CPUs divide them (csrc/neighbours.h), seen
through abstract Unix socket names: no file is written."""
import os
import subprocess
import sys
import tempfile
import time
import uuid

import pytest
from conftest import run_to_ok

import fastnn as fnn
from fastnn import _engine

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="Linux's: abstract socket names, sched_getaffinity")

BEAT = """if True:
    import os, sys, time
    os.sched_setaffinity(0, {cpus})
    from fastnn import _engine
    assert _engine.set_neighbours({group!r})
    while True:  # a neighbour: counts its share as a training stretch would
        _engine.neighbours_share(2)
        print("beat", flush=True)
        time.sleep(0.05)
"""


@pytest.fixture
def registry(tmp_path):
    """A group of this test's own; the session's is used again after."""
    group = f"test-{uuid.uuid4().hex[:12]}"
    assert _engine.set_neighbours(group)
    yield group
    _engine.neighbours_leave()
    _engine.set_neighbours(None)


@pytest.fixture
def two_cpus():
    """This thread on two CPUs (the registry reads the calling thread's)."""
    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2:
        pytest.skip("needs two CPUs")
    cpus = sorted(allowed)[:2]
    os.sched_setaffinity(0, cpus)
    yield cpus
    os.sched_setaffinity(0, allowed)


def start_neighbour(group, cpus, cwd):
    """A process of `group` that counts its share as one training on `cpus` would (run
    from `cwd`: the checkout's own fastnn may not be built)."""
    package_root = os.path.dirname(os.path.dirname(fnn.__file__))
    proc = subprocess.Popen([sys.executable, "-c", BEAT.format(cpus=set(cpus), group=group)],
                            stdout=subprocess.PIPE, text=True, cwd=cwd,
                            env=dict(os.environ, PYTHONPATH=package_root))
    assert proc.stdout.readline().strip() == "beat"
    return proc


def share_within(want, seconds):
    """Poll this process's share of two threads until it reads `want`; the last read."""
    deadline = time.monotonic() + seconds
    while True:
        share = _engine.neighbours_share(2)
        if share == want or time.monotonic() > deadline:
            return share
        time.sleep(0.02)


def test_a_neighbour_on_the_same_cpus_halves_the_share_until_it_stops(registry, two_cpus,
                                                                      tmp_path):
    assert _engine.neighbours_share(2) == 2  # alone
    assert _engine.neighbours_share(1) == 1  # never above `most`
    neighbour = start_neighbour(registry, two_cpus, tmp_path)
    try:
        assert share_within(1, 10) == 1
    finally:
        neighbour.kill()
        neighbour.wait()
    # it died: its name went with it
    assert share_within(2, 10) == 2


def test_a_process_of_another_group_or_on_other_cpus_is_no_neighbour(registry, two_cpus,
                                                                     tmp_path):
    others = [start_neighbour(registry + "-other", two_cpus, tmp_path)]
    if len(os.sched_getaffinity(0) | set(two_cpus)) >= 2:
        others.append(start_neighbour(registry, two_cpus[:1], tmp_path))
        os.sched_setaffinity(0, two_cpus[1:])
    try:
        time.sleep(0.3)  # past the 0.1 s for which a count is kept
        assert _engine.neighbours_share(2) == 2
    finally:
        os.sched_setaffinity(0, two_cpus)
        for proc in others:
            proc.kill()
            proc.wait()


def test_three_processes_on_two_cpus_each_keep_one_thread(registry, two_cpus, tmp_path):
    neighbours = [start_neighbour(registry, two_cpus, tmp_path) for _ in range(2)]
    try:
        assert share_within(1, 10) == 1
        assert _engine.neighbours_share(8) == 1
    finally:
        for proc in neighbours:
            proc.kill()
            proc.wait()


def test_a_forked_child_is_a_neighbour_of_its_own(registry, two_cpus):
    """The child inherits this process's socket and name; it must take its own."""
    assert _engine.neighbours_share(2) == 2  # this process's entry, claimed
    pid = os.fork()
    if pid == 0:  # the child: beat for two seconds, touching nothing else
        try:
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                _engine.neighbours_share(2)
                time.sleep(0.02)
        finally:
            os._exit(0)
    try:
        assert share_within(1, 1.5) == 1
    finally:
        os.waitpid(pid, 0)


@pytest.mark.parametrize("group", ["", "a/b", "tab\there", "x" * 41])
def test_a_group_that_is_not_one_short_printable_name_is_refused(group):
    """Each process then stays on its own: the share is `most`."""
    try:
        assert not _engine.set_neighbours(group)
        assert _engine.neighbours_registry() is None
        assert _engine.neighbours_share(3) == 3
    finally:
        _engine.set_neighbours(None)


def test_training_writes_no_file_outside_the_users_own(tmp_path):
    """An adapting fit, which counts the fastnn processes of the default group at every
    stretch, leaves nothing in /dev/shm or the temporary folder."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs (a plan of two blocks trains in stretches)")
    shared = "/dev/shm"
    code = """if True:
        import numpy as np, fastnn as fnn
        X = np.random.default_rng(0).normal(size=(4000, 256))
        m = fnn.Sequential([fnn.Dense(256, 256), fnn.ReLU(), fnn.Dense(256, 10)], seed=0)
        m.fit(X, np.arange(4000) % 10, epochs=2, batch_size=128)  # no count fixed
        assert m._engine.last_stretches  # it trained in stretches, counting neighbours
        print("ok")
    """
    before = {d: set(os.listdir(d)) for d in (shared, tempfile.gettempdir())
              if os.path.isdir(d)}
    env = {k: v for k, v in os.environ.items()
           if k not in ("FASTNN_NEIGHBOURS", "OMP_NUM_THREADS")}
    run_to_ok(code, tmp_path, env=env)
    for folder, names in before.items():
        assert not {n for n in set(os.listdir(folder)) - names if "fastnn" in n}, folder


def test_off_turns_the_registry_off(tmp_path):
    try:
        assert not _engine.set_neighbours("off")
        assert _engine.neighbours_share(5) == 5
    finally:
        _engine.set_neighbours(None)


def test_adapting_training_beside_a_neighbour_runs_its_share(tmp_path):
    """A process on two CPUs trains with no count fixed: alone, its first stretch runs
    the plan's two threads; beside another fastnn process training on the same CPUs,
    every stretch runs one thread and no helper, and it ends bit for bit where it did
    alone (the same plan)."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs")
    group = f"test-{uuid.uuid4().hex[:12]}"
    code = f"""if True:
        import os, subprocess, sys, time
        cpus = sorted(os.sched_getaffinity(0))[:2]
        os.sched_setaffinity(0, set(cpus))
        import numpy as np, fastnn as fnn
        from fastnn import _engine
        assert _engine.set_neighbours({group!r})
        rng = np.random.default_rng(0)
        X = rng.normal(size=(6000, 256))
        y = rng.integers(0, 10, 6000)
        fnn._threads.adapts_to_load = lambda: True
        def fit():
            m = fnn.Sequential([fnn.Dense(256, 256), fnn.ReLU(), fnn.Dense(256, 10)],
                               dtype="float64", seed=0)
            with fnn.threads(2):
                m.fit(X, y, epochs=1, batch_size=128, shuffle=False,
                      optimizer=fnn.optim.SGD(lr=0.01, momentum=0.9))
            return m, [n for n, _ in m._engine.last_stretches], m._engine.last_helpers
        alone, threads, _ = fit()
        assert threads[0] == 2, threads
        neighbour = subprocess.Popen([sys.executable, "-c", {BEAT!r}.format(
            cpus=set(cpus), group={group!r})], stdout=subprocess.PIPE, text=True)
        try:
            assert neighbour.stdout.readline().strip() == "beat"
            deadline = time.monotonic() + 10
            while _engine.neighbours_share(2) != 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            beside, threads, helpers = fit()
        finally:
            neighbour.kill()
        assert set(threads) == {{1}}, threads
        assert helpers["tiles"] == 0 and set(helpers["helpers"]) <= {{0}}, helpers
        for a, b in zip(alone.parameters(), beside.parameters()):
            assert np.array_equal(a, b)
        print("ok")
    """
    run_to_ok(code, tmp_path)
