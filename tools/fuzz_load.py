"""Fuzz fastnn.load with damaged and hostile model files.

Every mutation of a valid save() must either load (and then predict) or be refused with
ValueError, within 1 s and 100 MB of newly allocated memory. tests/test_serialization.py
runs these mutations under hypothesis; this script runs many more at random:

    python tools/fuzz_load.py --iterations 20000 [--seed 0]

Exit status 1 (and the failing case's seed) on any other outcome.
"""
import argparse
import io
import json
import struct
import sys
import tempfile
import time
import tracemalloc
import zipfile
import zlib

import numpy as np

import fastnn as fnn

TIME_LIMIT_S = 1.0
MEMORY_LIMIT_B = 100 * 2**20


def valid_file(with_optimizer=True):
    """A small saved model (every layer kind with arrays, an optimizer) as bytes."""
    model = fnn.Sequential([fnn.Dense(4, 6), fnn.ReLU(), fnn.BatchNorm1d(6), fnn.Dropout(0.1),
                            fnn.Dense(6, 3)], seed=0)
    X = np.random.default_rng(0).random((20, 4))
    model.fit(X, np.arange(20) % 3, optimizer=fnn.optim.Adam(), batch_size=5)
    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/m.npz"
        model.save(path, include_optimizer=with_optimizer)
        with open(path, "rb") as f:
            return f.read()


def members(data):
    """{name: bytes} of an archive."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def archive(files, compress=None):
    """An archive of {name: bytes}; `compress` names members to deflate."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, content in files.items():
            method = zipfile.ZIP_DEFLATED if name in (compress or ()) else zipfile.ZIP_STORED
            z.writestr(name, content, compress_type=method)
    return out.getvalue()


def npy(array):
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def config_of(files):
    return json.loads(np.load(io.BytesIO(files["config.npy"])).tobytes())


def with_config(files, config):
    files = dict(files)
    files["config.npy"] = npy(np.frombuffer(json.dumps(config).encode(), np.uint8))
    return files


# -- mutations: each takes (valid bytes, a numpy Generator) and returns bytes -----------

def truncate(data, rng):
    return data[:int(rng.integers(0, len(data)))]


def flip_bits(data, rng):
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        i = int(rng.integers(0, len(out)))
        out[i] ^= 1 << int(rng.integers(0, 8))
    return bytes(out)


def _edit_value(value, rng):
    choices = [0, -1, 1, 3, 20000, 2**31, 2**62, -2**40, 1.5, float("nan"), None, True, "x",
               [], {}, [1, 2], "relu", "dense", 1e308]
    return choices[int(rng.integers(0, len(choices)))]


def edit_json(data, rng):
    """Change one value of the config anywhere in its tree (or a key, or drop one)."""
    files = members(data)
    config = config_of(files)
    nodes = [config]
    parents = []
    while nodes:
        node = nodes.pop()
        keys = list(node) if isinstance(node, dict) else range(len(node)) \
            if isinstance(node, list) else []
        for k in keys:
            parents.append((node, k))
            nodes.append(node[k])
    node, key = parents[int(rng.integers(0, len(parents)))]
    action = int(rng.integers(0, 3))
    if action == 0:
        node[key] = _edit_value(node[key], rng)
    elif action == 1 and isinstance(node, dict):
        del node[key]
    elif isinstance(node, dict):
        node["extra"] = _edit_value(None, rng)
    else:
        node.append(_edit_value(None, rng))
    return archive(with_config(files, config))


def declare_huge_layer(data, rng):
    """The issue's case: the config declares Dense(20000, 20000) (optionally the array
    headers agree, without the data)."""
    files = members(data)
    config = config_of(files)
    config["layers"][0]["in_features"] = config["layers"][0]["out_features"] = 20000
    config["layers"][2]["num_features"] = 20000  # the widths still chain
    config["layers"][4]["in_features"] = 20000
    files = with_config(files, config)
    if rng.integers(0, 2):
        head = npy(np.zeros((0, 0), np.float32))
        files["param_0.npy"] = head.replace(b"(0, 0)", b"(20000, 20000)")
    return archive(files)


def edit_header(data, rng):
    """Change an array's header: shape, dtype, order, or the header length."""
    files = members(data)
    name = sorted(n for n in files if n != "config.npy")[int(rng.integers(0, len(files) - 1))]
    raw = bytearray(files[name])
    header_end = raw.index(b"\n") + 1
    header = raw[:header_end].decode("latin1")
    edits = [("'<f4'", "'<f8'"), ("'<f4'", "'|O'"), ("False", "True"), ("(", "(7, "),
             ("(", "(99999999999, "), ("'shape'", "'shapes'"), ("}", ", 'x': [[[[[[1]]]]]]}")]
    old, new = edits[int(rng.integers(0, len(edits)))]
    header = header.replace(old, new, 1)
    if rng.integers(0, 4) == 0:  # also lie about the header's length
        raw[8:10] = int(rng.integers(0, 65536)).to_bytes(2, "little")
    files[name] = header.encode("latin1") + bytes(raw[header_end:])
    return archive(files)


