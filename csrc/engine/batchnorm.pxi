# BatchNorm1d: its training passes (on the plan's row blocks, block sums totalled in block
# order by every thread; on columns for a one-block plan), its predict and tangents, and
# its running statistics kept aside while a step may fail.

cdef inline bint bn_on_rows(const LayerPlan* L, bint training, const Part* p) noexcept nogil:
    """Whether a training pass runs batch norm on the plan's row blocks (its partial sums
    reserved for as many blocks); else each thread takes whole columns."""
    return training and L.kind == BATCHNORM and p.nv > 1 and L.bn_blocks >= p.nv


cdef inline floating block_total(const floating* part, int nv, Py_ssize_t m,
                                 Py_ssize_t j) noexcept nogil:
    """Feature j's total over the plan's nv block sums (part + v m), in block order."""
    cdef floating total = 0
    cdef int v
    for v in range(nv):
        total += part[v * m + j]
    return total


cdef inline floating* bn_own_totals(const LayerPlan* L, const Part* p,
                                    floating* part) noexcept nogil:
    """This thread's 2 m private totals in bn_part (`part`, typed): slot p.v0 (no two
    threads share a first block), after the block sums, their second set and gamma's
    copy."""
    return part + (2 * L.bn_blocks + 1 + 2 * p.v0) * L.n_out


cdef void batchnorm_rows_forward(LayerPlan* L, const floating* x, floating* y, Py_ssize_t n,
                                 const Part* p) noexcept nogil:
    """Training batch norm on row blocks: each block sums its rows per feature; after a
    barrier every thread totals all features' block sums in block order for itself (the
    batch mean); each block sums its squared deviations from it, and after a second
    barrier every thread totals those likewise (1/std), then normalizes its own rows.
    Each thread writes the shared mean, 1/std and running statistics of its own features
    only. Two barriers: the totals are a few adds per feature and block, cheaper done
    by every thread than met for (docs/design.md, "The layer kinds")."""
    cdef Py_ssize_t m = L.n_out, r0, r1, c0, c1, j
    cdef floating* part = <floating*> L.bn_part
    cdef floating* part_sq = part + L.bn_blocks * m
    cdef floating* mean = bn_own_totals(L, p, part)
    cdef floating* invstd = mean + m
    cdef floating* rmean = <floating*> L.running_mean
    cdef floating* rvar = <floating*> L.running_var
    cdef floating total
    cdef int v
    span(p, m, UNIT_ALIGN, &c0, &c1)
    for v in range(p.v0, p.v1):
        share(n, v, p.nv, 1, &r0, &r1)
        memset(part + v * m, 0, m * sizeof(floating))
        bn_colsum(x + r0 * m, part + v * m, r1 - r0, m, m)
    fastnn_barrier(p.nt)
    for j in range(m):
        mean[j] = block_total(part, p.nv, m, j) / n
    for v in range(p.v0, p.v1):
        share(n, v, p.nv, 1, &r0, &r1)
        memset(part_sq + v * m, 0, m * sizeof(floating))
        bn_colsqdev(x + r0 * m, mean, part_sq + v * m, r1 - r0, m, m)
    fastnn_barrier(p.nt)
    for j in range(m):
        total = block_total(part_sq, p.nv, m, j)
        invstd[j] = <floating> (1 / sqrt(total / n + L.eps))
        if c0 <= j < c1:
            rmean[j] = (1 - L.momentum) * rmean[j] + L.momentum * mean[j]
            rvar[j] = (1 - L.momentum) * rvar[j] + L.momentum * total / (n - 1)
    memcpy(<floating*> L.batch_mean + c0, mean + c0, (c1 - c0) * sizeof(floating))
    memcpy(<floating*> L.batch_invstd + c0, invstd + c0, (c1 - c0) * sizeof(floating))
    span(p, n, 1, &r0, &r1)
    bn_normalize(x + r0 * m, y + r0 * m, mean, invstd, <floating*> L.weight,
                 <floating*> L.bias, r1 - r0, m, m)


