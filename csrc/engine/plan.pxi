# The network plan: the structs a job reads (layers, parameters, the Net, a job), the
# kinds' codes by name, and the plan's blocks (Part): how a step's work is cut so that
# its results depend on the plan, never on the threads that run it.

# The codes of _kinds.pxd, by the names the Python layer uses.
LAYER_KINDS = {"dense": DENSE, "identity": IDENTITY, "relu": RELU, "leaky_relu": LEAKY_RELU,
               "sigmoid": SIGMOID, "tanh": TANH, "softmax": SOFTMAX, "dropout": DROPOUT,
               "batchnorm": BATCHNORM, "gelu": GELU, "gelu_tanh": GELU_TANH, "silu": SILU,
               "elu": ELU, "softplus": SOFTPLUS, "layernorm": LAYERNORM,
               "residual_begin": RESIDUAL_BEGIN, "residual_end": RESIDUAL_END,
               "embedding": EMBEDDING}
LOSS_KINDS = {"cross_entropy_labels": CROSS_ENTROPY_LABELS,
              "cross_entropy_probs": CROSS_ENTROPY_PROBS,
              "binary_cross_entropy": BINARY_CROSS_ENTROPY, "mse": MSE, "l1": L1,
              "poisson_nll": POISSON, "huber": HUBER}
OPTIMIZER_KINDS = {"sgd": SGD, "adam": ADAM, "rmsprop": RMSPROP, "adagrad": ADAGRAD,
                   "adadelta": ADADELTA, "nadam": NADAM}
MAX_THREADS = FASTNN_MAX_THREADS

cdef enum:
    MAX_HYPER = 16
    UNIT_ALIGN = 16     # a thread's block of units starts at a multiple of this (64 bytes)

cdef enum Layout:       # how the threads last wrote a buffer
    WHOLE = 0           # complete for every thread (after a barrier, or given)
    COLS = 1            # each thread its block of columns
    ROWS = 2            # each thread its block of rows
    TILES = 3           # each thread its tiles of a Dense layer's grid (see dense_grid)

# The least work (flops of a step's matrix products) worth another thread: a call's plan
# has one block per GRAIN_FLOPS, within the thread setting (plan_threads; docs/design.md
# says what chose it).
cdef double GRAIN_FLOPS = 8e6


cdef struct LayerPlan:
    int kind
    int n_in
    int n_out
    double slope        # the kind's setting: LeakyReLU's slope, ELU's alpha, Softplus's
                        # beta, Dropout's p
    double threshold    # Softplus: where beta z passes it, the output is z
    void* weight
    void* bias
    int weight_param    # index into Net.params, -1 if none
    int bias_param
    void* out           # (capacity, n_out) output block
    void* grad          # (capacity, n_out) dL/d(out)
    void* mask          # (capacity, n_out) dropout scale factors (dropout layers only)
    # batch norm (n_out entries each): its running statistics (updated in place), the
    # batch's mean and 1/std, the gradients of gamma and beta, and the running statistics
    # as the step found them (restored if it fails: keep_running_stats)
    void* running_mean
    void* running_var
    void* batch_mean
    void* batch_invstd
    void* dgamma
    void* dbeta
    void* saved_mean
    void* saved_var
    double eps
    double momentum
    bint need_grad_in   # whether a layer below has parameters
    bint tiles_ok       # Dense: its grid may cut rows (batch norm next to it only once
                        # training has reserved bn_part: on columns it wants whole ones)
    # batch norm on row blocks (batchnorm_rows_*): per block v of the plan, partial sums
    # at bn_part + v m and bn_part + (bn_blocks + v) m, then a copy of gamma (m), then
    # each thread's own totals (2 m at slot v0, its first block: bn_own_totals)
    void* bn_part
    int bn_blocks       # plan blocks bn_part holds (0: none; batch norm runs on columns)
    # layer norm: each row's mean and 1/std in the training step (capacity entries each);
    # its gamma and beta gradients are dgamma and dbeta, its block sums in bn_part
    void* row_mean
    void* row_invstd
    # a residual block's BEGIN or END: the offset to the other; forward and reverse mode's
    # buffers that outlive the block (BEGIN: its values and tangents; END: its cotangents)
    int link
    void* res_val
    void* res_tan
    # embedding (embedding.pxi): emb_k code columns, their tables' widths, sizes and first
    # rows, the numeric columns in order, and the table's gradient (the plan's scratch)
    int emb_k
    Py_ssize_t emb_dim
    const int64_t* emb_cols
    const int64_t* emb_card
    const int64_t* emb_offset
    const int64_t* emb_numeric
    void* emb_grad
    # forward mode in parameters (tangent.pxi): a direction for the weight and the bias
    void* dweight
    void* dbias


