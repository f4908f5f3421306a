/* Branch-free float32 exp and tanh that the compiler can vectorize (glibc's expf and
 * tanhf are scalar calls; tanhf costs ~15 ns an element here). float64 keeps libm.
 *
 * exp: x = n ln2 + r with |r| <= ln2/2, exp(r) by Cephes' degree-7 polynomial, 2^n built
 * in the exponent bits. Inputs are clamped to [-88, 88]: exp(-88) returns 0 (2^-127 is
 * dropped rather than made subnormal) and exp(88) = 1.65e38; callers only use exp where
 * such values saturate (sigmoid, tanh, softmax). NaN propagates (with no undefined
 * behaviour on the way). Relative error < 2e-7.
 * tanh: Cephes' odd polynomial for |x| < 0.625, else 1 - 2 / (exp(2|x|) + 1).
 */
#ifndef FASTNN_VMATH_H
#define FASTNN_VMATH_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "clones.h"

static inline float fastnn_expf(float x) {
    const float log2e = 1.44269504088896341f;
    const float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
    const float round_magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float n, r, p, scale;
    int32_t bits;
    x = x > 88.0f ? 88.0f : x;
    x = x < -88.0f ? -88.0f : x;
    n = (x * log2e + round_magic) - round_magic;
    r = x - n * ln2_hi - n * ln2_lo;
    p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    /* NaN input: p is NaN already; n must still convert to an int without undefined
     * behaviour (float-to-int of NaN, then a shift of a negative value) */
    n = n == n ? n : 0.0f;
    bits = (int32_t) ((uint32_t) ((int32_t) n + 127) << 23);
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float fastnn_tanhf(float x) {
    float a = x < 0 ? -x : x;
    float z = x * x;
    float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z
                    + 1.33314422036e-1f) * z - 3.33332819422e-1f) * z * x + x;
    float large = 1.0f - 2.0f / (fastnn_expf(2.0f * a) + 1.0f);
    large = x < 0 ? -large : large;
    return a < 0.625f ? small : large;
}
/* The float32 sigmoid and tanh passes over n elements, built per instruction set: the
 * polynomial exp is ~20 operations an element, which AVX-512 does 16 at a time.
 * sigmoid(z) = 1 / (1 + exp(-z)), as exp(z) / (1 + exp(z)) for z < 0 (no overflow). */
FASTNN_CLONED(fastnn_sigmoid_loop_f, (const float *z, float *a, ptrdiff_t n),
        (z, a, n), {
    for (ptrdiff_t i = 0; i < n; i++) {
        float zi = z[i];
        float e = fastnn_expf(zi < 0 ? zi : -zi);
        float s = (float) (1.0 / (1.0 + (double) e)); /* in double, as Cython's loop did */
        a[i] = zi >= 0 ? s : e * s;
    }
})

FASTNN_CLONED(fastnn_tanh_loop_f, (const float *z, float *a, ptrdiff_t n),
        (z, a, n), {
    for (ptrdiff_t i = 0; i < n; i++)
        a[i] = fastnn_tanhf(z[i]);
})
#endif
