"""Loading models from the one .npz file Sequential.save writes (fastnn._model_file): no
pickle, and nothing in a file trusted before it is checked.

The file holds a JSON document (Sequential.get_config: architecture, dtype, seed, the
shuffling generator's state, the optimizer's class, settings and step count, the
model's loss, class, feature and target names and preprocessing when it has them)
stored as bytes under "config", and the arrays of Sequential.state_dict: parameters
"param_<i>", buffers (batch norm's running statistics) "buffer_<i>" and optimizer state
"opt_<i>_<j>". Loading uses allow_pickle=False, so a file can never execute code; the
model is rebuilt by Sequential.from_config and its arrays read into state_dict's.
"""
import ast
import errno
import json
import os
import re
import stat
import struct
import zipfile

import numpy as np

from . import layers as layers_module
from . import losses, optim
from ._model_file import FORMAT, VERSION
from .model import Sequential

_OPTIMIZERS = {cls.__name__: cls for cls in (optim.SGD, optim.Adam, optim.AdamW,
                                             optim.RMSprop, optim.Adagrad, optim.Adadelta,
                                             optim.NAdam)}


def save(model, path, include_optimizer=True):
    """Write `model` (and its optimizer's state) to `path` atomically: model.save."""
    model.save(path, include_optimizer)


# Limits of what load() reads before trusting a file.
MAX_CONFIG_BYTES = 1 << 20     # the JSON document
MAX_NPY_HEADER = 4096          # an array's header (save() writes about 128 bytes)
MAX_LAYERS = 100_000
MAX_NESTING = 32               # residual blocks within residual blocks
MAX_DIMENSION = 2**31 - 1      # BLAS counts in 32-bit ints
MAX_STEPS = 2**62              # the engine counts steps in int64: room to train on
_MEMBER = re.compile(r"(config|param_\d+|buffer_\d+|opt_\d+_\d+)\.npy")
_TOP_KEYS = {"format", "version", "fastnn_version", "dtype", "seed", "layers", "rng",
             "optimizer", "loss", "classes", "features", "target", "preprocessing"}
_OPTIONAL_KEYS = {"optimizer", "loss", "classes", "features", "target", "preprocessing"}
MAX_CLASSES = 100_000        # class names saved with a model, each at most 1000 characters
_LAYER_KEYS = {"dense": {"in_features", "out_features", "bias", "init", "l2", "trainable"},
               "dropout": {"p"},
               "batchnorm": {"num_features", "eps", "momentum", "affine", "trainable"},
               "leaky_relu": {"negative_slope"}, "gelu": {"approximate"}, "elu": {"alpha"},
               "softplus": {"beta", "threshold"},
               "layernorm": {"num_features", "eps", "elementwise_affine", "bias", "trainable"},
               "residual": {"layers"},
               "embedding": {"in_features", "columns", "cardinalities", "embedding_dim",
                             "trainable"}}
_NPY_DTYPES = {"<f4": np.float32, "<f8": np.float64, "|u1": np.uint8}


