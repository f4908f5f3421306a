"""Affine (Dense) layer kernels: out = x @ W.T + b and its backward pass.

W has torch's layout, (n_out, n_in), row-major. Each kernel allocates nothing and
calls BLAS from the calling thread only (never inside an OpenMP region); the bias
broadcast is the only elementwise work and runs over OpenMP threads when large.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcpy

from _blas cimport gemm, gemv
from _parallel cimport threads_for


cdef inline void dense_forward(const floating* x, const floating* weight, const floating* bias,
                               floating* out, int n, int n_in, int n_out,
                               int n_threads) noexcept nogil:
    """out (n x n_out) = x (n x n_in) @ weight.T + bias; bias may be NULL.

    The bias is broadcast into `out` first and the product added with beta = 1: one
    write pass instead of BLAS zeroing `out` (beta = 0) and a second read-write pass.
    """
    cdef Py_ssize_t i
    cdef floating beta = 0
    if bias != NULL:
        for i in prange(n, schedule="static", num_threads=threads_for(n * n_out, n_threads)):
            memcpy(out + i * n_out, bias, n_out * sizeof(floating))
        beta = 1
    gemm(False, True, n, n_out, n_in, <floating> 1, x, n_in, weight, n_in, beta, out, n_out)


cdef inline void dense_backward(const floating* x, const floating* weight,
                                const floating* grad_out, floating* grad_x,
                                floating* dest_weight, floating* dest_bias,
                                floating alpha, floating beta, floating beta_bias,
                                const floating* ones, int n, int n_in,
                                int n_out) noexcept nogil:
    """Backward pass of an affine layer from grad_out = dL/d(out), (n x n_out).

    grad_x      = grad_out @ weight                                  (n x n_in), if not NULL
    dest_weight = alpha * grad_out.T @ x    + beta * dest_weight     (n_out x n_in)
    dest_bias   = alpha * grad_out.T @ ones + beta_bias * dest_bias  (n_out), if not NULL

    alpha/beta let the product land where it is consumed: beta = 1 accumulates a
    gradient over chunks, and an optimizer can fold its update into the product (plain
    SGD: dest = weight itself, alpha = -lr). grad_x is therefore computed first, while
    weight still holds the values of the forward pass. ones holds at least n ones.
    """
    if grad_x != NULL:
        gemm(False, False, n, n_in, n_out, <floating> 1, grad_out, n_out, weight, n_in,
             <floating> 0, grad_x, n_in)
    gemm(True, False, n_out, n_in, n, alpha, grad_out, n_out, x, n_in, beta, dest_weight, n_in)
    if dest_bias != NULL:
        gemv(True, n, n_out, alpha, grad_out, n_out, ones, beta_bias, dest_bias)
