/* Dropout's mask loop in C, so GCC builds it for several instruction sets and picks one at
 * first use (clones.h): each element's mask needs its own splitmix64 draw (64-bit
 * multiplies), which the baseline x86-64 build does one at a time. The formula is
 * csrc/_dropout.pxd's: element e of the layer takes the low (e even) or high (e odd) 32
 * bits of draw e / 2 + 1 from `state`, is dropped when they are below `threshold`, and is
 * otherwise scaled by keep_scale. Integer arithmetic and one multiply by 0 or keep_scale:
 * every clone gives the same bits. */
#ifndef FASTNN_DROPOUT_H
#define FASTNN_DROPOUT_H
#include <stddef.h>
#include <stdint.h>

#include "clones.h"

#define FASTNN_DROPOUT(NAME, T)                                                          \
    FASTNN_CLONED(NAME, (const T *restrict z, T *restrict a, T *restrict mask, \
                                   ptrdiff_t first, ptrdiff_t count, T keep_scale,      \
                                   uint64_t threshold, uint64_t state),                 \
        (z, a, mask, first, count, keep_scale, threshold, state), {                     \
        for (ptrdiff_t k = 0; k < count; k++) {                                         \
            uint64_t e = (uint64_t)(first + k);                                         \
            uint64_t x = state + (e / 2 + 1) * 0x9E3779B97F4A7C15ULL;                   \
            x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;                                \
            x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;                                \
            x = (x ^ (x >> 31)) >> (32 * (e & 1));                                      \
            T s = (x & 0xFFFFFFFFULL) >= threshold ? keep_scale : (T)0;                  \
            mask[k] = s;                                                                \
            a[k] = z[k] * s;                                                            \
        }                                                                               \
    })

FASTNN_DROPOUT(fastnn_dropout_f, float)
FASTNN_DROPOUT(fastnn_dropout_d, double)
#endif
