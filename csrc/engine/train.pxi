# The training step loop: gather a batch, forward, fused loss and gradient, backward
# with each block's update folded in, on a thread's blocks of the plan.

cdef void gather(const floating* src, const int64_t* order, Py_ssize_t start, Py_ssize_t n,
                 Py_ssize_t width, floating* dst) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        memcpy(dst + i * width, src + order[start + i] * width, width * sizeof(floating))


cdef void gather_inputs(const Job* job, Py_ssize_t first, Py_ssize_t count, Py_ssize_t width,
                        floating* dst) noexcept nogil:
    """Rows [first, first + count) of the call's sequence (X[order[i]], or X[i] without an
    order) into dst as dense rows. A sparse row is zeroed, then its stored values added
    (duplicates sum, as scipy's toarray does): memory stays O(batch x features)."""
    cdef const floating* X = <const floating*> job.X
    cdef Py_ssize_t i, r, k
    cdef floating* row
    for i in range(count):
        r = job.order[first + i] if job.order != NULL else first + i
        row = dst + i * width
        if job.sparse:
            memset(row, 0, width * sizeof(floating))
            for k in range(job.sp_indptr[r], job.sp_indptr[r + 1]):
                row[job.sp_indices[k]] += X[k]
        else:
            memcpy(row, X + r * width, width * sizeof(floating))


