# The activations (ReLU, LeakyReLU, Sigmoid, Tanh, GELU, SiLU, ELU, Softplus; Softmax, which needs whole rows),
# Dropout and Identity: each kind's training passes, its predict and its tangents. An
# elementwise pass runs on the rows, columns or tiles the layer below left, with no
# barrier: each entry's value does not depend on how the entries are split.

cdef void activation_cols(const LayerPlan* L, const floating* z, floating* a, Py_ssize_t n,
                          Py_ssize_t m, Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    """L's elementwise activation on columns [c0, c1) of (n x m) blocks."""
    cdef Py_ssize_t i
    if c0 == 0 and c1 == m:
        activation_forward(L.kind, L.slope, L.threshold, z, a, n, m)
    elif c1 > c0:
        for i in range(n):
            activation_forward(L.kind, L.slope, L.threshold, z + i * m + c0,
                               a + i * m + c0, 1, c1 - c0)


cdef void activation_grad_cols(const LayerPlan* L, const floating* z, const floating* a,
                               const floating* g, floating* dz, Py_ssize_t n, Py_ssize_t m,
                               Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    cdef Py_ssize_t i, o
    if c0 == 0 and c1 == m:
        activation_backward(L.kind, L.slope, L.threshold, z, a, g, dz, n, m)
    elif c1 > c0:
        for i in range(n):
            o = i * m + c0
            activation_backward(L.kind, L.slope, L.threshold, z + o, a + o, g + o, dz + o, 1,
                                c1 - c0)


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
        activation_cols(L, inp + r0 * m, out + r0 * m, r1 - r0, m, c0, c1)


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
        activation_grad_cols(L, inp + r0 * m, <floating*> L.out + r0 * m,
                             g + r0 * m, grad_in + r0 * m, r1 - r0, m, c0, c1)


cdef void elementwise_forward_pass(LayerPlan* L, Pass* s, const floating* inp,
                                   floating* out) noexcept nogil:
    cdef const Part* p = s.p
    cdef Py_ssize_t m = L.n_out, r0, r1, c0, c1
    cdef int v
    if s.layout == COLS:
        span(p, m, UNIT_ALIGN, &c0, &c1)
        elementwise_forward(L, s.c.rng, inp, out, 0, s.n, m, c0, c1, s.training)
    elif s.layout == TILES:
        for v in range(p.v0, p.v1):
            tile(v, s.grid, p.nv, s.n, m, &r0, &r1, &c0, &c1)
            elementwise_forward(L, s.c.rng, inp, out, r0, r1, m, c0, c1, s.training)
    else:
        s.layout = ROWS
        span(p, s.n, 1, &r0, &r1)
        elementwise_forward(L, s.c.rng, inp, out, r0, r1, m, 0, m, s.training)
    if L.kind == DROPOUT and s.training:
        s.c.rng = dropout_advance(s.c.rng, s.n * m)


cdef void elementwise_backward_pass(LayerPlan* L, Pass* s, const floating* inp,
                                    const floating* g, floating* grad_in) noexcept nogil:
    cdef const Part* p = s.p
    cdef Py_ssize_t m = L.n_out, r0, r1, c0, c1
    cdef int v
    if s.layout == ROWS or s.layout == TILES:
        if grad_in != NULL and s.layout == TILES:
            for v in range(p.v0, p.v1):
                tile(v, s.grid, p.nv, s.n, m, &r0, &r1, &c0, &c1)
                elementwise_backward(L, inp, g, grad_in, r0, r1, m, c0, c1, s.training)
        elif grad_in != NULL:
            span(p, s.n, 1, &r0, &r1)
            elementwise_backward(L, inp, g, grad_in, r0, r1, m, 0, m, s.training)
        return
    pass_meet(s, COLS)
    span(p, m, UNIT_ALIGN, &c0, &c1)
    if grad_in != NULL:
        elementwise_backward(L, inp, g, grad_in, 0, s.n, m, c0, c1, s.training)
    s.layout = COLS


cdef void elementwise_predict(LayerPlan* L, const floating* inp, floating* dst,
                              Py_ssize_t n, int tid, int nt, int* layout) noexcept nogil:
    """Thread tid of nt's columns of a predict (dst may be inp: in place)."""
    cdef Py_ssize_t m = L.n_out, c0, c1
    sync(layout, COLS, nt)
    share(m, tid, nt, UNIT_ALIGN, &c0, &c1)
    if L.kind == DROPOUT or L.kind == IDENTITY:
        if dst != inp:
            scale_cols(inp, <floating*> NULL, dst, n, m, c0, c1)
    else:
        activation_cols(L, inp, dst, n, m, c0, c1)
    layout[0] = COLS


cdef void softmax_forward_pass(LayerPlan* L, Pass* s, const floating* inp,
                               floating* out) noexcept nogil:
    cdef Py_ssize_t m = L.n_out, r0, r1
    sync(&s.layout, ROWS, s.p.nt)
    span(s.p, s.n, 1, &r0, &r1)
    activation_forward(SOFTMAX, 0.0, 0.0, inp + r0 * m, out + r0 * m, r1 - r0, m)
    s.layout = ROWS


cdef void softmax_backward_pass(LayerPlan* L, Pass* s, const floating* inp,
                                const floating* g, floating* grad_in) noexcept nogil:
    cdef Py_ssize_t m = L.n_out, r0, r1
    pass_meet(s, ROWS)
    if grad_in != NULL:
        span(s.p, s.n, 1, &r0, &r1)
        activation_backward(SOFTMAX, 0.0, 0.0, inp + r0 * m, <floating*> L.out + r0 * m,
                            g + r0 * m, grad_in + r0 * m, r1 - r0, m)
        s.layout = ROWS


cdef void softmax_predict(LayerPlan* L, const floating* inp, floating* dst, Py_ssize_t n,
                          int tid, int nt, int* layout) noexcept nogil:
    cdef Py_ssize_t m = L.n_out, r0, r1
    sync(layout, ROWS, nt)
    share(n, tid, nt, 1, &r0, &r1)
    activation_forward(SOFTMAX, 0.0, 0.0, inp + r0 * m, dst + r0 * m, r1 - r0, m)
    layout[0] = ROWS


cdef void elementwise_tangent(LayerPlan* L, const floating* val_in, floating* val_out,
                              const floating* tan_in, floating* tan_out, Py_ssize_t n,
                              Py_ssize_t k) noexcept nogil:
    """Forward mode: values, and each of a row's k tangents times the layer's Jacobian
    (an activation's is symmetric, so activation_backward applies it; softmax's is its
    row Jacobian diag(s) - s s^T)."""
    cdef Py_ssize_t i, j, m = L.n_out
    if L.kind == DROPOUT or L.kind == IDENTITY:
        memcpy(val_out, val_in, n * m * sizeof(floating))
        if tan_in != NULL:
            memcpy(tan_out, tan_in, n * k * m * sizeof(floating))
        else:
            memset(tan_out, 0, n * k * m * sizeof(floating))
        return
    activation_forward(L.kind, L.slope, L.threshold, val_in, val_out, n, m)
    for i in range(n):
        for j in range(k):
            if tan_in != NULL:
                activation_backward(L.kind, L.slope, L.threshold, val_in + i * m, val_out + i * m,
                                    tan_in + (i * k + j) * m, tan_out + (i * k + j) * m, 1, m)
            else:
                memset(tan_out + (i * k + j) * m, 0, m * sizeof(floating))


cdef void elementwise_cotangent(LayerPlan* L, const floating* val_in,
                                const floating* val_out, const floating* cot_in,
                                floating* cot_out, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """Reverse mode: each of a row's k cotangents times the layer's Jacobian, transposed."""
    cdef Py_ssize_t i, j, m = L.n_out
    if L.kind == DROPOUT or L.kind == IDENTITY:
        memcpy(cot_out, cot_in, n * k * m * sizeof(floating))
        return
    for i in range(n):
        for j in range(k):
            activation_backward(L.kind, L.slope, L.threshold, val_in + i * m, val_out + i * m,
                                cot_in + (i * k + j) * m, cot_out + (i * k + j) * m, 1, m)
