# Predict and evaluate on the team: evaluations split each chunk's rows; predicts hand
# out blocks of rows to whichever thread is free.

cdef void run_steps(Job* job, const floating* X, int tid, int nt) noexcept nogil:
    """Thread tid's part of predicting into job.out, or evaluating the loss (and its
    gradient, summed into the parameters' gradient arrays as the gradient of the mean
    over all n_samples, or of the weighted mean), in chunks of the buffers' capacity.
    With job.training, the layers run as in a training step (batch statistics, dropout
    masks) without changing batch norm's running statistics. X: job.X, typed."""
    cdef Net* net = job.net
    cdef Counters c = counters_of(net)
    cdef LayerPlan* last = &net.layers[job.n_run - 1]
    cdef Py_ssize_t width = last.n_out, n_in = net.layers[0].n_in
    cdef Py_ssize_t start = 0, n, r0, r1, chunk = 0
    cdef int i
    cdef const floating* T = <const floating*> job.T
    cdef const floating* W = <const floating*> job.W
    cdef const floating* xb
    cdef floating* out = <floating*> job.out
    cdef floating scale = <floating> loss_scale(
        job.loss_kind, job.weight_total if W != NULL else <double> job.n_samples, width,
        net.per_row)
    cdef int layout
    cdef Part p = part_of(tid, nt, nt), alone = part_of(0, 1, 1)
    # Evaluations split each chunk's rows: each thread runs every layer on its rows, in
    # its rows of the buffers, with no barrier between layers (predicts do the same in
    # claimed blocks: predict_blocks). On 60,000 rows of 784-256-128-10 this took
    # 1.03-1.05x the forward products (BLAS's own threads), where splitting units took
    # 1.14-1.18x: each thread packs half the input, not all of it, and its rows'
    # activations stay in its cache (docs/benchmarks.md).
    cdef bint by_rows = not job.training and not job.want_grads
    if job.training:
        keep_running_stats(net, False, &p)
    while start < job.n_samples:
        if tid == 0 and check_signals() != 0:
            job.stop = 1
        n = min(job.batch_size, job.n_samples - start)
        share(n, tid, nt, 1, &r0, &r1)
        if job.sparse:  # the other buffer may still be read by the last chunk
            gather_inputs(job, start + r0, r1 - r0, n_in,
                          <floating*> net.xbuf[chunk % 2] + r0 * n_in)
            xb = <floating*> net.xbuf[chunk % 2]
        else:
            xb = X + start * n_in
        fastnn_barrier(nt)  # the last chunk is done everywhere, this one gathered
        if job.stop:
            if tid == 0:
                job.status = INTERRUPTED
            break
        if by_rows:
            if r1 > r0:
                forward(net, &c, xb + r0 * n_in, r1 - r0, job.n_run,
                        (out + (start + r0) * width) if out != NULL else <floating*> NULL,
                        False, r0, &alone)
            layout = ROWS
        else:
            layout = forward(net, &c, xb, n, job.n_run,
                             (out + start * width) if out != NULL else <floating*> NULL,
                             job.training, 0, &p)
        if job.loss_kind >= 0:
            sync(&layout, ROWS, nt)
            job.loss_part[tid] = loss_forward_backward(
                job.loss_kind, job.loss_setting, <floating*> last.out + r0 * width,
                NULL if T == NULL else T + (start + r0) * width,
                NULL if job.labels == NULL else job.labels + start + r0,
                NULL if W == NULL else W + start + r0,
                <floating*> last.grad + r0 * width if job.want_grads else <floating*> NULL,
                r1 - r0, width, scale)
            job.correct_part[tid] = count_correct(
                job.loss_kind, <floating*> last.out + r0 * width,
                NULL if T == NULL else T + (start + r0) * width,
                NULL if job.labels == NULL else job.labels + start + r0,
                NULL if W == NULL else W + start + r0, r1 - r0, width)
            fastnn_barrier(nt)
            if tid == 0:
                job.loss_sum += sum_parts(job.loss_part, nt)
                job.correct += sum_parts(job.correct_part, nt)
            if job.want_grads:
                backward(net, &c, xb, n, job.n_run, False, job.training,
                         0.0 if start == 0 else 1.0, &p)
        start += n
        chunk += 1
    fastnn_barrier(nt)
    if job.training:
        keep_running_stats(net, True, &p)


cdef inline Py_ssize_t predict_block(Py_ssize_t batch_size, int plan) noexcept nogil:
    """The rows of a predict's blocks: its results are fixed by them (a block's product
    is one BLAS call), so they follow the plan, not the threads that came."""
    return max(1, batch_size // plan)


cdef void predict_blocks(Job* job, floating* out, int tid, int nt) noexcept nogil:
    """Thread tid's part of a predict: blocks of batch_size / plan rows (predict_block),
    claimed one at a time until none is left, each run through every layer in the
    thread's own rows of the buffers. No barrier until the end, so a thread the
    scheduler takes off its core holds up only the block in its hands, and the others
    take the rest: on a machine
    whose other processes hold a core, the team still gets what the free cores give.
    A row's result does not depend on which thread computes its block. out: job.out,
    typed."""
    cdef Net* net = job.net
    cdef Counters c = counters_of(net)
    cdef Py_ssize_t width = net.layers[job.n_run - 1].n_out, n_in = net.layers[0].n_in
    cdef Py_ssize_t block = predict_block(job.batch_size, job.plan), start, n, bad
    cdef const floating* xb
    cdef Part alone = part_of(0, 1, 1)
    while True:
        if tid == 0 and check_signals() != 0:
            fastnn_flag_set(&job.stop)
        if fastnn_flag_get(&job.stop) or fastnn_flag_get(&job.halt):
            break
        start = fastnn_claim(&job.next_block) * block
        if start >= job.n_samples:
            break
        n = min(block, job.n_samples - start)
        if job.sparse:
            xb = <floating*> net.xbuf[0] + tid * block * n_in
            gather_inputs(job, start, n, n_in, <floating*> xb)
        else:
            xb = <const floating*> job.X + start * n_in
            if job.check_finite:
                bad = first_nonfinite(xb, n, n_in)
                if bad >= 0:
                    job.bad_row[tid] = start + bad
                    fastnn_flag_set(&job.halt)
                    break
        forward(net, &c, xb, n, job.n_run, out + start * width, False, tid * block, &alone)
    fastnn_barrier(nt)
    if tid == 0 and job.stop:
        job.status = INTERRUPTED


cdef void run_job(void* ctx, int tid, int nt) noexcept nogil:
    cdef Job* job = <Job*> ctx
    cdef bint predict = job.loss_kind < 0 and not job.training and not job.want_grads
    if job.f64:
        if predict:
            predict_blocks(job, <double*> job.out, tid, nt)
        else:
            run_steps(job, <const double*> job.X, tid, nt)
    elif predict:
        predict_blocks(job, <float*> job.out, tid, nt)
    else:
        run_steps(job, <const float*> job.X, tid, nt)
