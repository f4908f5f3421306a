"""Loading files from elsewhere: damaged or hostile files are refused cheaply.

The mutations are tools/fuzz_load.py's (a longer run of the same as a script); here
hypothesis picks them. Each mutated file is loaded correctly or refused with ValueError,
within 1 s and 100 MB of new allocations (tracemalloc)."""
import json
import os
import signal
import sys

import numpy as np
import pytest
from conftest import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastnn as fnn

sys.path.insert(0, os.path.join(ROOT, "tools"))
import fuzz_load  # noqa: E402

VALID = {}


def valid(with_optimizer):
    if with_optimizer not in VALID:
        VALID[with_optimizer] = fuzz_load.valid_file(with_optimizer)
    return VALID[with_optimizer]


def test_a_valid_file_loads(tmp_path):
    assert fuzz_load.check(valid(True), tmp_path) == "loaded"
    assert fuzz_load.check(valid(False), tmp_path) == "loaded"


@pytest.mark.parametrize("headers_agree", [False, True])
def test_a_small_file_declaring_a_huge_layer_is_refused_at_once(tmp_path, headers_agree):
    """The issue's case: a small valid save whose config declares Dense(20000, 20000)
    (1.6 GB of weights) is refused before anything of that size is allocated or drawn."""
    rng = np.random.default_rng(0)
    while bool(rng.integers(0, 2)) != headers_agree:  # the mutation's own coin
        rng = np.random.default_rng(int(rng.integers(1 << 30)))
    data = fuzz_load.declare_huge_layer(valid(True), rng)
    assert len(data) < 20000
    assert fuzz_load.check(data, tmp_path) == "refused"


def test_an_unexpected_member_is_refused_without_decompressing_it(tmp_path):
    """A deflated member of 200 MB of zeros beside the model's own (a zip bomb)."""
    rng = np.random.default_rng(0)
    while not rng.integers(0, 2):
        rng = np.random.default_rng(int(rng.integers(1 << 30)))
    state = rng.bit_generator.state
    data = fuzz_load.extra_member(valid(True), rng)
    rng.bit_generator.state = state
    assert len(data) < 2**20 and "evil.npy" in fuzz_load.members(data)
    with pytest.raises(ValueError, match="unexpected member 'evil.npy'"):
        fnn.load(_write(tmp_path, data))
    assert fuzz_load.check(data, tmp_path) == "refused"


def test_the_refusals_name_the_problem(tmp_path):
    files = fuzz_load.members(valid(True))
    config = fuzz_load.config_of(files)
    config["layers"][0]["out_features"] = 7
    with pytest.raises(ValueError, match=r"Dense\(7, 3\) after a layer of width 7|"
                                         r"BatchNorm1d\(6\) after a layer of width 7"):
        fnn.load(_write(tmp_path, fuzz_load.archive(fuzz_load.with_config(files, config))))
    del files["param_1.npy"]
    with pytest.raises(ValueError, match=r"missing \['param_1.npy'\]"):
        fnn.load(_write(tmp_path, fuzz_load.archive(files)))


def test_a_member_said_to_start_before_the_file_is_refused(tmp_path):
    """The end record's central-directory offset raised by 2^26 (one bit of its high
    byte, as the test below found with seed 36186): zipfile still finds the directory
    where the record lies, but moves every member's start 2^26 bytes earlier, before the
    file's start. Refused as damaged, not an OSError from a negative seek."""
    data = bytearray(valid(False))
    end = data.rindex(b"PK\x05\x06")
    offset = int.from_bytes(data[end + 16:end + 20], "little")
    data[end + 16:end + 20] = (offset + (1 << 26)).to_bytes(4, "little")
    with pytest.raises(ValueError, match=r"member param_0.npy declares \d+ bytes that the "
                                         r"file does not hold"):
        fnn.load(_write(tmp_path, bytes(data)))


def _write(folder, data):
    path = os.path.join(folder, "m.npz")
    with open(path, "wb") as f:
        f.write(data)
    return path


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(mutation=st.sampled_from(fuzz_load.MUTATIONS), seed=st.integers(0, 2**32 - 1),
       with_optimizer=st.booleans())
def test_mutated_files_load_or_are_refused_within_bounds(tmp_path, mutation, seed,
                                                         with_optimizer):
    data = mutation(valid(with_optimizer), np.random.default_rng(seed))
    assert fuzz_load.check(data, tmp_path) in ("loaded", "refused")


def test_overlapping_members_are_refused_before_any_array_is_read(tmp_path):
    """A quoted-overlap zip bomb: 150 stored members with valid headers and CRCs, each
    running on through the next ones, so a 1 MB file stands for 150 MB of weights. Refused
    from the directory and local headers (without the check it loads, allocating 300 MB);
    small ones too, which would otherwise load as a model of shared bytes."""
    data = fuzz_load.quoted_overlap(150, 512)
    assert len(data) < 1.1 * 2**20
    with pytest.raises(ValueError, match="member param_0.npy overlaps member param_1.npy"):
        fnn.load(_write(tmp_path, data))
    assert fuzz_load.check(data, tmp_path) == "refused"
    for seed in range(5):
        small = fuzz_load.overlapping_members(None, np.random.default_rng(seed))
        assert fuzz_load.check(small, tmp_path) == "refused"


