/* The Adam (without amsgrad), RMSprop, Adagrad, Adadelta, NAdam and momentum update loops
 * in C, so GCC builds them
 * for several instruction sets and picks one at first use (clones.h): they are bound by
 * sqrt and division, which AVX-512 does 4x wider than the baseline SSE2 build. Each loop
 * is the formula of csrc/_optimizers.pxd's header in the parameter's precision, and the
 * build sets -ffp-contract=off, so every clone gives bitwise the same results. */
#ifndef FASTNN_UPDATES_H
#define FASTNN_UPDATES_H
#include <math.h>
#include <stddef.h>

#include "clones.h"

#define FASTNN_ADAM(NAME, T, SQRT)                                                       \
    FASTNN_CLONED(NAME, (T *restrict p, const T *restrict g, T *restrict m,   \
                                   T *restrict v, ptrdiff_t n, T beta1, T beta2,        \
                                   T coupled, T decay, T step_size, T bc2_sqrt, T eps), \
        (p, g, m, v, n, beta1, beta2, coupled, decay, step_size, bc2_sqrt, eps), {      \
        for (ptrdiff_t i = 0; i < n; i++) {                                             \
            T old = p[i];                                                               \
            T d = g[i] + coupled * old;                                                 \
            m[i] = beta1 * m[i] + (1 - beta1) * d;                                      \
            v[i] = beta2 * v[i] + (1 - beta2) * d * d;                                  \
            p[i] = old * decay - step_size * (m[i] / (SQRT(v[i]) / bc2_sqrt + eps));    \
        }                                                                               \
    })

FASTNN_ADAM(fastnn_adam_f, float, sqrtf)
FASTNN_ADAM(fastnn_adam_d, double, sqrt)

/* RMSprop: v = alpha v + (1 - alpha) d^2; a likewise (centered); b = mu b + q (momentum) */
#define FASTNN_RMSPROP(NAME, T, SQRT)                                                    \
    FASTNN_CLONED(NAME, (T *restrict p, const T *restrict g, T *restrict sq,  \
                                   T *restrict buf, T *restrict avg, ptrdiff_t n, T lr,  \
                                   T alpha, T eps, T wd, T momentum, int centered,       \
                                   int use_momentum),                                   \
        (p, g, sq, buf, avg, n, lr, alpha, eps, wd, momentum, centered, use_momentum), {\
        for (ptrdiff_t i = 0; i < n; i++) {                                             \
            T d = g[i] + wd * p[i];                                                     \
            sq[i] = alpha * sq[i] + (1 - alpha) * d * d;                                \
            T var = sq[i];                                                              \
            if (centered) {                                                             \
                avg[i] = alpha * avg[i] + (1 - alpha) * d;                              \
                var = sq[i] - avg[i] * avg[i];                                          \
            }                                                                           \
            T q = d / (SQRT(var) + eps);                                                \
            if (use_momentum) {                                                         \
                buf[i] = momentum * buf[i] + q;                                         \
                q = buf[i];                                                             \
            }                                                                           \
            p[i] = p[i] - lr * q;                                                       \
        }                                                                               \
    })

/* Adagrad: s = s + d^2; p -= clr d / (sqrt(s) + eps) */
#define FASTNN_ADAGRAD(NAME, T, SQRT)                                                    \
    FASTNN_CLONED(NAME, (T *restrict p, const T *restrict g, T *restrict total, \
                                   ptrdiff_t n, T clr, T wd, T eps),                    \
        (p, g, total, n, clr, wd, eps), {                                               \
        for (ptrdiff_t i = 0; i < n; i++) {                                             \
            T d = g[i] + wd * p[i];                                                     \
            total[i] = total[i] + d * d;                                                \
            p[i] = p[i] - clr * (d / (SQRT(total[i]) + eps));                           \
        }                                                                               \
    })

