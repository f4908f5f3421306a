"""fastnn's own vectorized loops (the optimizer updates, batch norm's, layer norm's rows,
dropout's masks, the float32 sigmoid, tanh, both GELUs, SiLU, ELU and softplus: csrc/clones.h)
are built for AVX-512, AVX2 and baseline x86-64 (the other kernels once, for baseline
x86-64).
FASTNN_ISA caps which one runs, so this one machine runs each of them: every clone must
give the same bits, and under each one a plan must end bit for bit where it does on
fewer threads (the guarantee a busy machine relies on)."""
import json
import os

import pytest
from conftest import run_python

from fastnn import _engine

CHILD = r"""
import hashlib, json
import numpy as np
import fastnn as fnn
from fastnn import _engine

OPTIMIZERS = {
    "momentum": lambda: fnn.optim.SGD(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-3),
    "adam": lambda: fnn.optim.Adam(lr=1e-2, amsgrad=True),
    "adamw": lambda: fnn.optim.AdamW(lr=1e-2, weight_decay=0.1),
    "rmsprop": lambda: fnn.optim.RMSprop(lr=1e-2, momentum=0.5, centered=True, eps=1e-3),
    "adagrad": lambda: fnn.optim.Adagrad(lr=0.05, lr_decay=1e-3),
    "nadam": lambda: fnn.optim.NAdam(lr=1e-2, weight_decay=1e-3),
    "adadelta": lambda: fnn.optim.Adadelta(lr=0.5),
}

def model(dtype):
    return fnn.Sequential([
        fnn.Dense(12, 50, l2=1e-3), fnn.ReLU(), fnn.BatchNorm1d(50), fnn.Dropout(0.2),
        fnn.Dense(50, 40), fnn.Tanh(), fnn.BatchNorm1d(40, affine=False),
        fnn.Dense(40, 20), fnn.Sigmoid(), fnn.LayerNorm(20), fnn.Dense(20, 16), fnn.GELU(),
        fnn.Dense(16, 16), fnn.SiLU(), fnn.Dense(16, 16), fnn.ELU(0.7),
        fnn.Dense(16, 16), fnn.GELU("tanh"),
        fnn.Dense(16, 16), fnn.Softplus(beta=1.5, threshold=2.0), fnn.Dense(16, 4)],
        dtype=dtype, seed=3)

rng = np.random.default_rng(0)
X = rng.normal(size=(300, 12))
y = rng.integers(0, 4, 300)
_engine.tune(grain_flops=1.0)  # a plan of 2 blocks for every call
digests, capped_equal = {}, True
for dtype in ("float32", "float64"):
    for name, make in OPTIMIZERS.items():
        arrays = {}
        for cap in (0, 1):  # the plan on its 2 threads, then on 1 (2 blocks on one thread)
            _engine.tune(team_cap=cap)
            with fnn.threads(2):
                m = model(dtype)
                m.fit(X, y, optimizer=make(), epochs=2, batch_size=37)
                arrays[cap] = m.parameters() + m.buffers() + [m.predict(X)]
        capped_equal &= all(np.array_equal(a, b) for a, b in zip(arrays[0], arrays[1]))
        h = hashlib.sha256()
        for a in arrays[0]:
            h.update(np.ascontiguousarray(a).tobytes())
        digests[f"{dtype} {name}"] = h.hexdigest()
print(json.dumps({"isa": _engine.instruction_set(), "digests": digests,
                  "capped_equal": bool(capped_equal)}))
"""


def train_under(isa, tmp_path):
    """The child's report, run with FASTNN_ISA=isa (None: the CPU's widest)."""
    env = dict(os.environ)
    env.pop("FASTNN_ISA", None)
    if isa is not None:
        env["FASTNN_ISA"] = isa
    result = run_python(["-c", CHILD], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def widest(tmp_path_factory):
    return train_under(None, tmp_path_factory.mktemp("widest"))


def test_fastnn_isa_caps_the_loops_the_cpu_would_take():
    assert _engine.instruction_set() in ("avx512", "avx2", "baseline")


@pytest.mark.parametrize("isa", ["avx2", "baseline"])
def test_every_instruction_set_trains_to_the_same_bits(isa, widest, tmp_path):
    """Each clone's training (seven optimizers, batch norm, layer norm, dropout, tanh,
    sigmoid, both GELUs, SiLU, ELU and softplus, in float32 and float64) ends in the same
    parameters, running statistics and predictions as the widest clone's; and under each,
    a plan of two blocks run on one thread ends where it does on two."""
    order = ["baseline", "avx2", "avx512"]
    report = train_under(isa, tmp_path)
    expected = order[min(order.index(isa), order.index(widest["isa"]))]
    assert report["isa"] == expected  # the cap took effect (unless the CPU is narrower)
    assert widest["capped_equal"] and report["capped_equal"]
    assert report["digests"] == widest["digests"]
    assert len(report["digests"]) == 14
    assert len(set(report["digests"].values())) == 14  # fourteen different trainings
