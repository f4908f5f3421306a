"""Data-parallel training over MPI: each process trains on its shard of the rows, and
every step's gradients are summed over the processes before one identical update.

    mpirun -n 4 python -m mpi4py train.py

    from mpi4py import MPI
    import fastnn.distributed as dist
    start, stop = dist.shard(n_rows, MPI.COMM_WORLD)
    X = np.load("X.npy", mmap_mode="r")[start:stop]     # this process's rows only
    model.fit(X, y[start:stop], comm=MPI.COMM_WORLD, ...)

Semantics (docs/distributed.md): the global data set is the processes' rows in rank
order; every epoch draws one permutation of it from the model's seed (rank 0's, the
same on every process), and global batch k is rows perm[k B : (k + 1) B]; each process
trains on those it holds. The update equals one process training on the global batch:
the gradient of its mean loss (or weighted mean) is the sum over processes of each
one's summed gradient divided by the global batch's rows (or summed weights), up to
rounding. One MPI_Allreduce per step sums every gradient, the loss and the stop flags
as one contiguous buffer, from the compiled loop (csrc/engine/reduce.pxi, reduce_step).

Decisions are rank 0's: parameters, optimizer state and the random generator are
broadcast from it when fit starts; validation metrics are summed over the processes'
validation rows; callbacks and the learning-rate schedule run on rank 0 and their
outcome (stop, learning rate, parameters at the end) is broadcast; `save` writes on
rank 0 only. An error on one process (bad input on its shard, a failing callback, a
NaN loss, Ctrl-C) raises on every process instead of leaving the others waiting. Ctrl-C
on one process during a data-parallel fit stops every process at the same step: while
the fit runs, SIGINT only marks a request that the compiled loop reads before each step
and sends with the step's allreduce (a KeyboardInterrupt raised in Python code between
steps would leave the others waiting in their next collective).
BatchNorm1d is refused: its statistics would be per process, not the global batch's.

mpi4py is imported only by the caller (who passes a communicator): `import fastnn`
never loads MPI.
"""
import ctypes
import signal
import threading

import numpy as np

from . import _engine

__all__ = ["shard", "Group", "DistributedError", "launched_group"]

REDUCE_MPI, REDUCE_PYTHON = 1, 2


class DistributedError(RuntimeError):
    """Raised on every process when another process failed: names its rank and error."""


