"""Datasets in the IDX format of MNIST and Fashion-MNIST, read from local files.

fastnn needs no dataset to work; these readers serve examples, tests and benchmarks.
"""
import gzip
import os
import struct

import numpy as np

__all__ = ["load_mnist", "read_idx", "data_folder"]

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_MAGIC = {2051: 3, 2049: 1}  # uint8 images (3 dims), uint8 labels (1 dim)


def read_idx(path):
    """Read an IDX file of unsigned bytes (gzip-compressed or not) into a uint8 array.

    Raises ValueError for a wrong magic number, a truncated file or counts that do not
    match the data.
    """
    with open(path, "rb") as f:
        head = f.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: cannot decompress ({exc})") from None
    if len(data) < 4:
        raise ValueError(f"{path}: too short for an IDX file")
    magic = struct.unpack(">i", data[:4])[0]
    if magic not in _MAGIC:
        raise ValueError(f"{path}: bad magic number {magic} (expected 2049 or 2051)")
    ndim = _MAGIC[magic]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated header")
    shape = struct.unpack(f">{ndim}i", data[4:header])
    expected = int(np.prod(shape))
    if any(d < 0 for d in shape) or len(data) - header != expected:
        raise ValueError(f"{path}: header says {shape} ({expected} bytes of data) but the "
                         f"file holds {len(data) - header}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _find(folder, stem):
    for name in (stem + ".gz", stem):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(
        f"{stem}[.gz] not found in {folder}: put the four IDX files of the dataset there "
        f"(or pass path=..., or set FASTNN_DATA to their folder)")


KINDS = ("mnist", "fashion_mnist")


def data_folder(path=None, kind="mnist"):
    """Where load_mnist looks: `path`, else $FASTNN_DATA, else ~/.cache/fastnn/<kind>."""
    if path is not None:
        return os.fspath(path)
    root = os.environ.get("FASTNN_DATA")
    if root:
        return root
    return os.path.join(os.path.expanduser("~"), ".cache", "fastnn", kind)


def load_mnist(path=None, kind="mnist", split="train"):
    """(X, y) from the four standard IDX files of MNIST or Fashion-MNIST (gzip or not).

    Args:
        path: the folder holding the files; None looks in $FASTNN_DATA, then in
            ~/.cache/fastnn/<kind>.
        kind: "mnist" or "fashion_mnist" (same file names and format).
        split: "train" (60,000 rows) or "test" (10,000).

    Returns X float32 (n, 784) scaled to [0, 1] and y int64 (n,). Raises
    FileNotFoundError saying where to put the files, ValueError for malformed files.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = data_folder(path, kind)
    images_stem, labels_stem = _FILES[split]
    images = read_idx(_find(folder, images_stem))
    labels = read_idx(_find(folder, labels_stem))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"images {images.shape} and labels {labels.shape} do not match")
    X = images.reshape(images.shape[0], -1).astype(np.float32) / np.float32(255)
    return X, labels.astype(np.int64)
