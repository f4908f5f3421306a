"""Affine (Dense) layer kernels: out = x @ W.T + b and its backward pass, on blocks.

W has torch's layout, (n_out, n_in), row-major. The engine's threads each own a tile
of a layer's products (csrc/_engine.pyx, point 3: rows of the batch by output units, and
of W units by inputs), so every kernel takes a block: pointers offset to its first row,
unit or column and the row strides of the full arrays.
Each kernel allocates nothing and makes one-thread BLAS calls from the calling thread.
"""
from cython cimport floating
from libc.string cimport memcpy

from _blas cimport gemm, gemv


cdef inline void dense_forward(const floating* x, const floating* weight, const floating* bias,
                               floating* out, int n, int n_in, int units,
                               int ld_out) noexcept nogil:
    """out[:, :units] (n rows, stride ld_out) = x (n x n_in) @ weight[:units].T + bias.

    The bias is broadcast into `out` first and the product added with beta = 1: one
    write pass instead of BLAS zeroing `out` (beta = 0) and a second read-write pass.
    """
    cdef Py_ssize_t i
    cdef floating beta = 0
    if units <= 0:
        return
    if bias != NULL:
        for i in range(n):
            memcpy(out + i * ld_out, bias, units * sizeof(floating))
        beta = 1
    gemm(False, True, n, units, n_in, <floating> 1, x, n_in, weight, n_in, beta, out, ld_out)


cdef inline void dense_input_grad(const floating* grad_out, const floating* weight,
                                  floating* grad_x, int n, int cols, int n_in,
                                  int n_out) noexcept nogil:
    """grad_x[:, :cols] = grad_out (n x n_out) @ weight[:, :cols]: a block of columns of the
    input gradient (weight and grad_x offset to the block's first column; strides n_in)."""
    if cols > 0:
        gemm(False, False, n, cols, n_out, <floating> 1, grad_out, n_out, weight, n_in,
             <floating> 0, grad_x, n_in)


cdef inline void dense_param_grad(const floating* x, const floating* grad_out,
                                  floating* dest_weight, floating* dest_bias, floating alpha,
                                  floating beta, floating beta_bias, const floating* ones,
                                  int n, int n_in, int units, int n_out,
                                  int cols) noexcept nogil:
    """For a tile of `units` output units by `cols` inputs (grad_out offset to its first
    unit's column, stride n_out; x to its first input's column and dest_weight to the
    tile's first entry, strides n_in; dest_bias to the first unit's entry):

    dest_weight = alpha * grad_out.T @ x    + beta * dest_weight     (units x cols)
    dest_bias   = alpha * grad_out.T @ ones + beta_bias * dest_bias  (units), if not NULL

    alpha/beta let the product land where it is consumed: beta = 1 accumulates a
    gradient over chunks, and an optimizer can fold its update into the product (plain
    SGD: dest = weight itself, alpha = -lr). ones holds at least n ones. cols = n_in is
    the whole rows of W.
    """
    if units <= 0:
        return
    if cols > 0:
        gemm(True, False, units, cols, n, alpha, grad_out, n_out, x, n_in, beta, dest_weight,
             n_in)
    if dest_bias != NULL:
        gemv(True, n, units, alpha, grad_out, n_out, ones, beta_bias, dest_bias)


cdef inline void dense_backward(const floating* x, const floating* weight,
                                const floating* grad_out, floating* grad_x,
                                floating* dest_weight, floating* dest_bias,
                                floating alpha, floating beta, floating beta_bias,
                                const floating* ones, int n, int n_in,
                                int n_out) noexcept nogil:
    """The whole layer's backward pass on one thread: grad_x = grad_out @ weight (if not
    NULL), computed first while weight still holds the forward pass's values, then
    dense_param_grad over all units."""
    if grad_x != NULL:
        dense_input_grad(grad_out, weight, grad_x, n, n_in, n_in, n_out)
    dense_param_grad(x, grad_out, dest_weight, dest_bias, alpha, beta, beta_bias, ones, n,
                     n_in, n_out, n_out, n_in)
