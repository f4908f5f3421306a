/* Adam's update loop (no amsgrad) in C, so GCC can build it for several instruction sets
 * and pick one at load time (target_clones): the loop is bound by sqrt and division,
 * which AVX-512 does 4x wider than the baseline SSE2 build. The operations and their order
 * are those of the Cython loop it replaces, and the build sets -ffp-contract=off, so every
 * clone gives bitwise the same results. */
#ifndef FASTNN_ADAM_H
#define FASTNN_ADAM_H
#include <math.h>
#include <stddef.h>

#include "clones.h"

#define FASTNN_ADAM(NAME, T, SQRT)                                                       \
    FASTNN_CLONES static void NAME(T *restrict p, const T *restrict g, T *restrict m,   \
                                   T *restrict v, ptrdiff_t n, T beta1, T beta2,        \
                                   T coupled, T decay, T step_size, T bc2_sqrt, T eps) {  \
        for (ptrdiff_t i = 0; i < n; i++) {                                             \
            T old = p[i];                                                               \
            T d = g[i] + coupled * old;                                                 \
            m[i] = beta1 * m[i] + (1 - beta1) * d;                                      \
            v[i] = beta2 * v[i] + (1 - beta2) * d * d;                                  \
            p[i] = old * decay - step_size * (m[i] / (SQRT(v[i]) / bc2_sqrt + eps));    \
        }                                                                               \
    }

FASTNN_ADAM(fastnn_adam_f, float, sqrtf)
FASTNN_ADAM(fastnn_adam_d, double, sqrt)
#endif
