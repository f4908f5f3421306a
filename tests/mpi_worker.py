"""Run under mpirun by tests/test_distributed.py: each scenario trains data-parallel over
MPI.COMM_WORLD and, on rank 0, the same model in one process on the concatenated data;
every rank writes what it saw to OUT/rank-<r>.json for the test to check.

    mpirun -n 2 python tests/mpi_worker.py OUT scenario [scenario ...]
"""
import json
import os
import signal
import sys
import threading
import traceback

import numpy as np
from mpi4py import MPI

import fastnn as fnn
import fastnn.distributed as dist
from fastnn import callbacks, layers, optim

comm = MPI.COMM_WORLD
rank = comm.Get_rank()
N, D, C = 203, 12, 4   # 203 rows in batches of 32: an uneven last batch of 11


def data(n=N, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, D))
    y = (X[:, :C] + 0.5 * rng.normal(size=(n, C))).argmax(axis=1)
    return X, y


def model(dtype="float64", l2=0.0, dropout=False, seed=1):
    stack = [layers.Dense(D, 16, l2=l2), layers.ReLU()]
    stack += [layers.Dropout(0.2)] if dropout else []
    return fnn.Sequential(stack + [layers.Dense(16, C)], dtype=dtype, seed=seed)


def relative_error(a, b):
    return max(float(np.max(np.abs(p - q)) / np.max(np.abs(q))) for p, q in zip(a, b))


def versus_one_process(make_model, make_optimizer, weights=False, shuffle=True,
                       allreduce="compiled", make_schedule=lambda: None, **settings):
    """Weights after 3 epochs data-parallel, against one process (on rank 0); settings:
    more of fit's arguments, for both."""
    X, y = data()
    w = np.random.default_rng(5).uniform(0, 2, N) if weights else None
    start, stop = dist.shard(N, comm)
    m = make_model(seed=1 if rank == 0 else 50 + rank)  # rank 0's start is broadcast
    group = dist.Group(comm, allreduce=allreduce)
    history = m.fit(X[start:stop], y[start:stop], optimizer=make_optimizer(), epochs=3,
                    batch_size=32, shuffle=shuffle, comm=group,
                    sample_weight=None if w is None else w[start:stop],
                    lr_schedule=make_schedule(), **settings)
    checksums = comm.allgather([float(np.sum(p)) for p in m.parameters()])
    result = {"same_on_every_rank": all(c == checksums[0] for c in checksums),
              "loss": history["loss"], "path": group.bind(m._engine)}
    if rank == 0:
        ref = make_model(seed=1)
        ref_history = ref.fit(X, y, optimizer=make_optimizer(), epochs=3, batch_size=32,
                              shuffle=shuffle, sample_weight=w, lr_schedule=make_schedule(),
                              **settings)
        result["relative_error"] = relative_error(m.parameters(), ref.parameters())
        result["ref_loss"] = ref_history["loss"]
    return result


def sgd_momentum():
    return versus_one_process(model, lambda: optim.SGD(lr=0.1, momentum=0.9))


def adam():
    return versus_one_process(model, lambda: optim.Adam(lr=0.01))


def l2_penalty():
    return versus_one_process(lambda seed: model(l2=1e-2, seed=seed),
                              lambda: optim.SGD(lr=0.05, momentum=0.9, nesterov=True))


def weighted():
    return versus_one_process(model, lambda: optim.Adam(lr=0.01), weights=True)


def in_order():
    return versus_one_process(model, lambda: optim.SGD(lr=0.1), shuffle=False)


def float32():
    return versus_one_process(lambda seed: model("float32", seed=seed), lambda: optim.Adam(lr=0.01))


def one_cycle():
    """A per-step schedule (its learning rates and momenta as tables) over the global
    steps: 7 a epoch (203 rows in batches of 32)."""
    return versus_one_process(model, lambda: optim.SGD(lr=0.1, momentum=0.9),
                              make_schedule=lambda: optim.OneCycleLR(0.2, total_steps=21))


def toolkit():
    """Layer norm, GELU, a residual block, NAdam and a frozen first layer."""
    def make(seed):
        m = fnn.Sequential([layers.Dense(D, 16), layers.LayerNorm(16), layers.GELU(),
                            fnn.Residual(layers.Dense(16, 16), layers.SiLU()),
                            layers.Dense(16, 8), layers.SiLU(), layers.Dense(8, C)],
                           dtype="float64", seed=seed)
        return m.freeze(2)
    return versus_one_process(make, lambda: optim.NAdam(lr=0.01))


def clipped():
    """Gradient clipping by value and by norm: each process clips the summed gradient,
    the global batch's, as one process clips its batch's. On rank 0 also how far the
    clipped weights are from unclipped ones (the clipping must act)."""
    def sgd():
        return optim.SGD(lr=0.5, momentum=0.9)
    result = versus_one_process(model, sgd, clip_grad_norm=0.3, clip_grad_value=0.05)
    if rank == 0:
        X, y = data()
        clipped_ref, free = model(), model()
        for m, settings in ((clipped_ref, dict(clip_grad_norm=0.3, clip_grad_value=0.05)),
                            (free, {})):
            m.fit(X, y, optimizer=sgd(), epochs=3, batch_size=32, **settings)
        result["clipping_moved"] = relative_error(clipped_ref.parameters(),
                                                  free.parameters())
    return result


