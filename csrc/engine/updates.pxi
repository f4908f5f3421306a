# Where a gradient lands: straight into the optimizer's update where the formula
# allows (destination), the rest of the update (finish_update), and the per-step
# momentum scale and L2 penalty sums.

cdef void* destination(Net* net, Counters* c, int param, bint update, double grad_beta,
                       GradientDestination* dest) noexcept nogil:
    """The array that parameter `param`'s gradient product is written to; when training
    (`update`), dest becomes that parameter's destination, alpha and beta, else the
    gradient array with beta = grad_beta (1 accumulates over chunks)."""
    cdef ParamPlan* P
    if param < 0:
        return NULL
    P = &net.params[param]
    if update:
        dest[0] = gradient_destination(net.opt_kind, c.hyper, c.step, P.l2 * c.l2_scale,
                                       c.mom_scale)
    else:
        dest.where, dest.alpha, dest.beta = TO_GRAD, 1.0, grad_beta
    return destination_array(dest.where, P.value, P.grad, P.state[0])


cdef void finish_update(Net* net, Counters* c, int param, GradientDestination dest,
                        Py_ssize_t offset, Py_ssize_t count) noexcept nogil:
    """Complete the optimizer update of entries [offset, offset + count) of `param`."""
    cdef ParamPlan* P
    if param < 0 or count <= 0:
        return
    P = &net.params[param]
    if net.f64:
        finish_entries(net, c, P, dest, <double*> P.value + offset, offset, count)
    else:
        finish_entries(net, c, P, dest, <float*> P.value + offset, offset, count)


cdef inline void finish_entries(Net* net, Counters* c, ParamPlan* P, GradientDestination dest,
                                floating* value, Py_ssize_t offset,
                                Py_ssize_t count) noexcept nogil:
    optimizer_finish(net.opt_kind, c.hyper, P.l2 * c.l2_scale, c.step, c.mu_product, dest,
                     value, at(<floating*> P.grad, offset), at(<floating*> P.state[0], offset),
                     at(<floating*> P.state[1], offset), at(<floating*> P.state[2], offset),
                     count)


cdef void land(Net* net, Counters* c, int param, const floating* grad, Py_ssize_t c0,
               Py_ssize_t c1, bint update, double grad_beta) noexcept nogil:
    """Put entries [c0, c1) of a gradient computed elementwise (not by a GEMM) where the
    optimizer wants them, dest = alpha * grad + beta * dest, as the GEMM does for Dense;
    then finish their update."""
    cdef Py_ssize_t i
    cdef floating* target
    cdef floating alpha, beta
    cdef GradientDestination dest
    if param < 0:
        return
    target = <floating*> destination(net, c, param, update, grad_beta, &dest)
    alpha, beta = <floating> dest.alpha, <floating> dest.beta
    for i in range(c0, c1):
        target[i] = alpha * grad[i] + (beta * target[i] if beta != 0 else 0)
    if update:
        finish_update(net, c, param, dest, c0, c1 - c0)


cdef inline void count_update(Net* net, Counters* c) noexcept nogil:
    """An update is made: the step count and NAdam's running product move on."""
    c.mu_product = nadam_product_after(net.opt_kind, c.hyper, c.mu_product, c.step)
    c.step += 1


cdef void unscale_momentum(Net* net, Counters* c, const Part* p) noexcept nogil:
    """Fold the momentum scale into p's blocks of the buffers (c *= s), so they
    hold torch's b again."""
    cdef Py_ssize_t i, lo, hi
    cdef ParamPlan* P
    if c.mom_scale != 1.0 and uses_scaled_momentum(net.opt_kind, c.hyper):
        for i in range(net.n_params):
            P = &net.params[i]
            span(p, P.units, UNIT_ALIGN, &lo, &hi)
            if net.f64:
                scale_entries(<double*> P.state[0] + lo * P.row, (hi - lo) * P.row,
                              <double> c.mom_scale)
            else:
                scale_entries(<float*> P.state[0] + lo * P.row, (hi - lo) * P.row,
                              <float> c.mom_scale)
    c.mom_scale = 1.0


cdef inline void scale_entries(floating* buf, Py_ssize_t n, floating s) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        buf[j] = buf[j] * s


cdef void half_l2_penalty(Net* net, const Part* p, double* parts) noexcept nogil:
    """0.5 * sum over penalised parameters of l2 * |W|^2 (scikit-learn's alpha term): the
    part over each of p's blocks v in parts[v]."""
    cdef Py_ssize_t i, lo, hi
    cdef ParamPlan* P
    cdef int v
    for v in range(p.v0, p.v1):
        parts[v] = 0
        for i in range(net.n_params):
            P = &net.params[i]
            if P.l2 != 0:
                share(P.units, v, p.nv, UNIT_ALIGN, &lo, &hi)
                if hi > lo and net.f64:
                    parts[v] += 0.5 * P.l2 * sum_of_squares(<int> ((hi - lo) * P.row),
                                                            <double*> P.value + lo * P.row)
                elif hi > lo:
                    parts[v] += 0.5 * P.l2 * sum_of_squares(<int> ((hi - lo) * P.row),
                                                            <float*> P.value + lo * P.row)
