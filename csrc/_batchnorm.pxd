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
the same call with the pointers offset to its first feature.
"""
from cython cimport floating
from libc.math cimport sqrt


cdef inline void batchnorm_train_forward(const floating* x, floating* y, const floating* gamma,
                                         const floating* beta, floating* mean,
                                         floating* invstd, floating* running_mean,
                                         floating* running_var, Py_ssize_t n, Py_ssize_t m,
                                         Py_ssize_t ld, double eps, double momentum) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef floating d, scale, shift
    for j in range(m):
        mean[j] = 0
        invstd[j] = 0  # holds the sum of squared deviations until the last loop
    for i in range(n):
        for j in range(m):
            mean[j] += x[i * ld + j]
    for j in range(m):
        mean[j] /= n
    for i in range(n):
        for j in range(m):
            d = x[i * ld + j] - mean[j]
            invstd[j] += d * d
    for j in range(m):
        running_mean[j] = (1 - momentum) * running_mean[j] + momentum * mean[j]
        running_var[j] = (1 - momentum) * running_var[j] + momentum * invstd[j] / (n - 1)
        invstd[j] = <floating> (1 / sqrt(invstd[j] / n + eps))
    for i in range(n):
        for j in range(m):
            scale = invstd[j] if gamma == NULL else gamma[j] * invstd[j]
            shift = 0 if beta == NULL else beta[j]
            y[i * ld + j] = (x[i * ld + j] - mean[j]) * scale + shift


cdef inline void batchnorm_eval_forward(const floating* x, floating* y, const floating* gamma,
                                        const floating* beta, const floating* running_mean,
                                        const floating* running_var, Py_ssize_t n,
                                        Py_ssize_t m, Py_ssize_t ld, double eps) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef floating scale, shift
    for i in range(n):
        for j in range(m):
            scale = <floating> (1 / sqrt(running_var[j] + eps))
            if gamma != NULL:
                scale = gamma[j] * scale
            shift = 0 if beta == NULL else beta[j]
            y[i * ld + j] = (x[i * ld + j] - running_mean[j]) * scale + shift


cdef inline void batchnorm_backward(const floating* x, const floating* g, const floating* gamma,
                                    const floating* mean, const floating* invstd,
                                    floating* dgamma, floating* dbeta, floating* dx,
                                    Py_ssize_t n, Py_ssize_t m, Py_ssize_t ld) noexcept nogil:
    """dgamma, dbeta (m) always; dx (n x m) unless NULL. Uses the training statistics."""
    cdef Py_ssize_t i, j
    cdef floating xhat, k
    for j in range(m):
        dgamma[j] = 0
        dbeta[j] = 0
    for i in range(n):
        for j in range(m):
            xhat = (x[i * ld + j] - mean[j]) * invstd[j]
            dgamma[j] += g[i * ld + j] * xhat
            dbeta[j] += g[i * ld + j]
    if dx == NULL:
        return
    for i in range(n):
        for j in range(m):
            xhat = (x[i * ld + j] - mean[j]) * invstd[j]
            k = invstd[j] if gamma == NULL else gamma[j] * invstd[j]
            dx[i * ld + j] = k / n * (n * g[i * ld + j] - dbeta[j] - xhat * dgamma[j])


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
