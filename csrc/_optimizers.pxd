"""Fused in-place optimizer updates following torch.optim, folded into the gradient.

The weight-gradient product G = dL/dW comes out of a GEMM, C = alpha * G + beta * C,
so an optimizer chooses where that product lands (`gradient_destination`) and then
finishes the update in at most one pass over the parameter (`optimizer_finish`):

  SGD, momentum = 0:  C = p,      alpha = -lr, beta = 1 - lr * weight_decay: no pass left.
  SGD, momentum, not nesterov:  C = buffer, alpha = 1 - dampening, beta = momentum (first
                      step: alpha = 1, beta = 0); pass: b += alpha * wd * p; p -= lr * b.
  anything else:      C = grad, alpha = 1, beta = 0; pass: the full update from grad.

`hyper` holds an optimizer's hyperparameters as doubles in the order its Python class
documents; `step` counts the updates already made (0 on the first, where torch creates
its state); state0..2 are per-parameter buffers of the parameter's size (unused: NULL).

SGD, hyper = (lr, momentum, dampening, nesterov, weight_decay), state0 = momentum buffer b:
    g = g + weight_decay * p
    b = g (first step) or momentum * b + (1 - dampening) * g
    g = g + momentum * b (nesterov) or b           (when momentum != 0)
    p = p - lr * g
"""
from cython cimport floating
from cython.parallel cimport prange

from _blas cimport axpy
from _kinds cimport SGD
from _parallel cimport threads_for

cdef enum Destination:
    TO_GRAD = 0
    TO_STATE0 = 1
    TO_PARAM = 2


cdef struct GradientDestination:
    int where           # a Destination
    double alpha
    double beta


cdef inline GradientDestination gradient_destination(int kind, const double* hyper,
                                                     long long step) noexcept nogil:
    """Where the product dL/dW of the coming update lands, and its alpha/beta."""
    cdef GradientDestination d
    d.where, d.alpha, d.beta = TO_GRAD, 1.0, 0.0
    if kind == SGD:
        if hyper[1] == 0:
            d.where, d.alpha, d.beta = TO_PARAM, -hyper[0], 1.0 - hyper[0] * hyper[4]
        elif hyper[3] == 0:
            d.where = TO_STATE0
            if step > 0:
                d.alpha, d.beta = 1.0 - hyper[2], hyper[1]
    return d


cdef inline void sgd_update(const double* hyper, long long step, floating* p,
                            const floating* g, floating* buf, Py_ssize_t n,
                            int n_threads) noexcept nogil:
    """The complete SGD update from a plain gradient g (torch.optim.SGD's algorithm)."""
    cdef floating lr = <floating> hyper[0]
    cdef floating momentum = <floating> hyper[1]
    cdef floating damp = 1 - <floating> hyper[2]
    cdef bint nesterov = hyper[3] != 0
    cdef floating wd = <floating> hyper[4]
    cdef bint first = step == 0
    cdef Py_ssize_t i
    cdef floating d
    cdef int nt = threads_for(n, n_threads)
    if momentum == 0:
        for i in prange(n, schedule="static", num_threads=nt):
            d = g[i] if wd == 0 else g[i] + wd * p[i]
            p[i] = p[i] - lr * d
        return
    for i in prange(n, schedule="static", num_threads=nt):
        d = g[i] if wd == 0 else g[i] + wd * p[i]
        if first:
            buf[i] = d
        else:
            buf[i] = momentum * buf[i] + damp * d
        if nesterov:
            d = d + momentum * buf[i]
        else:
            d = buf[i]
        p[i] = p[i] - lr * d


cdef inline void sgd_momentum_finish(const double* hyper, floating alpha, floating* p,
                                     floating* buf, Py_ssize_t n) noexcept nogil:
    """After buf = momentum * buf + alpha * g (the GEMM): fold in weight decay, step p.

    Two AXPYs rather than an OpenMP loop: this pass runs between GEMMs, and BLAS's own
    threads do it without waking a second thread pool to compete with BLAS's.
    """
    cdef floating decay = alpha * <floating> hyper[4]
    if decay != 0:
        axpy(<int> n, decay, p, buf)
    axpy(<int> n, -<floating> hyper[0], buf, p)


cdef inline void optimizer_finish(int kind, const double* hyper, long long step,
                                  GradientDestination dest, floating* p, const floating* g,
                                  floating* state0, floating* state1, floating* state2,
                                  Py_ssize_t n, int n_threads) noexcept nogil:
    """Complete the update of the n entries of p once the gradient product has landed
    where gradient_destination said."""
    if dest.where == TO_PARAM:
        return
    if kind == SGD:
        if dest.where == TO_STATE0:
            sgd_momentum_finish(hyper, <floating> dest.alpha, p, state0, n)
        else:
            sgd_update(hyper, step, p, g, state0, n, n_threads)


cdef inline void* destination_array(int where, void* param, void* grad,
                                    void* state0) noexcept nogil:
    """Which of a parameter's arrays a gradient product lands in (see the header)."""
    if where == TO_PARAM:
        return param
    if where == TO_STATE0:
        return state0
    return grad