# Data-parallel training (fastnn/distributed.py): after each step's backward pass, thread
# 0 sums the flat gradient buffer over the processes with one MPI_Allreduce (in place),
# called through a pointer resolved from the MPI library mpi4py loaded, or through a short
# call back into Python (mpi4py's Comm.Allreduce): docs/distributed.md times the two.
cdef enum:
    REDUCE_NONE = 0
    REDUCE_MPI = 1      # fn is MPI_Allreduce; handles are pointers, or ints (int_handles)
    REDUCE_PYTHON = 2   # fn is a Python callable: no arguments, True on success
    EXTRA = 8           # slots after the gradients: loss (f32: 2 floats), stop flag

ctypedef int (*allreduce_pointers)(const void*, void*, int, void*, void*,
                                   void*) noexcept nogil
ctypedef int (*allreduce_ints)(const void*, void*, int, int, int, int) noexcept nogil


cdef struct Reducer:
    int kind
    void* fn
    void* in_place      # MPI_IN_PLACE
    void* datatype      # MPI_DOUBLE or MPI_FLOAT, as the buffer
    void* op            # MPI_SUM
    void* comm
    bint int_handles    # MPICH-style handles: ints, not pointers
    const unsigned char* stop_request  # nonzero: stop at the next step, with the others


cdef struct ParamPlan:
    Py_ssize_t size
    Py_ssize_t units    # thread t owns entries [lo * row, hi * row), [lo, hi) its units
    Py_ssize_t row
    double l2           # coupled decay from the layer's L2 penalty (2 lambda; 0 for biases)
    void* value
    void* grad
    void* state[3]


cdef struct Net:
    bint f64            # the parameters and buffers are double (else float)
    int n_layers
    int res_depth       # residual blocks nested at most this deep (0: none)
    Py_ssize_t widest   # the widest layer input or output
    LayerPlan* layers
    int n_params
    ParamPlan* params
    Py_ssize_t capacity
    void* ones
    void* xbuf[2]       # (capacity, n_in of layer 0) gathered inputs, alternate steps
    void* tbuf          # (capacity, n_out of last layer) gathered float targets
    int64_t* lbuf       # (capacity,) gathered labels
    void* wbuf          # (capacity,) gathered sample weights
    uint64_t rng        # dropout's splitmix64 state
    int opt_kind
    double hyper[MAX_HYPER]
    long long step      # optimizer updates made so far
    double mom_scale    # SGD momentum buffers hold b / mom_scale (see _optimizers.pxd)
    double mu_product   # NAdam's product of momentum coefficients over the updates made
    bint per_row        # scikit-learn's conventions (Engine.use_per_row_scaling)
    double l2_scale     # the L2 coefficients' factor in the current step (1, or 1/rows)
    double penalty_sum  # per_row: the sum over steps of 0.5 * l2 * |W|^2 before each step
    Reducer reducer     # data-parallel training: how a step's gradients are summed
    void* flat          # every parameter's gradient, one contiguous block, then EXTRA slots
    Py_ssize_t flat_size
    Py_ssize_t extra_at # where the EXTRA slots start in flat


# A thread's copy of the step's counters: every thread advances its own alike, and
# thread 0 writes them back to the Net when the job ends (no shared writes mid-step).
cdef struct Counters:
    long long step
    double mom_scale
    double mu_product
    double hyper[MAX_HYPER]     # the optimizer's settings for this step (a schedule's lr
                                # and momentum per step, else the Net's)
    double l2_scale
    uint64_t rng


cdef struct Part:
    # A training step's work is cut into the plan's nv blocks (of units, of rows); a
    # thread runs the blocks [v0, v1), and each block's matrix products and partial sums
    # are made exactly as when it has a thread of its own. A stretch on fewer threads
    # than the plan (train_adapting) therefore gives the plan's results bit for bit.
    int v0
    int v1
    int nv
    int nt      # threads running now: they meet at the barriers
    Help* help  # a lead's helpers (run_tiles), or NULL


cdef inline Part part_of(int tid, int nt, int nv) noexcept nogil:
    """Thread tid of nt's contiguous run of a plan of nv >= nt blocks."""
    cdef Part p
    p.v0, p.v1, p.nv, p.nt, p.help = tid * nv // nt, (tid + 1) * nv // nt, nv, nt, NULL
    return p


cdef inline void span(const Part* p, Py_ssize_t n, Py_ssize_t align, Py_ssize_t* lo,
                      Py_ssize_t* hi) noexcept nogil:
    """[lo, hi): the union of the shares of [0, n) of p's blocks (elementwise passes)."""
    cdef Py_ssize_t ignored
    if p.v1 <= p.v0:
        lo[0] = hi[0] = 0
        return
    share(n, p.v0, p.nv, align, lo, &ignored)
    share(n, p.v1 - 1, p.nv, align, &ignored, hi)


