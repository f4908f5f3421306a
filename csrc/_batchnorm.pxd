"""BatchNorm1d kernels over an (n x m) block, features in columns, as torch.nn.BatchNorm1d.

Training: per feature, mean and biased variance over the n rows,
    xhat = (x - mean) / sqrt(var + eps),  y = gamma * xhat + beta,
    running_mean = (1 - momentum) running_mean + momentum mean,
    running_var  = (1 - momentum) running_var  + momentum var * n / (n - 1)   (unbiased).
Evaluation: y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta.
Backward (training), with g = dL/dy, sums over the rows:
    dgamma = sum g xhat,  dbeta = sum g,
    dx = gamma / sqrt(var + eps) / n * (n g - dbeta - xhat dgamma).
gamma/beta may be NULL (affine=False: 1 and 0). Rows are walked in order and the
per-feature sums kept in m-long arrays, so the inner loops run along contiguous memory.
Each kernel works on m features of rows `ld` apart: a block of the engine's features is
the same call with the pointers offset to its first feature. The loops over the rows are
C functions built for several instruction sets (batchnorm.h); the per-feature steps stay
here.
"""
from cython cimport floating
from libc.math cimport sqrt


cdef extern from "batchnorm.h":
    void fastnn_bn_colsum_f(const float* x, float* sum, Py_ssize_t n, Py_ssize_t m,
                            Py_ssize_t ld) noexcept nogil
    void fastnn_bn_colsum_d(const double* x, double* sum, Py_ssize_t n, Py_ssize_t m,
                            Py_ssize_t ld) noexcept nogil
    void fastnn_bn_colsqdev_f(const float* x, const float* mean, float* sq, Py_ssize_t n,
                              Py_ssize_t m, Py_ssize_t ld) noexcept nogil
    void fastnn_bn_colsqdev_d(const double* x, const double* mean, double* sq, Py_ssize_t n,
                              Py_ssize_t m, Py_ssize_t ld) noexcept nogil
    void fastnn_bn_normalize_f(const float* x, float* y, const float* mean,
                               const float* invstd, const float* gamma, const float* beta,
                               Py_ssize_t n, Py_ssize_t m, Py_ssize_t ld) noexcept nogil
    void fastnn_bn_normalize_d(const double* x, double* y, const double* mean,
                               const double* invstd, const double* gamma, const double* beta,
                               Py_ssize_t n, Py_ssize_t m, Py_ssize_t ld) noexcept nogil
    void fastnn_bn_grad_sums_f(const float* x, const float* g, const float* mean,
                               const float* invstd, float* dgamma, float* dbeta, Py_ssize_t n,
                               Py_ssize_t m, Py_ssize_t ld) noexcept nogil
    void fastnn_bn_grad_sums_d(const double* x, const double* g, const double* mean,
                               const double* invstd, double* dgamma, double* dbeta,
                               Py_ssize_t n, Py_ssize_t m, Py_ssize_t ld) noexcept nogil
    void fastnn_bn_grad_input_f(const float* x, const float* g, const float* mean,
                                const float* invstd, const float* gamma, const float* dgamma,
                                const float* dbeta, float* dx, Py_ssize_t n,
                                Py_ssize_t count, Py_ssize_t m, Py_ssize_t ld) noexcept nogil
    void fastnn_bn_grad_input_d(const double* x, const double* g, const double* mean,
                                const double* invstd, const double* gamma,
                                const double* dgamma, const double* dbeta, double* dx,
                                Py_ssize_t n, Py_ssize_t count, Py_ssize_t m,
                                Py_ssize_t ld) noexcept nogil
    void fastnn_bn_eval_f(const float* x, float* y, const float* gamma, const float* beta,
                          const float* rmean, const float* rvar, Py_ssize_t n, Py_ssize_t m,
                          Py_ssize_t ld, double eps) noexcept nogil
    void fastnn_bn_eval_d(const double* x, double* y, const double* gamma, const double* beta,
                          const double* rmean, const double* rvar, Py_ssize_t n, Py_ssize_t m,
                          Py_ssize_t ld, double eps) noexcept nogil


cdef inline void bn_colsum(const floating* x, floating* sum, Py_ssize_t n, Py_ssize_t m,
                           Py_ssize_t ld) noexcept nogil:
    """sum[j] += x[i, j] over n rows (batchnorm.h)."""
    if floating is float:
        fastnn_bn_colsum_f(x, sum, n, m, ld)
    else:
        fastnn_bn_colsum_d(x, sum, n, m, ld)


cdef inline void bn_colsqdev(const floating* x, const floating* mean, floating* sq,
                             Py_ssize_t n, Py_ssize_t m, Py_ssize_t ld) noexcept nogil:
    """sq[j] += (x[i, j] - mean[j])^2 over n rows (batchnorm.h)."""
    if floating is float:
        fastnn_bn_colsqdev_f(x, mean, sq, n, m, ld)
    else:
        fastnn_bn_colsqdev_d(x, mean, sq, n, m, ld)


