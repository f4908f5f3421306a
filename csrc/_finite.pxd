"""Finiteness checks over raw rows, shared by the kernels (fastnn._validation's check of X
and targets) and the engine (predicts check X's rows as their threads read them)."""
from cython cimport floating
from libc.stdint cimport uint32_t, uint64_t


cdef inline bint all_finite(const floating* x, Py_ssize_t n) noexcept nogil:
    """Whether x[0:n] are all finite: their exponent bits are never all ones, or-ed over
    integer views (which vectorizes, unlike a float reduction)."""
    cdef const uint32_t* w32 = <const uint32_t*> x
    cdef const uint64_t* w64 = <const uint64_t*> x
    cdef uint32_t bad32 = 0
    cdef uint64_t bad64 = 0
    cdef Py_ssize_t i
    if floating is double:
        for i in range(n):
            bad64 |= <uint64_t> ((w64[i] & 0x7ff0000000000000ULL) == 0x7ff0000000000000ULL)
        return bad64 == 0
    for i in range(n):
        bad32 |= <uint32_t> ((w32[i] & 0x7f800000U) == 0x7f800000U)
    return bad32 == 0


cdef inline Py_ssize_t first_nonfinite(const floating* x, Py_ssize_t rows,
                                       Py_ssize_t width) noexcept nogil:
    """The first of `rows` rows (of `width` values) holding NaN or inf, or -1: one pass
    over all of them, and a second row by row only when one is there."""
    cdef Py_ssize_t i
    if all_finite(x, rows * width):
        return -1
    for i in range(rows):
        if not all_finite(x + i * width, width):
            return i
    return -1
