"""LayerNorm's row kernels (layernorm.h, per instruction set with the same bits on each),
typed for float and double: the engine's passes (csrc/engine/layernorm.pxi) run them on
their threads' rows, and _kernels calls them on one thread for the tests and benchmarks.

Row formulas (torch.nn.LayerNorm over the last dimension, biased variance): xhat = (x -
mean) invstd, y = xhat gamma + beta; backward, with g = dL/dy: dgamma = sum over rows of
g xhat, dbeta = sum of g, dx = A (gamma g), A = invstd (I - 1 1^T / m - xhat xhat^T / m)
the Jacobian of xhat.
"""
from cython cimport floating


cdef extern from "layernorm.h" nogil:
    # the row loops, per instruction set with the same bits on each (see the header)
    void fastnn_ln_rows_f(const float* x, float* y, const float* gamma, const float* beta,
                          double eps, float* mean, float* invstd, Py_ssize_t n, Py_ssize_t m)
    void fastnn_ln_rows_d(const double* x, double* y, const double* gamma,
                          const double* beta, double eps, double* mean, double* invstd,
                          Py_ssize_t n, Py_ssize_t m)
    void fastnn_ln_backward_rows_f(const float* x, const float* g, const float* mean,
                                   const float* invstd, const float* gamma, float* part,
                                   float* part_beta, float* out, Py_ssize_t n, Py_ssize_t m)
    void fastnn_ln_backward_rows_d(const double* x, const double* g, const double* mean,
                                   const double* invstd, const double* gamma, double* part,
                                   double* part_beta, double* out, Py_ssize_t n,
                                   Py_ssize_t m)
    void fastnn_ln_project_f(const float* x, const float* mean, const float* invstd,
                             const float* v, const float* scale, float* out, Py_ssize_t n,
                             Py_ssize_t m)
    void fastnn_ln_project_d(const double* x, const double* mean, const double* invstd,
                             const double* v, const double* scale, double* out,
                             Py_ssize_t n, Py_ssize_t m)


cdef inline void ln_rows(const floating* x, floating* y, const floating* gamma,
                         const floating* beta, double eps, floating* mean, floating* invstd,
                         Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    """n rows' moments (kept unless mean is NULL) and, unless y is NULL, y = xhat gamma +
    beta."""
    if floating is float:
        fastnn_ln_rows_f(x, y, gamma, beta, eps, mean, invstd, n, m)
    else:
        fastnn_ln_rows_d(x, y, gamma, beta, eps, mean, invstd, n, m)


cdef inline void ln_project(const floating* x, const floating* mean, const floating* invstd,
                            const floating* v, const floating* scale, floating* out,
                            Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    """out = A (scale v) for n rows, A the Jacobian of xhat (scale NULL: 1)."""
    if floating is float:
        fastnn_ln_project_f(x, mean, invstd, v, scale, out, n, m)
    else:
        fastnn_ln_project_d(x, mean, invstd, v, scale, out, n, m)


cdef inline void ln_backward_rows(const floating* x, const floating* g, const floating* mean,
                                  const floating* invstd, const floating* gamma,
                                  floating* part, floating* part_beta, floating* out,
                                  Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    """One block's sums over its n rows of g xhat (part) and g (part_beta), per feature,
    and unless out is NULL its rows' input gradients A (gamma g), each row read once."""
    if floating is float:
        fastnn_ln_backward_rows_f(x, g, mean, invstd, gamma, part, part_beta, out, n, m)
    else:
        fastnn_ln_backward_rows_d(x, g, mean, invstd, gamma, part, part_beta, out, n, m)