cdef inline void bn_normalize(const floating* x, floating* y, const floating* mean,
                              const floating* invstd, const floating* gamma,
                              const floating* beta, Py_ssize_t n, Py_ssize_t m,
                              Py_ssize_t ld) noexcept nogil:
    """y = (x - mean) gamma invstd + beta on n rows (batchnorm.h)."""
    if floating is float:
        fastnn_bn_normalize_f(x, y, mean, invstd, gamma, beta, n, m, ld)
    else:
        fastnn_bn_normalize_d(x, y, mean, invstd, gamma, beta, n, m, ld)


cdef inline void bn_grad_sums(const floating* x, const floating* g, const floating* mean,
                              const floating* invstd, floating* dgamma, floating* dbeta,
                              Py_ssize_t n, Py_ssize_t m, Py_ssize_t ld) noexcept nogil:
    """dgamma[j] += g xhat, dbeta[j] += g over n rows (batchnorm.h)."""
    if floating is float:
        fastnn_bn_grad_sums_f(x, g, mean, invstd, dgamma, dbeta, n, m, ld)
    else:
        fastnn_bn_grad_sums_d(x, g, mean, invstd, dgamma, dbeta, n, m, ld)


cdef inline void bn_grad_input(const floating* x, const floating* g, const floating* mean,
                               const floating* invstd, const floating* gamma,
                               const floating* dgamma, const floating* dbeta, floating* dx,
                               Py_ssize_t n, Py_ssize_t count, Py_ssize_t m,
                               Py_ssize_t ld) noexcept nogil:
    """dx on n rows of a batch of `count` rows (batchnorm.h)."""
    if floating is float:
        fastnn_bn_grad_input_f(x, g, mean, invstd, gamma, dgamma, dbeta, dx, n, count, m, ld)
    else:
        fastnn_bn_grad_input_d(x, g, mean, invstd, gamma, dgamma, dbeta, dx, n, count, m, ld)


cdef inline void batchnorm_train_forward(const floating* x, floating* y, const floating* gamma,
                                         const floating* beta, floating* mean,
                                         floating* invstd, floating* running_mean,
                                         floating* running_var, Py_ssize_t n, Py_ssize_t m,
                                         Py_ssize_t ld, double eps, double momentum) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(m):
        mean[j] = 0
        invstd[j] = 0  # holds the sum of squared deviations until the last loop
    bn_colsum(x, mean, n, m, ld)
    for j in range(m):
        mean[j] /= n
    bn_colsqdev(x, mean, invstd, n, m, ld)
    for j in range(m):
        running_mean[j] = (1 - momentum) * running_mean[j] + momentum * mean[j]
        running_var[j] = (1 - momentum) * running_var[j] + momentum * invstd[j] / (n - 1)
        invstd[j] = <floating> (1 / sqrt(invstd[j] / n + eps))
    bn_normalize(x, y, mean, invstd, gamma, beta, n, m, ld)


cdef inline void batchnorm_eval_forward(const floating* x, floating* y, const floating* gamma,
                                        const floating* beta, const floating* running_mean,
                                        const floating* running_var, Py_ssize_t n,
                                        Py_ssize_t m, Py_ssize_t ld, double eps) noexcept nogil:
    if floating is float:
        fastnn_bn_eval_f(x, y, gamma, beta, running_mean, running_var, n, m, ld, eps)
    else:
        fastnn_bn_eval_d(x, y, gamma, beta, running_mean, running_var, n, m, ld, eps)


cdef inline void batchnorm_backward(const floating* x, const floating* g, const floating* gamma,
                                    const floating* mean, const floating* invstd,
                                    floating* dgamma, floating* dbeta, floating* dx,
                                    Py_ssize_t n, Py_ssize_t m, Py_ssize_t ld) noexcept nogil:
    """dgamma, dbeta (m) always; dx (n x m) unless NULL. Uses the training statistics."""
    cdef Py_ssize_t j
    for j in range(m):
        dgamma[j] = 0
        dbeta[j] = 0
    bn_grad_sums(x, g, mean, invstd, dgamma, dbeta, n, m, ld)
    if dx != NULL:
        bn_grad_input(x, g, mean, invstd, gamma, dgamma, dbeta, dx, n, n, m, ld)


cdef inline void batchnorm_eval_backward(const floating* x, const floating* g,
                                         const floating* gamma, const floating* running_mean,
                                         const floating* running_var, floating* dgamma,
                                         floating* dbeta, floating* dx, Py_ssize_t n,
                                         Py_ssize_t m, Py_ssize_t ld, double eps) noexcept nogil:
    """Backward of the evaluation transform (an affine map per feature)."""
    cdef Py_ssize_t i, j
    cdef floating invstd, xhat
    for j in range(m):
        dgamma[j] = 0
        dbeta[j] = 0
    for i in range(n):
        for j in range(m):
            invstd = <floating> (1 / sqrt(running_var[j] + eps))
            xhat = (x[i * ld + j] - running_mean[j]) * invstd
            dgamma[j] += g[i * ld + j] * xhat
            dbeta[j] += g[i * ld + j]
            if dx != NULL:
                dx[i * ld + j] = g[i * ld + j] * (invstd if gamma == NULL else gamma[j] * invstd)