def balanced():
    """class_weight="balanced" counts each class's rows over every process: the weights
    one process gives all the rows (each shard's own class frequencies differ)."""
    return versus_one_process(model, lambda: optim.Adam(lr=0.01), class_weight="balanced")


def python_allreduce():
    return versus_one_process(model, lambda: optim.SGD(lr=0.1, momentum=0.9),
                              allreduce="python")


def helped():
    """2 threads a rank, adapting, every stretch a lead with a helper that takes every
    tile but the lead's own (a negative grace), against the same ranks on their team of
    two: the weights bit for bit (the reduce step and the update run on the lead)."""
    from fastnn import _engine, _threads
    X, y = data()
    start, stop = dist.shard(N, comm)
    adapts = _threads.adapts_to_load
    _threads.adapts_to_load = lambda: True
    old = _engine.tune(grain_flops=1.0, helping=0, help_grace=1.5)
    try:
        weights, helpers = [], None
        for mode in (0, 2):
            _engine.tune(helping=mode, help_grace=-1.0)
            with fnn.threads(2):
                m = model(dropout=True)
                m.fit(X[start:stop], y[start:stop], optimizer=optim.Adam(lr=0.01), epochs=3,
                      batch_size=32, comm=dist.Group(comm))
            weights.append(m.parameters())
            helpers = m._engine.last_helpers
    finally:
        _engine.tune(**old)
        _threads.adapts_to_load = adapts
    return {"bitwise": all(np.array_equal(a, b) for a, b in zip(*weights)),
            "helpers": sorted(set(helpers["helpers"])),
            "tiles": helpers["tiles"] + helpers["retaken"]}


def validation_and_callbacks():
    """Validation metrics over every rank's rows; EarlyStopping and ReduceLROnPlateau
    decided on rank 0, their outcome on every rank; against one process (rank 0)."""
    X, y = data()
    X_val, y_val = data(60, seed=3)

    def train(X, y, X_val, y_val, comm=None):
        m = model()
        history = m.fit(X, y, optimizer=optim.SGD(lr=0.5), epochs=30, batch_size=32,
                        validation_data=(X_val, y_val), comm=comm,
                        lr_schedule=optim.ReduceLROnPlateau(factor=0.5, patience=0),
                        callbacks=[callbacks.EarlyStopping(patience=2, min_delta=1e-3)])
        return {"epochs": len(history.epoch), "lr": history["lr"] + [m.optimizer.lr],
                "val_loss": history["val_loss"], "val_accuracy": history["val_accuracy"],
                "weights": [float(np.sum(p)) for p in m.parameters()]}

    start, stop = dist.shard(N, comm)
    v0, v1 = dist.shard(60, comm)
    result = train(X[start:stop], y[start:stop], X_val[v0:v1], y_val[v0:v1], comm)
    if rank == 0:
        result["one_process"] = train(X, y, X_val, y_val)
    return result


def _outcome(fn):
    try:
        fn()
    except Exception as exc:  # what each rank raised
        return {"raised": type(exc).__name__, "message": str(exc)}
    return {"raised": None}


def bad_shard():
    X, y = data()
    start, stop = dist.shard(N, comm)
    X_local = X[start:stop, :D - 1] if rank == 1 else X[start:stop]  # one column short
    return _outcome(lambda: model().fit(X_local, y[start:stop], epochs=1, comm=comm))


def nan_loss():
    X, y = data()
    X = X * 1e200
    start, stop = dist.shard(N, comm)
    return _outcome(lambda: model().fit(X[start:stop], y[start:stop], epochs=1,
                                        optimizer=optim.SGD(lr=1e10), comm=comm))


class _Failing:
    def on_epoch_end(self, epoch, logs):
        raise OSError("disk full")


def failing_callback():
    X, y = data()
    start, stop = dist.shard(N, comm)
    return _outcome(lambda: model().fit(X[start:stop], y[start:stop], epochs=2,
                                        callbacks=[_Failing()], comm=comm))


def batchnorm_refused():
    X, y = data()
    start, stop = dist.shard(N, comm)
    m = fnn.Sequential([layers.Dense(D, 8), layers.BatchNorm1d(8), layers.ReLU(),
                        layers.Dense(8, C)], seed=0)
    return _outcome(lambda: m.fit(X[start:stop], y[start:stop], epochs=1, comm=comm))


def interrupted():
    """Ctrl-C on rank 1 mid-epoch: rank 1 raises KeyboardInterrupt, the others stop at
    the same step; every rank keeps identical parameters."""
    X, y = data(40000)
    start, stop = dist.shard(len(X), comm)
    m = model()
    if rank == 1:
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
    return _interrupted_outcome(
        m, lambda: m.fit(X[start:stop], y[start:stop], epochs=50, batch_size=8, comm=comm))


