"""Inverted dropout: in training, each element is kept with probability 1 - p and scaled
by 1 / (1 - p), so the layer's expected output equals its input; outside training the
layer is the identity (the driver copies instead).

Masks come from splitmix64, a counter-based generator: the driver seeds it from the
model's numpy generator once per epoch, so a run is reproducible from the model's seed.
The mask is kept as the scale factors (0 or 1 / (1 - p)): backward is one multiply.
"""
from cython cimport floating
from libc.stdint cimport uint64_t



cdef enum:
    SPLITMIX_GAMMA = 0x9E3779B97F4A7C15  # also in csrc/dropout.h


cdef inline uint64_t dropout_advance(uint64_t state, Py_ssize_t size) noexcept nogil:
    """The generator's state after the masks of `size` elements (one draw per two)."""
    return state + <uint64_t> ((size + 1) // 2) * <uint64_t> SPLITMIX_GAMMA


cdef extern from "dropout.h":
    void fastnn_dropout_f(const float* z, float* a, float* mask, Py_ssize_t first,
                          Py_ssize_t count, float keep_scale, uint64_t threshold,
                          uint64_t state) noexcept nogil
    void fastnn_dropout_d(const double* z, double* a, double* mask, Py_ssize_t first,
                          Py_ssize_t count, double keep_scale, uint64_t threshold,
                          uint64_t state) noexcept nogil


cdef inline void dropout_forward_block(const floating* z, floating* a, floating* mask,
                                       Py_ssize_t n, Py_ssize_t m, Py_ssize_t c0,
                                       Py_ssize_t c1, double p, uint64_t state,
                                       Py_ssize_t row0) noexcept nogil:
    """a = z * mask with mask = 0 (probability p) or 1 / (1 - p) on columns [c0, c1) of an
    (n x m) block, rows row0 to row0 + n of the layer's (z, a and mask point at row0);
    mask is written there.

    Element e = i * m + j of the layer takes the low (e even) or high (e odd) 32 bits of
    draw e // 2 + 1 from `state` and is dropped when they are below p * 2^32 (so P(drop)
    = p to within 2^-32). A block's masks are therefore those of the whole layer,
    whichever thread draws them. (The loop is in csrc/dropout.h, built per instruction
    set.)
    """
    cdef Py_ssize_t i, o, first = row0 * m
    cdef floating keep_scale = <floating> (1.0 / (1.0 - p))
    cdef uint64_t threshold = <uint64_t> (p * 4294967296.0)
    if c0 == 0 and c1 == m:  # whole rows: one run of n * m elements
        n, m, c1 = 1, n * m, n * m
    for i in range(n):
        o = i * m + c0
        if floating is float:
            fastnn_dropout_f(z + o, a + o, mask + o, first + o, c1 - c0, keep_scale, threshold,
                             state)
        else:
            fastnn_dropout_d(z + o, a + o, mask + o, first + o, c1 - c0, keep_scale, threshold,
                             state)


cdef inline void dropout_forward(const floating* z, floating* a, floating* mask,
                                 Py_ssize_t size, double p, uint64_t* state) noexcept nogil:
    """The whole (size) block on one thread; advances `state` past its draws."""
    dropout_forward_block(z, a, mask, 1, size, 0, size, p, state[0], 0)
    state[0] = dropout_advance(state[0], size)


cdef inline void dropout_backward(const floating* g, const floating* mask, floating* dz,
                                  Py_ssize_t size) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(size):
        dz[i] = g[i] * mask[i]
