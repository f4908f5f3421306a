"""Activation kernels: forward a = f(z) and backward dz = g * f'(z), over n rows of width m.

Backward takes both the input z and the output a and reads whichever gives the exact
derivative: ReLU/LeakyReLU from the sign of z, sigmoid and tanh from a, GELU, SiLU, ELU
and Softplus in float64 from z by torch's own derivative formulas (so float64 agrees with
torch to rounding); in float32 these four run vmath.h's vectorized loops, GELU and SiLU
taking Phi(z) or the logistic s(z) from a / z. Softmax works row by row (max-shifted, so
large logits do not overflow). NaN propagates as in torch. `slope` is the kind's one setting (LeakyReLU's negative slope,
ELU's alpha, Softplus's beta); `threshold` is Softplus's: where beta z exceeds it, the
output is z itself.
"""
from cython cimport floating
from libc.string cimport memcpy

from _kinds cimport (LayerKind, IDENTITY, RELU, LEAKY_RELU, SIGMOID, TANH, SOFTMAX, GELU,
                    GELU_TANH, SILU, ELU, SOFTPLUS)
from _mathf cimport fexp, fexpm1, ferfc, flog1p, ftanh, select

cdef extern from *:
    """
    /* GELU's constants, as torch's: 1/sqrt(2), 1/sqrt(2 pi), sqrt(2/pi), the cubic term */
    #define FASTNN_SQRT1_2 0.70710678118654752440
    #define FASTNN_INV_SQRT_2PI 0.39894228040143267794
    #define FASTNN_SQRT_2_OVER_PI 0.79788456080286535588
    #define FASTNN_GELU_KAPPA 0.044715
    """
    double SQRT1_2 "FASTNN_SQRT1_2"
    double INV_SQRT_2PI "FASTNN_INV_SQRT_2PI"
    double SQRT_2_OVER_PI "FASTNN_SQRT_2_OVER_PI"
    double GELU_KAPPA "FASTNN_GELU_KAPPA"


cdef extern from "vmath.h":
    void fastnn_sigmoid_loop_f(const float* z, float* a, Py_ssize_t n) noexcept nogil
    void fastnn_tanh_loop_f(const float* z, float* a, Py_ssize_t n) noexcept nogil
    void fastnn_gelu_loop_f(const float* z, float* a, Py_ssize_t n,
                            int tanh_form) noexcept nogil
    void fastnn_gelu_grad_loop_f(const float* z, const float* a, const float* g, float* dz,
                                 Py_ssize_t n, int tanh_form) noexcept nogil
    int SMOOTH_SILU "FASTNN_SMOOTH_SILU"
    int SMOOTH_ELU "FASTNN_SMOOTH_ELU"
    int SMOOTH_SOFTPLUS "FASTNN_SMOOTH_SOFTPLUS"
    void fastnn_smooth_loop_f(int kind, const float* z, float* a, Py_ssize_t n, float slope,
                              float threshold) noexcept nogil
    void fastnn_smooth_grad_loop_f(int kind, const float* z, const float* a, const float* g,
                                   float* dz, Py_ssize_t n, float slope,
                                   float threshold) noexcept nogil


cdef inline floating sigmoid(floating z) noexcept nogil:
    """1 / (1 + exp(-z)) as exp(-|z|) / (1 + exp(-|z|)) for z < 0: no overflow, no
    cancellation, and no branch (the activation loops vectorize)."""
    cdef floating e = fexp(select(z < 0, z, -z))
    cdef floating s = 1 / (1 + e)
    return select(z >= 0, s, e * s)