@pytest.mark.parametrize("kind", ["dev_zero", "fifo", "directory", "dev_null"])
def test_a_path_that_is_not_a_regular_file_is_refused_before_reading(tmp_path, kind):
    """A link to /dev/zero would feed the reader without end, a FIFO would block open()
    forever; both, a directory and /dev/null are refused naming the path. The FIFO has no
    writer: the test would hang here without the check."""
    path = str(tmp_path / "model.npz")
    if kind == "dev_zero":
        os.symlink("/dev/zero", path)
    elif kind == "dev_null":
        os.symlink("/dev/null", path)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        os.mkdir(path)

    def hung(signum, frame):
        raise TimeoutError("load blocked on a path that is not a regular file")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(5)
    try:
        with pytest.raises(ValueError, match="model.npz: not a fastnn model file"):
            fnn.load(path)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_missing_file_is_still_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        fnn.load(str(tmp_path / "absent.npz"))


@pytest.mark.parametrize("descr", ["['<f4']", "{'a': 1}", "{'<f4'}"])
def test_an_array_header_whose_descr_is_not_a_string_is_a_value_error(tmp_path, descr):
    files = fuzz_load.members(valid(False))
    raw = files["param_0.npy"]
    end = raw.index(b"\n") + 1
    header = raw[:end].decode("latin1").replace("'<f4'", descr, 1)
    files["param_0.npy"] = header.encode("latin1") + raw[end:]
    with pytest.raises(ValueError, match="unexpected header"):
        fnn.load(_write(tmp_path, fuzz_load.archive(files)))


def test_a_step_count_the_engine_cannot_hold_is_refused_at_load(tmp_path):
    files = fuzz_load.members(valid(True))
    config = fuzz_load.config_of(files)
    config["optimizer"]["steps"] = 2**63
    with pytest.raises(ValueError, match="invalid model description: optimizer"):
        fnn.load(_write(tmp_path, fuzz_load.archive(fuzz_load.with_config(files, config))))
    config["optimizer"]["steps"] = 2**40  # far, but trainable
    model = fnn.load(_write(tmp_path, fuzz_load.archive(fuzz_load.with_config(files, config))))
    model.fit(np.zeros((5, 4)), np.zeros(5, dtype=int), batch_size=5)
    assert model.optimizer.steps == 2**40 + 1


def test_a_model_s_preprocessing_is_checked_when_read(tmp_path):
    """A file whose preprocessing fields are bad, or do not match its features and input
    width, is refused like a bad config; a good one loads with its preprocessing."""
    from fastnn.preprocessing import TablePreprocessor
    files = fuzz_load.members(valid(False))
    config = fuzz_load.config_of(files)  # Dense(4, 6) first: 4 inputs
    pre = TablePreprocessor().fit({"size": ["S", "M", "L"], "w": [1.0, None, 2.0]})
    assert pre.n_outputs == 5
    pre = TablePreprocessor().fit({"size": ["S", "M"], "w": [1.0, None]})
    good = dict(config, preprocessing=pre.to_config(), features=["size", "w"])
    model = fnn.load(_write(tmp_path, fuzz_load.archive(fuzz_load.with_config(files, good))))
    assert model.preprocessing.to_config() == pre.to_config()
    for bad in (dict(good, preprocessing=[{"name": "size", "kind": "categorical"}]),
                dict(good, preprocessing="x"),
                dict(good, features=["w", "size"]),
                dict(good, preprocessing=TablePreprocessor().fit({"a": [1.0]}).to_config(),
                     features=["a"]),
                # four inputs, but a coded column and no Embedding to read its codes
                dict(good, preprocessing=TablePreprocessor(max_one_hot=1).fit(
                    {"size": ["S", "M"], "w": [1.0, None], "v": [0.0, 1.0]}).to_config(),
                     features=["size", "w", "v"])):
        with pytest.raises(ValueError, match="invalid model description"):
            fnn.load(_write(tmp_path, fuzz_load.archive(fuzz_load.with_config(files, bad))))


def test_a_model_rebuilt_from_its_config_and_state_is_the_same_model(rng):
    """get_config is JSON-able; from_config allocates the model it describes without
    drawing an initialisation (Dense weights zero); state_dict's arrays are the live
    ones, so filling them makes the same model: the same predictions, names and
    generator (the next epoch's shuffle), the same config back."""
    X, y = rng.random((80, 6)), rng.integers(0, 3, 80)
    model = fnn.Sequential([fnn.Dense(6, 16), fnn.ReLU(), fnn.BatchNorm1d(16),
                            fnn.Dense(16, 3)], seed=4)
    model.fit(X, y, optimizer=fnn.optim.SGD(lr=0.1, momentum=0.9), epochs=2, batch_size=16)
    model.classes, model.feature_names = ["a", "b", "c"], [f"x{i}" for i in range(6)]
    config = json.loads(json.dumps(model.get_config(include_optimizer=False)))
    clone = fnn.Sequential.from_config(config)
    assert all(not layer.weight.any() for layer in clone.layers
               if isinstance(layer, fnn.Dense))
    for name, array in model.state_dict(include_optimizer=False).items():
        clone.state_dict(include_optimizer=False)[name][...] = array
    np.testing.assert_array_equal(clone.predict(X), model.predict(X))
    assert clone.get_config(include_optimizer=False) == config
    assert set(model.state_dict()) - set(clone.state_dict()) == {
        f"opt_{i}_0" for i in range(len(model.parameters()))}
    for m in (model, clone):
        m.fit(X, y, optimizer=fnn.optim.SGD(lr=0.1), epochs=1, batch_size=16)
    np.testing.assert_array_equal(clone.predict(X), model.predict(X))