def extra_member(data, rng):
    """An unexpected member: plain, or a zip bomb (deflated zeros)."""
    files = members(data)
    if rng.integers(0, 2):
        files["evil.npy"] = b"\0" * (200 * 2**20)
        return archive(files, compress={"evil.npy"})
    files[f"param_{len(files) + 5}.npy"] = npy(np.zeros(3, np.float32))
    return archive(files)


def missing_member(data, rng):
    files = members(data)
    del files[sorted(files)[int(rng.integers(0, len(files)))]]
    return archive(files)


def compressed(data, rng):
    """The same members, one deflated."""
    files = members(data)
    return archive(files, compress={sorted(files)[int(rng.integers(0, len(files)))]})


def quoted_overlap(n_layers, width):
    """A "quoted overlap" zip bomb in fastnn's format: a config of n_layers
    Dense(width, width, bias=False) and one stored member per weight, each with a valid
    .npy header of its shape and a correct CRC, but each member's data starts with its
    header and runs on through the next members' local headers and data. The file is
    about one weight long; the arrays it describes are n_layers times that."""
    config = {"format": "fastnn-model", "version": 1, "fastnn_version": fnn.__version__,
              "dtype": "float32", "seed": 0,
              "layers": [{"kind": "dense", "in_features": width, "out_features": width,
                          "bias": False, "init": "he", "l2": 0.0}] * n_layers,
              "rng": np.random.default_rng(0).bit_generator.state}
    head = archive({"config.npy": npy(np.frombuffer(json.dumps(config).encode(),
                                                    np.uint8))})
    head = head[:head.index(b"PK\x01\x02")]  # the config member's local part only
    header = npy(np.zeros((width, width), np.float32))[:-width * width * 4]
    names = [f"param_{i}.npy".encode() for i in range(n_layers)]
    starts, offset = [], len(head)          # each local header's offset
    for name in names:
        starts.append(offset)
        offset += 30 + len(name) + len(header)   # the next one is quoted after the header
    size = width * width * 4 + len(header)  # each member's data
    blob = bytearray(starts[-1] + 30 + len(names[-1]) + size)
    blob[:len(head)] = head
    crcs = [0] * n_layers
    for i in range(n_layers - 1, -1, -1):  # a member's data holds only later members
        data_at = starts[i] + 30 + len(names[i])
        blob[data_at:data_at + len(header)] = header
        crcs[i] = zlib.crc32(bytes(blob[data_at:data_at + size]))
        blob[starts[i]:data_at] = struct.pack(
            "<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0, crcs[i], size, size,
            len(names[i]), 0) + names[i]
    config_crc, config_size = struct.unpack("<II", head[14:22])
    directory = bytearray(_central(b"config.npy", config_crc, config_size, 0))
    for i, name in enumerate(names):
        directory += _central(name, crcs[i], size, starts[i])
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n_layers + 1, n_layers + 1,
                      len(directory), len(blob), 0)
    return bytes(blob) + bytes(directory) + end


def _central(name, crc, size, offset):
    return struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0, crc, size,
                       size, len(name), 0, 0, 0, 0, 0, offset) + name


def overlapping_members(data, rng):
    """A small quoted-overlap file (see quoted_overlap); `data` is not used."""
    return quoted_overlap(int(rng.integers(2, 40)), 16 * int(rng.integers(1, 5)))


MUTATIONS = [truncate, flip_bits, edit_json, declare_huge_layer, edit_header, extra_member,
             missing_member, compressed, overlapping_members]


def check(data, folder):
    """Load `data`: returns "loaded" or "refused"; raises AssertionError if the load took
    more than TIME_LIMIT_S or MEMORY_LIMIT_B, and lets any error but ValueError through."""
    path = f"{folder}/fuzz.npz"
    with open(path, "wb") as f:
        f.write(data)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        model = fnn.load(path)
        outcome = "loaded"
    except ValueError:
        outcome, model = "refused", None
    finally:
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert seconds < TIME_LIMIT_S, f"load took {seconds:.2f} s"
    assert peak < MEMORY_LIMIT_B, f"load allocated {peak / 2**20:.0f} MB"
    if model is not None:
        model.predict(np.zeros((2, model.n_features)))
    return outcome


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    valid = [valid_file(True), valid_file(False)]
    counts = {}
    with tempfile.TemporaryDirectory() as folder:
        assert check(valid[0], folder) == "loaded"
        for i in range(args.iterations):
            seed = args.seed * 10**9 + i
            rng = np.random.default_rng(seed)
            mutation = MUTATIONS[int(rng.integers(0, len(MUTATIONS)))]
            try:
                outcome = check(mutation(valid[int(rng.integers(0, 2))], rng), folder)
            except Exception as exc:
                print(f"FAILED: {mutation.__name__}, seed {seed}: {type(exc).__name__}: "
                      f"{exc}")
                return 1
            key = (mutation.__name__, outcome)
            counts[key] = counts.get(key, 0) + 1
    for (name, outcome), n in sorted(counts.items()):
        print(f"{name:<20} {outcome:<8} {n}")
    print(f"{args.iterations} mutated files: each loaded or refused with ValueError within "
          f"{TIME_LIMIT_S} s and {MEMORY_LIMIT_B // 2**20} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
