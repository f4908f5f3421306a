"""The MNIST downloader, against a local HTTP server on 127.0.0.1 that serves the real
files and a corrupted copy (no traffic leaves the machine)."""
import functools
import http.server
import os
import shutil
import threading

import numpy as np
import pytest
from conftest import MNIST_DIR

from fastnn.datasets import load_mnist

FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte"]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, mnist):
    """Base URLs (good, corrupted) served from 127.0.0.1 on a free port."""
    root = tmp_path / "www"
    (root / "good").mkdir(parents=True)
    (root / "bad").mkdir()
    for name in FILES:
        shutil.copy(os.path.join(MNIST_DIR, name + ".gz"), root / "good" / (name + ".gz"))
        data = bytearray((root / "good" / (name + ".gz")).read_bytes())
        data[len(data) // 2] ^= 0xFF  # one flipped byte: gzip's CRC or our SHA-256 catches it
        (root / "bad" / (name + ".gz")).write_bytes(bytes(data))
    handler = functools.partial(QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}/"
    try:
        yield base + "good/", base + "bad/"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_download_verifies_and_falls_back_to_the_next_mirror(server, tmp_path, mnist):
    good, bad = server
    folder = tmp_path / "cache"
    X, y = load_mnist(folder, split="test", mirrors=[bad, good], progress=False)
    (X_ref, y_ref) = mnist[1]
    np.testing.assert_array_equal(X, X_ref)
    np.testing.assert_array_equal(y, y_ref)
    assert sorted(os.listdir(folder)) == ["t10k-images-idx3-ubyte.gz",
                                          "t10k-labels-idx1-ubyte.gz"]  # no temp files


def test_corrupted_download_is_rejected_and_not_cached(server, tmp_path):
    _, bad = server
    folder = tmp_path / "cache"
    with pytest.raises(FileNotFoundError, match="could not download .*Put the four IDX"):
        load_mnist(folder, split="test", mirrors=[bad], progress=False)
    assert not folder.exists() or os.listdir(folder) == []


def test_offline_says_where_to_put_the_files(tmp_path):
    folder = tmp_path / "cache"
    # a port nothing listens on: the connection is refused at once
    with pytest.raises(FileNotFoundError, match=str(folder)):
        load_mnist(folder, mirrors=["http://127.0.0.1:9/"], progress=False)
    with pytest.raises(FileNotFoundError, match=f"could not download.*{folder}"):
        load_mnist(folder, kind="fashion_mnist", mirrors=["http://127.0.0.1:9/"],
                   progress=False)


def test_fashion_mnist_archives_are_verified(server, tmp_path, monkeypatch):
    """Fashion-MNIST pins its archives (SHA-256 and MD5). The served files stand in for
    them here (same format; their pins computed below); the real pins are the published
    ones in fastnn/datasets.py."""
    import hashlib

    from fastnn import datasets
    good, bad = server
    pins = {}
    for name in FILES:
        data = (tmp_path / "www" / "good" / (name + ".gz")).read_bytes()
        pins[name] = (hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest())
    monkeypatch.setitem(datasets.ARCHIVE_SHA256_MD5, "fashion_mnist", pins)
    folder = tmp_path / "fashion"
    with pytest.raises(FileNotFoundError, match="SHA-256 of the archive"):
        load_mnist(folder, kind="fashion_mnist", split="test", mirrors=[bad], progress=False)
    assert not folder.exists() or os.listdir(folder) == []
    X, y = load_mnist(folder, kind="fashion_mnist", split="test", mirrors=[bad, good],
                      progress=False)
    assert X.shape == (10000, 784) and y.shape == (10000,)
    wrong_md5 = {k: (sha, "0" * 32) for k, (sha, _) in pins.items()}
    monkeypatch.setitem(datasets.ARCHIVE_SHA256_MD5, "fashion_mnist", wrong_md5)
    with pytest.raises(FileNotFoundError, match="MD5 of the archive"):
        load_mnist(tmp_path / "other", kind="fashion_mnist", mirrors=[good], progress=False)
