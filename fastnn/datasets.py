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
# Fashion-MNIST's mirrors (its S3 archive and its GitHub repository) serve the same gzip
# files, so the archives are pinned: (SHA-256, MD5). The MD5s are the ones Zalando
# Research publishes in the dataset's README; the SHA-256s are those many independent
# projects pin for the same archives, listed next to those MD5s.
ARCHIVE_SHA256_MD5 = {
    "fashion_mnist": {
        "train-images-idx3-ubyte": (
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        "train-labels-idx1-ubyte": (
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "25c81989df183df01b3e8a0aad5dffbe"),
        "t10k-images-idx3-ubyte": (
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "bef4ecab320f06d8554ea6380940ec79"),
        "t10k-labels-idx1-ubyte": (
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            "bb300cfdad3c16e7a12a480ee83cd310"),
    },
}
MIRRORS = {
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/",
              "https://storage.googleapis.com/cvdf-datasets/mnist/"],
    "fashion_mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                      "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/"
                      "master/data/fashion/"],
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
        download: fetch missing files into that folder (see `fetch`).
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

    The download must match its pinned checksum (PAYLOAD_SHA256 of the decompressed
    content for MNIST, ARCHIVE_SHA256_MD5 of the archive for Fashion-MNIST); a corrupted
    or truncated download is rejected and nothing is written. The file appears
    atomically (temporary file in the same folder, then rename). Raises
    FileNotFoundError, saying where to put the files, when no mirror delivers a verified
    copy (offline, say).
    """
    expected = PAYLOAD_SHA256.get(kind, {}).get(stem)
    archive = ARCHIVE_SHA256_MD5.get(kind, {}).get(stem)
    target = os.path.join(folder, stem + ".gz")
    if expected is None and archive is None:
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
        problem = _verify(data, expected, archive)
        if problem:
            failures.append(f"{url}: {problem}")
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


def _verify(data, payload_sha256, archive_sha256_md5):
    """None if the downloaded archive matches its pins, else what is wrong."""
    if archive_sha256_md5 is not None:
        for algorithm, want in zip(("sha256", "md5"), archive_sha256_md5):
            digest = hashlib.new(algorithm, data).hexdigest()
            if digest != want:
                name = {"sha256": "SHA-256", "md5": "MD5"}[algorithm]
                return f"{name} of the archive is {digest}, expected {want}"
    try:
        payload = gzip.decompress(data)
    except (OSError, EOFError) as exc:
        return f"not a gzip file ({exc})"
    if payload_sha256 is not None:
        digest = hashlib.sha256(payload).hexdigest()
        if digest != payload_sha256:
            return f"SHA-256 of the content is {digest}, expected {payload_sha256}"
    return None


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
