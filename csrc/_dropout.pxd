"""Inverted dropout: in training, each element is kept with probability 1 - p and scaled
by 1 / (1 - p), so the layer's expected output equals its input; outside training the
layer is the identity (the driver copies instead).

Masks come from splitmix64, a counter-based generator: the driver seeds it from the
model's numpy generator once per epoch, so a run is reproducible from the model's seed.
The mask is kept as the scale factors (0 or 1 / (1 - p)): backward is one multiply.
"""
from cython cimport floating
from libc.stdint cimport uint64_t

from _mathf cimport select


cdef inline uint64_t splitmix64(uint64_t* state) noexcept nogil:
    cdef uint64_t z
    state[0] += <uint64_t> 0x9E3779B97F4A7C15
    z = state[0]
    z = (z ^ (z >> 30)) * <uint64_t> 0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * <uint64_t> 0x94D049BB133111EB
    return z ^ (z >> 31)


cdef inline void dropout_forward(const floating* z, floating* a, floating* mask,
                                 Py_ssize_t size, double p, uint64_t* state) noexcept nogil:
    """a = z * mask with mask = 0 (probability p) or 1 / (1 - p); mask is written.

    Each 64-bit draw gives two 32-bit uniforms: an element is dropped when its uniform
    is below p * 2^32 (so P(drop) = p to within 2^-32).
    """
    cdef Py_ssize_t i
    cdef floating keep_scale = <floating> (1.0 / (1.0 - p))
    cdef uint64_t threshold = <uint64_t> (p * 4294967296.0), r = 0
    cdef uint64_t low32 = 4294967295
    for i in range(size):
        if i % 2 == 0:
            r = splitmix64(state)
        else:
            r = r >> 32
        mask[i] = select((r & low32) >= threshold, keep_scale, <floating> 0)
    for i in range(size):
        a[i] = z[i] * mask[i]


cdef inline void dropout_backward(const floating* g, const floating* mask, floating* dz,
                                  Py_ssize_t size) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(size):
        dz[i] = g[i] * mask[i]
