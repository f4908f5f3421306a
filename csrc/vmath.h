/* Branch-free float32 exp, expm1, log1p, tanh and the normal CDF that the compiler can
 * vectorize (glibc's expf, expm1f, log1pf and tanhf are scalar calls: 9-15 ns an element
 * here), and the float32 activation loops built on them. float64 keeps libm.
 *
 * exp: x = n ln2 + r with |r| <= ln2/2, exp(r) by Cephes' degree-7 polynomial, 2^n built
 * in the exponent bits. Inputs are clamped to [-88, 88]: exp(-88) returns 0 (2^-127 is
 * dropped rather than made subnormal) and exp(88) = 1.65e38; callers only use exp where
 * such values saturate (sigmoid, tanh, softmax, GELU, SiLU, ELU, softplus). NaN
 * propagates (with no undefined behaviour on the way). Relative error < 2e-7.
 * expm1: the same reduction; for |x| <= ln2/2 the polynomial's exp(r) - 1 itself (no 1
 * added, so no cancellation near 0), else exp(x) - 1.
 * log1p(u), 0 <= u <= 1: 2 atanh(u / (2 + u)) by its odd series.
 * tanh: Cephes' odd polynomial for |x| < 0.625, else 1 - 2 / (exp(2|x|) + 1).
 * Phi (the normal CDF, GELU's): from erfc(a) = t exp(-a^2 + P(t)), t = 1 / (1 + a / 2), P
 * the degree-9 Chebyshev fit of Numerical Recipes (relative error < 1.2e-7): Phi(x) =
 * erfc(|x| / sqrt 2) / 2 for x < 0, 1 - that for x >= 0, so the small tail keeps its
 * relative accuracy (1 + erf(x) in float32 would cancel it away).
 */
#ifndef FASTNN_VMATH_H
#define FASTNN_VMATH_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "clones.h"

/* exp(x) = 2^n (1 + q), |r| <= ln2/2: returns q = exp(r) - 1 (to its relative accuracy:
 * no 1 added) and sets *scale = 2^n. */
static inline float fastnn_exp_parts(float x, float *scale) {
    const float log2e = 1.44269504088896341f;
    const float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
    const float round_magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float n, r, p;
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
    p = p * r * r + r;
    /* NaN input: p is NaN already; n must still convert to an int without undefined
     * behaviour (float-to-int of NaN, then a shift of a negative value) */
    n = n == n ? n : 0.0f;
    bits = (int32_t) ((uint32_t) ((int32_t) n + 127) << 23);
    memcpy(scale, &bits, sizeof *scale);
    return p;
}

static inline float fastnn_expf(float x) {
    float scale, q = fastnn_exp_parts(x, &scale);
    return (q + 1.0f) * scale;
}

/* exp(x) - 1 with its relative accuracy near 0: for |x| <= ln2/2 (n = 0) it is q itself */
static inline float fastnn_expm1f(float x) {
    float scale, q = fastnn_exp_parts(x, &scale);
    return scale == 1.0f ? q : (q + 1.0f) * scale - 1.0f;
}

/* log(1 + u) for 0 <= u <= 1: 2 atanh(s), s = u / (2 + u) <= 1/3, by its odd series to
 * s^15 (the first term left out is below 2e-9 relative) */
static inline float fastnn_log1p_unit(float u) {
    float s = u / (2.0f + u), s2 = s * s;
    float p = 1.0f / 15.0f;
    p = p * s2 + 1.0f / 13.0f;
    p = p * s2 + 1.0f / 11.0f;
    p = p * s2 + 1.0f / 9.0f;
    p = p * s2 + 1.0f / 7.0f;
    p = p * s2 + 1.0f / 5.0f;
    p = p * s2 + 1.0f / 3.0f;
    return 2.0f * (s + s * s2 * p);
}