def _interrupted_outcome(m, fit):
    """What fit() raised (KeyboardInterrupt included), whether every rank ends with the
    same parameters, and the optimizer's steps."""
    try:
        fit()
        outcome = {"raised": None}
    except KeyboardInterrupt:
        outcome = {"raised": "KeyboardInterrupt"}
    except Exception as exc:
        outcome = {"raised": type(exc).__name__, "message": str(exc)}
    checksums = comm.allgather([float(np.sum(p)) for p in m.parameters()])
    outcome["same_on_every_rank"] = all(c == checksums[0] for c in checksums)
    outcome["steps"] = m.optimizer.steps
    return outcome


class _InterruptedWhenRead:
    """An array-like whose conversion sends this process SIGINT: Ctrl-C inside fit's
    setup, before the first step."""

    def __init__(self, array):
        self.array = array

    def __array__(self, dtype=None, copy=None):
        os.kill(os.getpid(), signal.SIGINT)
        return self.array if dtype is None else self.array.astype(dtype)


def interrupted_in_setup():
    """Ctrl-C on rank 1 while fit reads its input: every rank stops before the first step
    (the KeyboardInterrupt used to be raised in rank 1's Python code, leaving rank 0
    waiting in a collective)."""
    X, y = data()
    start, stop = dist.shard(N, comm)
    m = model()
    X_mine = _InterruptedWhenRead(X[start:stop]) if rank == 1 else X[start:stop]
    before = [p.copy() for p in m.parameters()]
    outcome = _interrupted_outcome(
        m, lambda: m.fit(X_mine, y[start:stop], epochs=2, comm=comm))
    outcome["rank0_start_kept"] = comm.bcast(
        all(np.array_equal(p, q) for p, q in zip(m.parameters(), before)), root=0)
    return outcome


def mismatched_settings():
    """Each case builds rank 1's fit differently from the others': every rank must raise
    the same ValueError naming what differs (before, most of these hung in a collective
    of another size or count, or failed on one rank while the other waited)."""
    X, y = data()
    start, stop = dist.shard(N, comm)
    odd = rank == 1

    def net(widths=(16,), dtype="float64"):
        stack, width = [], D
        for w in widths:
            stack += [layers.Dense(width, w), layers.ReLU()]
            width = w
        return fnn.Sequential(stack + [layers.Dense(width, C)], dtype=dtype, seed=1)

    cases = {
        "width": lambda: net((17,) if odd else (16,)).fit(X[start:stop], y[start:stop],
                                                           comm=comm),
        "depth": lambda: net((16, 16) if odd else (16,)).fit(X[start:stop], y[start:stop],
                                                             comm=comm),
        "shapes": lambda: (fnn.Sequential([layers.Dense(D, 6), layers.Dense(6, 8),
                                           layers.Dense(8, C)], seed=1) if odd else
                           fnn.Sequential([layers.Dense(D, 8), layers.Dense(8, 6),
                                           layers.Dense(6, C)], seed=1)
                           ).fit(X[start:stop], y[start:stop], comm=comm),
        "dtype": lambda: net(dtype="float32" if odd else "float64").fit(
            X[start:stop], y[start:stop], comm=comm),
        "features": lambda: (fnn.Sequential([layers.Dense(D - 1, C)]).fit(
            X[start:stop, 1:], y[start:stop], comm=comm) if odd else
            fnn.Sequential([layers.Dense(D, C)]).fit(X[start:stop], y[start:stop],
                                                     comm=comm)),
        "batch_size": lambda: net().fit(X[start:stop], y[start:stop],
                                        batch_size=64 if odd else 32, comm=comm),
        "optimizer": lambda: net().fit(X[start:stop], y[start:stop],
                                       optimizer="adam" if odd else "sgd", comm=comm),
        "learning rate": lambda: net().fit(X[start:stop], y[start:stop],
                                           optimizer=optim.SGD(lr=0.2 if odd else 0.1),
                                           comm=comm),
        "epochs": lambda: net().fit(X[start:stop], y[start:stop], epochs=3 if odd else 2,
                                    comm=comm),
        "weights": lambda: net().fit(X[start:stop], y[start:stop], comm=comm,
                                     sample_weight=np.ones(stop - start) if odd else None),
    }
    results = {}
    for name, fit in cases.items():
        comm.Barrier()
        results[name] = _outcome(fit)
    return results


def save_on_root(out):
    X, y = data()
    start, stop = dist.shard(N, comm)
    m = model()
    m.fit(X[start:stop], y[start:stop], epochs=1, comm=comm)
    m.save(os.path.join(out, f"model-{rank}.npz"))
    return {}


def main():
    out, names = sys.argv[1], sys.argv[2:]
    results = {"size": comm.Get_size()}
    for name in names:
        try:
            results[name] = save_on_root(out) if name == "save_on_root" else globals()[name]()
        except BaseException:
            results[name] = {"error": traceback.format_exc()}
    with open(os.path.join(out, f"rank-{rank}.json"), "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
