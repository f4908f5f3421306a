# Data-parallel training: the step's gradients summed over the processes by one
# MPI_Allreduce of the flat gradient buffer, then every update from the sums.

cdef int call_python(void* fn) noexcept nogil:
    """A Python reducer: no arguments, True on success (it keeps its own exception)."""
    with gil:
        try:
            return 0 if (<object> fn)() else 1
        except BaseException:
            return 1


cdef int allreduce_flat(Net* net, Py_ssize_t elem_size) noexcept nogil:
    """Sum net.flat over the processes in place (MPI's count is an int: a buffer beyond
    2^31 entries goes in several calls). Returns 0 on success."""
    cdef Reducer* r = &net.reducer
    cdef Py_ssize_t done = 0, count
    cdef int rc
    if r.kind == REDUCE_PYTHON:
        return call_python(r.fn)
    while done < net.flat_size:
        count = min(net.flat_size - done, <Py_ssize_t> 2147483647)
        if r.int_handles:
            rc = (<allreduce_ints> r.fn)(r.in_place, <char*> net.flat + done * elem_size,
                                         <int> count, <int> <size_t> r.datatype,
                                         <int> <size_t> r.op, <int> <size_t> r.comm)
        else:
            rc = (<allreduce_pointers> r.fn)(r.in_place,
                                             <char*> net.flat + done * elem_size, <int> count,
                                             r.datatype, r.op, r.comm)
        if rc != 0:
            return rc
        done += count
    return 0


cdef void put_extra(Net* net, int slot, double value) noexcept nogil:
    """A double into the EXTRA slots; float32 keeps it as two floats, hi + lo, so the
    sum over processes stays close to double precision."""
    cdef float* extra
    cdef float hi
    if net.f64:
        (<double*> net.flat + net.extra_at)[slot] = value
    else:
        extra = <float*> net.flat + net.extra_at
        hi = <float> value
        extra[2 * slot] = hi
        extra[2 * slot + 1] = <float> (value - <double> hi)


cdef double get_extra(Net* net, int slot) noexcept nogil:
    cdef float* extra = <float*> net.flat + net.extra_at
    if net.f64:
        return (<double*> net.flat + net.extra_at)[slot]
    return <double> extra[2 * slot] + <double> extra[2 * slot + 1]


cdef void zero_gradients(Net* net, const Part* p) noexcept nogil:
    """p's share of the flat gradient buffer set to zero (a process with no
    rows in a step adds nothing to the sum)."""
    cdef Py_ssize_t lo, hi
    cdef size_t item = 8 if net.f64 else 4
    span(p, net.extra_at, UNIT_ALIGN, &lo, &hi)
    if hi > lo:
        memset(<char*> net.flat + lo * item, 0, (hi - lo) * item)


cdef void update_from_gradients(Net* net, Counters* c, const Part* p) noexcept nogil:
    """p's blocks of every parameter updated from the (summed) gradient arrays:
    the optimizer's whole update, torch's formula with its coupled L2 term."""
    cdef int i
    cdef Py_ssize_t lo, hi
    cdef ParamPlan* P
    cdef GradientDestination dest
    dest.where, dest.alpha, dest.beta, dest.scale = TO_GRAD, 1.0, 0.0, 1.0
    for i in range(net.n_params):
        P = &net.params[i]
        span(p, P.units, UNIT_ALIGN, &lo, &hi)
        finish_update(net, c, i, dest, lo * P.row, (hi - lo) * P.row)


cdef bint reduce_step(Job* job, Net* net, Counters* c, double local_loss, Py_ssize_t batch,
                      const Part* p) noexcept nogil:
    """Data-parallel: sum this step's gradients, loss and stop flags over the processes
    (thread 0, one allreduce), then, unless a process stopped or the global loss is not
    finite, update every parameter from the sums (clipped first where the job clips:
    every process clips the same global gradient). Returns whether training goes on."""
    cdef double batch_loss
    cdef bint lead = p.v0 == 0   # the calling thread
    fastnn_barrier(p.nt)   # every block of the gradients is written
    if lead:
        put_extra(net, 0, local_loss)
        put_extra(net, 1, 1.0 if job.stop else 0.0)
        job.reduce_failed = allreduce_flat(net, 8 if net.f64 else 4) != 0
    fastnn_barrier(p.nt)
    if job.reduce_failed:
        if lead:
            job.status = REDUCE_FAILED
        return False
    if get_extra(net, 1) > 0:
        if lead:
            job.status = INTERRUPTED if job.stop else PEER_STOPPED
        return False
    batch_loss = get_extra(net, 0)
    if not isfinite(batch_loss):
        if lead:
            job.failed_batch, job.status = batch, BAD_LOSS
        return False
    if lead:
        job.loss_sum += batch_loss
    if job.clip_norm > 0 or job.clip_value > 0:
        clip_and_update(job, net, c, p)
    else:
        update_from_gradients(net, c, p)
    return True


def allreduce_probe(array, size_t fn, size_t in_place, size_t datatype, size_t op,
                    size_t comm, bint int_handles):
    """Sum a small float array over the processes through a resolved MPI_Allreduce, as a
    data-parallel step would (fastnn.distributed checks the handles with it); returns
    MPI's error code."""
    cdef Net net
    cdef int rc
    cdef Py_ssize_t itemsize = array.itemsize
    if array.dtype not in (np.float32, np.float64) or not array.flags.c_contiguous:
        raise TypeError("allreduce_probe: a C-contiguous float array")
    memset(&net, 0, sizeof(Net))
    net.reducer.kind = REDUCE_MPI
    net.reducer.fn, net.reducer.in_place = <void*> fn, <void*> in_place
    net.reducer.datatype, net.reducer.op = <void*> datatype, <void*> op
    net.reducer.comm, net.reducer.int_handles = <void*> comm, int_handles
    net.flat, net.flat_size = data_ptr(array), array.size
    with nogil:
        rc = allreduce_flat(&net, itemsize)
    return rc
