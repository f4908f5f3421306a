"""What fastnn writes never destroys what it reads, a special file, or half a file.

fastnn._files: outputs that are the command's own inputs are refused before any work;
links, devices and FIFOs are written through (never renamed over); temporary files go
away on failure and on SIGTERM; a full disk is one line and exit status 2."""
import os
import resource
import signal
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import fastnn as fnn
from fastnn import cli


def _trained(tmp_path):
    """A classifier saved by the CLI from a CSV: (data path, model path)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    data = tmp_path / "data.csv"
    with open(data, "w") as f:
        f.write("a,b,c,y\n")
        for row, label in zip(X, np.where(X[:, 0] > 0, "yes", "no")):
            f.write(",".join(repr(float(v)) for v in row) + f",{label}\n")
    model = tmp_path / "model.npz"
    assert cli.main(["train", str(data), "--epochs", "1", "--verbose", "0",
                     "--save", str(model)]) == 0
    return data, model


def _snapshot(*paths):
    return [(os.lstat(p).st_mode, open(p, "rb").read()) for p in paths]


@pytest.mark.parametrize("command", ["predict -o data", "predict -o model",
                                     "predict -o link", "train --save data",
                                     "export model"])
def test_an_output_that_is_an_input_is_refused_before_any_work(tmp_path, capsys, command):
    data, model = _trained(tmp_path)
    link = tmp_path / "link.csv"
    os.symlink(data, link)
    before = _snapshot(data, model)
    argv = {"predict -o data": ["predict", model, data, "-o", data],
            "predict -o model": ["predict", model, data, "-o", model],
            "predict -o link": ["predict", model, data, "-o", link],
            "train --save data": ["train", data, "--epochs", "1", "--save", data],
            "export model": ["export", model, model]}[command]
    capsys.readouterr()
    assert cli.main([str(a) for a in argv]) == 2
    out, err = capsys.readouterr()
    assert "is one of the command's inputs" in err and len(err.splitlines()) == 1
    assert out == ""  # refused before training printed anything
    assert _snapshot(data, model) == before
    assert sorted(os.listdir(tmp_path)) == ["data.csv", "link.csv", "model.npz"]


def test_save_to_a_missing_folder_is_refused_before_training(tmp_path, capsys):
    data, _ = _trained(tmp_path)
    capsys.readouterr()
    assert cli.main(["train", str(data), "--save", str(tmp_path / "no" / "m.npz")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and f"--save {tmp_path / 'no' / 'm.npz'}: no folder" in err


def test_a_link_is_followed_and_its_target_replaced(tmp_path, capsys):
    data, model = _trained(tmp_path)
    target = tmp_path / "real.csv"
    target.write_text("old\n")
    link = tmp_path / "out.csv"
    os.symlink(target, link)
    assert cli.main(["predict", str(model), str(data), "-o", str(link)]) == 0
    assert os.path.islink(link) and os.readlink(link) == str(target)
    assert target.read_text().startswith("y\n")
    saved_link = tmp_path / "saved.npz"
    os.symlink(tmp_path / "model-copy.npz", saved_link)
    fnn.load(model).save(saved_link)
    assert os.path.islink(saved_link) and fnn.load(tmp_path / "model-copy.npz") is not None


def test_a_device_behind_a_link_is_written_through_not_replaced(tmp_path, capsys):
    """`-o` or save onto a link to /dev/null: the link and the device stay as they are
    (renaming a temporary file over them made the link, or as root /dev/null itself, a
    regular file)."""
    data, model = _trained(tmp_path)
    link = tmp_path / "null"
    os.symlink("/dev/null", link)
    assert cli.main(["predict", str(model), str(data), "-o", str(link)]) == 0
    fnn.load(model).save(link)
    assert os.path.islink(link) and stat.S_ISCHR(os.stat(link).st_mode)
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".fastnn-")]


def test_a_fifo_is_written_through(tmp_path, capsys):
    data, model = _trained(tmp_path)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []

    def read():
        with open(fifo) as f:
            received.append(f.read())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert cli.main(["predict", str(model), str(data), "-o", str(fifo)]) == 0
    reader.join(10)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert received and received[0].startswith("y\n") and len(received[0].splitlines()) == 61


_SAVE_FOREVER = """
import sys, numpy as np, fastnn as fnn
model = fnn.Sequential([fnn.Dense(1000, 4000), fnn.Dense(4000, 1000)], seed=0)
print("ready", flush=True)
while True:
    model.save(sys.argv[1])
