# Residual blocks: a block of layers between a RESIDUAL_BEGIN and a RESIDUAL_END (each
# holding the offset to the other, `link`), the END's output being the block's output
# plus the BEGIN's input. Training: BEGIN's output buffer is the layer below's (nothing in
# the block writes it, so it outlives the block; a BEGIN that is the first layer copies
# the input rows into a buffer of its own), END adds it; backward, the block's last layer
# reads END's gradient buffer as its own (END passes it down without a copy) and BEGIN
# adds END's gradient to the block's. Each pass works in the layout the layer below left,
# with no barrier: a layout only changes at a barrier, so every entry is read by the
# thread that wrote it or after a barrier. Predicts (forward_split) keep the BEGIN's
# input in their own saved buffers; forward and reverse mode in per-layer buffers set up
# by their callers.

cdef void alias_residual_buffers(Net* net) noexcept nogil:
    """After the buffers are made: each BEGIN (but a first layer) outputs into the layer
    below's buffer, and each END's input gradient is its own gradient buffer (ENDs from
    the last, so that a block ending in another block's END shares the outer one's).
    Their passes then copy nothing and leave the layout as the layer below left it: the
    same values, two copies of the block's width fewer a step."""
    cdef int l
    cdef LayerPlan* layers = net.layers
    for l in range(1, net.n_layers):
        if layers[l].kind == RESIDUAL_BEGIN:
            layers[l].out = layers[l - 1].out
    for l in range(net.n_layers - 1, 0, -1):
        if layers[l].kind == RESIDUAL_END:
            layers[l - 1].grad = layers[l].grad

cdef inline LayerPlan* residual_partner(LayerPlan* L) noexcept nogil:
    return L + L.link


cdef void residual_entries(const floating* a, const floating* b, floating* dst,
                           Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t m, Py_ssize_t c0,
                           Py_ssize_t c1) noexcept nogil:
    """dst = a + b (b NULL: a copy of a) on rows [r0, r1) by columns [c0, c1) of (n x m)
    blocks."""
    cdef Py_ssize_t i, j, o
    if c1 <= c0:
        return
    for i in range(r0, r1):
        o = i * m
        if b == NULL:
            memcpy(dst + o + c0, a + o + c0, (c1 - c0) * sizeof(floating))
        else:
            for j in range(o + c0, o + c1):
                dst[j] = a[j] + b[j]


cdef void residual_pass(Pass* s, Py_ssize_t m, const floating* a, const floating* b,
                        floating* dst) noexcept nogil:
    """dst = a + b on the thread's columns, tiles or rows, as the layer below left them."""
    cdef const Part* p = s.p
    cdef Py_ssize_t r0, r1, c0, c1
    cdef int v
    if s.layout == COLS:
        span(p, m, UNIT_ALIGN, &c0, &c1)
        residual_entries(a, b, dst, 0, s.n, m, c0, c1)
    elif s.layout == TILES:
        for v in range(p.v0, p.v1):
            tile(v, s.grid, p.nv, s.n, m, &r0, &r1, &c0, &c1)
            residual_entries(a, b, dst, r0, r1, m, c0, c1)
    else:
        s.layout = ROWS
        span(p, s.n, 1, &r0, &r1)
        residual_entries(a, b, dst, r0, r1, m, 0, m)


cdef void residual_forward_pass(LayerPlan* L, Pass* s, const floating* inp,
                                floating* out) noexcept nogil:
    """BEGIN: its input into its buffer (the same buffer but for a first layer); END: the
    block's output plus the BEGIN's buffer at this call's rows."""
    if L.kind == RESIDUAL_BEGIN:
        if out != inp:  # (a first layer's)
            residual_pass(s, L.n_out, inp, <floating*> NULL, out)
    else:
        residual_pass(s, L.n_out, inp,
                      <floating*> residual_partner(L).out + s.row0 * L.n_out, out)


cdef void residual_backward_pass(LayerPlan* L, Pass* s, const floating* inp,
                                 const floating* g, floating* grad_in) noexcept nogil:
    """END: its gradient into the block (already there: the buffers are one); BEGIN: the
    block's gradient plus END's."""
    if grad_in == NULL:
        return
    if L.kind == RESIDUAL_BEGIN:
        residual_pass(s, L.n_out, g, <floating*> residual_partner(L).grad, grad_in)
    elif grad_in != g:
        residual_pass(s, L.n_out, g, <floating*> NULL, grad_in)


cdef void residual_split_entries(const floating* a, const floating* b, floating* dst,
                                 Py_ssize_t n, Py_ssize_t m, int tid, int nt,
                                 int* layout) noexcept nogil:
    """A predict's dst = a + b (b NULL: a copy) on thread tid of nt's columns."""
    cdef Py_ssize_t c0, c1
    sync(layout, COLS, nt)
    share(m, tid, nt, UNIT_ALIGN, &c0, &c1)
    residual_entries(a, b, dst, 0, n, m, c0, c1)
    layout[0] = COLS


cdef void residual_tangent(LayerPlan* L, const floating* val_in, floating* val_out,
                           const floating* tan_in, floating* tan_out, Py_ssize_t n,
                           Py_ssize_t k) noexcept nogil:
    """Forward mode: BEGIN copies values and tangents (into the buffers its caller gave
    it, res_val and res_tan, which outlive the block); END adds them."""
    cdef Py_ssize_t m = L.n_out
    cdef LayerPlan* B
    if L.kind == RESIDUAL_BEGIN:
        residual_entries(val_in, <floating*> NULL, val_out, 0, n, m, 0, m)
        if k > 0 and tan_in != NULL:
            residual_entries(tan_in, <floating*> NULL, tan_out, 0, n * k, m, 0, m)
        elif k > 0:
            memset(tan_out, 0, n * k * m * sizeof(floating))
        return
    B = residual_partner(L)
    residual_entries(val_in, <floating*> B.res_val, val_out, 0, n, m, 0, m)
    if k > 0 and tan_in != NULL:
        residual_entries(tan_in, <floating*> B.res_tan, tan_out, 0, n * k, m, 0, m)
    elif k > 0:
        residual_entries(<floating*> B.res_tan, <floating*> NULL, tan_out, 0, n * k, m, 0,
                         m)


cdef void residual_cotangent(LayerPlan* L, const floating* cot_in, floating* cot_out,
                             Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """Reverse mode: END passes its cotangents into the block and keeps a copy (res_tan,
    its caller's buffer); BEGIN adds that copy to the block's."""
    cdef Py_ssize_t m = L.n_out
    if L.kind == RESIDUAL_END:
        residual_entries(cot_in, <floating*> NULL, cot_out, 0, n * k, m, 0, m)
        residual_entries(cot_in, <floating*> NULL, <floating*> L.res_tan, 0, n * k, m, 0, m)
    else:
        residual_entries(cot_in, <floating*> residual_partner(L).res_tan, cot_out, 0, n * k,
                         m, 0, m)
