# Small predicts (up to SMALL_ROWS rows) and infer: on the calling thread or a split over
# the team's awake workers, touching nothing of the Net but its parameters.

# predict_small takes up to SMALL_ROWS rows, within SMALL_VALUES values of a buffer (its
# two per-thread buffers hold rows x the widest layer each)
cdef Py_ssize_t SMALL_ROWS = 64, SMALL_VALUES = 1 << 18
# Small predicts from several Python threads (in any model) each run alone on their
# callers' threads, so that the callers share the cores rather than one taking the team
# and the others squeezing in beside it: a predict runs alone while another runs, or
# when another thread's predict ended within SMALL_SHARED_S. (Changed with the GIL.)
cdef int small_in_flight = 0
cdef unsigned long small_last_thread = 0
cdef double small_last_end = -1e300, SMALL_SHARED_S = 1e-3


cdef double monotonic_s() noexcept nogil:
    cdef timespec t
    clock_gettime(CLOCK_MONOTONIC, &t)
    return t.tv_sec + 1e-9 * t.tv_nsec
# The least work a thread takes in a small predict: a one-row GEMV streams the weights
# from cache, so splitting pays at a far smaller size than a step's products do.
cdef double SMALL_GRAIN_FLOPS = 1e5
# Below this much work, waking a sleeping worker (tens of microseconds) costs more than
# the split saves: such predicts split only while the workers are awake.
cdef double SMALL_WAKE_FLOPS = 2e6


class NonFiniteRow(ValueError):
    """Engine.run / Engine.infer with check_finite found NaN or inf in X, in `row` (the
    first such row on the calling thread; on the team, one of them)."""

    def __init__(self, row):
        super().__init__(f"X contains NaN or inf (in row {row})")
        self.row = row


cdef void forward_split(Net* net, int n_run, const floating* x, floating* out,
                        Py_ssize_t n, floating* buf_a, floating* buf_b, floating* saved,
                        int tid, int nt, int nv, bint row_gemv) noexcept nogil:
    """Thread tid's part of a predict of n rows through the caller's two (n x widest)
    buffers, planned as nv blocks of each layer's units (as forward() splits a step) and
    run on nt threads: thread tid takes blocks tid, tid + nt, ... So the result depends
    on nv only, never on how many threads ran it. With row_gemv (predict_small: OpenBLAS's
    GEMM with one row was slower) a one-row product is a GEMV; else it is the GEMM that
    forward() makes, so infer's rows equal the team's. A barrier comes before each Dense
    layer (and Softmax) reads a whole row. A Dense layer writes the buffer it does not
    read; elementwise layers work in place, so no thread writes a buffer another may
    still be reading. Each kind's part is its predict (kinds.pxi), but a residual block's:
    its BEGIN copies its input into `saved` (n x widest per nesting level: a block's
    input outlives the block's layers, which reuse the two buffers) and its END adds that
    copy to the block's output."""
    cdef int l, layout = WHOLE, depth = 0
    cdef LayerPlan* L
    cdef const floating* inp = x
    cdef floating* dst
    for l in range(n_run):
        L = &net.layers[l]
        if L.kind == RESIDUAL_BEGIN:
            residual_split_entries(inp, <floating*> NULL, saved + depth * n * net.widest,
                                   n, L.n_out, tid, nt, &layout)
            depth += 1
            continue
        if L.kind == RESIDUAL_END:
            depth -= 1
        if l == n_run - 1:
            dst = out
        elif not layer_in_place(L) or inp == x:
            dst = buf_b if inp == buf_a else buf_a
        else:
            dst = <floating*> inp
        if L.kind == RESIDUAL_END:
            residual_split_entries(inp, saved + depth * n * net.widest, dst, n, L.n_out, tid,
                                   nt, &layout)
        else:
            layer_predict(L, inp, dst, n, tid, nt, nv, row_gemv, &layout)
        inp = dst


cdef struct SmallPredict:
    Net* net
    const void* x
    void* out
    void* buf_a
    void* buf_b
    void* saved         # residual blocks' inputs (forward_split)
    Py_ssize_t n
    int plan            # the blocks of units each Dense layer is cut into
    bint f64


cdef void small_predict_job(void* ctx, int tid, int nt) noexcept nogil:
    cdef SmallPredict* p = <SmallPredict*> ctx
    if p.f64:
        forward_split(p.net, p.net.n_layers, <const double*> p.x, <double*> p.out, p.n,
                      <double*> p.buf_a, <double*> p.buf_b, <double*> p.saved, tid, nt,
                      p.plan, True)
    else:
        forward_split(p.net, p.net.n_layers, <const float*> p.x, <float*> p.out, p.n,
                      <float*> p.buf_a, <float*> p.buf_b, <float*> p.saved, tid, nt,
                      p.plan, True)


cdef Py_ssize_t infer_rows(Net* net, int n_run, const floating* X, floating* out,
                           Py_ssize_t n_rows, Py_ssize_t chunk, floating* buf_a,
                           floating* buf_b, floating* saved,
                           bint check_finite) noexcept nogil:
    """Layers [0, n_run) on the calling thread, chunk rows at a time, through the caller's
    two (chunk x widest) buffers and its residual blocks' saved inputs (res_depth x chunk
    x widest) (nothing of the Net's but its parameters is touched).
    With check_finite, each chunk's rows are checked first (while they come into the
    cache to be read): returns the first row holding NaN or inf, or -1."""
    cdef Py_ssize_t start = 0, n, bad, n_in = net.layers[0].n_in
    cdef Py_ssize_t width_out = net.layers[n_run - 1].n_out
    while start < n_rows:
        n = min(chunk, n_rows - start)
        if check_finite:
            bad = first_nonfinite(X + start * n_in, n, n_in)
            if bad >= 0:
                return start + bad
        forward_split(net, n_run, X + start * n_in, out + start * width_out, n, buf_a, buf_b,
                      saved, 0, 1, 1, False)
        start += n
    return -1