"""


def test_sigterm_during_save_leaves_no_temporary_file(tmp_path):
    """A process saving a 32 MB model in a loop is sent SIGTERM at different moments: it
    ends by the signal, and its folder holds the model file only (temporary files were
    left by 19 of 20 such kills before)."""
    for delay in (0.05, 0.13, 0.21, 0.37, 0.5):
        folder = tmp_path / f"run{delay}"
        folder.mkdir()
        child = subprocess.Popen([sys.executable, "-c", _SAVE_FOREVER, str(folder / "m.npz")],
                                 stdout=subprocess.PIPE, cwd=tmp_path)
        assert child.stdout.readline() == b"ready\n"
        time.sleep(delay)
        child.send_signal(signal.SIGTERM)
        assert child.wait(60) == -signal.SIGTERM
        assert [n for n in os.listdir(folder) if n != "m.npz"] == []


_SIGTERM_THEN_OTHER_ERROR = """
import os, signal, sys, time
from fastnn._files import write_file

def write(f):
    f.write(b"half")
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    finally:
        raise ValueError("the writer's own cleanup failed")

write_file(sys.argv[1], write)
"""


def test_sigterm_ends_the_process_when_the_writer_replaces_its_exception(tmp_path):
    """numpy's savez, stopped by SIGTERM inside a member, raises ValueError from its own
    cleanup in place of the signal's exception: the process still ends by SIGTERM, and
    leaves no temporary file."""
    folder = tmp_path / "out"
    folder.mkdir()
    child = subprocess.run([sys.executable, "-c", _SIGTERM_THEN_OTHER_ERROR,
                            str(folder / "m.npz")], capture_output=True, timeout=60,
                           cwd=tmp_path)  # (the installed fastnn, not the checkout's)
    assert child.returncode == -signal.SIGTERM, child.stderr.decode()
    assert os.listdir(folder) == []


def test_a_later_write_removes_the_temporary_files_of_dead_processes(tmp_path):
    """SIGKILL cannot be caught: its temporary file is removed by the next write into the
    folder, while a living process's is left alone."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    orphan = tmp_path / f".fastnn-{dead}-abc.tmp"
    living = tmp_path / f".fastnn-{os.getppid()}-abc.tmp"
    orphan.write_bytes(b"x" * 100)
    living.write_bytes(b"x")
    fnn.Sequential([fnn.Dense(2, 2)]).save(tmp_path / "m.npz")
    assert sorted(os.listdir(tmp_path)) == sorted(["m.npz", living.name])


def _limit_file_size():
    """In the child: files may not grow past 1 KB (EFBIG, as a full disk's ENOSPC)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))


@pytest.mark.parametrize("command", ["predict", "save"])
def test_a_full_disk_is_one_line_and_exit_status_2_with_nothing_left(tmp_path, command):
    data, model = _trained(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    argv = (["predict", str(model), str(data), "--proba", "-o", str(out / "p.csv")]
            if command == "predict" else
            ["train", str(data), "--epochs", "1", "--verbose", "0", "--save",
             str(out / "m.npz")])
    child = subprocess.run([sys.executable, "-m", "fastnn"] + argv, capture_output=True,
                           text=True, preexec_fn=_limit_file_size, cwd=tmp_path)
    assert child.returncode == 2, child.stderr
    assert len(child.stderr.strip().splitlines()) == 1
    assert f"cannot write {out}" in child.stderr and "File too large" in child.stderr
    assert os.listdir(out) == []