def shard(n_rows, comm):
    """This process's rows [start, stop) of n_rows split over comm's processes: contiguous,
    in rank order, sizes differing by at most one (the first n_rows % size get one
    more). With np.load(path, mmap_mode="r")[start:stop], a process reads only its part."""
    if isinstance(n_rows, bool) or not isinstance(n_rows, (int, np.integer)) or n_rows < 0:
        raise ValueError(f"n_rows must be an int >= 0, got {n_rows!r}")
    size, rank = comm.Get_size(), comm.Get_rank()
    base, extra = divmod(int(n_rows), size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


# what mpirun / mpiexec set in each process it starts: Open MPI, MPICH (Hydra), MVAPICH
_LAUNCHER_SIZES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")


def launched_group():
    """The Group of MPI.COMM_WORLD when this process was started by an MPI launcher with
    more than one process (the command line trains data-parallel then), else None:
    without a launcher, mpi4py is not imported."""
    import os
    sizes = [os.environ.get(name, "") for name in _LAUNCHER_SIZES]
    if not any(size.isdigit() and int(size) > 1 for size in sizes):
        return None
    from mpi4py import MPI
    return Group(MPI.COMM_WORLD) if MPI.COMM_WORLD.Get_size() > 1 else None


class Group:
    """The processes of an mpi4py communicator that train one model together.

    Args:
        comm: an mpi4py communicator (MPI.COMM_WORLD, or a split of it).
        allreduce: "compiled" (default): the engine calls MPI_Allreduce itself, through
            its address in the MPI library mpi4py loaded; "python": the engine calls
            back into Python once per step for mpi4py's Comm.Allreduce (no GIL held in
            the reduction either way). "compiled" falls back to "python" when the MPI
            library's symbols cannot be found or fail a check.
    """

    def __init__(self, comm, allreduce="compiled"):
        if allreduce not in ("compiled", "python"):
            raise ValueError(f"allreduce must be 'compiled' or 'python', got {allreduce!r}")
        for method in ("Get_rank", "Get_size", "Allreduce", "bcast", "Bcast"):
            if not hasattr(comm, method):
                raise TypeError(f"comm must be an mpi4py communicator, got "
                                f"{type(comm).__name__}")
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.allreduce = allreduce
        self._error = None
        self.stop_request = np.zeros(1, np.uint8)  # set by Ctrl-C: see interrupts_deferred

    @classmethod
    def of(cls, comm):
        return comm if isinstance(comm, cls) else cls(comm)

    @property
    def is_root(self):
        return self.rank == 0

    # -- agreeing on errors ---------------------------------------------------------

    def agree(self, error=None):
        """Collective: every process passes its exception (or None). If any failed, each
        raises: its own exception, or DistributedError naming the first failed rank."""
        report = None if error is None else f"{type(error).__name__}: {error}"
        reports = self.comm.allgather(report)
        failed = [(rank, text) for rank, text in enumerate(reports) if text is not None]
        if not failed:
            return
        if error is not None:
            raise error
        rank, text = failed[0]
        raise DistributedError(f"rank {rank} failed: {text}")

    def interrupts_deferred(self):
        """A context over a data-parallel fit: Ctrl-C (SIGINT) sets stop_request instead
        of raising, the engine stops every process at its next step and raises
        KeyboardInterrupt on this one (DistributedError on the others); a request made
        after the last step raises KeyboardInterrupt when the fit returns. Only in the
        main thread, and only where SIGINT's handler is Python's default."""
        return _InterruptsDeferred(self)

    def collective(self):
        """A context whose block runs on every process, then agree()s on its outcome."""
        return _Collective(self)

    def agree_on_settings(self, settings):
        """Collective, once when fit starts: every process passes the settings that must
        be the same everywhere ({name: JSON-able value}: layer specs and shapes, dtype,
        loss, optimizer and its hyperparameters, batch size, epochs, shuffling, whether
        rows are weighted). If any process's differ from rank 0's, every process raises
        the same ValueError naming each setting that differs and its value per rank,
        instead of meeting the others in collectives of different sizes or counts (which
        hangs or fails on one rank only)."""
        every = self.comm.allgather(settings)
        differ = [name for name in every[0]
                  if any(other.get(name) != every[0][name] for other in every[1:])]
        differ += sorted({name for other in every[1:] for name in other} - set(every[0]))
        if differ:
            lines = "; ".join(
                f"{name}: " + ", ".join(f"rank {rank} {str(other.get(name))[:80]}"
                                        for rank, other in enumerate(every))
                for name in differ)
            raise ValueError(f"the processes of a data-parallel fit must agree, but they "
                             f"differ in {lines}")

    def on_root(self, fn, *args):
        """Run fn(*args) on rank 0 and broadcast its result (or its error: raised on rank
        0 as itself, elsewhere as DistributedError)."""
        result, error = None, None
        if self.is_root:
            try:
                result = fn(*args)
            except BaseException as exc:  # Ctrl-C in a callback must not hang the others
                error = exc
        outcome = self.comm.bcast(
            (result, None if error is None else f"{type(error).__name__}: {error}")
            if self.is_root else None, root=0)
        if error is not None:
            raise error
        if outcome[1] is not None:
            raise DistributedError(f"rank 0 failed: {outcome[1]}")
        return outcome[0]

    # -- state -----------------------------------------------------------------------

    def broadcast_arrays(self, arrays):
        """Overwrite each array, in place, with rank 0's."""
        for array in arrays:
            self.comm.Bcast(array, root=0)

    def bcast(self, value):
        """Rank 0's value (any picklable object), on every process."""
        return self.comm.bcast(value, root=0)

    def sum(self, values):
        """Elementwise sum over the processes of a sequence of numbers (float64)."""
        array = np.array(values, dtype=np.float64)
        self.comm.Allreduce(_in_place(), array)
        return array

    # -- training --------------------------------------------------------------------

    def bind(self, engine):
        """Point the engine's reducer at this communicator."""
        flat = engine.flat_gradients
        if self.allreduce == "compiled":
            handles = _mpi_handles(self.comm, flat.dtype)
            if handles is not None and self._check_compiled(engine, flat, handles):
                engine.set_reducer(REDUCE_MPI, *handles, stop_request=self.stop_request)
                return "compiled"
        engine.set_reducer(REDUCE_PYTHON, self._python_reducer(flat),
                           stop_request=self.stop_request)
        return "python"

    def _python_reducer(self, flat):
        comm, in_place = self.comm, _in_place()

        def reduce():
            try:
                comm.Allreduce(in_place, flat)
            except BaseException as exc:
                self._error = exc
                return False
            return True
        return reduce

    def _check_compiled(self, engine, flat, handles):
        """Whether the resolved MPI_Allreduce sums correctly here, on every process."""
        probe = np.full(3, self.rank + 1, dtype=flat.dtype)
        ok = _engine.allreduce_probe(probe, *handles) == 0 and bool(
            np.all(probe == self.size * (self.size + 1) // 2))
        return bool(self.sum([0.0 if ok else 1.0])[0] == 0)

    def epoch_plan(self, n_local, batch_size, shuffle, rng, weights):
        """This process's rows for an epoch, in training order (indices into its shard),
        its rows in each global batch, and each global batch's denominator (its rows, or
        its summed weights over every process). The permutation is drawn from `rng`, the
        same generator state on every process."""
        counts = np.array(self.comm.allgather(n_local), dtype=np.int64)
        n_global, first = int(counts.sum()), int(counts[:self.rank].sum())
        global_order = rng.permutation(n_global) if shuffle else \
            np.arange(n_global, dtype=np.int64)
        mine = (global_order >= first) & (global_order < first + n_local)
        order = np.ascontiguousarray(global_order[mine] - first, dtype=np.int64)
        n_steps = -(-n_global // batch_size)
        step_of_row = np.flatnonzero(mine) // batch_size
        step_rows = np.bincount(step_of_row, minlength=n_steps).astype(np.int64)
        if weights is None:
            denoms = np.full(n_steps, float(batch_size))
            if n_steps:
                denoms[-1] = n_global - (n_steps - 1) * batch_size
        else:
            denoms = self.sum(np.bincount(step_of_row, weights=weights[order],
                                          minlength=n_steps))
        return order, step_rows, np.ascontiguousarray(denoms, dtype=np.float64)

    @property
    def dropout_offset(self):
        """What this process adds to the shared dropout seed: each its own masks, all from
        the model's one generator."""
        return self.rank * 0x9E3779B97F4A7C15

    def epoch_errors(self):
        """A context around a data-parallel epoch in the engine: another process's stop
        (the engine's StopIteration) becomes DistributedError, and a failed allreduce the
        error mpi4py raised."""
        return _EpochErrors(self)


class _EpochErrors:
    def __init__(self, group):
        self.group = group

    def __enter__(self):
        self.group._error = None
        return self.group

    def __exit__(self, kind, error, traceback):
        if kind is StopIteration:
            raise DistributedError("training stopped: another process was interrupted "
                                   "or failed") from None
        if kind is not None and issubclass(kind, RuntimeError) \
                and self.group._error is not None:
            raise self.group._error from None
        return False


class _InterruptsDeferred:
    def __init__(self, group):
        self.group = group

    def __enter__(self):
        self.group.stop_request[0] = 0
        self.installed = (threading.current_thread() is threading.main_thread()
                          and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
        if self.installed:
            signal.signal(signal.SIGINT, self._request)
        return self.group

    def _request(self, signum, frame):
        self.group.stop_request[0] = 1

    def __exit__(self, kind, error, traceback):
        if self.installed:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        requested = bool(self.group.stop_request[0])
        self.group.stop_request[0] = 0
        if requested and kind is None:
            raise KeyboardInterrupt  # made after the last step: delivered now
        return False


class _Collective:
    def __init__(self, group):
        self.group = group

    def __enter__(self):
        return self.group

    def __exit__(self, kind, error, traceback):
        self.group.agree(error)  # raises it here (Ctrl-C too), DistributedError elsewhere
        return False


def _in_place():
    from mpi4py import MPI
    return MPI.IN_PLACE


def _mpi_handles(comm, dtype):
    """(MPI_Allreduce's address, MPI_IN_PLACE, the datatype, MPI_SUM, comm, whether the
    handles are ints), from the MPI library mpi4py loaded; None if not found."""
    from mpi4py import MPI
    try:
        library = ctypes.CDLL(MPI.__file__)  # dlsym also searches its dependencies
        function = ctypes.cast(library.MPI_Allreduce, ctypes.c_void_p).value
    except (OSError, AttributeError):
        return None
    mask = 2**64 - 1
    datatype = MPI.DOUBLE if np.dtype(dtype) == np.float64 else MPI.FLOAT
    return (function, int(MPI.IN_PLACE) & mask, datatype.handle & mask,
            MPI.SUM.handle & mask, comm.handle & mask, MPI._sizeof(MPI.Comm) == 4)