/* SGD with momentum, after the GEMM has added the gradient into the (scaled) buffer c:
 * c += decay p (weight decay), then p += step c. A plain loop, not BLAS's axpy: OpenBLAS's
 * AVX2 (Haswell) axpy rounds its vector body (fused multiply-adds) and its tail
 * differently, so an entry's result would depend on where a call over a thread's span
 * began, and a plan run on fewer threads (longer spans) would differ by an ulp. */
#define FASTNN_MOMENTUM(NAME, T)                                                         \
    FASTNN_CLONED(NAME, (T *restrict p, T *restrict c, ptrdiff_t n, T decay,  \
                                   T step),                                             \
        (p, c, n, decay, step), {                                                       \
        for (ptrdiff_t i = 0; i < n; i++) {                                             \
            T b = decay != 0 ? c[i] + decay * p[i] : c[i];                              \
            c[i] = b;                                                                   \
            p[i] = p[i] + step * b;                                                     \
        }                                                                               \
    })

/* Adadelta: v = rho v + (1 - rho) d^2; q = sqrt(u + eps) / sqrt(v + eps) d;
 * u = rho u + (1 - rho) q^2; p -= lr q */
#define FASTNN_ADADELTA(NAME, T, SQRT)                                                   \
    FASTNN_CLONED(NAME, (T *restrict p, const T *restrict g, T *restrict sq,             \
                         T *restrict acc, ptrdiff_t n, T lr, T rho, T eps, T wd),         \
        (p, g, sq, acc, n, lr, rho, eps, wd), {                                          \
        for (ptrdiff_t i = 0; i < n; i++) {                                             \
            T d = g[i] + wd * p[i];                                                     \
            sq[i] = sq[i] * rho + (1 - rho) * d * d;                                    \
            T q = SQRT(acc[i] + eps) / SQRT(sq[i] + eps) * d;                           \
            acc[i] = acc[i] * rho + (1 - rho) * q * q;                                  \
            p[i] = p[i] - lr * q;                                                       \
        }                                                                               \
    })

/* NAdam: m moves toward d by (1 - beta1), v = beta2 v + (1 - beta2) d^2;
 * p = p decay + grad_step d / den + m_step m / den, den = sqrt(v / bc2) + eps */
#define FASTNN_NADAM(NAME, T, SQRT)                                                      \
    FASTNN_CLONED(NAME, (T *restrict p, const T *restrict g, T *restrict m,              \
                         T *restrict v, ptrdiff_t n, T beta1, T beta2, T coupled,         \
                         T decay, T bc2, T eps, T grad_step, T m_step),                   \
        (p, g, m, v, n, beta1, beta2, coupled, decay, bc2, eps, grad_step, m_step), {    \
        for (ptrdiff_t i = 0; i < n; i++) {                                             \
            T old = p[i];                                                               \
            T d = g[i] + coupled * old;                                                 \
            m[i] = m[i] + (1 - beta1) * (d - m[i]);                                     \
            v[i] = v[i] * beta2 + (1 - beta2) * d * d;                                  \
            T den = SQRT(v[i] / bc2) + eps;                                             \
            p[i] = old * decay + grad_step * d / den + m_step * m[i] / den;             \
        }                                                                               \
    })

FASTNN_MOMENTUM(fastnn_momentum_f, float)
FASTNN_MOMENTUM(fastnn_momentum_d, double)
FASTNN_RMSPROP(fastnn_rmsprop_f, float, sqrtf)
FASTNN_RMSPROP(fastnn_rmsprop_d, double, sqrt)
FASTNN_ADAGRAD(fastnn_adagrad_f, float, sqrtf)
FASTNN_ADAGRAD(fastnn_adagrad_d, double, sqrt)
FASTNN_ADADELTA(fastnn_adadelta_f, float, sqrtf)
FASTNN_ADADELTA(fastnn_adadelta_d, double, sqrt)
FASTNN_NADAM(fastnn_nadam_f, float, sqrtf)
FASTNN_NADAM(fastnn_nadam_d, double, sqrt)
#endif