cdef inline bint sync(int* layout, int wanted, int nt) noexcept nogil:
    """Meet at a barrier unless each thread's next reads are its own writes (the buffer is
    whole, or written and read by the same blocks); returns whether it met."""
    if layout[0] == WHOLE or layout[0] == wanted:
        return False
    fastnn_barrier(nt)
    layout[0] = WHOLE
    return True


# One forward or backward pass over the layers as one thread runs it (passes.pxi): each
# kind's pass (kinds.pxi) reads what it needs and leaves the layout it wrote in.
cdef struct Pass:
    Net* net
    Counters* c
    const Part* p
    bint f64
    Py_ssize_t n            # the batch's rows
    Py_ssize_t row0         # where they start in the layers' buffers (a team predict)
    bint training           # dropout draws masks, batch norm takes the batch's statistics
    int layout              # how the threads wrote the buffer the next layer reads
    int grid                # the rows of the grid of the Dense pass that wrote it
    bint update             # backward: a training step (the optimizer takes the gradients)
    double grad_beta        # backward otherwise: 1 adds to the gradient arrays, 0 sets
    LayerPlan* pending      # backward: a Dense layer whose weight tiles' update waits for
    const void* pending_inp #   the next barrier (others still read its W), and its input


cdef inline Pass pass_of(Net* net, Counters* c, const Part* p, Py_ssize_t n,
                         bint training) noexcept nogil:
    cdef Pass s
    memset(&s, 0, sizeof(s))
    s.net, s.c, s.p, s.n, s.training = net, c, p, n, training
    s.layout, s.grid, s.pending = WHOLE, 1, NULL
    return s


cdef int read_spec(LayerPlan* L, spec) except -1:
    """Fill L's kind, widths, slope and parameter pointers from a layer's spec
    (fastnn.layers.LayerSpec: kind, n_in, n_out, slope, weight, bias, l2, extra); batch
    norm's eps, momentum and running statistics and Softplus's threshold from its extra.
    The one place a spec is read, for training and forward mode alike."""
    kind, n_in, n_out, slope, weight, bias, l2, extra, trainable = spec
    L.kind, L.n_in, L.n_out, L.slope = kind, n_in, n_out, slope
    L.weight, L.bias = data_ptr(weight), data_ptr(bias)
    if kind == SOFTPLUS:
        L.threshold = extra["threshold"]
    if kind == LAYERNORM:
        L.eps = extra["eps"]
    if kind == RESIDUAL_BEGIN or kind == RESIDUAL_END:
        L.link = extra["link"]
    if kind == EMBEDDING:
        for name in ("columns", "cardinalities", "offsets", "numeric"):
            if extra[name].dtype != np.int64 or not extra[name].flags.c_contiguous:
                raise TypeError(f"embedding {name}: a C-contiguous int64 array")
        L.emb_k, L.emb_dim = len(extra["columns"]), extra["dim"]
        L.emb_cols = <const int64_t*> data_ptr(extra["columns"])
        L.emb_card = <const int64_t*> data_ptr(extra["cardinalities"])
        L.emb_offset = <const int64_t*> data_ptr(extra["offsets"])
        L.emb_numeric = <const int64_t*> data_ptr(extra["numeric"])
    if kind == BATCHNORM:
        L.eps, L.momentum = extra["eps"], extra["momentum"]
        L.running_mean = data_ptr(extra["running_mean"])
        L.running_var = data_ptr(extra["running_var"])
    return 0


cdef void* data_ptr(object arr):
    """Address of a C-contiguous numpy array's first element (None -> NULL)."""
    if arr is None:
        return NULL
    return <void*> <size_t> arr.__array_interface__["data"][0]


cdef void* new_array_data(shape, dtype, list keep):
    """A new C-contiguous array (appended to keep) and its data's address, through the
    buffer protocol: cheaper than __array_interface__ where microseconds count."""
    cdef Py_buffer view
    arr = np.empty(shape, dtype=dtype)
    keep.append(arr)
    PyObject_GetBuffer(arr, &view, PyBUF_C_CONTIGUOUS)
    cdef void* ptr = view.buf
    PyBuffer_Release(&view)
    return ptr


cdef inline floating* at(floating* base, Py_ssize_t offset) noexcept nogil:
    """base + offset elements, or NULL for a missing array."""
    return NULL if base == NULL else base + offset


