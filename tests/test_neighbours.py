"""fastnn processes training on the same CPUs divide them (csrc/neighbours.h)."""
import os
import subprocess
import sys
import time

import pytest
from conftest import run_to_ok

import fastnn as fnn
from fastnn import _engine

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the registry is Linux's (/dev/shm, sched_getaffinity)")

BEAT = """if True:
    import os, sys, time
    os.sched_setaffinity(0, {cpus})
    from fastnn import _engine
    assert _engine.set_neighbours({path!r})
    while True:  # a neighbour: beats as a training stretch would
        _engine.neighbours_share(2)
        print("beat", flush=True)
        time.sleep(0.05)
"""


@pytest.fixture
def registry(tmp_path):
    """A registry of this test's own; the session's is mapped again after."""
    path = str(tmp_path / "neighbours")
    assert _engine.set_neighbours(path)
    yield path
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


def start_neighbour(path, cpus):
    """A process that beats in the registry at `path` as one training on `cpus` (run
    from the registry's folder: the checkout's own fastnn may not be built)."""
    package_root = os.path.dirname(os.path.dirname(fnn.__file__))
    proc = subprocess.Popen([sys.executable, "-c", BEAT.format(cpus=set(cpus), path=path)],
                            stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(path),
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


def test_a_neighbour_on_the_same_cpus_halves_the_share_until_it_stops(registry, two_cpus):
    assert _engine.neighbours_share(2) == 2  # alone
    assert _engine.neighbours_share(1) == 1  # never above `most`
    neighbour = start_neighbour(registry, two_cpus)
    try:
        assert share_within(1, 10) == 1
    finally:
        neighbour.kill()
        neighbour.wait()
    # it stopped beating: forgotten half a second after its last beat
    assert share_within(2, 10) == 2


def test_three_processes_on_two_cpus_each_keep_one_thread(registry, two_cpus):
    neighbours = [start_neighbour(registry, two_cpus) for _ in range(2)]
    try:
        assert share_within(1, 10) == 1
        assert _engine.neighbours_share(8) == 1
    finally:
        for proc in neighbours:
            proc.kill()
            proc.wait()


def test_a_forked_child_is_a_neighbour_of_its_own(registry, two_cpus):
    """The child inherits the mapping and this process's entry; it must take its own."""
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


@pytest.mark.parametrize("make", ["other size", "symlink", "readable by others", "foreign"])
def test_a_file_that_is_not_a_registry_is_refused(tmp_path, make):
    """Each process then stays on its own: the share is `most`; the file is not changed."""
    path = tmp_path / "neighbours"
    if make == "other size":
        path.write_bytes(b"x" * 100)
    elif make == "symlink":
        target = tmp_path / "target"
        target.write_bytes(b"")
        os.chmod(target, 0o600)
        path.symlink_to(target)
    elif make == "readable by others":
        path.write_bytes(b"")
        os.chmod(path, 0o644)
    else:  # the right size, but without the registry's mark
        path.write_bytes(b"\x01" * os.path.getsize(make_registry(tmp_path / "real")))
        os.chmod(path, 0o600)
    before = path.read_bytes() if not path.is_symlink() else b""
    try:
        assert not _engine.set_neighbours(str(path))
        assert _engine.neighbours_share(3) == 3
        if not path.is_symlink():
            assert path.read_bytes() == before
        else:
            assert (tmp_path / "target").read_bytes() == b""
    finally:
        _engine.set_neighbours(None)


def make_registry(path):
    """A fresh registry file at `path` (set_neighbours creates and stamps it)."""
    assert _engine.set_neighbours(str(path))
    _engine.set_neighbours(None)
    return path


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
    path = str(tmp_path / "neighbours")
    code = f"""if True:
        import os, subprocess, sys, time
        cpus = sorted(os.sched_getaffinity(0))[:2]
        os.sched_setaffinity(0, set(cpus))
        import numpy as np, fastnn as fnn
        from fastnn import _engine
        assert _engine.set_neighbours({path!r})
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
            cpus=set(cpus), path={path!r})], stdout=subprocess.PIPE, text=True)
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
