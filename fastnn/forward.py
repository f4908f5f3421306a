"""Forward mode and reverse mode of a Sequential model's function (what predict computes),
and the input Jacobian. Sequential.jvp, vjp, jacobian and jvp_parameters delegate here;
the passes are compiled (csrc/engine/tangent.pxi) and run with the GIL released.

Forward mode carries a tangent along the forward pass: one pass per input direction.
Reverse mode carries a cotangent back from the outputs: one pass per output. So the input
Jacobian (n_outputs x n_features per row) costs n_features tangents by forward mode and
n_outputs cotangents by reverse mode; `jacobian(mode="auto")` takes the fewer. For a loss
(one output) of many parameters reverse mode (gradients) wins by the number of
parameters: examples/forward_vs_reverse.py measures both.

These are the bodies of those Sequential methods, kept in a file of their own: they read
the model's lock, widths and loss as its methods do.
"""
import numpy as np

from . import _engine, _kernels
from ._validation import check_finite_rows
from .losses import get_loss

__all__ = ["jvp", "vjp", "jacobian", "jvp_parameters"]

# values of rows x (1 + tangents per row) x widest layer held per chunk: about 32 MB
CHUNK_VALUES = 2**22


def _specs(model, n_layers=None):
    specs, width = [], model.n_features
    for layer in model._plan[:n_layers]:
        specs.append(layer._spec(width))
        width = layer.output_width(width)
    return specs


def _chunk(model, k):
    """Rows per chunk for k tangents (cotangents) per row."""
    return max(1, CHUNK_VALUES // ((1 + k) * model._widest))


def _directions(D, name, shape, like, dtype):
    """D as a C-contiguous array of `shape` (that of `like`) and the model's dtype,
    finite."""
    D = np.asarray(D)
    if D.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {D.dtype}")
    if D.shape != shape:
        raise ValueError(f"{name} must have shape {shape} (that of {like}), got {D.shape}")
    D = np.ascontiguousarray(D, dtype=dtype)
    if D.size:
        check_finite_rows(D.reshape(shape[0], -1), name)
    return D


def jvp(model, X, V):
    """(outputs, JV): predict's outputs at X and their derivative along V (shaped like
    X): JV[i] = J(X[i]) V[i], one forward pass carrying the tangent."""
    X = model._features(X)
    V = _directions(V, "V", X.shape, "X", model.dtype)
    with model._lock:
        return _engine.forward_mode(_specs(model), X, V, 1, _chunk(model, 1))


def vjp(model, X, U):
    """(outputs, U^T J): predict's outputs at X and, per row, U[i]^T J(X[i]) (shaped like
    X), U shaped like the outputs: one forward and one backward pass."""
    X = model._features(X)
    U = _directions(U, "U", (X.shape[0], model.n_outputs), "the outputs", model.dtype)
    with model._lock:
        return _engine.reverse_mode(_specs(model), X, U, 1, _chunk(model, 1))


def jacobian(model, X, mode="auto"):
    """Each row's input Jacobian, (n_samples, n_outputs, n_features): forward mode (a
    tangent per feature) or reverse mode (a cotangent per output); "auto" takes forward
    mode when there are fewer features than outputs. Rows go in chunks, so memory stays
    bounded beyond the result itself."""
    if mode not in ("auto", "forward", "reverse"):
        raise ValueError(f"mode must be 'auto', 'forward' or 'reverse', got {mode!r}")
    X = model._features(X, allow_empty=True)
    n, d, m = X.shape[0], model.n_features, model.n_outputs
    if mode == "auto":
        mode = "forward" if d < m else "reverse"
    if n == 0:
        return np.empty((0, m, d), dtype=model.dtype)
    with model._lock:
        if mode == "forward":  # tangent j of row i: the unit vector e_j
            V = np.ascontiguousarray(np.tile(np.eye(d, dtype=model.dtype), (n, 1)))
            _, JV = _engine.forward_mode(_specs(model), X, V, d, _chunk(model, d))
            return JV.reshape(n, d, m).transpose(0, 2, 1).copy()
        U = np.ascontiguousarray(np.tile(np.eye(m, dtype=model.dtype), (n, 1)))
        _, grad = _engine.reverse_mode(_specs(model), X, U, m, _chunk(model, m))
        return grad.reshape(n, m, d)


def jvp_parameters(model, X, y, directions, loss=None):
    """The derivative of the mean loss (plus the L2 penalty), as gradients() defines it,
    along a direction in parameter space (`directions`, shaped like parameters()), by
    one forward pass carrying the parameters' tangent. It equals
    sum(np.vdot(g, d) for g, d in zip(gradients(X, y), directions))."""
    loss = get_loss(model._loss_or_default(loss))
    X = model._features(X)
    params = model.parameters()
    directions = list(directions) if isinstance(directions, (list, tuple)) else None
    if directions is None or len(directions) != len(params):
        raise ValueError(f"directions must be a list of {len(params)} arrays shaped like "
                         f"parameters()")
    directions = [_directions(D, f"directions[{i}]", p.shape, f"parameters()[{i}]",
                              model.dtype) for i, (D, p) in enumerate(zip(directions, params))]
    kind, targets, labels = loss.prepare(y, X.shape[0], model.n_outputs, model.dtype)
    n_run = model._trained_layers(loss)
    per_layer, i = [], 0  # per layer run: (dW, db) or (dgamma, dbeta), or None
    for layer in model._plan[:n_run]:
        count = len(layer.parameters())
        per_layer.append(None if count == 0 else
                         (directions[i], directions[i + 1] if count > 1 else None))
        i += count
    with model._lock:
        out, tangent = _engine.forward_mode(_specs(model, n_run), X, None, 1,
                                             _chunk(model, 1), per_layer)
    grad = np.empty_like(out)
    n_out = out.shape[1]
    scale = 1.0 / loss.mean_divisor(X.shape[0], n_out)
    _kernels.loss(kind, out, targets, labels, grad, scale)
    total = float(np.vdot(grad, tangent))
    i = 0
    for layer in model._plan:  # the L2 penalty's share: its gradient 2 l2 W along dW
        if getattr(layer, "l2", 0):
            total += 2 * layer.l2 * float(np.vdot(params[i], directions[i]))
        i += len(layer.parameters())
    return total
