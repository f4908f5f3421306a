# What a training step writes that outlives it (parameters, optimizer state, running
# statistics): copied aside, checked for NaN/inf, restored when a step fails.

cdef Py_ssize_t state_regions(Net* net, void** where, Py_ssize_t* count) noexcept nogil:
    """The arrays a training step writes that outlive it: every parameter, its optimizer
    state and batch norm's running statistics, as (where, count) pairs (NULL: only
    counted); returns how many."""
    cdef Py_ssize_t k = 0
    cdef int i, j, l
    for i in range(net.n_params):
        for j in range(-1, 3):
            if (net.params[i].value if j < 0 else net.params[i].state[j]) == NULL:
                continue
            if where != NULL:
                where[k] = net.params[i].value if j < 0 else net.params[i].state[j]
                count[k] = net.params[i].size
            k += 1
    for l in range(net.n_layers):
        if net.layers[l].kind == BATCHNORM:
            if where != NULL:
                where[k], count[k] = net.layers[l].running_mean, net.layers[l].n_out
                where[k + 1], count[k + 1] = net.layers[l].running_var, net.layers[l].n_out
            k += 2
    return k


cdef inline bint finite_entries(const void* base, Py_ssize_t first, Py_ssize_t count,
                                bint f64) noexcept nogil:
    """Whether entries [first, first + count) of an array of doubles (f64) or floats hold
    no NaN or inf."""
    if f64:
        return all_finite(<const double*> base + first, count)
    return all_finite(<const float*> base + first, count)


cdef bint blocks_finite(Net* net, const Part* p) noexcept nogil:
    """Whether p's blocks of the parameters, their optimizer state and batch norm's
    running statistics hold no NaN or inf (the blocks unscale_momentum uses)."""
    cdef Py_ssize_t lo, hi
    cdef int i, j, l
    cdef ParamPlan* P
    cdef LayerPlan* L
    for i in range(net.n_params):
        P = &net.params[i]
        span(p, P.units, UNIT_ALIGN, &lo, &hi)
        if not finite_entries(P.value, lo * P.row, (hi - lo) * P.row, net.f64):
            return False
        for j in range(3):
            if P.state[j] != NULL and not finite_entries(P.state[j], lo * P.row,
                                                         (hi - lo) * P.row, net.f64):
                return False
    for l in range(net.n_layers):
        L = &net.layers[l]
        if L.kind == BATCHNORM:
            span(p, L.n_out, UNIT_ALIGN, &lo, &hi)
            if not (finite_entries(L.running_mean, lo, hi - lo, net.f64)
                    and finite_entries(L.running_var, lo, hi - lo, net.f64)):
                return False
    return True


cdef bint step_wrote_finite(Job* job, Net* net, Py_ssize_t batch,
                            const Part* p) noexcept nogil:
    """check_steps: after step `batch`'s update, whether every thread's blocks are finite;
    if not, BAD_UPDATE names the step (the caller then stops)."""
    if not job.check_steps:
        return True
    fastnn_barrier(p.nt)  # every update of the step is written
    if not blocks_finite(net, p):
        fastnn_flag_set(&job.bad_write)
    fastnn_barrier(p.nt)
    if fastnn_flag_get(&job.bad_write):
        if p.v0 == 0:
            job.failed_batch, job.status = batch, BAD_UPDATE
        return False
    return True


cdef Py_ssize_t state_entries(Net* net) noexcept nogil:
    """The entries of all the state_regions together."""
    cdef Py_ssize_t total = 0
    cdef int i, j, l
    for i in range(net.n_params):
        for j in range(-1, 3):
            if (net.params[i].value if j < 0 else net.params[i].state[j]) != NULL:
                total += net.params[i].size
    for l in range(net.n_layers):
        if net.layers[l].kind == BATCHNORM:
            total += 2 * net.layers[l].n_out
    return total


cdef bint copy_state(Net* net, char* store, size_t item, bint restore,
                     bint check) noexcept nogil:
    """Copy the state_regions into `store` one after another (or back, `restore`); with
    `check`, only whether they are all finite. Returns False when check finds NaN/inf."""
    cdef Py_ssize_t k, n = state_regions(net, NULL, NULL), at = 0
    cdef void** where = <void**> calloc(max(n, 1), sizeof(void*))
    cdef Py_ssize_t* count = <Py_ssize_t*> calloc(max(n, 1), sizeof(Py_ssize_t))
    cdef bint finite = True
    if where == NULL or count == NULL:
        free(where)
        free(count)
        return not check   # (checks are skipped rather than failed without memory)
    state_regions(net, where, count)
    for k in range(n):
        if check:
            finite = finite and finite_entries(where[k], 0, count[k], item == 8)
        elif restore:
            memcpy(where[k], store + at, count[k] * item)
        else:
            memcpy(store + at, where[k], count[k] * item)
        at += count[k] * item
    free(where)
    free(count)
    return finite
