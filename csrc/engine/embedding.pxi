# Embedding (the first layer): some input columns hold integer codes of categories; each
# such column j has its own table of embedding vectors (rows [offset_j, offset_j + card_j)
# of the weight, `dim` wide). A row's output is its other (numeric) columns in order, then
# each code column's vector: the gather happens in the batch loop, no one-hot matrix is
# built. The table's gradient is a scatter-add over the batch's rows; each plan block owns
# whole code columns (their rows of the table), adds its rows in row order and lands them,
# so the sums are the plan's whatever the threads. Codes are checked by the Python layer;
# here one outside [0, card) (or NaN) reads row 0 rather than outside the table.

cdef inline Py_ssize_t embedding_code(const LayerPlan* L, floating value,
                                      Py_ssize_t j) noexcept nogil:
    """The table row of code column j's value."""
    if value >= 0 and value <= L.emb_card[j] - 1:  # (exact in floating: fastnn.embedding;
        # card itself may not be: float reads 2^24 + 1 as 2^24)
        return L.emb_offset[j] + <Py_ssize_t> value
    return L.emb_offset[j]


cdef void embedding_rows(const LayerPlan* L, const floating* x, floating* out,
                         Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    """Rows [r0, r1): numeric columns, then each code column's vector."""
    cdef Py_ssize_t i, j, q = L.n_in - L.emb_k, m = L.n_out, d = L.emb_dim
    cdef const floating* W = <const floating*> L.weight
    for i in range(r0, r1):
        for j in range(q):
            out[i * m + j] = x[i * L.n_in + L.emb_numeric[j]]
        for j in range(L.emb_k):
            memcpy(out + i * m + q + j * d,
                   W + embedding_code(L, x[i * L.n_in + L.emb_cols[j]], j) * d,
                   d * sizeof(floating))


cdef void embedding_forward_pass(LayerPlan* L, Pass* s, const floating* inp,
                                 floating* out) noexcept nogil:
    cdef Py_ssize_t r0, r1
    sync(&s.layout, ROWS, s.p.nt)
    span(s.p, s.n, 1, &r0, &r1)
    embedding_rows(L, inp, out, r0, r1)
    s.layout = ROWS


cdef void embedding_backward_pass(LayerPlan* L, Pass* s, const floating* inp,
                                  const floating* g) noexcept nogil:
    """Each block's code columns: their rows of the table's gradient zeroed, every batch
    row's vector gradient added in row order, then landed where the optimizer wants it.
    (No input gradient: the layer is first.)"""
    cdef const Part* p = s.p
    cdef Py_ssize_t i, j, t, j0, j1, code, q = L.n_in - L.emb_k, d = L.emb_dim
    cdef floating* grad = <floating*> L.emb_grad
    cdef const floating* row
    cdef int v
    pass_meet(s, WHOLE)  # every row of g
    for v in range(p.v0, p.v1):
        share(L.emb_k, v, p.nv, 1, &j0, &j1)
        for j in range(j0, j1):
            memset(grad + L.emb_offset[j] * d, 0, L.emb_card[j] * d * sizeof(floating))
            for i in range(s.n):
                code = embedding_code(L, inp[i * L.n_in + L.emb_cols[j]], j)
                row = g + i * L.n_out + q + j * d
                for t in range(d):
                    grad[code * d + t] += row[t]
            land(s.net, s.c, L.weight_param, grad, L.emb_offset[j] * d,
                 (L.emb_offset[j] + L.emb_card[j]) * d, s.update, s.grad_beta)
    s.layout = WHOLE


cdef void embedding_predict(LayerPlan* L, const floating* inp, floating* dst, Py_ssize_t n,
                            int tid, int nt, int* layout) noexcept nogil:
    cdef Py_ssize_t r0, r1
    sync(layout, ROWS, nt)
    share(n, tid, nt, 1, &r0, &r1)
    embedding_rows(L, inp, dst, r0, r1)
    layout[0] = ROWS


cdef void embedding_tangent(LayerPlan* L, const floating* val_in, floating* val_out,
                            const floating* tan_in, floating* tan_out, Py_ssize_t n,
                            Py_ssize_t k) noexcept nogil:
    """Forward mode: the numeric columns' tangents pass through, the codes' are zero
    (piecewise constant), plus a parameter direction's rows of the table."""
    cdef Py_ssize_t i, j, c, t, q = L.n_in - L.emb_k, m = L.n_out, d = L.emb_dim
    cdef floating* out
    embedding_rows(L, val_in, val_out, 0, n)
    for i in range(n):
        for c in range(k):
            out = tan_out + (i * k + c) * m
            memset(out, 0, m * sizeof(floating))
            if tan_in != NULL:
                for j in range(q):
                    out[j] = tan_in[(i * k + c) * L.n_in + L.emb_numeric[j]]
            if L.dweight != NULL:
                for j in range(L.emb_k):
                    for t in range(d):
                        out[q + j * d + t] = (<floating*> L.dweight)[
                            embedding_code(L, val_in[i * L.n_in + L.emb_cols[j]], j) * d + t]


cdef void embedding_cotangent(LayerPlan* L, const floating* cot_in, floating* cot_out,
                              Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """Reverse mode: the numeric columns' cotangents back to their columns, zero to the
    codes'."""
    cdef Py_ssize_t r, j, q = L.n_in - L.emb_k
    for r in range(n * k):
        memset(cot_out + r * L.n_in, 0, L.n_in * sizeof(floating))
        for j in range(q):
            cot_out[r * L.n_in + L.emb_numeric[j]] = cot_in[r * L.n_out + j]
