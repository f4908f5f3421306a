"""Saving and loading models: one .npz file, no pickle.

The file holds a JSON document (architecture, dtype, seed, the shuffling generator's
state, the optimizer's class, settings and step count) stored as bytes under "config",
and the arrays: parameters "param_<i>", buffers (batch norm's running statistics)
"buffer_<i>" and optimizer state "opt_<i>_<j>". Loading uses
allow_pickle=False, so a file can never execute code. Writing goes to a temporary file
in the same folder, then renames it over the target: an interrupted save never leaves a
truncated file in place of a good one.
"""
import json
import os
import tempfile
import zipfile

import numpy as np

from . import layers as layers_module
from . import optim

FORMAT = "fastnn-model"
VERSION = 1
_OPTIMIZERS = {cls.__name__: cls for cls in (optim.SGD, optim.Adam, optim.AdamW,
                                             optim.RMSprop, optim.Adagrad)}


def save(model, path, include_optimizer=True):
    """Write `model` (and its optimizer's state) to `path` atomically."""
    from . import __version__
    seed = model.seed if isinstance(model.seed, (int, type(None))) else None
    config = {
        "format": FORMAT, "version": VERSION, "fastnn_version": __version__,
        "dtype": model.dtype.name, "seed": seed,
        "layers": [layer._config() for layer in model.layers],
        "rng": model._rng.bit_generator.state,
    }
    arrays = {f"param_{i}": p for i, p in enumerate(model.parameters())}
    arrays.update({f"buffer_{i}": b for i, b in enumerate(model.buffers())})
    opt = model.optimizer
    if include_optimizer and opt is not None and opt.state is not None:
        config["optimizer"] = {"class": type(opt).__name__, "config": opt._config(),
                               "steps": opt.steps}
        for i, state in enumerate(opt.state):
            for j, arr in enumerate(state):
                arrays[f"opt_{i}_{j}"] = arr
    arrays["config"] = np.frombuffer(json.dumps(config).encode(), dtype=np.uint8)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".fastnn-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load(path):
    """Rebuild a Sequential model (and its optimizer, if saved) from a file of save()."""
    from .model import Sequential
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        config = json.loads(bytes(arrays.pop("config")).decode())
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile,
            UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a readable fastnn model file ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{path}: not a fastnn model file")
    if config.get("version") != VERSION:
        raise ValueError(f"{path}: unsupported fastnn file version {config.get('version')}")
    try:
        model = Sequential([layers_module.layer_from_config(c) for c in config["layers"]],
                           dtype=config["dtype"], seed=config["seed"])
        _copy_arrays(model.parameters(), arrays, "param_{}", path)
        _copy_arrays(model.buffers(), arrays, "buffer_{}", path)
        model._rng.bit_generator.state = config["rng"]
        if "optimizer" in config:
            saved = config["optimizer"]
            settings = dict(saved["config"])
            if "betas" in settings:
                settings["betas"] = tuple(settings["betas"])
            opt = _OPTIMIZERS[saved["class"]](**settings)
            opt._bind(model.parameters())
            for i, state in enumerate(opt.state):
                _copy_arrays(state, arrays, f"opt_{i}_{{}}", path)
            opt.steps = int(saved["steps"])
            model.optimizer = opt
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: corrupted or incompatible fastnn model file ({exc})") from None
    return model


def _copy_arrays(targets, arrays, pattern, path):
    for i, target in enumerate(targets):
        name = pattern.format(i)
        if name not in arrays:
            raise ValueError(f"missing array {name}")
        source = arrays[name]
        if source.shape != target.shape or source.dtype != target.dtype:
            raise ValueError(f"array {name} has shape {source.shape} and dtype {source.dtype}, "
                             f"expected {target.shape} {target.dtype}")
        target[...] = source