/* the logistic function in float: exp(-|z|) / (1 + exp(-|z|)) for z < 0 (no overflow) */
static inline float fastnn_logisticf(float z) {
    float e = fastnn_expf(z < 0 ? z : -z);
    float s = 1.0f / (1.0f + e);
    return z >= 0 ? s : e * s;
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
static inline float fastnn_normal_cdff(float x) {
    float a = (x < 0 ? -x : x) * 0.70710678118654752440f;
    float t = 1.0f / (1.0f + 0.5f * a);
    float p = 0.17087277f;
    p = p * t - 0.82215223f;
    p = p * t + 1.48851587f;
    p = p * t - 1.13520398f;
    p = p * t + 0.27886807f;
    p = p * t - 0.18628806f;
    p = p * t + 0.09678418f;
    p = p * t + 0.37409196f;
    p = p * t + 1.00002368f;
    p = p * t - 1.26551223f;
    float tail = 0.5f * t * fastnn_expf(p - a * a);
    return x < 0 ? tail : 1.0f - tail;
}

/* GELU's float32 passes: exact, z Phi(z), and its derivative Phi(z) + z phi(z); or torch's
 * tanh form, a = z (1 + t) / 2 with t = tanh(y), y = k (z + c z^3), and its derivative.
 * Both tanh-form passes use (1 + t) / 2 = s(2 y), s the logistic function: the forward
 * z s(2 y), the derivative s(2 y) + 2 z s(2 y) s(-2 y) k (1 + 3 c z^2) (1 - t^2 = 4 s(2 y)
 * s(-2 y)): one exp and one division an entry, and no cancellation as t nears 1 or -1.
 * The exact form's derivative takes Phi(z) = a / z from the forward's output a
 * (fastnn_half_factor) and computes phi's exp alone (Phi again cost 1.8 ns an entry:
 * bench/bench_norm_traffic.py). */
#define FASTNN_EXP_MAX 1.6516363e38f  /* fastnn_expf(88), what it gives for x >= 88 */
/* f(z) = a / z for a = z f(z) where f(0) = 1/2 (GELU's Phi, SiLU's logistic): 1/2 where
 * |z| < 1e-8 (a / z would lose its digits there; f is within half an ulp of 1/2). */
static inline float fastnn_half_factor(float a, float z) {
    int tiny = (z < 0 ? -z : z) < 1e-8f;
    return tiny ? 0.5f : a / (tiny ? 1.0f : z);
}
enum { FASTNN_SMOOTH_SILU, FASTNN_SMOOTH_ELU, FASTNN_SMOOTH_SOFTPLUS };
FASTNN_CLONED(fastnn_gelu_loop_f, (const float *z, float *a, ptrdiff_t n, int tanh_form),
        (z, a, n, tanh_form), {
    if (tanh_form)  /* two loops: one with both forms computes both, and costs their sum */
        for (ptrdiff_t i = 0; i < n; i++) {
            float x = z[i];
            float inner = 0.79788456080286535588f * (x + 0.044715f * x * x * x);
            float e = fastnn_expf(-2.0f * inner);
            /* (1 + tanh(y)) / 2 = 1 / (1 + exp(-2 y)); exp's clamp at 88 stands for
             * infinity, where the logistic is 0 (so z = -inf gives NaN, as z (1 + t) / 2) */
            a[i] = x * (e >= FASTNN_EXP_MAX ? 0.0f : 1.0f / (1.0f + e));
        }
    else
        for (ptrdiff_t i = 0; i < n; i++)
            a[i] = z[i] * fastnn_normal_cdff(z[i]);
})

FASTNN_CLONED(fastnn_gelu_grad_loop_f, (const float *z, const float *a, const float *g,
                                        float *dz, ptrdiff_t n, int tanh_form),
        (z, a, g, dz, n, tanh_form), {
    if (tanh_form)
        for (ptrdiff_t i = 0; i < n; i++) {
            float x = z[i];
            float y = 0.79788456080286535588f * (x + 0.044715f * x * x * x);
            float e = fastnn_expf(y < 0 ? 2.0f * y : -2.0f * y);
            float up = 1.0f / (1.0f + e), down = e * up; /* s(2|y|) and s(-2|y|) */
            dz[i] = g[i] * ((y < 0 ? down : up) + 2.0f * x * (up * down)
                            * 0.79788456080286535588f * (1.0f + 3.0f * 0.044715f * x * x));
        }
    else
        for (ptrdiff_t i = 0; i < n; i++) {
            float x = z[i];
            float phi_cdf = fastnn_half_factor(a[i], x);
            dz[i] = g[i] * (phi_cdf
                            + x * fastnn_expf(-0.5f * x * x) * 0.39894228040143267794f);
        }
})

/* SiLU's, ELU's and softplus's float32 passes, built per instruction set (libm's scalar
 * expf, expm1f and log1pf cost 9-10 ns an entry here; bench/bench_norm_traffic.py prints
 * what these cost). slope is ELU's alpha or softplus's beta; past beta z > threshold,
 * softplus is z.
 * SiLU: a = z s(z), s the logistic function; a' = s (1 + z (1 - s)), s = a / z from the
 * forward's output (fastnn_half_factor).
 * ELU: alpha expm1(z) for z <= 0; a' = alpha exp(z) (from z: alpha + a cancels where
 * exp(z) is small).
 * softplus: log(1 + exp(x)) / beta, x = beta z, as (max(x, 0) + log1p(exp(-|x|))) /
 * beta (no overflow, and exp(-|x|) <= 1 for the series above); a' = s(x). */
FASTNN_CLONED(fastnn_smooth_loop_f, (int kind, const float *z, float *a, ptrdiff_t n,
                                     float slope, float threshold),
        (kind, z, a, n, slope, threshold), {
    if (kind == FASTNN_SMOOTH_SILU)  /* a loop per kind: one loop would compute all three */
        for (ptrdiff_t i = 0; i < n; i++)
            a[i] = z[i] * fastnn_logisticf(z[i]);
    else if (kind == FASTNN_SMOOTH_ELU)
        for (ptrdiff_t i = 0; i < n; i++)
            a[i] = z[i] > 0 ? z[i] : slope * fastnn_expm1f(z[i]);
    else
        for (ptrdiff_t i = 0; i < n; i++) {
            float x = z[i] * slope;
            float soft = ((x > 0 ? x : 0.0f) + fastnn_log1p_unit(fastnn_expf(x < 0 ? x : -x)))
                         / slope;
            a[i] = x > threshold ? z[i] : soft;
        }
})

FASTNN_CLONED(fastnn_smooth_grad_loop_f, (int kind, const float *z, const float *a,
                                          const float *g, float *dz, ptrdiff_t n,
                                          float slope, float threshold),
        (kind, z, a, g, dz, n, slope, threshold), {
    if (kind == FASTNN_SMOOTH_SILU)
        for (ptrdiff_t i = 0; i < n; i++) {
            float x = z[i];
            float s = fastnn_half_factor(a[i], x);
            dz[i] = g[i] * s * (1.0f + x * (1.0f - s));
        }
    else if (kind == FASTNN_SMOOTH_ELU)
        for (ptrdiff_t i = 0; i < n; i++)
            dz[i] = z[i] > 0 ? g[i] : g[i] * slope * fastnn_expf(z[i]);
    else
        for (ptrdiff_t i = 0; i < n; i++) {
            float x = z[i] * slope;
            dz[i] = x > threshold ? g[i] : g[i] * fastnn_logisticf(x);
        }
})

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
