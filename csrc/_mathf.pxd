"""exp/log/tanh/erfc in the precision of the data.

float32 exp and tanh are branch-free versions (vmath.h) that the compiler vectorizes,
accurate to 2e-7 relative; float64 uses libm.
"""
from cython cimport floating
from libc.math cimport erfc, erfcf, exp, expm1, expm1f, log, logf, log1p, log1pf, tanh


cdef extern from "vmath.h":
    float fastnn_expf(float x) noexcept nogil
    float fastnn_tanhf(float x) noexcept nogil


cdef inline floating fexp(floating x) noexcept nogil:
    if floating is float:
        return fastnn_expf(x)
    else:
        return exp(x)


cdef inline floating fexpm1(floating x) noexcept nogil:
    if floating is float:
        return expm1f(x)
    else:
        return expm1(x)


cdef inline floating ferfc(floating x) noexcept nogil:
    if floating is float:
        return erfcf(x)
    else:
        return erfc(x)


cdef inline floating flog(floating x) noexcept nogil:
    if floating is float:
        return logf(x)
    else:
        return log(x)


cdef inline floating flog1p(floating x) noexcept nogil:
    if floating is float:
        return log1pf(x)
    else:
        return log1p(x)


cdef inline floating ftanh(floating x) noexcept nogil:
    if floating is float:
        return fastnn_tanhf(x)
    else:
        return tanh(x)


cdef extern from "select.h":
    float fastnn_select_f(int c, float a, float b) noexcept nogil
    double fastnn_select_d(int c, double a, double b) noexcept nogil


cdef inline floating select(bint c, floating a, floating b) noexcept nogil:
    """c ? a : b without a branch."""
    if floating is float:
        return fastnn_select_f(c, a, b)
    else:
        return fastnn_select_d(c, a, b)
