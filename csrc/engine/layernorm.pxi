# LayerNorm (torch.nn.LayerNorm over the features): each row normalized by its own mean
# and variance, then scaled by gamma and shifted by beta. Rows are independent, so every
# pass runs on the threads' rows; only gamma's and beta's gradients sum over rows, as
# per-block partial sums totalled in block order by every thread (as batch norm's row
# blocks), so the result is the plan's, whatever the threads.

cdef void layernorm_rows(LayerPlan* L, const floating* x, floating* y, Py_ssize_t r0,
                         Py_ssize_t r1, bint keep) noexcept nogil:
    """Rows [r0, r1) normalized; with `keep`, their moments kept for the backward pass."""
    cdef Py_ssize_t m = L.n_out
    ln_rows(x + r0 * m, y + r0 * m, <floating*> L.weight, <floating*> L.bias, L.eps,
            (<floating*> L.row_mean + r0) if keep else NULL,
            (<floating*> L.row_invstd + r0) if keep else NULL, r1 - r0, m)


cdef void layernorm_forward_pass(LayerPlan* L, Pass* s, const floating* inp,
                                 floating* out) noexcept nogil:
    cdef Py_ssize_t r0, r1
    sync(&s.layout, ROWS, s.p.nt)
    span(s.p, s.n, 1, &r0, &r1)
    layernorm_rows(L, inp, out, r0, r1, True)
    s.layout = ROWS


cdef void layernorm_backward_pass(LayerPlan* L, Pass* s, const floating* inp,
                                  const floating* g, floating* grad_in) noexcept nogil:
    """Each block, in one read of its rows, sums g xhat and g per feature and writes its
    rows' input gradients (gamma as the step found it: no thread updates it before the
    barrier); after the barrier every thread totals its features' block sums in block
    order and lands them. One barrier."""
    cdef const Part* p = s.p
    cdef Py_ssize_t m = L.n_out, r0, r1, c0, c1, j
    cdef floating* part = <floating*> L.bn_part
    cdef floating* part_beta = part + L.bn_blocks * m
    cdef floating* mean = <floating*> L.row_mean
    cdef floating* invstd = <floating*> L.row_invstd
    cdef floating* dgamma = <floating*> L.dgamma
    cdef floating* dbeta = <floating*> L.dbeta
    cdef int v
    pass_meet(s, ROWS)
    for v in range(p.v0, p.v1):
        share(s.n, v, p.nv, 1, &r0, &r1)
        ln_backward_rows(inp + r0 * m, g + r0 * m, mean + r0, invstd + r0,
                         <floating*> L.weight, part + v * m, part_beta + v * m,
                         NULL if grad_in == NULL else grad_in + r0 * m, r1 - r0, m)
    fastnn_barrier(p.nt)
    span(p, m, UNIT_ALIGN, &c0, &c1)
    for j in range(c0, c1):
        dgamma[j] = block_total(part, p.nv, m, j)
        dbeta[j] = block_total(part_beta, p.nv, m, j)
    land(s.net, s.c, L.weight_param, dgamma, c0, c1, s.update, s.grad_beta)
    land(s.net, s.c, L.bias_param, dbeta, c0, c1, s.update, s.grad_beta)
    s.layout = ROWS


cdef void layernorm_predict(LayerPlan* L, const floating* inp, floating* dst, Py_ssize_t n,
                            int tid, int nt, int* layout) noexcept nogil:
    """Thread tid of nt's rows of a predict (dst may be inp: each row is read whole before
    it is written)."""
    cdef Py_ssize_t r0, r1
    sync(layout, ROWS, nt)
    share(n, tid, nt, 1, &r0, &r1)
    layernorm_rows(L, inp, dst, r0, r1, False)
    layout[0] = ROWS


cdef void layernorm_tangent(LayerPlan* L, const floating* val_in, floating* val_out,
                            const floating* tan_in, floating* tan_out, Py_ssize_t n,
                            Py_ssize_t k) noexcept nogil:
    """Forward mode: gamma * A t for each of a row's tangents, plus dgamma * xhat + dbeta
    along a parameter direction."""
    cdef Py_ssize_t i, j, q, m = L.n_out
    cdef floating mean, invstd
    cdef floating* t
    cdef const floating* gamma = <floating*> L.weight
    for i in range(n):
        ln_rows(val_in + i * m, val_out + i * m, gamma, <floating*> L.bias, L.eps, &mean,
                &invstd, 1, m)
        for j in range(k):
            t = tan_out + (i * k + j) * m
            if tan_in == NULL:
                memset(t, 0, m * sizeof(floating))
            else:
                ln_project(val_in + i * m, &mean, &invstd, tan_in + (i * k + j) * m, NULL,
                           t, 1, m)
                for q in range(m):
                    t[q] *= gamma[q] if gamma != NULL else 1
            for q in range(m):
                if L.dweight != NULL:
                    t[q] += (<floating*> L.dweight)[q] * (val_in[i * m + q] - mean) * invstd
                if L.dbias != NULL:
                    t[q] += (<floating*> L.dbias)[q]


cdef void layernorm_cotangent(LayerPlan* L, const floating* val_in, const floating* cot_in,
                              floating* cot_out, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """Reverse mode: A (gamma * c) for each of a row's cotangents."""
    cdef Py_ssize_t i, j, m = L.n_out
    cdef floating mean, invstd
    for i in range(n):
        ln_rows(val_in + i * m, <floating*> NULL, <floating*> NULL, <floating*> NULL, L.eps,
                &mean, &invstd, 1, m)
        for j in range(k):
            ln_project(val_in + i * m, &mean, &invstd, cot_in + (i * k + j) * m,
                       <floating*> L.weight, cot_out + (i * k + j) * m, 1, m)
