# LayerNorm (torch.nn.LayerNorm over the features): each row normalized by its own mean
# and variance, then scaled by gamma and shifted by beta. Rows are independent, so every
# pass runs on the threads' rows; only gamma's and beta's gradients sum over rows, as
# per-block partial sums totalled in block order by every thread (as batch norm's row
# blocks), so the result is the plan's, whatever the threads.

cdef extern from "layernorm.h" nogil:
    # the row loops, per instruction set with the same bits on each (see the header)
    void fastnn_ln_rows_f(const float* x, float* y, const float* gamma, const float* beta,
                          double eps, float* mean, float* invstd, Py_ssize_t n, Py_ssize_t m)
    void fastnn_ln_rows_d(const double* x, double* y, const double* gamma,
                          const double* beta, double eps, double* mean, double* invstd,
                          Py_ssize_t n, Py_ssize_t m)
    void fastnn_ln_block_sums_f(const float* x, const float* g, const float* mean,
                                const float* invstd, float* part, float* part_beta,
                                Py_ssize_t n, Py_ssize_t m)
    void fastnn_ln_block_sums_d(const double* x, const double* g, const double* mean,
                                const double* invstd, double* part, double* part_beta,
                                Py_ssize_t n, Py_ssize_t m)
    void fastnn_ln_project_f(const float* x, const float* mean, const float* invstd,
                             const float* v, const float* scale, float* out, Py_ssize_t n,
                             Py_ssize_t m)
    void fastnn_ln_project_d(const double* x, const double* mean, const double* invstd,
                             const double* v, const double* scale, double* out,
                             Py_ssize_t n, Py_ssize_t m)


cdef inline void ln_rows(const floating* x, floating* y, const floating* gamma,
                         const floating* beta, double eps, floating* mean, floating* invstd,
                         Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    """n rows' moments (kept unless mean is NULL) and, unless y is NULL, y = xhat gamma +
    beta."""
    if floating is float:
        fastnn_ln_rows_f(x, y, gamma, beta, eps, mean, invstd, n, m)
    else:
        fastnn_ln_rows_d(x, y, gamma, beta, eps, mean, invstd, n, m)


cdef inline void ln_project(const floating* x, const floating* mean, const floating* invstd,
                            const floating* v, const floating* scale, floating* out,
                            Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    """out = A (scale v) for n rows, A the Jacobian of xhat (scale NULL: 1)."""
    if floating is float:
        fastnn_ln_project_f(x, mean, invstd, v, scale, out, n, m)
    else:
        fastnn_ln_project_d(x, mean, invstd, v, scale, out, n, m)


cdef inline void ln_block_sums(const floating* x, const floating* g, const floating* mean,
                               const floating* invstd, floating* part, floating* part_beta,
                               Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    """One block's sums over its n rows of g xhat (part) and g (part_beta), per feature."""
    if floating is float:
        fastnn_ln_block_sums_f(x, g, mean, invstd, part, part_beta, n, m)
    else:
        fastnn_ln_block_sums_d(x, g, mean, invstd, part, part_beta, n, m)


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
    """Each block sums g xhat and g over its rows; gamma is copied aside (every row's
    input gradient reads all of it while its owners update it); after a barrier every
    thread totals its features' block sums in block order and lands them, and computes
    its rows' input gradients. One barrier."""
    cdef const Part* p = s.p
    cdef Py_ssize_t m = L.n_out, r0, r1, c0, c1, j
    cdef floating* part = <floating*> L.bn_part
    cdef floating* part_beta = part + L.bn_blocks * m
    cdef floating* gamma = <floating*> L.weight
    cdef floating* gamma_then = part + 2 * L.bn_blocks * m
    cdef floating* mean = <floating*> L.row_mean
    cdef floating* invstd = <floating*> L.row_invstd
    cdef floating* dgamma = <floating*> L.dgamma
    cdef floating* dbeta = <floating*> L.dbeta
    cdef int v
    pass_meet(s, ROWS)
    span(p, m, UNIT_ALIGN, &c0, &c1)
    if gamma != NULL:
        memcpy(gamma_then + c0, gamma + c0, (c1 - c0) * sizeof(floating))
    for v in range(p.v0, p.v1):
        share(s.n, v, p.nv, 1, &r0, &r1)
        ln_block_sums(inp + r0 * m, g + r0 * m, mean + r0, invstd + r0, part + v * m,
                      part_beta + v * m, r1 - r0, m)
    fastnn_barrier(p.nt)
    for j in range(c0, c1):
        dgamma[j] = block_total(part, p.nv, m, j)
        dbeta[j] = block_total(part_beta, p.nv, m, j)
    if grad_in != NULL:
        span(p, s.n, 1, &r0, &r1)
        ln_project(inp + r0 * m, mean + r0, invstd + r0, g + r0 * m,
                   NULL if gamma == NULL else gamma_then, grad_in + r0 * m, r1 - r0, m)
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
