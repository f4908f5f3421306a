"""Python entry points to single kernels, so tests can hold each one against its NumPy
reference (fastnn/_reference.py). The training driver calls the same kernels directly."""
import numpy as np

from cython cimport floating
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from _activations cimport activation_backward, activation_forward
from _finite cimport first_nonfinite
from _layernorm cimport ln_backward_rows, ln_rows
from _batchnorm cimport batchnorm_backward, batchnorm_train_forward
from _blas cimport gemm as _gemm, gemv as _gemv
from _dense cimport dense_backward as _dense_backward, dense_forward as _dense_forward
from _dropout cimport dropout_backward as _dropout_backward, dropout_forward as _dropout_forward
from _losses cimport count_correct, loss_forward_backward
from _optimizers cimport (GradientDestination, TO_GRAD, TO_STATE0, destination_array,
                          gradient_destination, optimizer_finish)


def gemm(bint trans_a, bint trans_b, double alpha, const floating[:, :] a,
         const floating[:, :] b, double beta, floating[:, ::1] c):
    """c = alpha * op(a) @ op(b) + beta * c; a and b may be row-strided views (unit column
    stride), so the leading-dimension handling is exercised."""
    cdef int m = c.shape[0], n = c.shape[1]
    cdef int k = a.shape[0] if trans_a else a.shape[1]
    cdef int lda = <int> (a.strides[0] // sizeof(floating))
    cdef int ldb = <int> (b.strides[0] // sizeof(floating))
    if a.strides[1] != sizeof(floating) or b.strides[1] != sizeof(floating):
        raise ValueError("columns must be contiguous")
    with nogil:
        _gemm(trans_a, trans_b, m, n, k, <floating> alpha, &a[0, 0], lda, &b[0, 0], ldb,
              <floating> beta, &c[0, 0], n)


def gemv(bint trans_a, double alpha, const floating[:, ::1] a, const floating[::1] x,
         double beta, floating[::1] y):
    """y = alpha * op(a) @ x + beta * y."""
    with nogil:
        _gemv(trans_a, <int> a.shape[0], <int> a.shape[1], <floating> alpha, &a[0, 0],
              <int> a.shape[1], &x[0], <floating> beta, &y[0])


def dense_forward(const floating[:, ::1] x, const floating[:, ::1] weight,
                  const floating[::1] bias, floating[:, ::1] out):
    """out = x @ weight.T + bias (bias may be None)."""
    with nogil:
        _dense_forward(&x[0, 0], &weight[0, 0], NULL if bias is None else &bias[0], &out[0, 0],
                       <int> x.shape[0], <int> x.shape[1], <int> weight.shape[0],
                       <int> weight.shape[0])


def dense_backward(const floating[:, ::1] x, const floating[:, ::1] weight,
                   const floating[:, ::1] grad_out, floating[:, ::1] grad_x,
                   floating[:, ::1] dest_weight, floating[::1] dest_bias,
                   double alpha=1, double beta=0, beta_bias=None):
    """Affine-layer backward pass (grad_x and dest_bias may be None)."""
    cdef Py_ssize_t n = x.shape[0]
    cdef floating[::1] ones = np.ones(n, dtype=np.float32 if floating is float else np.float64)
    cdef double bias_beta = beta if beta_bias is None else beta_bias
    with nogil:
        _dense_backward(&x[0, 0], &weight[0, 0], &grad_out[0, 0],
                        NULL if grad_x is None else &grad_x[0, 0], &dest_weight[0, 0],
                        NULL if dest_bias is None else &dest_bias[0], <floating> alpha,
                        <floating> beta, <floating> bias_beta,
                        &ones[0],
                        <int> n, <int> x.shape[1], <int> weight.shape[0])


def activation(int kind, double slope, const floating[:, ::1] z, floating[:, ::1] a,
               double threshold=20.0):
    """a = f(z) for activation `kind`."""
    with nogil:
        activation_forward(kind, slope, threshold, &z[0, 0], &a[0, 0], z.shape[0], z.shape[1])


def activation_grad(int kind, double slope, const floating[:, ::1] z, const floating[:, ::1] a,
                    const floating[:, ::1] g, floating[:, ::1] dz, double threshold=20.0):
    """dz = dL/dz from g = dL/da."""
    with nogil:
        activation_backward(kind, slope, threshold, &z[0, 0], &a[0, 0], &g[0, 0], &dz[0, 0],
                            z.shape[0], z.shape[1])


def batchnorm_train(const floating[:, ::1] x, floating[:, ::1] y, const floating[::1] gamma,
                    const floating[::1] beta, floating[::1] mean, floating[::1] invstd,
                    floating[::1] running_mean, floating[::1] running_var, double eps,
                    double momentum):
    """Training-mode batch norm forward; writes y, the batch statistics and the running ones."""
    with nogil:
        batchnorm_train_forward(&x[0, 0], &y[0, 0], &gamma[0], &beta[0], &mean[0], &invstd[0],
                                &running_mean[0], &running_var[0], x.shape[0], x.shape[1],
                                x.shape[1], eps, momentum)


def batchnorm_train_grad(const floating[:, ::1] x, const floating[:, ::1] g,
                         const floating[::1] gamma, const floating[::1] mean,
                         const floating[::1] invstd, floating[::1] dgamma, floating[::1] dbeta,
                         floating[:, ::1] dx):
    """Training-mode batch norm backward: dgamma, dbeta and dx from g = dL/dy."""
    with nogil:
        batchnorm_backward(&x[0, 0], &g[0, 0], &gamma[0], &mean[0], &invstd[0], &dgamma[0],
                           &dbeta[0], &dx[0, 0], x.shape[0], x.shape[1], x.shape[1])


def layernorm_train(const floating[:, ::1] x, floating[:, ::1] y, const floating[::1] gamma,
                    const floating[::1] beta, floating[::1] mean, floating[::1] invstd,
                    double eps):
    """LayerNorm's forward over x's rows (gamma, beta None: 1, 0); writes y and each row's
    mean and 1 / std."""
    with nogil:
        ln_rows(&x[0, 0], &y[0, 0], NULL if gamma is None else &gamma[0],
                NULL if beta is None else &beta[0], eps, &mean[0], &invstd[0], x.shape[0],
                x.shape[1])


def layernorm_train_grad(const floating[:, ::1] x, const floating[:, ::1] g,
                         const floating[::1] gamma, const floating[::1] mean,
                         const floating[::1] invstd, floating[::1] dgamma, floating[::1] dbeta,
                         floating[:, ::1] dx):
    """LayerNorm's backward over x's rows as one block: dgamma, dbeta and dx from g = dL/dy
    (gamma None: 1)."""
    with nogil:
        ln_backward_rows(&x[0, 0], &g[0, 0], &mean[0], &invstd[0],
                         NULL if gamma is None else &gamma[0], &dgamma[0], &dbeta[0],
                         &dx[0, 0], x.shape[0], x.shape[1])


def dropout(const floating[:, ::1] z, floating[:, ::1] a, floating[:, ::1] mask,
            const floating[:, ::1] g, floating[:, ::1] dz, double p, uint64_t seed):
    """Training-mode dropout forward (a, mask) and backward (dz from g)."""
    cdef uint64_t state = seed
    cdef Py_ssize_t size = z.shape[0] * z.shape[1]
    with nogil:
        _dropout_forward(&z[0, 0], &a[0, 0], &mask[0, 0], size, p, &state)
        _dropout_backward(&g[0, 0], &mask[0, 0], &dz[0, 0], size)


def loss(int kind, const floating[:, ::1] out, const floating[:, ::1] targets,
         const int64_t[::1] labels, floating[:, ::1] grad, double scale,
         const floating[::1] weights=None, double setting=0.0):
    """(sum of losses, correct predictions), each row's weighted by `weights` when given;
    writes scale * gradient (times the row's weight) into grad unless it is None."""
    cdef double total, correct
    cdef const floating* t = NULL if targets is None else &targets[0, 0]
    cdef const int64_t* lab = NULL if labels is None else &labels[0]
    cdef const floating* w = NULL if weights is None else &weights[0]
    cdef floating* g = NULL if grad is None else &grad[0, 0]
    with nogil:
        total = loss_forward_backward(kind, setting, &out[0, 0], t, lab, w, g, out.shape[0],
                                      out.shape[1], <floating> scale)
        correct = count_correct(kind, &out[0, 0], t, lab, w, out.shape[0], out.shape[1])
    return total, correct


def optimizer_step(int kind, hyper_given, long long step, floating[::1] param,
                   const floating[::1] grad, floating[::1] state0=None,
                   floating[::1] state1=None, floating[::1] state2=None,
                   double l2=0, double mu_product=1.0):
    """One in-place update of `param` from the gradient `grad`, by the engine's route: the
    gradient lands where the optimizer asks (here C = alpha * grad + beta * C stands in
    for the GEMM that produces it), then the optimizer finishes its update."""
    cdef Py_ssize_t i, n = param.shape[0]
    padded = np.zeros(16)  # the engine's MAX_HYPER: trailing flags read 0
    padded[:len(hyper_given)] = hyper_given
    cdef double[::1] hyper = padded
    cdef GradientDestination dest = gradient_destination(kind, &hyper[0], step, l2, 1.0)
    cdef floating* s0 = NULL if state0 is None else &state0[0]
    cdef floating* target = <floating*> destination_array(dest.where, &param[0],
                                                          <floating*> &grad[0], s0)
    cdef floating alpha = <floating> dest.alpha, beta = <floating> dest.beta
    if dest.where != TO_GRAD:
        for i in range(n):
            target[i] = alpha * grad[i] + beta * target[i]
    with nogil:
        optimizer_finish(kind, &hyper[0], l2, step, mu_product, dest, &param[0], &grad[0], s0,
                         NULL if state1 is None else &state1[0],
                         NULL if state2 is None else &state2[0], n)
        if dest.where == TO_STATE0:  # back from the scaled buffer c to torch's b
            for i in range(n):
                s0[i] = s0[i] * <floating> dest.scale


def first_nonfinite_row(const floating[:, ::1] a):
    """Index of the first row of `a` holding NaN or inf, or -1 if every value is finite."""
    cdef Py_ssize_t first = -1
    if a.shape[0] == 0 or a.shape[1] == 0:
        return -1
    with nogil:
        first = first_nonfinite(&a[0, 0], a.shape[0], a.shape[1])
    return first


def gemm_floor_epoch(list widths, Py_ssize_t batch_size, Py_ssize_t n_samples, dtype,
                     X=None, bint forward_only=False):
    """Seconds for only the matrix products of one training epoch of an MLP with these
    layer widths (input first): per batch and layer, forward x @ W.T and weight gradient
    g.T @ x, plus the input gradient g @ W for every layer but the first, each one call
    through the same BLAS with its own threads (as set by fnn.set_num_threads); nothing
    else is done.

    With X (C-contiguous, n_samples x widths[0], of `dtype`), the first layer reads each
    batch's rows from X, as training does, instead of one block that stays in cache.
    forward_only: only the forward products (the floor of predict).
    """
    import numpy as np
    n_layers = len(widths) - 1
    rng = np.random.default_rng(0)
    acts = [rng.random((batch_size, w), dtype=np.float64).astype(dtype) for w in widths]
    grads = [np.array(a) for a in acts]
    weights = [rng.random((widths[l + 1], widths[l])).astype(dtype) for l in range(n_layers)]
    wgrads = [np.zeros_like(w) for w in weights]
    if X is not None and (X.dtype != np.dtype(dtype) or not X.flags.c_contiguous
                          or X.shape != (n_samples, widths[0])):
        raise ValueError("X must be C-contiguous (n_samples, widths[0]) of dtype")
    if np.dtype(dtype) == np.float32:
        return _floor_run[float](acts, grads, weights, wgrads, batch_size, n_samples, X,
                                 forward_only)
    return _floor_run[double](acts, grads, weights, wgrads, batch_size, n_samples, X,
                              forward_only)


cdef void* _address(arr):
    return <void*> <size_t> arr.__array_interface__["data"][0]


cdef double _floor_run(list acts, list grads, list weights, list wgrads,
                       Py_ssize_t batch_size, Py_ssize_t n_samples, X, bint forward_only,
                       floating tag=0):
    import time
    cdef Py_ssize_t n_layers = len(weights), start, l
    cdef int n, n_in, n_out
    cdef floating** a = <floating**> malloc((n_layers * 4 + 1) * sizeof(void*))
    cdef int* dims = <int*> malloc((n_layers + 1) * sizeof(int))
    cdef floating* data = NULL if X is None else <floating*> _address(X)
    cdef floating* inp
    for l in range(n_layers + 1):
        dims[l] = acts[l].shape[1]
    for l in range(n_layers):
        a[4 * l] = <floating*> _address(acts[l])
        a[4 * l + 1] = <floating*> _address(grads[l + 1])
        a[4 * l + 2] = <floating*> _address(weights[l])
        a[4 * l + 3] = <floating*> _address(wgrads[l])
    t0 = time.perf_counter()
    with nogil:
        start = 0
        while start < n_samples:
            n = <int> min(batch_size, n_samples - start)
            for l in range(n_layers):
                n_in, n_out = dims[l], dims[l + 1]
                inp = data + start * n_in if (l == 0 and data != NULL) else a[4 * l]
                # forward: the next layer's activation block (a[4(l+1)]) or the output
                _gemm(False, True, n, n_out, n_in, <floating> 1, inp, n_in, a[4 * l + 2],
                      n_in, <floating> 0, a[4 * l + 1], n_out)
            for l in range(n_layers - 1, -1, -1):
                if forward_only:
                    break
                n_in, n_out = dims[l], dims[l + 1]
                inp = data + start * n_in if (l == 0 and data != NULL) else a[4 * l]
                _gemm(True, False, n_out, n_in, n, <floating> 1, a[4 * l + 1], n_out, inp,
                      n_in, <floating> 0, a[4 * l + 3], n_in)
                if l > 0:
                    _gemm(False, False, n, n_in, n_out, <floating> 1, a[4 * l + 1], n_out,
                          a[4 * l + 2], n_in, <floating> 0, a[4 * (l - 1) + 1], n_in)
            start += n
    seconds = time.perf_counter() - t0
    free(a)
    free(dims)
    return seconds


include "engine/load_policy.pxi"


def stretch_threads_after(int k, int most, waited, int used, double wall, state):
    """The engine's threads_after (csrc/engine/load_policy.pxi), for tests: state is a
    dict of LoadState's fields, updated in place; returns the next stretch's threads."""
    cdef long long w[256]
    cdef LoadState s
    memset(&s, 0, sizeof(s))
    s.threads, s.calm, s.patience = k, state["calm"], state["patience"]
    s.trying, s.step_s = state["trying"], 0
    for t in range(used):
        w[t] = waited[t]
    k = threads_after(k, most, w, used, wall, &s)
    state.update(calm=s.calm, patience=s.patience, trying=s.trying)
    return k


def helped_threads_after(int k, int most, waited, double wall, long long handed_in,
                         long long retaken, state):
    """The engine's after_helped (csrc/engine/load_policy.pxi), for tests: state is a dict
    of HelpPolicy's solo, patience, probing, avoid_cpu and lead_cpu, updated in place;
    returns the next stretch's threads."""
    cdef long long w[256]
    cdef LoadState s
    cdef HelpPolicy h
    memset(&s, 0, sizeof(s))
    memset(&h, 0, sizeof(h))
    h.solo, h.patience, h.probing = state["solo"], state["patience"], state["probing"]
    h.avoid_cpu, h.lead_cpu = state["avoid_cpu"], state["lead_cpu"]
    for t in range(len(waited)):
        w[t] = waited[t]
    k = after_helped(k, most, w, len(waited), wall, handed_in, retaken, &s, &h)
    state.update(solo=h.solo, patience=h.patience, avoid_cpu=h.avoid_cpu, probing=h.probing)
    return k