cdef double weight_sum(const floating* w, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t i
    cdef double total = 0
    for i in range(lo, hi):
        total += w[i]
    return total


cdef double loss_scale(int loss_kind, double n, Py_ssize_t width,
                       bint per_row) noexcept nogil:
    """The factor that turns summed losses into the mean (reduction "mean") over n rows
    (or n, the rows' summed sample weights: the weighted mean); per_row (scikit-learn):
    the mean over rows of the sum over outputs, and half the squares. A batch whose
    weights sum to zero gets factor 0: it contributes no gradient."""
    if n == 0:
        return 0.0
    if per_row:
        return 0.5 / n if loss_kind == MSE else 1.0 / n
    if loss_kind == CROSS_ENTROPY_LABELS or loss_kind == CROSS_ENTROPY_PROBS:
        return 1.0 / n
    return 1.0 / (n * width)


cdef double sum_parts(const double* parts, int nt) noexcept nogil:
    """The blocks' partial sums, added in block order (the same in every thread)."""
    cdef int i
    cdef double total = 0
    for i in range(nt):
        total += parts[i]
    return total


cdef void train_steps(Job* job, const floating* X, const Part* p) noexcept nogil:
    """A thread's part (p's blocks) of an epoch of mini-batch training. Each step gathers
    its batch (the shuffled order; a sparse X's rows densified into the batch buffer;
    sample weights with their rows), runs forward through the trained layers, makes the
    fused loss and its gradient, stops if the loss is not finite (nothing updated), then
    runs backward (no input gradient below the first layer with parameters) with each
    block's optimizer update in the same pass as its gradient product. Between steps the
    lead takes the GIL just long enough to run signal handlers (Ctrl-C within a batch).
    Data-parallel (job.step_rows set): step k takes the next step_rows[k] rows of this
    process's sequence, scales its loss by the global batch's denominator, and meets the
    other processes in reduce_step instead of updating as it goes. X: job.X, typed."""
    cdef Net* net = job.net
    cdef Counters c = counters_of(net)
    cdef LayerPlan* last = &net.layers[job.n_run - 1]
    cdef Py_ssize_t width = last.n_out, n_in = net.layers[0].n_in
    cdef Py_ssize_t start = job.next_start, n, i, r0, r1, batch = job.next_batch
    cdef const floating* T = <const floating*> job.T
    cdef const floating* W = <const floating*> job.W
    cdef const floating* xb
    cdef const floating* tb = NULL
    cdef const floating* wb = NULL
    cdef const int64_t* lb = NULL
    cdef floating* xbuf
    cdef double batch_loss, denom, rows_per_weight
    cdef floating scale
    cdef int layout, v
    cdef bint parallel = job.step_rows != NULL, lead = p.v0 == 0  # lead: the caller
    cdef int nt = p.nt
    while batch < job.end_batch and ((batch < job.n_steps) if parallel
                                     else (start < job.n_samples)):
        if lead and (check_signals() != 0 or (net.reducer.stop_request != NULL
                                              and net.reducer.stop_request[0] != 0)):
            job.stop = 1   # seen by every thread after the barrier below
        n = job.step_rows[batch] if parallel else min(job.batch_size, job.n_samples - start)
        if job.step_lr != NULL:  # a per-step schedule's settings for this step
            c.hyper[0] = job.step_lr[batch]
        if job.step_momentum != NULL:
            c.hyper[1] = job.step_momentum[batch]
        span(p, n, 1, &r0, &r1)
        if job.order != NULL or job.sparse:
            xbuf = <floating*> net.xbuf[batch % 2]
            gather_inputs(job, start + r0, r1 - r0, n_in, xbuf + r0 * n_in)
            xb = xbuf
        else:
            xb = X + start * n_in
        if job.order != NULL:
            if T != NULL:
                gather(T, job.order, start + r0, r1 - r0, width, <floating*> net.tbuf + r0 * width)
                tb = <floating*> net.tbuf
            if job.labels != NULL:
                for i in range(r0, r1):
                    net.lbuf[i] = job.labels[job.order[start + i]]
                lb = net.lbuf
            if W != NULL:
                gather(W, job.order, start + r0, r1 - r0, 1, <floating*> net.wbuf + r0)
                wb = <floating*> net.wbuf
        else:
            tb = (T + start * width) if T != NULL else NULL
            lb = (job.labels + start) if job.labels != NULL else NULL
            wb = (W + start) if W != NULL else NULL
        if wb != NULL:
            for v in range(p.v0, p.v1):
                share(n, v, p.nv, 1, &r0, &r1)
                job.weight_part[v] = weight_sum(wb, r0, r1)
        fastnn_barrier(nt)  # the batch is gathered, and the last step is done everywhere
        if job.stop and not parallel:  # data-parallel: the other processes learn it first
            if lead:
                job.status = INTERRUPTED
            break
        if parallel and n == 0:  # none of this step's rows are here: add zeros
            zero_gradients(net, p)
            if not reduce_step(job, net, &c, 0.0, batch, p) \
                    or not step_wrote_finite(job, net, batch, p):
                break
            count_update(net, &c)
            batch += 1
            continue
        # the batch mean's denominator: its rows, or their summed weights (data-parallel:
        # the global batch's)
        if parallel:
            denom = job.step_denoms[batch]
        else:
            denom = n if wb == NULL else sum_parts(job.weight_part, p.nv)
        rows_per_weight = n / denom if (wb != NULL and net.per_row and denom != 0) else 1.0
        keep_running_stats(net, False, p)
        if net.per_row:
            half_l2_penalty(net, p, job.penalty_part)
        layout = forward(net, &c, xb, n, job.n_run, <floating*> NULL, True, 0, p)
        sync(&layout, ROWS, nt)
        scale = <floating> loss_scale(job.loss_kind, denom, width, net.per_row)
        for v in range(p.v0, p.v1):
            share(n, v, p.nv, 1, &r0, &r1)
            job.loss_part[v] = loss_forward_backward(
                job.loss_kind, job.loss_setting, <floating*> last.out + r0 * width,
                NULL if tb == NULL else tb + r0 * width, NULL if lb == NULL else lb + r0,
                NULL if wb == NULL else wb + r0, <floating*> last.grad + r0 * width, r1 - r0,
                width, scale)
        fastnn_barrier(nt)
        batch_loss = sum_parts(job.loss_part, p.nv)
        if parallel:  # gradients to the flat buffer, summed, then every update
            backward(net, &c, xb, n, job.n_run, False, True, 0.0, p)
            if not reduce_step(job, net, &c, batch_loss, batch, p) \
                    or not step_wrote_finite(job, net, batch, p):
                break
            count_update(net, &c)
            start += n
            batch += 1
            continue
        if not isfinite(batch_loss):
            keep_running_stats(net, True, p)
            if lead:
                job.failed_batch, job.status = batch, BAD_LOSS
            break
        if lead:
            job.loss_sum += batch_loss * rows_per_weight
            if net.per_row:
                net.penalty_sum += sum_parts(job.penalty_part, p.nv) * rows_per_weight
        if net.per_row:
            c.l2_scale = 1.0 / denom if denom != 0 else 0.0
        if job.clip_norm > 0 or job.clip_value > 0:  # the whole gradient first (clipping.pxi)
            backward(net, &c, xb, n, job.n_run, False, True, 0.0, p)
            clip_and_update(job, net, &c, p)
        else:
            if momentum_scale_small(net.opt_kind, c.hyper, c.mom_scale):
                unscale_momentum(net, &c, p)
                fastnn_barrier(nt)  # its blocks of units are not the updates' tiles
            backward(net, &c, xb, n, job.n_run, True, True, 0.0, p)
            c.mom_scale = momentum_scale_after(net.opt_kind, c.hyper, c.mom_scale, c.step)
        if not step_wrote_finite(job, net, batch, p):
            break
        count_update(net, &c)
        start += n
        batch += 1
    fastnn_barrier(nt)  # every thread is done with the Net before thread 0 writes to it
    if lead:
        store_counters(net, &c)
        job.next_start, job.next_batch = start, batch


cdef void train_job(void* ctx, int tid, int nt) noexcept nogil:
    cdef Job* job = <Job*> ctx
    cdef long long before = fastnn_thread_wait_ns() if job.measure else -1
    cdef Part p = part_of(tid, nt, max(nt, job.plan))
    if job.help != NULL:    # thread 0 runs every pass on the plan's blocks, helped
        p = part_of(0, 1, job.plan)
        p.help = job.help
        if nt == 1:         # no helper came (the team was busy): nothing to wait for
            job.help.grace = max(job.help.grace, 0.0)
        if tid > 0:
            fastnn_pin_away(job.help.policy.lead_cpu)
            help_tiles(job.help, tid)
            fastnn_unpin()
        elif job.f64:
            train_steps(job, <const double*> job.X, &p)
        else:
            train_steps(job, <const float*> job.X, &p)
        if tid == 0:
            fastnn_flag_set(&job.help.quit)
            fastnn_pass_begin(&job.help.seq)
            fastnn_pass_post(&job.help.seq, &job.help.sleepers)
    elif job.f64:
        train_steps(job, <const double*> job.X, &p)
    else:
        train_steps(job, <const float*> job.X, &p)
    if job.measure:
        job.waited[tid] = fastnn_thread_wait_ns() - before if before >= 0 else -1