cdef void batchnorm_rows_backward(Net* net, Counters* c, LayerPlan* L, const floating* x,
                                  const floating* g, floating* dx, Py_ssize_t n, bint update,
                                  double grad_beta, const Part* p) noexcept nogil:
    """The backward of batchnorm_rows_forward: block sums of g xhat and g; after a
    barrier every thread totals all features' sums in block order for itself (dgamma and
    dbeta) and computes its block's rows of dx, and lands its own features' dgamma and
    dbeta where the optimizer wants them. gamma is copied aside before the barrier, since
    every block's dx reads all of it while its owners update it. One barrier."""
    cdef Py_ssize_t m = L.n_out, r0, r1, c0, c1, j
    cdef floating* part = <floating*> L.bn_part
    cdef floating* part_beta = part + L.bn_blocks * m
    cdef floating* gamma = <floating*> L.weight
    cdef floating* gamma_then = part + 2 * L.bn_blocks * m
    cdef floating* dgamma = bn_own_totals(L, p, part)
    cdef floating* dbeta = dgamma + m
    cdef int v
    span(p, m, UNIT_ALIGN, &c0, &c1)
    if gamma != NULL:
        memcpy(gamma_then + c0, gamma + c0, (c1 - c0) * sizeof(floating))
    for v in range(p.v0, p.v1):
        share(n, v, p.nv, 1, &r0, &r1)
        memset(part + v * m, 0, m * sizeof(floating))
        memset(part_beta + v * m, 0, m * sizeof(floating))
        bn_grad_sums(x + r0 * m, g + r0 * m, <floating*> L.batch_mean, <floating*> L.batch_invstd,
                     part + v * m, part_beta + v * m, r1 - r0, m, m)
    fastnn_barrier(p.nt)
    for j in range(m):
        dgamma[j] = block_total(part, p.nv, m, j)
        dbeta[j] = block_total(part_beta, p.nv, m, j)
    memcpy(<floating*> L.dgamma + c0, dgamma + c0, (c1 - c0) * sizeof(floating))
    memcpy(<floating*> L.dbeta + c0, dbeta + c0, (c1 - c0) * sizeof(floating))
    if dx != NULL:
        span(p, n, 1, &r0, &r1)
        bn_grad_input(x + r0 * m, g + r0 * m, <floating*> L.batch_mean, <floating*> L.batch_invstd,
                      NULL if gamma == NULL else gamma_then, dgamma, dbeta, dx + r0 * m,
                      r1 - r0, n, m, m)
    land(net, c, L.weight_param, <floating*> L.dgamma, c0, c1, update, grad_beta)
    land(net, c, L.bias_param, <floating*> L.dbeta, c0, c1, update, grad_beta)


cdef void keep_running_stats(Net* net, bint restore, const Part* p) noexcept nogil:
    """Copy p's features of batch norm's running statistics aside before a
    training step (restore=False), or back when the step's loss was not finite
    (restore=True), so a failed step leaves them as they were, like the parameters."""
    cdef int l
    cdef LayerPlan* L
    cdef Py_ssize_t lo, hi
    cdef size_t item = 8 if net.f64 else 4, at, size
    for l in range(net.n_layers):
        L = &net.layers[l]
        if L.kind == BATCHNORM:
            span(p, L.n_out, UNIT_ALIGN, &lo, &hi)
            at, size = lo * item, (hi - lo) * item
            if restore:
                memcpy(<char*> L.running_mean + at, <char*> L.saved_mean + at, size)
                memcpy(<char*> L.running_var + at, <char*> L.saved_var + at, size)
            else:
                memcpy(<char*> L.saved_mean + at, <char*> L.running_mean + at, size)
                memcpy(<char*> L.saved_var + at, <char*> L.running_var + at, size)


cdef void batchnorm_forward_pass(LayerPlan* L, Pass* s, const floating* inp,
                                 floating* out) noexcept nogil:
    cdef const Part* p = s.p
    cdef Py_ssize_t m = L.n_out, c0, c1
    if bn_on_rows(L, s.training, p):
        sync(&s.layout, ROWS, p.nt)
        batchnorm_rows_forward(L, inp, out, s.n, p)
        s.layout = ROWS
        return
    sync(&s.layout, COLS, p.nt)
    span(p, m, UNIT_ALIGN, &c0, &c1)
    if c1 > c0 and s.training:
        batchnorm_train_forward(inp + c0, out + c0, at(<floating*> L.weight, c0),
                                at(<floating*> L.bias, c0), at(<floating*> L.batch_mean, c0),
                                at(<floating*> L.batch_invstd, c0),
                                at(<floating*> L.running_mean, c0),
                                at(<floating*> L.running_var, c0), s.n, c1 - c0, m, L.eps,
                                L.momentum)
    elif c1 > c0:
        batchnorm_eval_forward(inp + c0, out + c0, at(<floating*> L.weight, c0),
                               at(<floating*> L.bias, c0), at(<floating*> L.running_mean, c0),
                               at(<floating*> L.running_var, c0), s.n, c1 - c0, m, L.eps)
    s.layout = COLS