cdef inline void share(Py_ssize_t n, int tid, int nt, Py_ssize_t align, Py_ssize_t* lo,
                       Py_ssize_t* hi) noexcept nogil:
    """Thread tid's contiguous share [lo, hi) of [0, n), its ends multiples of align."""
    cdef Py_ssize_t blocks = (n + align - 1) // align
    lo[0] = min(n, (blocks * tid // nt) * align)
    hi[0] = min(n, (blocks * (tid + 1) // nt) * align)


cdef Counters counters_of(Net* net) noexcept nogil:
    cdef Counters c
    c.step, c.mom_scale, c.l2_scale, c.rng = net.step, net.mom_scale, net.l2_scale, net.rng
    c.mu_product = net.mu_product
    memcpy(c.hyper, net.hyper, sizeof(net.hyper))
    return c


cdef void store_counters(Net* net, Counters* c) noexcept nogil:
    net.step, net.mom_scale, net.l2_scale, net.rng = c.step, c.mom_scale, c.l2_scale, c.rng
    net.mu_product = c.mu_product


cdef int plan_threads(Net* net, Py_ssize_t rows, int n_run, int passes,
                      int max_threads) noexcept nogil:
    """Threads for a call: one per GRAIN_FLOPS of a step's matrix products (`passes`
    products per Dense layer: 3 when training, 1 forward only), within [1, max_threads]."""
    cdef int n = <int> min(<double> max_threads,
                           forward_flops(net, rows, n_run) * passes / GRAIN_FLOPS)
    return max(1, min(n, FASTNN_MAX_THREADS))


cdef double forward_flops(Net* net, Py_ssize_t rows, int n_run) noexcept nogil:
    """The flops of the Dense layers' products in a forward pass of `rows` rows."""
    cdef double flops = 0
    cdef int l
    for l in range(n_run):
        if net.layers[l].kind == DENSE:
            flops += 2.0 * rows * net.layers[l].n_in * net.layers[l].n_out
    return flops


cdef enum JobStatus:     # how a job ended
    RAN = 0             # every step it was given
    BAD_LOSS = 1        # a batch's loss was not finite (failed_batch; nothing updated)
    BAD_UPDATE = 2      # check_steps: an update wrote NaN or inf (failed_batch)
    INTERRUPTED = -1    # a signal handler raised (its exception is pending)
    PEER_STOPPED = -2   # data-parallel: another process stopped
    REDUCE_FAILED = -3  # data-parallel: the allreduce failed


cdef struct Help     # a lead and its helpers (helpers.pxi)


# One call on the team: an epoch of training, or a predict/evaluate/gradients run.
cdef struct Job:
    Net* net
    bint f64
    const void* X       # the rows, or a CSR matrix's values (sparse)
    const void* T
    const int64_t* labels
    const void* W       # sample weights, one per row of X, or NULL
    const int64_t* order
    bint sparse         # X is CSR: values X, column indices sp_indices, row starts sp_indptr
    const int64_t* sp_indices
    const int64_t* sp_indptr
    bint training       # run: batch norm on batch statistics, dropout drawing masks
    double weight_total # run: the sum of W (the mean's denominator)
    void* out
    Py_ssize_t n_samples
    Py_ssize_t batch_size
    Py_ssize_t n_steps           # data-parallel: the epoch's global batches
    const int64_t* step_rows     # this process's rows in each step
    const double* step_denoms    # and the global batch's rows (or summed weights)
    int loss_kind
    double loss_setting # Huber's delta, cross-entropy's label smoothing
    int n_run
    bint want_grads
    int stop            # thread 0 -> all: a signal's exception is pending
    JobStatus status
    int reduce_failed   # thread 0 -> all
    double loss_sum     # results, written by thread 0
    double correct      # correct predictions (weighted by W when given)
    Py_ssize_t failed_batch
    # train: the stretch of steps this job runs (Engine.train_epoch runs an epoch as one
    # job, or in stretches sized to the cores the machine gives), where the next begins
    Py_ssize_t next_start        # the next step's first row in the call's sequence
    Py_ssize_t next_batch        # and its index
    Py_ssize_t end_batch         # the stretch stops before this step
    int plan                     # training: the plan's blocks (Part), on any threads
    Help* help                   # training: thread 0 leads, the others help (train_job)
    bint measure                 # each thread reads its run delay around the stretch
    bint check_finite            # predict_blocks: each thread checks its rows of X
    Py_ssize_t bad_row[256]      # the first such row each thread found, or -1
    long next_block              # predict_blocks: the next block of rows to claim
    int halt                     # predict_blocks: a thread found NaN or inf
    bint check_steps             # train: after each update, check what it wrote
    int bad_write                # train: a thread's blocks hold NaN or inf after a step
    long long waited[256]        # ns each thread waited for a CPU in the stretch (-1: unknown)
    double loss_part[256]      # per thread (FASTNN_MAX_THREADS)
    double penalty_part[256]
    double correct_part[256]
    double weight_part[256]
    double clip_part[256]      # gradient clipping: each block's sum of squares
    double clip_norm           # clip the step's gradient to this norm (0: no)
    double clip_value          # clamp each gradient entry to [-clip_value, clip_value]
    const double* step_lr        # per step of the call: the learning rate (NULL: hyper's)
    const double* step_momentum  # and the momentum (SGD) or beta1 (Adam), or NULL
