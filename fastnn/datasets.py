"""Datasets in the IDX format of MNIST and Fashion-MNIST, read from local files.

fastnn needs no dataset to work; these readers serve examples, tests and benchmarks.
"""
import gzip
import hashlib
import os
import struct
import sys
import tempfile
import urllib.error
import urllib.request

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


def _existing(folder, stem):
    for name in (stem + ".gz", stem):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return path
    return None


def _find(folder, stem):
    path = _existing(folder, stem)
    if path is not None:
        return path
    raise FileNotFoundError(
        f"{stem}[.gz] not found in {folder}: put the four IDX files of the dataset there "
        f"(or pass path=..., or set FASTNN_DATA to their folder)")


KINDS = ("mnist", "fashion_mnist")

# SHA-256 of each file's decompressed payload: mirrors wrap the same bytes in different
# gzip files, so the payload is what can be pinned. (Their MD5s equal the official ones.)
PAYLOAD_SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte":
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte":
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte":
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte":
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
}
MIRRORS = {
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/",
              "https://storage.googleapis.com/cvdf-datasets/mnist/"],
}


def data_folder(path=None, kind="mnist"):
    """Where load_mnist looks: `path`, else $FASTNN_DATA, else ~/.cache/fastnn/<kind>."""
    if path is not None:
        return os.fspath(path)
    root = os.environ.get("FASTNN_DATA")
    if root:
        return root
    return os.path.join(os.path.expanduser("~"), ".cache", "fastnn", kind)


def load_mnist(path=None, kind="mnist", split="train", download=True, mirrors=None,
               progress=True):
    """(X, y) from the four standard IDX files of MNIST or Fashion-MNIST (gzip or not).

    Args:
        path: the folder holding the files; None looks in $FASTNN_DATA, then in
            ~/.cache/fastnn/<kind>.
        kind: "mnist" or "fashion_mnist" (same file names and format).
        split: "train" (60,000 rows) or "test" (10,000).
        download: fetch missing MNIST files into that folder (see `fetch`).
        mirrors: base URLs to try instead of MIRRORS[kind]. progress: show progress.

    Returns X float32 (n, 784) scaled to [0, 1] and y int64 (n,). Raises
    FileNotFoundError saying where to put the files, ValueError for malformed files.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = data_folder(path, kind)
    images_stem, labels_stem = _FILES[split]
    if download:
        for stem in (images_stem, labels_stem):
            if _existing(folder, stem) is None:
                fetch(kind, stem, folder, mirrors, progress)
    images = read_idx(_find(folder, images_stem))
    labels = read_idx(_find(folder, labels_stem))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"images {images.shape} and labels {labels.shape} do not match")
    X = images.reshape(images.shape[0], -1).astype(np.float32) / np.float32(255)
    return X, labels.astype(np.int64)


def fetch(kind, stem, folder, mirrors=None, progress=True):
    """Download `stem`.gz of dataset `kind` into `folder`, trying each mirror in turn.

    The decompressed payload must match PAYLOAD_SHA256; a corrupted or truncated download
    is rejected and nothing is written. The file appears atomically (temporary file in
    the same folder, then rename). Raises FileNotFoundError, saying where to put the
    files, when no mirror delivers a verified copy (offline, say).
    """
    expected = PAYLOAD_SHA256.get(kind, {}).get(stem)
    target = os.path.join(folder, stem + ".gz")
    if expected is None:
        raise FileNotFoundError(f"{stem}.gz is missing from {folder} and fastnn has no "
                                f"verified checksum to download {kind} with: put the four IDX "
                                f"files there (or pass path=..., or set FASTNN_DATA)")
    failures = []
    for base in mirrors if mirrors is not None else MIRRORS[kind]:
        url = base + stem + ".gz"
        try:
            data = _download(url, progress)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            failures.append(f"{url}: {exc}")
            continue
        try:
            payload = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            failures.append(f"{url}: not a gzip file ({exc})")
            continue
        digest = hashlib.sha256(payload).hexdigest()
        if digest != expected:
            failures.append(f"{url}: SHA-256 of the content is {digest}, expected {expected}")
            continue
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".fastnn-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except BaseException:
            os.unlink(tmp)
            raise
        return target
    raise FileNotFoundError(
        f"could not download {stem}.gz ({'; '.join(failures)}). Put the four IDX files of "
        f"{kind} in {folder} (or pass path=..., or set FASTNN_DATA to their folder)")


def _download(url, progress, timeout=30):
    """The bytes at `url`, with a progress line on stderr."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0)
        chunks, done = [], 0
        while True:
            chunk = response.read(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            done += len(chunk)
            if progress:
                share = f" {100 * done // total:3d}%" if total else ""
                print(f"\rdownloading {url}{share} {done / 2**20:.1f} MiB", end="",
                      file=sys.stderr, flush=True)
        if progress:
            print(file=sys.stderr)
    if total and done != total:
        raise ValueError(f"truncated: {done} of {total} bytes")
    return b"".join(chunks)