cdef void batchnorm_backward_pass(LayerPlan* L, Pass* s, const floating* inp,
                                  const floating* g, floating* grad_in) noexcept nogil:
    cdef const Part* p = s.p
    cdef Py_ssize_t m = L.n_out, c0, c1
    if bn_on_rows(L, s.training, p):
        pass_meet(s, ROWS)
        batchnorm_rows_backward(s.net, s.c, L, inp, g, grad_in, s.n, s.update, s.grad_beta, p)
        s.layout = ROWS
        return
    pass_meet(s, COLS)
    span(p, m, UNIT_ALIGN, &c0, &c1)
    if c1 > c0 and s.training:
        batchnorm_backward(inp + c0, g + c0, at(<floating*> L.weight, c0),
                           at(<floating*> L.batch_mean, c0), at(<floating*> L.batch_invstd, c0),
                           at(<floating*> L.dgamma, c0), at(<floating*> L.dbeta, c0),
                           NULL if grad_in == NULL else grad_in + c0, s.n, c1 - c0, m)
    elif c1 > c0:
        batchnorm_eval_backward(inp + c0, g + c0, at(<floating*> L.weight, c0),
                                at(<floating*> L.running_mean, c0),
                                at(<floating*> L.running_var, c0), at(<floating*> L.dgamma, c0),
                                at(<floating*> L.dbeta, c0),
                                NULL if grad_in == NULL else grad_in + c0, s.n, c1 - c0, m,
                                L.eps)
    land(s.net, s.c, L.weight_param, <floating*> L.dgamma, c0, c1, s.update, s.grad_beta)
    land(s.net, s.c, L.bias_param, <floating*> L.dbeta, c0, c1, s.update, s.grad_beta)
    s.layout = COLS


cdef void batchnorm_predict(LayerPlan* L, const floating* inp, floating* dst, Py_ssize_t n,
                            int tid, int nt, int* layout) noexcept nogil:
    """Thread tid of nt's features of a predict, with the running statistics."""
    cdef Py_ssize_t m = L.n_out, c0, c1
    sync(layout, COLS, nt)
    share(m, tid, nt, UNIT_ALIGN, &c0, &c1)
    if c1 > c0:
        batchnorm_eval_forward(inp + c0, dst + c0, at(<floating*> L.weight, c0),
                               at(<floating*> L.bias, c0), at(<floating*> L.running_mean, c0),
                               at(<floating*> L.running_var, c0), n, c1 - c0, m, L.eps)
    layout[0] = COLS


cdef void batchnorm_tangent(LayerPlan* L, const floating* val_in, floating* val_out,
                            const floating* tan_in, floating* tan_out, floating* scratch,
                            Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """Forward mode with the running statistics: a tangent scaled by gamma /
    sqrt(running_var + eps), plus dgamma * xhat + dbeta along a parameter direction."""
    cdef Py_ssize_t i, j, m = L.n_out
    batchnorm_eval_forward(val_in, val_out, <floating*> L.weight, <floating*> L.bias,
                           <floating*> L.running_mean, <floating*> L.running_var, n, m, m,
                           L.eps)
    for i in range(n):
        for j in range(k):
            if tan_in != NULL:  # scratch: the dgamma/dbeta sums it also makes, unused
                batchnorm_eval_backward(val_in + i * m, tan_in + (i * k + j) * m,
                                        <floating*> L.weight, <floating*> L.running_mean,
                                        <floating*> L.running_var, scratch, scratch + m,
                                        tan_out + (i * k + j) * m, 1, m, m, L.eps)
            else:
                memset(tan_out + (i * k + j) * m, 0, m * sizeof(floating))
            if L.dweight != NULL or L.dbias != NULL:
                batchnorm_direction(L, val_in + i * m, tan_out + (i * k + j) * m)


cdef void batchnorm_direction(LayerPlan* L, const floating* x, floating* t) noexcept nogil:
    """t += dgamma * xhat + dbeta for one row (with the running statistics)."""
    cdef Py_ssize_t j
    cdef floating xhat
    for j in range(L.n_out):
        xhat = <floating> ((x[j] - (<floating*> L.running_mean)[j])
                           / sqrt((<floating*> L.running_var)[j] + L.eps))
        if L.dweight != NULL:
            t[j] += (<floating*> L.dweight)[j] * xhat
        if L.dbias != NULL:
            t[j] += (<floating*> L.dbias)[j]


cdef void batchnorm_cotangent(LayerPlan* L, const floating* val_in, const floating* cot_in,
                              floating* cot_out, floating* scratch, Py_ssize_t n,
                              Py_ssize_t k) noexcept nogil:
    cdef Py_ssize_t i, j, m = L.n_out
    for i in range(n):
        for j in range(k):
            batchnorm_eval_backward(val_in + i * m, cot_in + (i * k + j) * m,
                                    <floating*> L.weight, <floating*> L.running_mean,
                                    <floating*> L.running_var, scratch, scratch + m,
                                    cot_out + (i * k + j) * m, 1, m, m, L.eps)
