/* The row-by-row loops of BatchNorm1d's kernels (csrc/_batchnorm.pxd) in C, so GCC builds
 * them for several instruction sets and picks one at first use (clones.h). Each walks n
 * rows of m features, rows `ld` apart, and keeps per-feature sums in m-long arrays: the
 * inner loop runs along contiguous memory, one feature per vector lane, so a feature's
 * sum is still taken over the rows in order. With -ffp-contract=off every clone rounds
 * exactly as the Cython loops they replaced did (same operations, same order). x and y
 * of the two elementwise maps may be the same array (prediction works in place).
 *
 * Why: on 784-256-128-10 with BatchNorm1d at batch 512 (2 threads), perf put the Cython
 * loops, which GCC's baseline build vectorizes 4 floats wide, at about half of what batch
 * norm added to the epoch. */
#ifndef FASTNN_BATCHNORM_H
#define FASTNN_BATCHNORM_H
#include <math.h>
#include <stddef.h>

#include "clones.h"

/* Columns of the evaluation transform whose scale is computed at once (on the stack). */
#define FASTNN_BN_CHUNK 64

#define FASTNN_BATCHNORM(SUFFIX, T)                                                         \
    /* sum[j] += x[i, j] over the rows (the caller zeroes sum) */                           \
    FASTNN_CLONED(fastnn_bn_colsum_##SUFFIX, (                                    \
            const T *restrict x, T *restrict sum, ptrdiff_t n, ptrdiff_t m, ptrdiff_t ld), \
        (x, sum, n, m, ld), {                                                           \
        for (ptrdiff_t i = 0; i < n; i++)                                                   \
            for (ptrdiff_t j = 0; j < m; j++)                                               \
                sum[j] += x[i * ld + j];                                                    \
    })                                                                                       \
    /* sq[j] += (x[i, j] - mean[j])^2 over the rows (the caller zeroes sq) */               \
    FASTNN_CLONED(fastnn_bn_colsqdev_##SUFFIX, (                                  \
            const T *restrict x, const T *restrict mean, T *restrict sq, ptrdiff_t n,       \
            ptrdiff_t m, ptrdiff_t ld),                                                 \
        (x, mean, sq, n, m, ld), {                                                      \
        for (ptrdiff_t i = 0; i < n; i++)                                                   \
            for (ptrdiff_t j = 0; j < m; j++) {                                             \
                T d = x[i * ld + j] - mean[j];                                              \
                sq[j] += d * d;                                                             \
            }                                                                               \
    })                                                                                       \
    /* y = (x - mean) * (gamma invstd) + beta; gamma, beta may be NULL (1 and 0) */         \
    FASTNN_CLONED(fastnn_bn_normalize_##SUFFIX, (                                 \
            const T *x, T *y, const T *restrict mean,                                       \
            const T *restrict invstd, const T *restrict gamma, const T *restrict beta,      \
            ptrdiff_t n, ptrdiff_t m, ptrdiff_t ld),                                    \
        (x, y, mean, invstd, gamma, beta, n, m, ld), {                                  \
        for (ptrdiff_t i = 0; i < n; i++)                                                   \
            for (ptrdiff_t j = 0; j < m; j++) {                                             \
                T scale = gamma == NULL ? invstd[j] : gamma[j] * invstd[j];                 \
                T shift = beta == NULL ? (T) 0 : beta[j];                                   \
                y[i * ld + j] = (x[i * ld + j] - mean[j]) * scale + shift;                  \
            }                                                                               \
    })                                                                                       \
    /* dgamma[j] += g xhat, dbeta[j] += g, xhat = (x - mean) invstd (caller zeroes both) */ \
    FASTNN_CLONED(fastnn_bn_grad_sums_##SUFFIX, (                                 \
            const T *restrict x, const T *restrict g, const T *restrict mean,               \
            const T *restrict invstd, T *restrict dgamma, T *restrict dbeta, ptrdiff_t n,   \
            ptrdiff_t m, ptrdiff_t ld),                                                 \
        (x, g, mean, invstd, dgamma, dbeta, n, m, ld), {                                \
        for (ptrdiff_t i = 0; i < n; i++)                                                   \
            for (ptrdiff_t j = 0; j < m; j++) {                                             \
                T xhat = (x[i * ld + j] - mean[j]) * invstd[j];                             \
                dgamma[j] += g[i * ld + j] * xhat;                                          \
                dbeta[j] += g[i * ld + j];                                                  \
            }                                                                               \
    })                                                                                       \
    /* dx = k / N (N g - dbeta - xhat dgamma), k = gamma invstd (invstd if gamma NULL),    \
     * on n rows of a batch of N = batch rows */                                            \
    FASTNN_CLONED(fastnn_bn_grad_input_##SUFFIX, (                                \
            const T *restrict x, const T *restrict g, const T *restrict mean,               \
            const T *restrict invstd, const T *restrict gamma, const T *restrict dgamma,    \
            const T *restrict dbeta, T *restrict dx, ptrdiff_t n, ptrdiff_t batch,          \
            ptrdiff_t m, ptrdiff_t ld),                                                 \
        (x, g, mean, invstd, gamma, dgamma, dbeta, dx, n, batch, m, ld), {              \
        T count = (T) batch;                                                                \
        for (ptrdiff_t i = 0; i < n; i++)                                                   \
            for (ptrdiff_t j = 0; j < m; j++) {                                             \
                T xhat = (x[i * ld + j] - mean[j]) * invstd[j];                             \
                T k = gamma == NULL ? invstd[j] : gamma[j] * invstd[j];                     \
                dx[i * ld + j] = k / count * (count * g[i * ld + j] - dbeta[j]              \
                                              - xhat * dgamma[j]);                          \
            }                                                                               \
    })                                                                                       \
    /* evaluation: y = (x - running_mean) (gamma / sqrt(running_var + eps)) + beta, the     \
     * scale computed once per feature (in double, then rounded to T, as before) */         \
    FASTNN_CLONED(fastnn_bn_eval_##SUFFIX, (                                      \
            const T *x, T *y, const T *restrict gamma,                                      \
            const T *restrict beta, const T *restrict rmean, const T *restrict rvar,        \
            ptrdiff_t n, ptrdiff_t m, ptrdiff_t ld, double eps),                        \
        (x, y, gamma, beta, rmean, rvar, n, m, ld, eps), {                              \
        T scale[FASTNN_BN_CHUNK], shift[FASTNN_BN_CHUNK];                                   \
        for (ptrdiff_t j0 = 0; j0 < m; j0 += FASTNN_BN_CHUNK) {                             \
            ptrdiff_t w = m - j0 < FASTNN_BN_CHUNK ? m - j0 : FASTNN_BN_CHUNK;              \
            for (ptrdiff_t j = 0; j < w; j++) {                                             \
                scale[j] = (T) (1 / sqrt(rvar[j0 + j] + eps));                              \
                if (gamma != NULL)                                                          \
                    scale[j] = gamma[j0 + j] * scale[j];                                    \
                shift[j] = beta == NULL ? (T) 0 : beta[j0 + j];                             \
            }                                                                               \
            for (ptrdiff_t i = 0; i < n; i++)                                               \
                for (ptrdiff_t j = 0; j < w; j++)                                           \
                    y[i * ld + j0 + j] = (x[i * ld + j0 + j] - rmean[j0 + j]) * scale[j]    \
                                         + shift[j];                                        \
        }                                                                                   \
    })

FASTNN_BATCHNORM(f, float)
FASTNN_BATCHNORM(d, double)
#endif
