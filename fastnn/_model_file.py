"""The model file as written: one .npz holding a JSON document under "config" (the
model's get_config(), stamped with the format, its version and fastnn's) and the model's
named arrays (its state_dict()). No pickle. The write goes to a temporary file in the same
folder, then is renamed over the target (fastnn._files): an interrupted save never leaves
a truncated file in place of a good one. fastnn.serialization reads and checks it."""
import json

import numpy as np

from ._files import write_file

FORMAT = "fastnn-model"
VERSION = 1


def write_model_file(path, config, arrays):
    """Write `config` (JSON-able) and `arrays` ({name: array}) to `path` atomically."""
    from . import __version__
    document = {"format": FORMAT, "version": VERSION, "fastnn_version": __version__,
                **config}
    members = dict(arrays)
    members["config"] = np.frombuffer(json.dumps(document).encode(), dtype=np.uint8)
    write_file(path, lambda f: np.savez(f, **members))