cdef inline void softmax_row(const floating* z, floating* a, Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating zmax = z[0]
    cdef floating total = 0
    for j in range(1, m):
        if z[j] > zmax:
            zmax = z[j]
    for j in range(m):  # apart from the sum, so this loop vectorizes
        a[j] = fexp(z[j] - zmax)
    for j in range(m):
        total += a[j]
    for j in range(m):
        a[j] /= total


cdef inline void softmax_row_backward(const floating* a, const floating* g, floating* dz,
                                      Py_ssize_t m) noexcept nogil:
    """dz_j = a_j * (g_j - sum_k g_k a_k): the softmax Jacobian applied to g."""
    cdef Py_ssize_t j
    cdef floating dot = 0
    for j in range(m):
        dot += g[j] * a[j]
    for j in range(m):
        dz[j] = a[j] * (g[j] - dot)


cdef inline floating normal_cdf(floating z) noexcept nogil:
    """Phi(z) = erfc(-z / sqrt 2) / 2: no cancellation in the lower tail (torch's
    (1 + erf(z / sqrt 2)) / 2 loses it), the same value elsewhere to rounding."""
    return 0.5 * ferfc(-z * <floating> SQRT1_2)


cdef inline floating gelu_tanh_inner(floating z) noexcept nogil:
    return <floating> SQRT_2_OVER_PI * (z + <floating> GELU_KAPPA * z * z * z)


cdef inline int smooth_kind(int kind) noexcept nogil:
    """vmath.h's code for SiLU, ELU or softplus (its float32 loops, per instruction set)."""
    return SMOOTH_SILU if kind == SILU else SMOOTH_ELU if kind == ELU else SMOOTH_SOFTPLUS


cdef inline void activation_forward(int kind, double slope, double threshold,
                                    const floating* z, floating* a, Py_ssize_t n,
                                    Py_ssize_t m) noexcept nogil:
    """a = f(z) elementwise (softmax: per row) for an (n x m) row-major block."""
    cdef Py_ssize_t i, size = n * m
    cdef floating s = <floating> slope
    if kind == IDENTITY:
        memcpy(a, z, size * sizeof(floating))
    elif kind == RELU:
        for i in range(size):
            a[i] = select(z[i] <= 0, <floating> 0, z[i])
    elif kind == LEAKY_RELU:
        for i in range(size):
            a[i] = select(z[i] > 0, z[i], s * z[i])
    elif kind == SIGMOID:
        if floating is float:  # the same formula, built per instruction set (vmath.h)
            fastnn_sigmoid_loop_f(z, a, size)
        else:
            for i in range(size):
                a[i] = sigmoid(z[i])
    elif kind == TANH:
        if floating is float:
            fastnn_tanh_loop_f(z, a, size)
        else:
            for i in range(size):
                a[i] = ftanh(z[i])
    elif kind == SOFTMAX:
        for i in range(n):
            softmax_row(z + i * m, a + i * m, m)
    elif kind == GELU or kind == GELU_TANH:
        if floating is float:  # per instruction set, Phi with its tail's accuracy (vmath.h)
            fastnn_gelu_loop_f(z, a, size, kind == GELU_TANH)
        elif kind == GELU:
            for i in range(size):
                a[i] = z[i] * normal_cdf(z[i])
        else:
            for i in range(size):
                a[i] = 0.5 * z[i] * (1 + ftanh(gelu_tanh_inner(z[i])))
    elif kind == SILU or kind == ELU or kind == SOFTPLUS:
        if floating is float:  # per instruction set (vmath.h)
            fastnn_smooth_loop_f(smooth_kind(kind), z, a, size, s, <float> threshold)
        elif kind == SILU:
            for i in range(size):
                a[i] = z[i] * sigmoid(z[i])
        elif kind == ELU:
            for i in range(size):
                a[i] = select(z[i] > 0, z[i], s * fexpm1(z[i]))
        else:
            for i in range(size):
                a[i] = select(z[i] * s > <floating> threshold, z[i],
                              flog1p(fexp(z[i] * s)) / s)


cdef inline void activation_backward(int kind, double slope, double threshold,
                                     const floating* z, const floating* a, const floating* g,
                                     floating* dz, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    """dz = dL/dz from g = dL/da, for an (n x m) block; softmax uses its row Jacobian."""
    cdef Py_ssize_t i, size = n * m
    cdef floating s = <floating> slope
    cdef floating t, e
    if kind == IDENTITY:
        memcpy(dz, g, size * sizeof(floating))
    elif kind == RELU:
        for i in range(size):
            dz[i] = select(z[i] > 0, g[i], <floating> 0)
    elif kind == LEAKY_RELU:
        for i in range(size):
            dz[i] = select(z[i] > 0, g[i], s * g[i])
    elif kind == SIGMOID:
        for i in range(size):
            dz[i] = g[i] * a[i] * (1 - a[i])
    elif kind == TANH:
        for i in range(size):
            dz[i] = g[i] * (1 - a[i] * a[i])
    elif kind == SOFTMAX:
        for i in range(n):
            softmax_row_backward(a + i * m, g + i * m, dz + i * m, m)
    elif kind == GELU or kind == GELU_TANH:
        if floating is float:
            fastnn_gelu_grad_loop_f(z, a, g, dz, size, kind == GELU_TANH)
        elif kind == GELU:  # Phi(z) + z phi(z)
            for i in range(size):
                dz[i] = g[i] * (normal_cdf(z[i])
                                + z[i] * fexp(-0.5 * z[i] * z[i]) * <floating> INV_SQRT_2PI)
        else:
            for i in range(size):
                t = ftanh(gelu_tanh_inner(z[i]))
                dz[i] = g[i] * (0.5 * (1 + t) + 0.5 * z[i] * (1 - t * t)
                                * <floating> SQRT_2_OVER_PI
                                * (1 + 3 * <floating> GELU_KAPPA * z[i] * z[i]))
    elif kind == SILU or kind == ELU or kind == SOFTPLUS:
        if floating is float:
            fastnn_smooth_grad_loop_f(smooth_kind(kind), z, a, g, dz, size, s,
                                      <float> threshold)
        elif kind == SILU:
            for i in range(size):
                t = sigmoid(z[i])
                dz[i] = g[i] * t * (1 + z[i] * (1 - t))
        elif kind == ELU:
            for i in range(size):
                dz[i] = select(z[i] > 0, g[i], g[i] * s * fexp(z[i]))
        else:
            for i in range(size):
                e = fexp(z[i] * s)
                dz[i] = select(z[i] * s > <floating> threshold, g[i], g[i] * e / (e + 1))
