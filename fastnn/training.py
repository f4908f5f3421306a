"""The training driver: an epoch of training through the compiled engine, the same for
Sequential.fit on one process, data-parallel fits (fastnn.distributed) and the
scikit-learn estimators (fastnn.sklearn). Each caller decides the rows' order and what a
failed batch means to its users; this module runs the steps.

Dependencies run one way: fastnn.serialization and fastnn.sklearn use the model
(fastnn.model), the model uses this driver and fastnn.distributed's collectives, and
this driver uses only the engine (fastnn._engine) and the thread settings.
"""
from . import _threads
from ._validation import CSRRows

# predict, evaluate and gradients densify each chunk of a sparse X into the engine's two
# input buffers: chunks of at most this many values keep them to 32 MB (float64) each
SPARSE_CHUNK_VALUES = 2**22


def chunk_rows(X, batch_size):
    """Rows per engine chunk outside training: batch_size, at most X's rows, and for
    sparse X at most SPARSE_CHUNK_VALUES / features (results do not depend on it
    beyond rounding)."""
    rows = min(batch_size, X.shape[0])
    if isinstance(X, CSRRows):
        rows = min(rows, max(1, SPARSE_CHUNK_VALUES // X.shape[1]))
    return rows


def diverged(failure, where):
    """The message of the error a failed training step raises: `failure` is the engine's
    ("loss" or "update"), `where` names the step."""
    what = ("the loss became NaN or inf" if failure == "loss" else
            "an update made a parameter or the optimizer's state NaN or inf (its loss was "
            "finite: the gradient or the update overflowed)")
    return (f"{what} at {where}; the parameters, optimizer state and running statistics "
            f"are those before that batch (try a smaller learning rate"
            f"{'' if failure == 'loss' else ', or float64'})")


class EpochResult:
    """What an epoch of training gave: the sum of its batches' losses, and the first
    failed batch (its index in the epoch, or -1) with the engine's word for how it
    failed ("loss": not finite; "update": an update wrote NaN or inf). The parameters,
    optimizer state and running statistics are then those before that batch."""

    def __init__(self, loss_sum, failed_batch, failure):
        self.loss_sum, self.failed_batch, self.failure = loss_sum, failed_batch, failure

    @property
    def failed(self):
        return self.failed_batch >= 0


def train_epoch(engine, optimizer, X, targets, labels, weights, batch_size, kind, n_run,
                order=None, dropout_seed=None, step_rows=None, step_denoms=None,
                pieces=1, after_piece=None, clip=(0.0, 0.0), schedule=(None, None)):
    """Train one epoch of `engine` (a model's compiled plan) with `optimizer` (bound to
    its parameters; its step count is kept up to date however the epoch ends).

    Rows: X[order] (an int64 permutation) or X in order; `weights` one per row of X, or
    None. Data-parallel: step_rows and step_denoms (fastnn.distributed.Group.epoch_plan)
    give this process's rows in each global batch and the batch's denominator.
    dropout_seed restarts dropout's mask stream. With pieces > 1 (not data-parallel),
    the epoch runs in that many calls of whole batches (at most one per batch),
    after_piece(rows_done, the piece's summed loss) between them (a progress bar, batch
    callbacks); the results are the same bits. The state is copied aside once, by the
    first piece: a later piece whose update wrote NaN or inf is found again from that
    copy over the epoch's rows up to its end (a copy in every call costs Adam 130-170 us
    more a call on 784-256-128-10, docs/benchmarks.md). A callback's own changes to the
    parameters between pieces are then not replayed. clip: (max norm, max value) of each
    step's gradient (0: none), as torch's clip_grad_norm_ and clip_grad_value_.
    schedule: the epoch's learning rate and momentum per step (float64 arrays, or None:
    the optimizer's). The
    thread count is the setting's (fnn.set_num_threads), sized to a busy machine where
    none is fixed.
    Returns an EpochResult; raises what the engine raises (KeyboardInterrupt between
    steps; data-parallel: StopIteration, RuntimeError)."""
    engine.set_optimizer(*optimizer._engine_args(), optimizer.steps,
                         optimizer._running_product())
    if dropout_seed is not None:
        engine.seed_dropout(dropout_seed)
    threads, adapt = _threads.get_num_threads(), _threads.adapts_to_load()
    n = X.shape[0] if order is None else order.shape[0]
    if step_rows is not None or pieces <= 1:
        spans = [(0, n)]
    else:
        per_piece = batch_size * max(1, -(-n // batch_size) // pieces)
        spans = [(first, min(n, first + per_piece)) for first in range(0, n, per_piece)]
    loss_sum = 0.0
    for first, last in spans:
        if order is not None:
            rows = (X, targets, labels, order[first:last] if len(spans) > 1 else order,
                    weights)
        else:
            rows = (X[first:last], _rows(targets, first, last), _rows(labels, first, last),
                    None, _rows(weights, first, last))
        X_part, targets_part, labels_part, order_part, weights_part = rows
        lr_part, momentum_part = (None if table is None else table[first // batch_size:]
                                  for table in schedule)
        try:
            part, failed = engine.train_epoch(
                X_part, targets_part, labels_part, order_part, batch_size, kind, n_run,
                threads, weights_part, step_rows, step_denoms, adapt=adapt,
                clip_norm=clip[0], clip_value=clip[1], step_lr=lr_part,
                step_momentum=momentum_part, copy_aside=first == 0)
            if engine.failure == "not restored":  # from the epoch's copy, up to here
                loss_sum, first = 0.0, 0
                X_all, targets_all, labels_all, order_all, weights_all = _epoch_rows(
                    X, targets, labels, order, weights, last)
                part, failed = engine.rerun_from_copy(
                    X_all, targets_all, labels_all, order_all, batch_size, kind, n_run,
                    threads, weights_all, clip_norm=clip[0], clip_value=clip[1],
                    step_lr=schedule[0], step_momentum=schedule[1])
        finally:
            optimizer.steps = engine.step
        if failed >= 0:
            return EpochResult(loss_sum + part, first // batch_size + failed,
                               engine.failure)
        loss_sum += part
        if after_piece is not None and len(spans) > 1:
            after_piece(last, part)
    return EpochResult(loss_sum, -1, None)


def _epoch_rows(X, targets, labels, order, weights, last):
    """(X, targets, labels, order, weights) of the epoch's rows [0, last)."""
    if order is not None:
        return X, targets, labels, order[:last], weights
    return (X[:last], _rows(targets, 0, last), _rows(labels, 0, last), None,
            _rows(weights, 0, last))


def _rows(array, first, last):
    return None if array is None else array[first:last]


def seed_for_dropout(rng, offset=0):
    """A seed for dropout's mask stream, drawn from the model's generator (offset: a
    data-parallel process's own stream from the shared draw)."""
    return (int(rng.integers(2**63)) + offset) % 2**64
