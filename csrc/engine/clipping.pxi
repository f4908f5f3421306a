# Gradient clipping (torch's clip_grad_value_ and clip_grad_norm_): a step with clipping
# lands its whole gradient in the gradient arrays first (no update folded into the
# backward pass), clips it, then makes every update from it, as a data-parallel step does
# from the summed gradient.

cdef inline void clamp_entries(floating* g, Py_ssize_t n, floating limit) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        g[i] = -limit if g[i] < -limit else (limit if g[i] > limit else g[i])


cdef inline double squares(const floating* g, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef double total = 0
    for i in range(n):
        total += <double> g[i] * g[i]
    return total


cdef inline void scale_gradient(floating* g, Py_ssize_t n, floating factor) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        g[i] = g[i] * factor


cdef void clip_blocks(Net* net, const Part* p, int op, double limit,
                      double* parts) noexcept nogil:
    """On p's blocks of every parameter's gradient: op 0 clamps each entry to
    [-limit, limit]; op 1 puts block v's sum of squares in parts[v]; op 2 multiplies by
    limit."""
    cdef int i, v
    cdef Py_ssize_t lo, hi
    cdef ParamPlan* P
    for v in range(p.v0, p.v1):
        if op == 1:
            parts[v] = 0
        for i in range(net.n_params):
            P = &net.params[i]
            share(P.units, v, p.nv, UNIT_ALIGN, &lo, &hi)
            if hi <= lo:
                continue
            lo, hi = lo * P.row, hi * P.row
            if op == 0 and net.f64:
                clamp_entries(<double*> P.grad + lo, hi - lo, <double> limit)
            elif op == 0:
                clamp_entries(<float*> P.grad + lo, hi - lo, <float> limit)
            elif op == 1 and net.f64:
                parts[v] += squares(<double*> P.grad + lo, hi - lo)
            elif op == 1:
                parts[v] += squares(<float*> P.grad + lo, hi - lo)
            elif net.f64:
                scale_gradient(<double*> P.grad + lo, hi - lo, <double> limit)
            else:
                scale_gradient(<float*> P.grad + lo, hi - lo, <float> limit)


cdef void clip_and_update(Job* job, Net* net, Counters* c, const Part* p) noexcept nogil:
    """After a backward pass into the gradient arrays: clamp every entry to
    [-clip_value, clip_value], then, when the gradient's norm (over every parameter, the
    blocks' sums of squares totalled in block order) exceeds clip_norm, scale it by
    clip_norm / (norm + 1e-6) (torch's clip_grad_norm_); then every update."""
    cdef double norm, factor
    fastnn_barrier(p.nt)   # every block of the gradients is written
    if job.clip_value > 0:
        clip_blocks(net, p, 0, job.clip_value, NULL)
    if job.clip_norm > 0:
        clip_blocks(net, p, 1, 0.0, job.clip_part)
        fastnn_barrier(p.nt)
        norm = sqrt(sum_parts(job.clip_part, p.nv))
        factor = job.clip_norm / (norm + 1e-6)
        if factor < 1:
            clip_blocks(net, p, 2, factor, NULL)
    update_from_gradients(net, c, p)
