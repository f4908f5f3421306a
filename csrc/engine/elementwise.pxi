# Elementwise layer kinds (activations, dropout, identity): their passes on rows or
# columns of a block, in whatever layout the layer below left.

cdef void activation_cols(int kind, double slope, const floating* z, floating* a,
                          Py_ssize_t n, Py_ssize_t m, Py_ssize_t c0,
                          Py_ssize_t c1) noexcept nogil:
    """An elementwise activation on columns [c0, c1) of (n x m) blocks."""
    cdef Py_ssize_t i
    if c0 == 0 and c1 == m:
        activation_forward(kind, slope, z, a, n, m)
    elif c1 > c0:
        for i in range(n):
            activation_forward(kind, slope, z + i * m + c0, a + i * m + c0, 1, c1 - c0)


cdef void activation_grad_cols(int kind, double slope, const floating* z, const floating* a,
                               const floating* g, floating* dz, Py_ssize_t n, Py_ssize_t m,
                               Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    cdef Py_ssize_t i, o
    if c0 == 0 and c1 == m:
        activation_backward(kind, slope, z, a, g, dz, n, m)
    elif c1 > c0:
        for i in range(n):
            o = i * m + c0
            activation_backward(kind, slope, z + o, a + o, g + o, dz + o, 1, c1 - c0)


cdef void scale_cols(const floating* src, const floating* mask, floating* dst, Py_ssize_t n,
                     Py_ssize_t m, Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    """dst = src * mask (mask NULL: a copy) on columns [c0, c1) of (n x m) blocks."""
    cdef Py_ssize_t i, o
    for i in range(n):
        o = i * m + c0
        if mask == NULL:
            memcpy(dst + o, src + o, (c1 - c0) * sizeof(floating))
        else:
            dropout_backward(src + o, mask + o, dst + o, c1 - c0)


cdef void elementwise_forward(const LayerPlan* L, uint64_t rng, const floating* inp,
                             floating* out, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t m,
                             Py_ssize_t c0, Py_ssize_t c1, bint training) noexcept nogil:
    """An activation or dropout layer (masks drawn when `training`, else the identity) on
    rows [r0, r1) by columns [c0, c1) of (n x m) blocks."""
    if r1 <= r0 or c1 <= c0:
        return
    if L.kind == DROPOUT and training:
        dropout_forward_block(inp + r0 * m, out + r0 * m, <floating*> L.mask + r0 * m, r1 - r0,
                              m, c0, c1, L.slope, rng, r0)
    elif L.kind == DROPOUT:
        scale_cols(inp + r0 * m, <floating*> NULL, out + r0 * m, r1 - r0, m, c0, c1)
    else:
        activation_cols(L.kind, L.slope, inp + r0 * m, out + r0 * m, r1 - r0, m, c0, c1)


cdef void elementwise_backward(const LayerPlan* L, const floating* inp, const floating* g,
                              floating* grad_in, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t m,
                              Py_ssize_t c0, Py_ssize_t c1, bint training) noexcept nogil:
    """The input gradient of an activation or dropout layer (its forward pass's masks when
    `training`, else the identity) on rows [r0, r1) by columns [c0, c1)."""
    if r1 <= r0 or c1 <= c0:
        return
    if L.kind == DROPOUT:
        scale_cols(g + r0 * m, <floating*> L.mask + r0 * m if training else <floating*> NULL,
                   grad_in + r0 * m, r1 - r0, m, c0, c1)
    else:
        activation_grad_cols(L.kind, L.slope, inp + r0 * m, <floating*> L.out + r0 * m,
                             g + r0 * m, grad_in + r0 * m, r1 - r0, m, c0, c1)