def load(path):
    """Rebuild a Sequential model (and its optimizer, if saved) from a file of save().

    Safe with files from elsewhere: nothing in the file is executed (no pickle), and its
    sizes are checked before they are trusted. The JSON config is read (at most 1 MB)
    and validated first; every member must be one save() writes, stored uncompressed,
    with its bytes inside the file; each array's header must match the shape and dtype
    the config implies. Only then is the model allocated (without drawing a random
    initialisation) and the arrays read into it.

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: the file is not a fastnn model, or is damaged, naming what is wrong.
    """
    path = os.fspath(path)
    with _open_regular(path) as f:
        try:
            with zipfile.ZipFile(f) as archive:
                return _load(archive, f, path)
        except (ValueError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError,
                NotImplementedError, RecursionError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not a usable fastnn model file: {exc}") from None


def _open_regular(path):
    """`path` opened for reading, refused unless it is a regular file (links followed).

    The descriptor is opened without blocking and checked with fstat before a byte is
    read, so a FIFO cannot hang the call, and /dev/zero or a directory cannot feed it."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "no fastnn model file", path) from None
    except IsADirectoryError:
        raise ValueError(f"{path}: not a fastnn model file (a directory)") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        what = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise ValueError(f"{path}: not a fastnn model file ({what})")
    if hasattr(os, "O_NONBLOCK"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _load(archive, f, path):
    members = _check_members(archive, f, path)
    if "config.npy" not in members:
        raise ValueError("not a fastnn model file (no config member)")
    config = _read_config(archive, members["config.npy"], path)
    expected, optimizer = _plan(config, path)
    names = set(members) - {"config.npy"}
    if names != set(expected):
        missing, extra = sorted(set(expected) - names), sorted(names - set(expected))
        raise ValueError(f"the arrays do not match the model described in the file "
                         f"(missing {missing}, unexpected {extra})")
    offsets = {}
    for name, (shape, dtype) in expected.items():
        offsets[name] = _check_array(archive, members[name], shape, dtype, path)
    # every array is in the file with the size the config implies: allocate, no draws
    model = Sequential.from_config(config, optimizer)
    targets = {f"{name}.npy": array for name, array in model.state_dict().items()}
    for name, target in targets.items():
        with archive.open(members[name]) as member:
            member.read(offsets[name])
            view = memoryview(target.reshape(-1)).cast("B")
            if member.readinto(view) != view.nbytes or member.read(1):
                raise ValueError(f"member {name} has the wrong length")
    return model


def _check_members(archive, f, path):
    """{name: ZipInfo}, each a member save() writes, stored, inside the file, and apart
    from every other: no two members' bytes (local header and data) overlap, and none
    reaches into the central directory. Overlapping members let a small file stand for
    many large arrays (a "quoted overlap" zip bomb); CPython's zipfile refuses them only
    from 3.11.8 and 3.12.2. Only the 30-byte local headers are read here."""
    file_size = os.fstat(f.fileno()).st_size
    members, spans = {}, []
    for info in archive.infolist():
        name = info.filename
        if not _MEMBER.fullmatch(name) or name in members:
            raise ValueError(f"unexpected member {name!r} (not written by fastnn)")
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            raise ValueError(f"member {name} is compressed or encrypted (fastnn "
                             f"stores arrays uncompressed)")
        if info.file_size != info.compress_size or info.header_offset < 0 or \
                info.header_offset + info.compress_size > file_size:
            raise ValueError(f"member {name} declares {info.file_size} bytes that "
                             f"the file does not hold")
        f.seek(info.header_offset)
        local = f.read(30)
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            raise ValueError(f"member {name} has no local header where the directory "
                             f"says")
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        end = info.header_offset + 30 + name_length + extra_length + info.compress_size
        spans.append((info.header_offset, end, name))
        members[name] = info
    spans.sort()
    directory = getattr(archive, "start_dir", file_size)
    for (_, end, name), (start, _, after) in zip(spans, spans[1:] + [(directory, 0, None)]):
        if end > start:
            where = f"member {after}" if after is not None else "the central directory"
            raise ValueError(f"member {name} overlaps {where} (members must be apart)")
    return members


def _read_header(member, name, path):
    """(shape, dtype, header length) of a .npy member, reading at most MAX_NPY_HEADER."""
    start = member.read(10)
    if len(start) < 10 or start[:6] != b"\x93NUMPY" or start[6] not in (1, 2, 3):
        raise ValueError(f"member {name} is not a .npy array")
    if start[6] == 1:
        size, used = int.from_bytes(start[8:10], "little"), 10
    else:
        more = member.read(2)
        size, used = int.from_bytes(start[8:10] + more, "little"), 12
    if size > MAX_NPY_HEADER:
        raise ValueError(f"member {name} has a {size}-byte header")
    text = member.read(size)
    try:
        header = ast.literal_eval(text.decode("latin1"))
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError) as exc:
        raise ValueError(f"member {name} has an unreadable header ({exc})") from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"} \
            or not isinstance(header["descr"], str) or header["descr"] not in _NPY_DTYPES \
            or header["fortran_order"] is not False \
            or not isinstance(header["shape"], tuple) or not all(
                type(d) is int and 0 <= d <= MAX_DIMENSION for d in header["shape"]):
        raise ValueError(f"member {name} has an unexpected header {text[:200]!r}")
    return header["shape"], np.dtype(_NPY_DTYPES[header["descr"]]), used + size


def _check_array(archive, info, shape, dtype, path):
    """Check a member's header and length against (shape, dtype); returns where its data
    starts."""
    with archive.open(info) as member:
        found_shape, found_dtype, offset = _read_header(member, info.filename, path)
    if found_shape != shape or found_dtype != dtype:
        raise ValueError(f"array {info.filename[:-4]} has shape {found_shape} and "
                         f"dtype {found_dtype}, expected {shape} {np.dtype(dtype)}")
    if info.file_size != offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
        raise ValueError(f"array {info.filename[:-4]} has {info.file_size - offset} "
                         f"data bytes for shape {shape}")
    return offset


def _read_config(archive, info, path):
    """The JSON document: a 1-D uint8 array of at most MAX_CONFIG_BYTES."""
    with archive.open(info) as member:
        shape, dtype, offset = _read_header(member, "config.npy", path)
        if dtype != np.uint8 or len(shape) != 1 or shape[0] > MAX_CONFIG_BYTES \
                or info.file_size != offset + shape[0]:
            raise ValueError(f"not a fastnn model file (config of shape {shape}, "
                             f"{dtype})")
        text = member.read(shape[0])
    try:
        config = json.loads(text.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not a fastnn model file (config: {exc})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError("not a fastnn model file")
    if config.get("version") != VERSION:
        raise ValueError(f"unsupported fastnn file version {config.get('version')!r}")
    return config


def _plan(config, path):
    """Validate the config as data, before anything is allocated: {member: (shape,
    dtype)} of the arrays the file must hold, and the optimizer (unbound) or None."""
    def bad(what):
        return ValueError(f"invalid model description: {what}")

    unknown = set(config) - _TOP_KEYS
    if unknown or not _TOP_KEYS - _OPTIONAL_KEYS <= set(config):
        raise bad(f"keys {sorted(config)}")
    if config["dtype"] not in ("float32", "float64"):
        raise bad(f"dtype {config['dtype']!r}")
    if config["seed"] is not None and type(config["seed"]) is not int:
        raise bad(f"seed {config['seed']!r}")
    if "loss" in config:
        try:
            losses.loss_from_config(config["loss"])
        except ValueError as exc:
            raise bad(str(exc)) from None
    classes = config.get("classes", [])
    if not isinstance(classes, list) or len(classes) > MAX_CLASSES or not all(
            isinstance(c, (str, int, float)) and not isinstance(c, bool)
            and len(str(c)) <= 1000 for c in classes):
        raise bad("classes must be a list of names or numbers")
    features = config.get("features", [])
    if not isinstance(features, list) or len(features) > MAX_DIMENSION or not all(
            isinstance(f, str) and len(f) <= 1000 for f in features):
        raise bad("features must be a list of column names")
    target = config.get("target", "")
    if not isinstance(target, str) or len(target) > 1000:
        raise bad("target must be a column name")
    dtype = np.dtype(config["dtype"])
    described = config["layers"]
    if not isinstance(described, list) or not 1 <= len(described) <= MAX_LAYERS:
        raise bad("layers must be a list of 1 to 100000 layers")
    found = {"params": [], "buffers": [], "trained": [], "count": 0, "first_in": None}
    width = _layer_arrays(described, None, found, bad)
    params, buffers, trained = found["params"], found["buffers"], found["trained"]
    if width is None:
        raise bad("no Dense layer")
    expected = {f"param_{i}.npy": (shape, dtype) for i, shape in enumerate(params)}
    expected.update({f"buffer_{i}.npy": (shape, dtype) for i, shape in enumerate(buffers)})
    optimizer = None
    if "optimizer" in config:
        optimizer = _optimizer(config["optimizer"], bad)
        for i, shape in enumerate(s for s, t in zip(params, trained) if t):
            expected.update({f"opt_{i}_{j}.npy": (shape, dtype)
                             for j in range(optimizer.n_state)})
    return expected, optimizer


def _layer_arrays(described, width, found, bad, where="", depth=0):
    """Check a list of layer configs (a residual block's, recursively) reading inputs of
    `width` (None: the first Dense says); add their parameters' and buffers' shapes, and
    whether each parameter trains, to `found`; return the output width."""
    if depth > MAX_NESTING:
        raise bad(f"residual blocks nested deeper than {MAX_NESTING}")
    for i, layer in enumerate(described):
        found["count"] += 1
        if found["count"] > MAX_LAYERS:
            raise bad(f"more than {MAX_LAYERS} layers")
        i = f"{where}{i}"
        if isinstance(layer, dict) and layer.get("kind") == "residual":
            inner = layer.get("layers")
            if set(layer) != {"kind", "layers"} or not isinstance(inner, list) or not inner:
                raise bad(f"layer {i}: a residual block needs a list of layers")
            out = _layer_arrays(inner, width, found, bad, f"{i}.", depth + 1)
            if out != (width if width is not None else found["first_in"]):
                raise bad(f"layer {i}: a residual block that does not keep the width")
            width = out
            continue
        if isinstance(layer, dict) and layer.get("kind") == "embedding":
            width = _embedding_shapes(layer, width, found, bad, i)
            continue
        if not isinstance(layer, dict) or not isinstance(layer.get("kind"), str) or \
                layer["kind"] not in set(_LAYER_KEYS) | set(layers_module.ACTIVATIONS):
            raise bad(f"layer {i}: {str(layer)[:100]}")
        allowed = _LAYER_KEYS.get(layer["kind"], set())
        if not set(layer) - {"kind"} <= allowed:
            raise bad(f"layer {i}: unexpected settings {sorted(set(layer) - {'kind'})}")
        for key, value in layer.items():  # numbers and flags only: no nested documents
            if key not in ("kind", "init", "approximate") \
                    and not isinstance(value, (int, float, bool)):
                raise bad(f"layer {i}: {key} = {str(value)[:100]}")
        if layer.get("approximate", "none") not in ("none", "tanh"):
            raise bad(f"layer {i}: approximate = {str(layer['approximate'])[:100]}")
        if not isinstance(layer.get("trainable", True), bool):
            raise bad(f"layer {i}: trainable = {str(layer['trainable'])[:100]}")
        params, buffers = found["params"], found["buffers"]
        before = len(params)
        if layer["kind"] == "dense":
            n_in, n_out = layer.get("in_features"), layer.get("out_features")
            if not all(type(v) is int and 1 <= v <= MAX_DIMENSION for v in (n_in, n_out)) \
                    or n_in * n_out > MAX_DIMENSION:
                raise bad(f"layer {i}: Dense({n_in}, {n_out})")
            if width is not None and n_in != width:
                raise bad(f"layer {i}: Dense({n_in}, {n_out}) after a layer of width {width}")
            if found["first_in"] is None:
                found["first_in"] = n_in
            params.append((n_out, n_in))
            if layer.get("bias", True):
                params.append((n_out,))
            width = n_out
        elif layer["kind"] in ("batchnorm", "layernorm"):
            n = layer.get("num_features")
            if type(n) is not int or not 1 <= n <= MAX_DIMENSION or (width or n) != n:
                name = "BatchNorm1d" if layer["kind"] == "batchnorm" else "LayerNorm"
                raise bad(f"layer {i}: {name}({n}) after a layer of width {width}")
            if found["first_in"] is None:
                found["first_in"] = n
            if layer["kind"] == "batchnorm":
                params += [(n,), (n,)] if layer.get("affine", True) else []
                buffers += [(n,), (n,)]
            elif layer.get("elementwise_affine", True):
                params += [(n,)] + ([(n,)] if layer.get("bias", True) else [])
            width = n
        found["trained"] += [layer.get("trainable", True)] * (len(params) - before)
    return width


def _embedding_shapes(layer, width, found, bad, i):
    """An Embedding's config (the first layer: no width before it): its table's shape
    into `found`; returns its output width."""
    n_in, columns = layer.get("in_features"), layer.get("columns")
    cards, dim = layer.get("cardinalities"), layer.get("embedding_dim")
    if set(layer) - {"kind"} - _LAYER_KEYS["embedding"] or width is not None \
            or not isinstance(layer.get("trainable", True), bool) \
            or not all(type(v) is int and 1 <= v <= MAX_DIMENSION for v in (n_in, dim)) \
            or not isinstance(columns, list) or not isinstance(cards, list) \
            or not 1 <= len(columns) == len(cards) <= n_in \
            or not all(type(c) is int and 0 <= c < n_in for c in columns) \
            or len(set(columns)) != len(columns) \
            or not all(type(c) is int and 1 <= c <= MAX_DIMENSION for c in cards) \
            or sum(cards) * dim > MAX_DIMENSION:
        raise bad(f"layer {i}: {str(layer)[:200]}")
    found["first_in"] = n_in
    found["params"].append((sum(cards), dim))
    found["trained"].append(layer.get("trainable", True))
    return n_in + len(columns) * (dim - 1)


def _optimizer(saved, bad):
    """The optimizer a config describes, unbound, with its settings checked."""
    if not isinstance(saved, dict) or set(saved) != {"class", "config", "steps"} \
            or not isinstance(saved["class"], str) or saved["class"] not in _OPTIMIZERS \
            or not isinstance(saved["config"], dict) \
            or type(saved["steps"]) is not int or not 0 <= saved["steps"] <= MAX_STEPS:
        raise bad(f"optimizer {str(saved)[:200]}")
    settings = dict(saved["config"])
    if "betas" in settings:
        if not isinstance(settings["betas"], list) or len(settings["betas"]) != 2:
            raise bad(f"optimizer betas {settings['betas']!r}")
        settings["betas"] = tuple(settings["betas"])
    for key, value in settings.items():
        if not isinstance(value, (int, float, bool, tuple)):
            raise bad(f"optimizer setting {key} = {str(value)[:100]}")
    try:
        return _OPTIMIZERS[saved["class"]](**settings)
    except (TypeError, ValueError) as exc:
        raise bad(f"optimizer: {exc}") from None
