# LayerNorm (torch.nn.LayerNorm over the features): each row normalized by its own mean
# and variance, then scaled by gamma and shifted by beta. Rows are independent, so every
# pass runs on the threads' rows; only gamma's and beta's gradients sum over rows, as
# per-block partial sums totalled in block order by every thread (as batch norm's row
# blocks), so the result is the plan's, whatever the threads.

cdef inline void ln_row_moments(const floating* x, Py_ssize_t m, double eps,
                                floating* mean, floating* invstd) noexcept nogil:
    """A row's mean and 1 / sqrt(biased variance + eps), the variance from the deviations
    (two passes: no cancellation). Each sum is four interleaved partial sums, added
    (0 + 1) + (2 + 3) at the end: four chains of additions in flight instead of one
    (`python bench/bench_norm_traffic.py`: a LayerNorm after each hidden layer of
    784-256-128-10 added 0.049 s to a 0.384 s SGD epoch with one chain)."""
    cdef Py_ssize_t j, whole = m - m % 4
    cdef floating s0 = 0, s1 = 0, s2 = 0, s3 = 0, mu, d0, d1, d2, d3
    for j in range(0, whole, 4):
        s0 += x[j]
        s1 += x[j + 1]
        s2 += x[j + 2]
        s3 += x[j + 3]
    for j in range(whole, m):
        s0 += x[j]
    mu = ((s0 + s1) + (s2 + s3)) / m
    mean[0] = mu
    s0 = s1 = s2 = s3 = 0
    for j in range(0, whole, 4):
        d0, d1, d2, d3 = x[j] - mu, x[j + 1] - mu, x[j + 2] - mu, x[j + 3] - mu
        s0 += d0 * d0
        s1 += d1 * d1
        s2 += d2 * d2
        s3 += d3 * d3
    for j in range(whole, m):
        d0 = x[j] - mu
        s0 += d0 * d0
    invstd[0] = <floating> (1 / sqrt(<double> (((s0 + s1) + (s2 + s3)) / m) + eps))


cdef inline void ln_row_forward(const floating* x, floating* y, const floating* gamma,
                                const floating* beta, floating mean, floating invstd,
                                Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating xhat
    for j in range(m):
        xhat = (x[j] - mean) * invstd
        y[j] = xhat * (gamma[j] if gamma != NULL else 1) + (beta[j] if beta != NULL else 0)


cdef inline void ln_row_project(const floating* x, floating mean, floating invstd,
                                const floating* v, const floating* scale, floating* out,
                                Py_ssize_t m) noexcept nogil:
    """out = A (scale * v) for the row's Jacobian of xhat, A = invstd (I - 1 1^T / m -
    xhat xhat^T / m) (symmetric); scale NULL: 1. The input gradient of a row (v = g,
    scale = gamma) and its tangent (v = t, scale NULL, then times gamma)."""
    cdef Py_ssize_t j, k
    cdef floating total = 0, dot = 0, w, xhat
    cdef floating sums[4]
    cdef floating dots[4]
    for k in range(4):  # four partial sums each, as ln_row_moments
        sums[k] = dots[k] = 0
    for j in range(m):
        w = v[j] * (scale[j] if scale != NULL else 1)
        sums[j & 3] += w
        dots[j & 3] += w * (x[j] - mean) * invstd
    total = ((sums[0] + sums[1]) + (sums[2] + sums[3])) / m
    dot = ((dots[0] + dots[1]) + (dots[2] + dots[3])) / m
    for j in range(m):
        w = v[j] * (scale[j] if scale != NULL else 1)
        xhat = (x[j] - mean) * invstd
        out[j] = invstd * (w - total - xhat * dot)


cdef void layernorm_rows(LayerPlan* L, const floating* x, floating* y, Py_ssize_t r0,
                         Py_ssize_t r1, bint keep) noexcept nogil:
    """Rows [r0, r1) normalized; with `keep`, their moments kept for the backward pass."""
    cdef Py_ssize_t i, m = L.n_out
    cdef floating mean, invstd
    for i in range(r0, r1):
        ln_row_moments(x + i * m, m, L.eps, &mean, &invstd)
        if keep:
            (<floating*> L.row_mean)[i], (<floating*> L.row_invstd)[i] = mean, invstd
        ln_row_forward(x + i * m, y + i * m, <floating*> L.weight, <floating*> L.bias, mean,
                       invstd, m)


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
    cdef Py_ssize_t m = L.n_out, r0, r1, c0, c1, i, j
    cdef floating* part = <floating*> L.bn_part
    cdef floating* part_beta = part + L.bn_blocks * m
    cdef floating* gamma = <floating*> L.weight
    cdef floating* gamma_then = part + 2 * L.bn_blocks * m
    cdef floating* mean = <floating*> L.row_mean
    cdef floating* invstd = <floating*> L.row_invstd
    cdef floating* dgamma = <floating*> L.dgamma
    cdef floating* dbeta = <floating*> L.dbeta
    cdef floating xhat
    cdef int v
    pass_meet(s, ROWS)
    span(p, m, UNIT_ALIGN, &c0, &c1)
    if gamma != NULL:
        memcpy(gamma_then + c0, gamma + c0, (c1 - c0) * sizeof(floating))
    for v in range(p.v0, p.v1):
        share(s.n, v, p.nv, 1, &r0, &r1)
        memset(part + v * m, 0, m * sizeof(floating))
        memset(part_beta + v * m, 0, m * sizeof(floating))
        for i in range(r0, r1):
            for j in range(m):
                xhat = (inp[i * m + j] - mean[i]) * invstd[i]
                part[v * m + j] += g[i * m + j] * xhat
                part_beta[v * m + j] += g[i * m + j]
    fastnn_barrier(p.nt)
    for j in range(c0, c1):
        dgamma[j] = block_total(part, p.nv, m, j)
        dbeta[j] = block_total(part_beta, p.nv, m, j)
    if grad_in != NULL:
        span(p, s.n, 1, &r0, &r1)
        for i in range(r0, r1):
            ln_row_project(inp + i * m, mean[i], invstd[i], g + i * m,
                           NULL if gamma == NULL else gamma_then, grad_in + i * m, m)
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
        ln_row_moments(val_in + i * m, m, L.eps, &mean, &invstd)
        ln_row_forward(val_in + i * m, val_out + i * m, gamma, <floating*> L.bias, mean,
                       invstd, m)
        for j in range(k):
            t = tan_out + (i * k + j) * m
            if tan_in == NULL:
                memset(t, 0, m * sizeof(floating))
            else:
                ln_row_project(val_in + i * m, mean, invstd, tan_in + (i * k + j) * m, NULL,
                               t, m)
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
        ln_row_moments(val_in + i * m, m, L.eps, &mean, &invstd)
        for j in range(k):
            ln_row_project(val_in + i * m, mean, invstd, cot_in + (i * k + j) * m,
                           <floating*> L.weight, cot_out + (i * k + j) * m, m)
