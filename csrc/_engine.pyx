"""The training driver: runs every batch of an epoch in compiled code, on fastnn's team.

Design, in eight points:
1. Python (fastnn/model.py) validates the input, converts it once per call to a
   C-contiguous array of the model's dtype, and builds one Engine per model. Every
   batch of fit, predict, evaluate and gradients then runs here with the GIL released.
2. Buffers: the Engine owns, per layer, an output block and a gradient block of
   `capacity` rows, plus two gathered input batches (alternate steps), targets and a
   vector of ones. They are (re)allocated only when a call needs more rows: nothing is
   allocated per step. Parameters are the layers' own numpy arrays (live).
3. Threads: one team (csrc/team.h, pthreads) runs every pass of a step; BLAS is pinned
   to one thread meanwhile, so exactly one pool is ever busy. Each Dense layer's
   products are cut into a grid of the plan's blocks (dense_grid): R blocks of the
   batch's rows by C of the layer's units (multiples of 16), R C = blocks. Block (r, c)
   computes Y[rows_r, units_c] = A[rows_r] W[units_c]^T + b and the activation and
   dropout of that tile; in backward dA[rows_r, inputs_c] = dZ[rows_r] W[:, inputs_c]
   for the layer below, and dW[units_c, inputs_r] = dZ[:, units_c]^T A[:, inputs_r]
   over the whole batch folded into its tile's optimizer update. R = 1 is a block of
   units per thread; R is chosen per layer and batch to pack the least (C threads each
   pack the input, R each pack W), and a layer of fewer units than blocks (a 10-class
   output) splits its rows. Projected for 16 threads from one-thread timings, this cut
   784-256-128-10's epoch from 1.77-1.96x the floor to 1.31-1.40x at batch 128 and 512;
   on 2 threads at batch 512 it was ahead of units alone in 7 of 9 interleaved cells
   (by up to 0.06x the floor), level in one, behind by 0.03 in one (docs/design.md).
   Training batch norm runs on the plan's row blocks: block sums per feature, totalled
   in block order by every thread for itself (two barriers forward, one backward), so its
   neighbours cut rows like any Dense layer (784-256-128-10 with BatchNorm1d at batch
   512: 1.07x the floor, against 1.16x when its neighbours kept R = 1 and it ran on
   columns; bench_toolkit runs 5 and 6). One block, and evaluation, run it on columns.
   Gathering and the loss split rows. The threads meet at a barrier only where a pass
   reads what another thread wrote: before each Dense layer, around the loss, inside
   batch norm (about two per Dense layer and step). A weight tile's update waits for the next
   barrier, after every thread has read W for the input gradient.
   Why not BLAS's threads plus OpenMP for the rest: measured on 2 cores, an OpenMP
   region between BLAS calls wakes a second pool whose spinning threads fight BLAS's
   (bench/bench_openmp.py: epochs 4-215x the floor with libgomp's default policy,
   1.03-1.66x with passive waiting, where the team's are 0.89-1.07x);
   and BLAS threads each product separately, waking its pool ~8 times a step. The
   measurements behind this design are in docs/design.md.
4. Plan: the thread count is chosen once per call from the step's work (its matrix
   products' flops, at least GRAIN_FLOPS per thread), capped by fnn.set_num_threads.
   The plan cuts a training step into that many blocks (struct Part); a thread that
   runs several blocks makes each block's products and partial sums as a thread of its
   own would. So results depend on the plan only, never on how many threads ran it:
   training is bitwise reproducible for a given plan, however busy the machine, and
   plans differ only in BLAS's blocking and the grouping of the loss's partial sums.
   A busy machine: barrier-bound threads go at the pace of the one sharing its core
   with another process (2 threads: 2.02-2.15x the idle epoch with one process spinning
   beside, 1 thread: 1.67-1.84x). While no count is fixed, an epoch therefore runs in
   stretches of ~20 ms, and each thread's wait for a CPU (csrc/contention.h) sets the
   next stretch's threads (train_adapting), each running its share of the plan's
   blocks. Where that leaves one thread, it leads and the others help (csrc/helping.h):
   the lead runs every pass, helpers take tiles of its Dense passes into scratch, and
   the lead computes again a tile whose helper is late, so a helper off its core never
   holds the step. The lead is kept on its CPU and the helpers off it. 1.44-1.47x the
   idle epoch, against 1.91-1.99x without helpers and 1.80-1.84x on one thread
   (bench_busy.py, three runs of 5 rounds; docs/design.md). Below the plan it tries
   the whole plan again after 2, 4, then every 8 calm stretches, or after a helped
   stretch in which no thread waited. Other fastnn processes training on the same CPUs
   are known, not guessed (csrc/neighbours.h): each stretch is capped at this process's
   share of its CPUs, and helpers come only where that share is over one thread. Two
   processes on 2 cores: 2.13-2.28 s each for 3 epochs, against 2.51-2.80 s before and
   2.02 s at one thread each (bench_neighbours.py, 5 rounds).
5. A training step: gather the batch (shuffled order; a sparse X's rows densified into
   the batch buffer; sample weights with their rows), forward through the trained
   layers, fused loss + gradient, stop if the loss is not finite (parameters untouched),
   backward (no input gradient below the first layer with parameters), each block's
   optimizer update in the same pass as its gradient product.
6. Between steps thread 0 takes the GIL just long enough to check for signals, so
   Ctrl-C stops within one batch and leaves the parameters of the last completed step.
7. Small predicts never touch the Net's buffers, so several Python threads predict at
   once. Up to 64 rows go through Engine.predict_small: compiled checks, the thread's
   scratch block (csrc/scratch.h), no allocation but the output.
   - One row uses GEMV (OpenBLAS's GEMM with one row was slower).
   - A split over the team is made only while its workers are awake (they spin 200 us
     after a job). One row of 784-256-128-10 then took 7.4-8.6 us against 12.5 us on
     one core (docs/benchmarks.md).
   - While other threads predict, each runs alone on its core.
   - Larger predicts below the grain use Engine.infer on the calling thread.
   - Predicts and evaluations on the team split rows, not units: each thread runs every
     layer on its rows with no barrier between layers and checks them for NaN/inf as it
     reads them. A predict hands out blocks of batch_size / threads rows to whichever
     thread is free (predict_blocks), so a thread taken off its core holds up only its
     block. 60,000 rows: 1.01x the forward products with BLAS's own threads (1.14-1.18x
     when units were split); with another process spinning on one of the 2 cores,
     1.32-1.36x the idle time, against 1.95-1.98x for fixed halves.
8. Data-parallel steps (fastnn/distributed.py): the gradients land in one flat buffer
   (Engine.flat_gradients), thread 0 sums it over the processes with one MPI_Allreduce
   (its address from the MPI library mpi4py loaded; or a call back into Python), and
   each thread then applies the whole optimizer update to its blocks. 2 processes x 1
   thread came within 1.11-1.17x of 1 x 2 threads on 2 cores; the data-parallel step
   itself costs 0.6% over ordinary training on one thread (docs/distributed.md).
"""
from cython cimport floating
from libc.math cimport isfinite, sqrt
from libc.stdint cimport int64_t, uint64_t
from cpython.pyport cimport PY_SSIZE_T_MAX
from libc.stdlib cimport calloc, free, getenv
from libc.string cimport memcpy, memset

import contextlib
import os

import numpy as np

from _activations cimport activation_backward, activation_forward
from _blas cimport axpy, gemv, sum_of_squares
from _dense cimport dense_forward, dense_input_grad, dense_param_grad
from _batchnorm cimport (bn_colsum, bn_colsqdev, bn_grad_input, bn_grad_sums, bn_normalize,
                         batchnorm_backward, batchnorm_eval_backward, batchnorm_eval_forward,
                         batchnorm_train_forward)
from _finite cimport all_finite, first_nonfinite
from _dropout cimport dropout_advance, dropout_backward, dropout_forward_block
from _kinds cimport (BATCHNORM, DENSE, DROPOUT, IDENTITY, RELU, LEAKY_RELU, SIGMOID, TANH, SOFTMAX,
                     CROSS_ENTROPY_LABELS, CROSS_ENTROPY_PROBS, BINARY_CROSS_ENTROPY, MSE, L1,
                     POISSON,
                     SGD, ADAM, RMSPROP, ADAGRAD)
from _losses cimport count_correct, loss_forward_backward
from _optimizers cimport (GradientDestination, TO_GRAD, destination_array,
                          gradient_destination, optimizer_finish, uses_scaled_momentum)

from cpython.buffer cimport PyBUF_C_CONTIGUOUS, PyBUF_FORMAT, PyBuffer_Release, PyObject_GetBuffer
from cpython.pythread cimport PyThread_get_thread_ident
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

cdef extern from "contention.h" nogil:
    long long fastnn_thread_wait_ns()

cdef extern from "neighbours.h" nogil:
    int fastnn_neighbours_open(const char* path)
    int fastnn_neighbours_share(int most)
    const char* fastnn_neighbours_path()
cdef extern from "helping.h" nogil:
    int FASTNN_TILE_FREE, FASTNN_TILE_TAKEN, FASTNN_TILE_DONE, FASTNN_TILE_LEAD
    uint64_t fastnn_tile_word(uint64_t pass_seq, int helper, int status)
    int fastnn_tile_status(uint64_t word)
    int fastnn_tile_helper(uint64_t word)
    uint64_t fastnn_load_word(uint64_t* word)
    void fastnn_store_word(uint64_t* word, uint64_t value)
    bint fastnn_swap_word(uint64_t* word, uint64_t expected, uint64_t desired)
    void fastnn_pass_begin(unsigned* seq)
    void fastnn_pass_post(unsigned* seq, int* sleepers)
    unsigned fastnn_pass_wait(unsigned* seq, unsigned seen, int* sleepers)
    bint fastnn_pass_still(unsigned* seq, unsigned seen)
    unsigned fastnn_pass_now(unsigned* seq)
    void fastnn_reset_claims(long* counter)
    long long fastnn_now_ns()
    void fastnn_pause()
    int fastnn_help_pin
    int fastnn_pin_lead(int avoid)
    void fastnn_pin_away(int cpu)
    void fastnn_unpin()
    int fastnn_allowed_cpus()

cdef extern from "scratch.h" nogil:
    void* fastnn_thread_scratch(size_t n_bytes)

cdef extern from "team.h" nogil:
    ctypedef void (*fastnn_job_fn)(void* ctx, int tid, int n_threads) noexcept nogil
    int fastnn_team_run(int n_threads, fastnn_job_fn job, void* ctx)
    int fastnn_team_awake(int n_threads)
    void fastnn_team_rouse(int n_threads)
    void fastnn_barrier(int n_threads)
    long fastnn_claim(long* counter)
    int fastnn_flag_get(int* flag)
    void fastnn_flag_set(int* flag)
    void fastnn_blas_register(void* set_fn, void* get_fn)
    int fastnn_blas_controlled()
    void fastnn_blas_pin()
    void fastnn_blas_unpin()
    int FASTNN_MAX_THREADS

# The codes of _kinds.pxd, by the names the Python layer uses.
LAYER_KINDS = {"dense": DENSE, "identity": IDENTITY, "relu": RELU, "leaky_relu": LEAKY_RELU,
               "sigmoid": SIGMOID, "tanh": TANH, "softmax": SOFTMAX, "dropout": DROPOUT,
               "batchnorm": BATCHNORM}
LOSS_KINDS = {"cross_entropy_labels": CROSS_ENTROPY_LABELS,
              "cross_entropy_probs": CROSS_ENTROPY_PROBS,
              "binary_cross_entropy": BINARY_CROSS_ENTROPY, "mse": MSE, "l1": L1,
              "poisson_nll": POISSON}
OPTIMIZER_KINDS = {"sgd": SGD, "adam": ADAM, "rmsprop": RMSPROP, "adagrad": ADAGRAD}
MAX_THREADS = FASTNN_MAX_THREADS

cdef enum:
    MAX_HYPER = 16
    UNIT_ALIGN = 16     # a thread's block of units starts at a multiple of this (64 bytes)

cdef enum Layout:       # how the threads last wrote a buffer
    WHOLE = 0           # complete for every thread (after a barrier, or given)
    COLS = 1            # each thread its block of columns
    ROWS = 2            # each thread its block of rows
    TILES = 3           # each thread its tiles of a Dense layer's grid (see dense_grid)

# The least work (flops of a step's matrix products) worth another thread: see point 4;
# docs/design.md says what chose it (a small, noisy sweep on 2 cores).
cdef double GRAIN_FLOPS = 8e6


def register_blas(size_t set_num_threads, size_t get_num_threads):
    """Tell the engine how to pin BLAS (scipy's OpenBLAS) to one thread during its calls:
    the addresses of openblas_set_num_threads / openblas_get_num_threads (0: unknown)."""
    fastnn_blas_register(<void*> set_num_threads, <void*> get_num_threads)


def blas_controlled():
    """Whether register_blas was given BLAS's thread functions."""
    return bool(fastnn_blas_controlled())


def _blas_kept_to_one_thread():
    """The context every call runs in: nothing for a registered BLAS (the job pins it
    itself, at no cost per call); for another, threadpoolctl's limit of one thread."""
    if fastnn_blas_controlled():
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=1, user_api="blas")


def set_small_wake_flops(double flops):
    """Set the work from which a small predict splits even while the team's workers
    sleep (tests set 0 to make every split predict wake them); returns the old value."""
    global SMALL_WAKE_FLOPS
    old, SMALL_WAKE_FLOPS = SMALL_WAKE_FLOPS, flops
    return old


def omp_num_threads():
    """OMP_NUM_THREADS's first entry (before any comma, spaces around it allowed) as an
    int, or 0 when unset or not digits. Read with C's getenv, which os.environ keeps in
    step: a twentieth of os.environ.get's cost, which a one-row predict would feel."""
    cdef const char* s = getenv("OMP_NUM_THREADS")
    cdef long n = 0
    cdef bint digits = False
    if s == NULL:
        return 0
    while s[0] == c' ' or s[0] == c'\t':
        s += 1
    while c'0' <= s[0] <= c'9':
        n = min(n * 10 + (s[0] - c'0'), 1 << 30)
        digits = True
        s += 1
    while s[0] == c' ' or s[0] == c'\t':
        s += 1
    return n if digits and (s[0] == 0 or s[0] == c',') else 0


def set_grain(double flops):
    """Set the least matrix-product work per thread and step (benchmarks tune it)."""
    global GRAIN_FLOPS
    if not flops > 0:
        raise ValueError(f"grain must be positive, got {flops}")
    GRAIN_FLOPS = flops


def get_grain():
    return GRAIN_FLOPS


cdef struct LayerPlan:
    int kind
    int n_in
    int n_out
    double slope
    void* weight
    void* bias
    int weight_param    # index into Net.params, -1 if none
    int bias_param
    void* out           # (capacity, n_out) output block
    void* grad          # (capacity, n_out) dL/d(out)
    void* mask          # (capacity, n_out) dropout scale factors (dropout layers only)
    # batch norm: running mean, running variance, batch mean, batch 1/std, dgamma, dbeta,
    # and the running mean and variance as the step found them (restored if it fails)
    void* bn[8]
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


# Data-parallel training (fastnn/distributed.py): after each step's backward pass, thread
# 0 sums the flat gradient buffer over the processes with one MPI_Allreduce (in place),
# called through a pointer resolved from the MPI library mpi4py loaded, or through a short
# call back into Python (mpi4py's Comm.Allreduce): see docs/design.md for the two timed.
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


cdef struct ParamPlan:
    Py_ssize_t size
    Py_ssize_t units    # thread t owns entries [lo * row, hi * row), [lo, hi) its units
    Py_ssize_t row
    double l2           # coupled decay from the layer's L2 penalty (2 lambda; 0 for biases)
    void* value
    void* grad
    void* state[3]


cdef struct Net:
    int n_layers
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
    double l2_scale
    uint64_t rng


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
    int n_run
    bint want_grads
    int stop            # thread 0 -> all: a signal's exception is pending
    int status          # 0, 1 (a loss was not finite), 2 (check_steps: an update
                        # wrote NaN or inf), -1 (stopped by a signal here), -2
                        # (data-parallel: another process stopped), -3 (the allreduce
                        # failed)
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


cdef inline floating* at(void* base, Py_ssize_t offset, floating* tag) noexcept nogil:
    """base + offset elements, or NULL for a missing array."""
    return NULL if base == NULL else (<floating*> base) + offset


cdef inline void share(Py_ssize_t n, int tid, int nt, Py_ssize_t align, Py_ssize_t* lo,
                       Py_ssize_t* hi) noexcept nogil:
    """Thread tid's contiguous share [lo, hi) of [0, n), its ends multiples of align."""
    cdef Py_ssize_t blocks = (n + align - 1) // align
    lo[0] = min(n, (blocks * tid // nt) * align)
    hi[0] = min(n, (blocks * (tid + 1) // nt) * align)


# A pass of one Dense layer's products, cut into the tiles of its grid (dense_grid):
# what run_tiles hands a lead's helpers (csrc/helping.h).
cdef enum TileKind:
    TILE_FORWARD = 0        # Y[rows_r, units_c] = A[rows_r] W[units_c]^T + b
    TILE_INPUT_GRAD = 1     # dA[rows_r, inputs_c] = dZ[rows_r] W[:, inputs_c]
    TILE_PARAM_GRAD = 2     # dW[units_c, inputs_r] over the batch (+ the bias, first row)


cdef struct TilePass:
    int kind
    bint f64
    LayerPlan* L
    const void* inp     # forward: the layer's input; param grad: the batch's input
    const void* grad    # the layer's output gradient (input and param grad)
    void* out           # forward: Y (stride n_out); input grad: dA (stride n_in)
    void* dest_w        # param grad: where the products land (destination())
    void* dest_b
    double alpha
    double beta_w
    double beta_b
    const void* ones
    Py_ssize_t n        # the step's rows
    int grid            # dense_grid's rows
    int nv
    # for the lead only: each weight tile's update after its product
    Net* net
    Counters* c
    bint update
    GradientDestination wdest
    GradientDestination bdest


# A lead and its helpers (train_adapting on a busy machine; csrc/helping.h): the posted
# pass, each tile's state word, when a helper took it and where it left its result.
cdef struct Help:
    unsigned seq        # the sequence lock: odd while a pass is written
    int sleepers
    int quit
    int lead_cpu        # the lead's CPU while it is kept there (-1: not kept)
    int avoid_cpu       # the CPU the lead shared with another process last time
    int solo            # stretches the lead runs alone before it tries helpers again
    int patience        # and how many it waits after the next try that does not pay
    bint probing        # the next helped stretch is a short try (HELP_PROBE)
    long claim          # the next tile a helper may try
    double grace        # the lead computes a helper's tile again after this many
                        # times its own tile's time
    long long tiles     # tiles the helpers handed in (for the trace)
    long long retaken   # and tiles the lead computed again
    TilePass posted
    uint64_t state[256]
    uint64_t taken_at[256]
    void* scratch[256]


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


# Tests and benchmarks force every Dense layer's grid to this many rows (0: dense_grid's rule).
cdef int GRID_ROWS_FORCED = 0


def force_grid_rows(int rows):
    """Cut every Dense layer's products into `rows` x (blocks / rows) tiles where the
    plan's blocks divide that way (0: the rule of dense_grid); returns the old setting."""
    global GRID_ROWS_FORCED
    old, GRID_ROWS_FORCED = GRID_ROWS_FORCED, max(0, rows)
    return old


cdef int dense_grid(const LayerPlan* L, Py_ssize_t n, int nv) noexcept nogil:
    """R: a Dense layer's products on n rows are cut into an R x C grid of the plan's nv
    blocks (R C = nv). Block v is tile (v / C, v % C): rows of the batch by units for Y and
    the input gradient (units of this layer, inputs of the layer below), units by inputs
    for dW. C blocks of units make C threads each pack the whole input, R blocks of rows
    make R threads each pack the whole of W, so the rule takes the R that packs least,
    C n + R n_out (times n_in), among those that give every column block units; ties go
    to fewer rows. With R = 1 this is a block of units per thread; a layer of fewer
    units than blocks of 16 (a 10-class output) splits its rows rather than idle threads.
    docs/design.md, "A grid of tiles", has what it is worth."""
    cdef int rows, best = 1
    cdef Py_ssize_t blocks = (L.n_out + UNIT_ALIGN - 1) // UNIT_ALIGN
    cdef double cost, least = -1
    if nv <= 1 or not L.tiles_ok:
        return 1
    if GRID_ROWS_FORCED > 0:
        return GRID_ROWS_FORCED if nv % GRID_ROWS_FORCED == 0 else 1
    for rows in range(1, nv + 1):
        if nv % rows != 0 or (nv // rows > blocks and rows < nv):
            continue
        cost = <double> (nv // rows) * n + <double> rows * L.n_out
        if least < 0 or cost < least:
            best, least = rows, cost
    return best


def grid_rows(int n_in, int n_out, Py_ssize_t n, int nv):
    """dense_grid's R for a Dense(n_in, n_out) on n rows and nv blocks, free of batch
    norm (benchmarks project with it)."""
    cdef LayerPlan L
    L.n_in, L.n_out, L.tiles_ok = n_in, n_out, True
    return dense_grid(&L, n, nv)


cdef inline int grid_layout(int rows, int nv) noexcept nogil:
    """The layout a grid of `rows` rows leaves: one row of tiles is COLS, one column ROWS."""
    return COLS if rows == 1 else (ROWS if rows == nv else TILES)


cdef inline void tile(int v, int rows, int nv, Py_ssize_t n, Py_ssize_t m, Py_ssize_t* r0,
                      Py_ssize_t* r1, Py_ssize_t* c0, Py_ssize_t* c1) noexcept nogil:
    """Block v's tile of an (n x m) product cut in a grid of `rows` rows: its rows
    [r0, r1) and its columns [c0, c1) (in blocks of UNIT_ALIGN)."""
    cdef int cols = nv // rows
    share(n, v // cols, rows, 1, r0, r1)
    share(m, v % cols, cols, UNIT_ALIGN, c0, c1)


cdef Py_ssize_t tile_entries(const TilePass* t, int v) noexcept nogil:
    """The entries a helper's scratch block needs for tile v of pass t (see tile_product)."""
    cdef Py_ssize_t r0, r1, c0, c1
    cdef int cols = t.nv // t.grid
    if t.kind == TILE_FORWARD:
        tile(v, t.grid, t.nv, t.n, t.L.n_out, &r0, &r1, &c0, &c1)
        return (r1 - r0) * (c1 - c0)
    if t.kind == TILE_INPUT_GRAD:
        tile(v, t.grid, t.nv, t.n, t.L.n_in, &r0, &r1, &c0, &c1)
        return (r1 - r0) * t.L.n_in
    share(t.L.n_out, v % cols, cols, UNIT_ALIGN, &c0, &c1)
    return (c1 - c0) * (t.L.n_in + 1)


cdef void tile_product(const TilePass* t, int v, floating* scratch) noexcept nogil:
    """Tile v of pass t, into its place, or (a helper) into `scratch`: a forward tile with
    its own width as stride, the others with the full arrays' strides from scratch's
    start (a weight tile followed by its bias entries). A destination the product adds
    to (beta != 0) is copied into scratch first. The product is the same call either
    way, so its result is the same bit for bit."""
    cdef LayerPlan* L = t.L
    cdef Py_ssize_t r0, r1, c0, c1, k0, k1, u, m = L.n_out
    cdef int cols = t.nv // t.grid
    cdef const floating* g = <const floating*> t.grad
    cdef floating* out = <floating*> t.out
    cdef floating* dw
    cdef floating* db = NULL
    if t.kind == TILE_FORWARD:
        tile(v, t.grid, t.nv, t.n, m, &r0, &r1, &c0, &c1)
        if r1 > r0:
            dense_forward(<const floating*> t.inp + r0 * L.n_in,
                          at(L.weight, c0 * L.n_in, out), at(L.bias, c0, out),
                          scratch if scratch != NULL else out + r0 * m + c0,
                          <int> (r1 - r0), L.n_in, <int> (c1 - c0),
                          <int> (c1 - c0) if scratch != NULL else <int> m)
    elif t.kind == TILE_INPUT_GRAD:
        tile(v, t.grid, t.nv, t.n, L.n_in, &r0, &r1, &c0, &c1)
        if r1 > r0:
            dense_input_grad(g + r0 * m, at(L.weight, c0, out),
                             scratch if scratch != NULL else out + r0 * L.n_in + c0,
                             <int> (r1 - r0), <int> (c1 - c0), L.n_in, <int> m)
    else:
        share(m, v % cols, cols, UNIT_ALIGN, &c0, &c1)
        share(L.n_in, v // cols, t.grid, UNIT_ALIGN, &k0, &k1)
        if c1 <= c0:
            return
        dw = <floating*> t.dest_w + c0 * L.n_in + k0
        if t.dest_b != NULL and v < cols:  # the grid's first row makes the bias gradient
            db = <floating*> t.dest_b + c0
        if scratch != NULL:
            if t.beta_w != 0:
                for u in range(c1 - c0):
                    memcpy(scratch + u * L.n_in, dw + u * L.n_in, (k1 - k0) * sizeof(floating))
            if db != NULL and t.beta_b != 0:
                memcpy(scratch + (c1 - c0) * L.n_in, db, (c1 - c0) * sizeof(floating))
            dw = scratch
            if db != NULL:
                db = scratch + (c1 - c0) * L.n_in
        dense_param_grad(<const floating*> t.inp + k0, g + c0, dw, db, <floating> t.alpha,
                         <floating> t.beta_w, <floating> t.beta_b,
                         <const floating*> t.ones, <int> t.n, L.n_in, <int> (c1 - c0), L.n_out,
                         <int> (k1 - k0))


cdef void commit_tile(const TilePass* t, int v, const floating* scratch) noexcept nogil:
    """A helper's tile v, from its scratch block (tile_product's layout) into place."""
    cdef LayerPlan* L = t.L
    cdef Py_ssize_t r0, r1, c0, c1, k0, k1, i, m = L.n_out
    cdef int cols = t.nv // t.grid
    cdef floating* out = <floating*> t.out
    if t.kind == TILE_FORWARD:
        tile(v, t.grid, t.nv, t.n, m, &r0, &r1, &c0, &c1)
        for i in range(r1 - r0):
            memcpy(out + (r0 + i) * m + c0, scratch + i * (c1 - c0),
                   (c1 - c0) * sizeof(floating))
    elif t.kind == TILE_INPUT_GRAD:
        tile(v, t.grid, t.nv, t.n, L.n_in, &r0, &r1, &c0, &c1)
        for i in range(r1 - r0):
            memcpy(out + (r0 + i) * L.n_in + c0, scratch + i * L.n_in,
                   (c1 - c0) * sizeof(floating))
    else:
        share(m, v % cols, cols, UNIT_ALIGN, &c0, &c1)
        share(L.n_in, v // cols, t.grid, UNIT_ALIGN, &k0, &k1)
        for i in range(c1 - c0):
            memcpy(<floating*> t.dest_w + (c0 + i) * L.n_in + k0, scratch + i * L.n_in,
                   (k1 - k0) * sizeof(floating))
        if t.dest_b != NULL and v < cols and c1 > c0:
            memcpy(<floating*> t.dest_b + c0, scratch + (c1 - c0) * L.n_in,
                   (c1 - c0) * sizeof(floating))


cdef void finish_tile(const TilePass* t, int v, floating* tag) noexcept nogil:
    """After a weight tile's product: the rest of its optimizer update (and its bias's,
    in the grid's first row), while its weights are in this core's cache."""
    cdef LayerPlan* L = t.L
    cdef Py_ssize_t c0, c1, k0, k1, u
    cdef int cols = t.nv // t.grid
    if t.kind != TILE_PARAM_GRAD or not t.update:
        return
    share(L.n_out, v % cols, cols, UNIT_ALIGN, &c0, &c1)
    share(L.n_in, v // cols, t.grid, UNIT_ALIGN, &k0, &k1)
    if c1 <= c0:
        return
    if k1 - k0 == L.n_in:
        finish_update(t.net, t.c, L.weight_param, t.wdest, c0 * L.n_in, (c1 - c0) * L.n_in,
                      tag)
    else:
        for u in range(c0, c1):
            finish_update(t.net, t.c, L.weight_param, t.wdest, u * L.n_in + k0, k1 - k0, tag)
    if v < cols:
        finish_update(t.net, t.c, L.bias_param, t.bdest, c0, c1 - c0, tag)


cdef inline void lead_tile(TilePass* t, int v, floating* tag) noexcept nogil:
    tile_product(t, v, <floating*> NULL)
    finish_tile(t, v, tag)


cdef void lead_tiles(Help* h, TilePass* t, floating* tag) noexcept nogil:
    """The lead's run of pass t (csrc/helping.h): post it, compute the last tile, then
    every tile no helper has taken; then hand in each helper's finished tile, and compute
    again any tile a helper took that is not done h.grace times the lead's own tile's
    time after the helper took it (or after the pass began)."""
    cdef int v, last = t.nv - 1, status
    cdef unsigned seq
    cdef uint64_t word
    cdef long long start, took, since
    fastnn_pass_begin(&h.seq)
    h.posted = t[0]
    seq = h.seq + 1     # the sequence once posted (only the lead writes it)
    for v in range(last):
        fastnn_store_word(&h.state[v], fastnn_tile_word(seq, 0, FASTNN_TILE_FREE))
    fastnn_store_word(&h.state[last], fastnn_tile_word(seq, 0, FASTNN_TILE_LEAD))
    fastnn_reset_claims(&h.claim)
    fastnn_pass_post(&h.seq, &h.sleepers)
    start = fastnn_now_ns()
    lead_tile(t, last, tag)
    took = fastnn_now_ns() - start
    while h.grace >= 0:  # (a negative grace, for tests: the helpers take every other tile)
        v = <int> fastnn_claim(&h.claim)
        if v >= last:
            break
        if fastnn_swap_word(&h.state[v], fastnn_tile_word(seq, 0, FASTNN_TILE_FREE),
                            fastnn_tile_word(seq, 0, FASTNN_TILE_LEAD)):
            lead_tile(t, v, tag)
    for v in range(last):
        while True:
            word = fastnn_load_word(&h.state[v])
            status = fastnn_tile_status(word)
            if status == FASTNN_TILE_LEAD:
                break
            if status == FASTNN_TILE_DONE:
                commit_tile(t, v, <floating*> h.scratch[fastnn_tile_helper(word)])
                finish_tile(t, v, tag)
                h.tiles += 1
                break
            since = max(<long long> fastnn_load_word(&h.taken_at[v]), start)
            if h.grace < 0 and (status == FASTNN_TILE_TAKEN
                                or fastnn_now_ns() < start + 1000000 + 10 * took):
                fastnn_pause()  # (tests) wait for the helpers; a tile none took in 1 ms
                                # (a claim a late helper spent) the lead takes
            elif status == FASTNN_TILE_FREE or fastnn_now_ns() > since + h.grace * took:
                if fastnn_swap_word(&h.state[v], word,
                                    fastnn_tile_word(seq, 0, FASTNN_TILE_LEAD)):
                    lead_tile(t, v, tag)
                    if status == FASTNN_TILE_TAKEN:
                        h.retaken += 1
                    break
            else:
                fastnn_pause()


cdef inline TilePass tile_pass(int kind, LayerPlan* L, const floating* inp,
                               const floating* grad, floating* out, Py_ssize_t n, int grid,
                               int nv, floating* tag) noexcept nogil:
    cdef TilePass t
    memset(&t, 0, sizeof(t))
    t.kind, t.f64, t.L, t.inp, t.grad, t.out = kind, floating is double, L, inp, grad, out
    t.n, t.grid, t.nv = n, grid, nv
    return t


cdef void run_tiles(TilePass* t, const Part* p, floating* tag) noexcept nogil:
    """p's tiles of pass t, each followed by its update (param grad); a lead with helpers
    shares the pass with them."""
    cdef int v
    if p.help != NULL and p.nv > 1:
        lead_tiles(p.help, t, tag)
        return
    for v in range(p.v0, p.v1):
        lead_tile(t, v, tag)


cdef void help_tiles(Help* h, int tid) noexcept nogil:
    """A helper: until the lead quits, take at most one tile of each pass it posts into
    this thread's scratch block, and hand it in (csrc/helping.h)."""
    cdef unsigned seen = fastnn_pass_now(&h.seq)
    cdef TilePass t
    cdef int v
    cdef void* scratch
    while not fastnn_flag_get(&h.quit):  # set before the lead's last post
        seen = fastnn_pass_wait(&h.seq, seen, &h.sleepers)
        if fastnn_flag_get(&h.quit):
            return
        t = h.posted
        if not fastnn_pass_still(&h.seq, seen):
            continue
        v = <int> fastnn_claim(&h.claim)
        if v >= t.nv - 1 or not fastnn_swap_word(
                &h.state[v], fastnn_tile_word(seen, 0, FASTNN_TILE_FREE),
                fastnn_tile_word(seen, tid, FASTNN_TILE_TAKEN)):
            continue
        fastnn_store_word(&h.taken_at[v], <uint64_t> fastnn_now_ns())
        scratch = fastnn_thread_scratch(max(1, tile_entries(&t, v)) * (8 if t.f64 else 4))
        if scratch == NULL:
            continue    # the lead computes it after its grace
        if t.f64:
            tile_product(&t, v, <double*> scratch)
        else:
            tile_product(&t, v, <float*> scratch)
        h.scratch[tid] = scratch
        fastnn_swap_word(&h.state[v], fastnn_tile_word(seen, tid, FASTNN_TILE_TAKEN),
                         fastnn_tile_word(seen, tid, FASTNN_TILE_DONE))


cdef extern from "Python.h":
    int PyErr_CheckSignals_status "PyErr_CheckSignals"()  # -1 leaves the exception set


cdef int check_signals() noexcept nogil:
    """Run Python's signal handlers; -1 when one raised (the exception stays set, and the
    call that started the job raises it: see reraise)."""
    with gil:
        return PyErr_CheckSignals_status()


cdef int reraise() except -1:
    """Propagate the exception a signal handler left set (its -1 makes Cython raise it)."""
    return -1


cdef void activation_cols(int kind, double slope, const floating* z, floating* a,
                          Py_ssize_t n, Py_ssize_t m, Py_ssize_t c0,
                          Py_ssize_t c1) noexcept nogil:
    """An elementwise activation on columns [c0, c1) of (n x m) blocks."""
    cdef Py_ssize_t i
    if c0 == 0 and c1 == m:
        activation_forward(kind, slope, z, a, n, m)
    elif c1 > c0:
        for i in range(n):
            activation_forward(kind, slope, z + i * m + c0, a + i * m + c0, 1, c1 - c0)


cdef void activation_grad_cols(int kind, double slope, const floating* z, const floating* a,
                               const floating* g, floating* dz, Py_ssize_t n, Py_ssize_t m,
                               Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    cdef Py_ssize_t i, o
    if c0 == 0 and c1 == m:
        activation_backward(kind, slope, z, a, g, dz, n, m)
    elif c1 > c0:
        for i in range(n):
            o = i * m + c0
            activation_backward(kind, slope, z + o, a + o, g + o, dz + o, 1, c1 - c0)


cdef void scale_cols(const floating* src, const floating* mask, floating* dst, Py_ssize_t n,
                     Py_ssize_t m, Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    """dst = src * mask (mask NULL: a copy) on columns [c0, c1) of (n x m) blocks."""
    cdef Py_ssize_t i, o
    for i in range(n):
        o = i * m + c0
        if mask == NULL:
            memcpy(dst + o, src + o, (c1 - c0) * sizeof(floating))
        else:
            dropout_backward(src + o, mask + o, dst + o, c1 - c0)


cdef void elementwise_forward(const LayerPlan* L, uint64_t rng, const floating* inp,
                             floating* out, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t m,
                             Py_ssize_t c0, Py_ssize_t c1, bint training) noexcept nogil:
    """An activation or dropout layer (masks drawn when `training`, else the identity) on
    rows [r0, r1) by columns [c0, c1) of (n x m) blocks."""
    if r1 <= r0 or c1 <= c0:
        return
    if L.kind == DROPOUT and training:
        dropout_forward_block(inp + r0 * m, out + r0 * m, <floating*> L.mask + r0 * m, r1 - r0,
                              m, c0, c1, L.slope, rng, r0)
    elif L.kind == DROPOUT:
        scale_cols(inp + r0 * m, <floating*> NULL, out + r0 * m, r1 - r0, m, c0, c1)
    else:
        activation_cols(L.kind, L.slope, inp + r0 * m, out + r0 * m, r1 - r0, m, c0, c1)


cdef void elementwise_backward(const LayerPlan* L, const floating* inp, const floating* g,
                              floating* grad_in, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t m,
                              Py_ssize_t c0, Py_ssize_t c1, bint training) noexcept nogil:
    """The input gradient of an activation or dropout layer (its forward pass's masks when
    `training`, else the identity) on rows [r0, r1) by columns [c0, c1)."""
    if r1 <= r0 or c1 <= c0:
        return
    if L.kind == DROPOUT:
        scale_cols(g + r0 * m, <floating*> L.mask + r0 * m if training else <floating*> NULL,
                   grad_in + r0 * m, r1 - r0, m, c0, c1)
    else:
        activation_grad_cols(L.kind, L.slope, inp + r0 * m, <floating*> L.out + r0 * m,
                             g + r0 * m, grad_in + r0 * m, r1 - r0, m, c0, c1)


cdef int forward(Net* net, Counters* c, const floating* x, Py_ssize_t n, int n_run,
                 floating* last_out, bint training, Py_ssize_t row0,
                 const Part* p) noexcept nogil:
    """Run layers [0, n_run) on n rows of x (complete); the last writes to last_out if not
    NULL, the others to rows [row0, row0 + n) of their buffers. Dropout draws masks when
    `training`, else passes its input through. Returns the layout in which the last
    layer's output was written."""
    cdef int l, layout = WHOLE, grid = 1
    cdef LayerPlan* L
    cdef TilePass products
    cdef const floating* inp = x
    cdef floating* out
    cdef Py_ssize_t c0, c1, r0, r1, m
    cdef int v
    for l in range(n_run):
        L = &net.layers[l]
        m = L.n_out
        out = last_out if (l == n_run - 1 and last_out != NULL) else \
            <floating*> L.out + row0 * m
        if L.kind == DENSE:
            sync(&layout, WHOLE, p.nt)
            grid = dense_grid(L, n, p.nv)
            products = tile_pass(TILE_FORWARD, L, inp, NULL, out, n, grid, p.nv, out)
            run_tiles(&products, p, out)
            layout = grid_layout(grid, p.nv)
        elif L.kind == SOFTMAX:  # works on whole rows
            sync(&layout, ROWS, p.nt)
            span(p, n, 1, &c0, &c1)
            activation_forward(SOFTMAX, L.slope, inp + c0 * m, out + c0 * m, c1 - c0, m)
            layout = ROWS
        elif bn_on_rows(L, training, p):
            sync(&layout, ROWS, p.nt)
            batchnorm_rows_forward(L, inp, out, n, p)
            layout = ROWS
        elif L.kind != BATCHNORM and layout != COLS:
            # elementwise, on the rows or tiles this thread wrote (no barrier)
            if layout == TILES:
                for v in range(p.v0, p.v1):
                    tile(v, grid, p.nv, n, m, &r0, &r1, &c0, &c1)
                    elementwise_forward(L, c.rng, inp, out, r0, r1, m, c0, c1, training)
            else:
                layout = ROWS
                span(p, n, 1, &r0, &r1)
                elementwise_forward(L, c.rng, inp, out, r0, r1, m, 0, m, training)
            if L.kind == DROPOUT and training:
                c.rng = dropout_advance(c.rng, n * m)
        else:
            sync(&layout, COLS, p.nt)
            span(p, m, UNIT_ALIGN, &c0, &c1)
            if L.kind == BATCHNORM and c1 > c0:
                if training:
                    batchnorm_train_forward(inp + c0, out + c0, at(L.weight, c0, out),
                                            at(L.bias, c0, out), at(L.bn[2], c0, out),
                                            at(L.bn[3], c0, out), at(L.bn[0], c0, out),
                                            at(L.bn[1], c0, out), n, c1 - c0, m, L.eps,
                                            L.momentum)
                else:
                    batchnorm_eval_forward(inp + c0, out + c0, at(L.weight, c0, out),
                                           at(L.bias, c0, out), at(L.bn[0], c0, out),
                                           at(L.bn[1], c0, out), n, c1 - c0, m, L.eps)
            elif L.kind != BATCHNORM:
                elementwise_forward(L, c.rng, inp, out, 0, n, m, c0, c1, training)
                if L.kind == DROPOUT and training:
                    c.rng = dropout_advance(c.rng, n * m)
            layout = COLS
        inp = out
    return layout


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
        dest[0] = gradient_destination(net.opt_kind, net.hyper, c.step, P.l2 * c.l2_scale,
                                       c.mom_scale)
    else:
        dest.where, dest.alpha, dest.beta = TO_GRAD, 1.0, grad_beta
    return destination_array(dest.where, P.value, P.grad, P.state[0])


cdef void finish_update(Net* net, Counters* c, int param, GradientDestination dest,
                        Py_ssize_t offset, Py_ssize_t count, floating* tag) noexcept nogil:
    """Complete the optimizer update of entries [offset, offset + count) of `param`."""
    cdef ParamPlan* P
    if param < 0 or count <= 0:
        return
    P = &net.params[param]
    optimizer_finish(net.opt_kind, net.hyper, P.l2 * c.l2_scale, c.step, dest,
                     at(P.value, offset, tag), at(P.grad, offset, tag),
                     at(P.state[0], offset, tag), at(P.state[1], offset, tag),
                     at(P.state[2], offset, tag), count)


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
                                    floating* tag) noexcept nogil:
    """This thread's 2 m private totals in bn_part (slot p.v0: no two threads share a
    first block), after the block sums, their second set and gamma's copy."""
    return <floating*> L.bn_part + (2 * L.bn_blocks + 1 + 2 * p.v0) * L.n_out


cdef void batchnorm_rows_forward(LayerPlan* L, const floating* x, floating* y, Py_ssize_t n,
                                 const Part* p) noexcept nogil:
    """Training batch norm on row blocks: each block sums its rows per feature; after a
    barrier every thread totals all features' block sums in block order for itself (the
    batch mean); each block sums its squared deviations from it, and after a second
    barrier every thread totals those likewise (1/std), then normalizes its own rows.
    Each thread writes the shared mean, 1/std and running statistics of its own features
    only. Two barriers: the totals are a few adds per feature and block, cheaper done
    by every thread than met for (docs/design.md, "Batch norm on row blocks")."""
    cdef Py_ssize_t m = L.n_out, r0, r1, c0, c1, j
    cdef floating* part = <floating*> L.bn_part
    cdef floating* part_sq = part + L.bn_blocks * m
    cdef floating* mean = bn_own_totals(L, p, part)
    cdef floating* invstd = mean + m
    cdef floating* rmean = <floating*> L.bn[0]
    cdef floating* rvar = <floating*> L.bn[1]
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
    memcpy(<floating*> L.bn[2] + c0, mean + c0, (c1 - c0) * sizeof(floating))
    memcpy(<floating*> L.bn[3] + c0, invstd + c0, (c1 - c0) * sizeof(floating))
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
        bn_grad_sums(x + r0 * m, g + r0 * m, <floating*> L.bn[2], <floating*> L.bn[3],
                     part + v * m, part_beta + v * m, r1 - r0, m, m)
    fastnn_barrier(p.nt)
    for j in range(m):
        dgamma[j] = block_total(part, p.nv, m, j)
        dbeta[j] = block_total(part_beta, p.nv, m, j)
    memcpy(<floating*> L.bn[4] + c0, dgamma + c0, (c1 - c0) * sizeof(floating))
    memcpy(<floating*> L.bn[5] + c0, dbeta + c0, (c1 - c0) * sizeof(floating))
    if dx != NULL:
        span(p, n, 1, &r0, &r1)
        bn_grad_input(x + r0 * m, g + r0 * m, <floating*> L.bn[2], <floating*> L.bn[3],
                      NULL if gamma == NULL else gamma_then, dgamma, dbeta, dx + r0 * m,
                      r1 - r0, n, m, m)
    land(net, c, L.weight_param, <floating*> L.bn[4], c0, c1, update, grad_beta)
    land(net, c, L.bias_param, <floating*> L.bn[5], c0, c1, update, grad_beta)


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
        finish_update(net, c, param, dest, c0, c1 - c0, target)


cdef void dense_update(Net* net, Counters* c, int l, const floating* inp, Py_ssize_t n,
                       bint update, double grad_beta, const Part* p) noexcept nogil:
    """Each of p's blocks of Dense layer l: its tile of the weight gradient (units by
    inputs, dense_grid) and, in the grid's first row, its units' bias gradient, landed
    where the optimizer wants them (folded into the update where the formula allows),
    then the rest of the tile's update, while its weights are in this core's cache."""
    cdef LayerPlan* L = &net.layers[l]
    cdef TilePass products = tile_pass(TILE_PARAM_GRAD, L, inp, <floating*> L.grad, NULL, n,
                                       dense_grid(L, n, p.nv), p.nv, <floating*> L.grad)
    products.dest_w = destination(net, c, L.weight_param, update, grad_beta, &products.wdest)
    products.dest_b = destination(net, c, L.bias_param, update, grad_beta, &products.bdest)
    products.alpha, products.beta_w = products.wdest.alpha, products.wdest.beta
    products.beta_b = products.bdest.beta
    products.ones, products.net, products.c, products.update = net.ones, net, c, update
    run_tiles(&products, p, <floating*> L.grad)


cdef inline void meet(Net* net, Counters* c, int* layout, int wanted, int* pending,
                      Py_ssize_t n, bint update, double grad_beta, const Part* p,
                      floating* tag) noexcept nogil:
    """sync(); after a barrier, the weight update a Dense layer left pending (every thread
    has read that W for its input-gradient columns by then)."""
    if sync(layout, wanted, p.nt) and pending[0] >= 0:
        dense_update(net, c, pending[0], <floating*> net.layers[pending[0] - 1].out, n,
                     update, grad_beta, p)
        pending[0] = -1


cdef void backward(Net* net, Counters* c, const floating* x, Py_ssize_t n, int n_run,
                   bint update, bint training, double grad_beta,
                   const Part* p) noexcept nogil:
    """Backpropagate layers[n_run - 1].grad (complete); each parameter block's gradient
    lands where the optimizer wants it (update: a training step) or in the gradient arrays
    (beta = grad_beta). With `training` the forward pass ran in training mode: dropout
    uses its masks (else is the identity) and batch norm its batch statistics.

    A Dense layer's weight blocks are updated only after the next barrier: until then
    other threads read all of W for the input gradient of their columns."""
    cdef int l, layout = WHOLE, pending = -1, grid = 1
    cdef LayerPlan* L
    cdef TilePass products
    cdef const floating* inp
    cdef floating* grad_in
    cdef floating* g
    cdef Py_ssize_t c0, c1, r0, r1, m
    cdef int v
    for l in range(n_run - 1, -1, -1):
        L = &net.layers[l]
        m = L.n_out
        g = <floating*> L.grad
        inp = x if l == 0 else <floating*> net.layers[l - 1].out
        grad_in = <floating*> net.layers[l - 1].grad if L.need_grad_in else NULL
        if L.kind == DENSE:
            meet(net, c, &layout, WHOLE, &pending, n, update, grad_beta, p, g)
            if grad_in != NULL:
                grid = dense_grid(L, n, p.nv)
                products = tile_pass(TILE_INPUT_GRAD, L, NULL, g, grad_in, n, grid, p.nv, g)
                run_tiles(&products, p, g)
                pending = l
                layout = grid_layout(grid, p.nv)
            else:
                dense_update(net, c, l, inp, n, update, grad_beta, p)
        elif L.kind == SOFTMAX:
            meet(net, c, &layout, ROWS, &pending, n, update, grad_beta, p, g)
            if grad_in != NULL:
                span(p, n, 1, &c0, &c1)
                activation_backward(SOFTMAX, L.slope, inp + c0 * m,
                                    <floating*> L.out + c0 * m, g + c0 * m, grad_in + c0 * m,
                                    c1 - c0, m)
                layout = ROWS
        elif bn_on_rows(L, training, p):
            meet(net, c, &layout, ROWS, &pending, n, update, grad_beta, p, g)
            batchnorm_rows_backward(net, c, L, inp, g, grad_in, n, update, grad_beta, p)
            layout = ROWS
        elif L.kind != BATCHNORM and (layout == ROWS or layout == TILES):
            # elementwise, on the rows or tiles this thread wrote (no barrier)
            if grad_in != NULL and layout == TILES:
                for v in range(p.v0, p.v1):
                    tile(v, grid, p.nv, n, m, &r0, &r1, &c0, &c1)
                    elementwise_backward(L, inp, g, grad_in, r0, r1, m, c0, c1, training)
            elif grad_in != NULL:
                span(p, n, 1, &r0, &r1)
                elementwise_backward(L, inp, g, grad_in, r0, r1, m, 0, m, training)
        else:
            meet(net, c, &layout, COLS, &pending, n, update, grad_beta, p, g)
            span(p, m, UNIT_ALIGN, &c0, &c1)
            if L.kind == BATCHNORM:
                if c1 > c0 and training:
                    batchnorm_backward(inp + c0, g + c0, at(L.weight, c0, g),
                                       at(L.bn[2], c0, g), at(L.bn[3], c0, g),
                                       at(L.bn[4], c0, g), at(L.bn[5], c0, g),
                                       NULL if grad_in == NULL else grad_in + c0, n, c1 - c0, m)
                elif c1 > c0:
                    batchnorm_eval_backward(inp + c0, g + c0, at(L.weight, c0, g),
                                            at(L.bn[0], c0, g), at(L.bn[1], c0, g),
                                            at(L.bn[4], c0, g), at(L.bn[5], c0, g),
                                            NULL if grad_in == NULL else grad_in + c0, n,
                                            c1 - c0, m, L.eps)
                land(net, c, L.weight_param, <floating*> L.bn[4], c0, c1, update, grad_beta)
                land(net, c, L.bias_param, <floating*> L.bn[5], c0, c1, update, grad_beta)
            elif grad_in != NULL:
                elementwise_backward(L, inp, g, grad_in, 0, n, m, c0, c1, training)
            layout = COLS
        if not L.need_grad_in:
            break
    if pending >= 0:
        fastnn_barrier(p.nt)
        dense_update(net, c, pending, <floating*> net.layers[pending - 1].out, n, update,
                     grad_beta, p)


cdef void unscale_momentum(Net* net, Counters* c, const Part* p,
                           floating* tag) noexcept nogil:
    """Fold the momentum scale into p's blocks of the buffers (c *= s), so they
    hold torch's b again."""
    cdef Py_ssize_t i, j, lo, hi
    cdef floating s = <floating> c.mom_scale
    cdef floating* buf
    cdef ParamPlan* P
    if c.mom_scale != 1.0 and uses_scaled_momentum(net.opt_kind, net.hyper):
        for i in range(net.n_params):
            P = &net.params[i]
            buf = <floating*> P.state[0]
            span(p, P.units, UNIT_ALIGN, &lo, &hi)
            for j in range(lo * P.row, hi * P.row):
                buf[j] = buf[j] * s
    c.mom_scale = 1.0


cdef void keep_running_stats(Net* net, bint restore, const Part* p,
                             floating* tag) noexcept nogil:
    """Copy p's features of batch norm's running statistics aside before a
    training step (restore=False), or back when the step's loss was not finite
    (restore=True), so a failed step leaves them as they were, like the parameters."""
    cdef int l
    cdef LayerPlan* L
    cdef Py_ssize_t lo, hi
    cdef size_t size
    for l in range(net.n_layers):
        L = &net.layers[l]
        if L.kind == BATCHNORM:
            span(p, L.n_out, UNIT_ALIGN, &lo, &hi)
            size = (hi - lo) * sizeof(floating)
            if restore:
                memcpy(at(L.bn[0], lo, tag), at(L.bn[6], lo, tag), size)
                memcpy(at(L.bn[1], lo, tag), at(L.bn[7], lo, tag), size)
            else:
                memcpy(at(L.bn[6], lo, tag), at(L.bn[0], lo, tag), size)
                memcpy(at(L.bn[7], lo, tag), at(L.bn[1], lo, tag), size)


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


cdef void half_l2_penalty(Net* net, const Part* p, double* parts,
                          floating* tag) noexcept nogil:
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
                if hi > lo:
                    parts[v] += 0.5 * P.l2 * sum_of_squares(<int> ((hi - lo) * P.row),
                                                            at(P.value, lo * P.row, tag))


cdef double sum_parts(const double* parts, int nt) noexcept nogil:
    """The blocks' partial sums, added in block order (the same in every thread)."""
    cdef int i
    cdef double total = 0
    for i in range(nt):
        total += parts[i]
    return total


cdef Counters counters_of(Net* net) noexcept nogil:
    cdef Counters c
    c.step, c.mom_scale, c.l2_scale, c.rng = net.step, net.mom_scale, net.l2_scale, net.rng
    return c


cdef void store_counters(Net* net, Counters* c) noexcept nogil:
    net.step, net.mom_scale, net.l2_scale, net.rng = c.step, c.mom_scale, c.l2_scale, c.rng


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


cdef void put_extra(Net* net, int slot, double value, floating* tag) noexcept nogil:
    """A double into the EXTRA slots; float32 keeps it as two floats, hi + lo, so the
    sum over processes stays close to double precision."""
    cdef floating* extra = <floating*> net.flat + net.extra_at
    cdef float hi
    if floating is double:
        extra[slot] = value
    else:
        hi = <float> value
        extra[2 * slot] = hi
        extra[2 * slot + 1] = <float> (value - <double> hi)


cdef double get_extra(Net* net, int slot, floating* tag) noexcept nogil:
    cdef floating* extra = <floating*> net.flat + net.extra_at
    if floating is double:
        return extra[slot]
    return <double> extra[2 * slot] + <double> extra[2 * slot + 1]


cdef void zero_gradients(Net* net, const Part* p, floating* tag) noexcept nogil:
    """p's share of the flat gradient buffer set to zero (a process with no
    rows in a step adds nothing to the sum)."""
    cdef Py_ssize_t lo, hi
    span(p, net.extra_at, UNIT_ALIGN, &lo, &hi)
    if hi > lo:
        memset(<floating*> net.flat + lo, 0, (hi - lo) * sizeof(floating))


cdef void update_from_gradients(Net* net, Counters* c, const Part* p,
                                floating* tag) noexcept nogil:
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
        if hi > lo:
            optimizer_finish(net.opt_kind, net.hyper, P.l2 * c.l2_scale, c.step, dest,
                             at(P.value, lo * P.row, tag), at(P.grad, lo * P.row, tag),
                             at(P.state[0], lo * P.row, tag),
                             at(P.state[1], lo * P.row, tag),
                             at(P.state[2], lo * P.row, tag), (hi - lo) * P.row)


cdef bint reduce_step(Job* job, Net* net, Counters* c, double local_loss, Py_ssize_t batch,
                      const Part* p, floating* tag) noexcept nogil:
    """Data-parallel: sum this step's gradients, loss and stop flags over the processes
    (thread 0, one allreduce), then, unless a process stopped or the global loss is not
    finite, update every parameter from the sums. Returns whether training goes on."""
    cdef double batch_loss
    cdef bint lead = p.v0 == 0   # the calling thread
    fastnn_barrier(p.nt)   # every block of the gradients is written
    if lead:
        put_extra(net, 0, local_loss, tag)
        put_extra(net, 1, 1.0 if job.stop else 0.0, tag)
        job.reduce_failed = allreduce_flat(net, sizeof(floating)) != 0
    fastnn_barrier(p.nt)
    if job.reduce_failed:
        if lead:
            job.status = -3
        return False
    if get_extra(net, 1, tag) > 0:
        if lead:
            job.status = -1 if job.stop else -2
        return False
    batch_loss = get_extra(net, 0, tag)
    if not isfinite(batch_loss):
        if lead:
            job.failed_batch, job.status = batch, 1
        return False
    if lead:
        job.loss_sum += batch_loss
    update_from_gradients(net, c, p, tag)
    return True


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
            for j in range(2):
                if where != NULL:
                    where[k], count[k] = net.layers[l].bn[j], net.layers[l].n_out
                k += 1
    return k


cdef bint blocks_finite(Net* net, const Part* p, floating* tag) noexcept nogil:
    """Whether p's blocks of the parameters, their optimizer state and batch norm's
    running statistics hold no NaN or inf (the blocks unscale_momentum uses)."""
    cdef Py_ssize_t lo, hi
    cdef int i, j, l
    cdef ParamPlan* P
    cdef LayerPlan* L
    for i in range(net.n_params):
        P = &net.params[i]
        span(p, P.units, UNIT_ALIGN, &lo, &hi)
        if not all_finite(at(P.value, lo * P.row, tag), (hi - lo) * P.row):
            return False
        for j in range(3):
            if P.state[j] != NULL and not all_finite(at(P.state[j], lo * P.row, tag),
                                                     (hi - lo) * P.row):
                return False
    for l in range(net.n_layers):
        L = &net.layers[l]
        if L.kind == BATCHNORM:
            span(p, L.n_out, UNIT_ALIGN, &lo, &hi)
            if not (all_finite(at(L.bn[0], lo, tag), hi - lo)
                    and all_finite(at(L.bn[1], lo, tag), hi - lo)):
                return False
    return True


cdef bint step_wrote_finite(Job* job, Net* net, Py_ssize_t batch, const Part* p,
                            floating* tag) noexcept nogil:
    """check_steps: after step `batch`'s update, whether every thread's blocks are finite;
    if not, status 2 names the step (the caller then stops)."""
    if not job.check_steps:
        return True
    fastnn_barrier(p.nt)  # every update of the step is written
    if not blocks_finite(net, p, tag):
        fastnn_flag_set(&job.bad_write)
    fastnn_barrier(p.nt)
    if fastnn_flag_get(&job.bad_write):
        if p.v0 == 0:
            job.failed_batch, job.status = batch, 2
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
            finite = finite and (all_finite(<double*> where[k], count[k]) if item == 8
                                 else all_finite(<float*> where[k], count[k]))
        elif restore:
            memcpy(where[k], store + at, count[k] * item)
        else:
            memcpy(store + at, where[k], count[k] * item)
        at += count[k] * item
    free(where)
    free(count)
    return finite


cdef void train_steps(Job* job, const Part* p, floating* tag) noexcept nogil:
    """A thread's part (p's blocks) of an epoch of mini-batch training (see the module
    header).
    Data-parallel (job.step_rows set): step k takes the next step_rows[k] rows of this
    process's sequence, scales its loss by the global batch's denominator, and meets the
    other processes in reduce_step instead of updating as it goes."""
    cdef Net* net = job.net
    cdef Counters c = counters_of(net)
    cdef LayerPlan* last = &net.layers[job.n_run - 1]
    cdef Py_ssize_t width = last.n_out, n_in = net.layers[0].n_in
    cdef Py_ssize_t start = job.next_start, n, i, r0, r1, batch = job.next_batch
    cdef const floating* X = <const floating*> job.X
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
        if lead and check_signals() != 0:
            job.stop = 1   # seen by every thread after the barrier below
        n = job.step_rows[batch] if parallel else min(job.batch_size, job.n_samples - start)
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
                job.status = -1
            break
        if parallel and n == 0:  # none of this step's rows are here: add zeros
            zero_gradients(net, p, tag)
            if not reduce_step(job, net, &c, 0.0, batch, p, tag) \
                    or not step_wrote_finite(job, net, batch, p, tag):
                break
            c.step += 1
            batch += 1
            continue
        # the batch mean's denominator: its rows, or their summed weights (data-parallel:
        # the global batch's)
        if parallel:
            denom = job.step_denoms[batch]
        else:
            denom = n if wb == NULL else sum_parts(job.weight_part, p.nv)
        rows_per_weight = n / denom if (wb != NULL and net.per_row and denom != 0) else 1.0
        keep_running_stats(net, False, p, tag)
        if net.per_row:
            half_l2_penalty(net, p, job.penalty_part, tag)
        layout = forward(net, &c, xb, n, job.n_run, <floating*> NULL, True, 0, p)
        sync(&layout, ROWS, nt)
        scale = <floating> loss_scale(job.loss_kind, denom, width, net.per_row)
        for v in range(p.v0, p.v1):
            share(n, v, p.nv, 1, &r0, &r1)
            job.loss_part[v] = loss_forward_backward(
                job.loss_kind, <floating*> last.out + r0 * width,
                NULL if tb == NULL else tb + r0 * width, NULL if lb == NULL else lb + r0,
                NULL if wb == NULL else wb + r0, <floating*> last.grad + r0 * width, r1 - r0,
                width, scale)
        fastnn_barrier(nt)
        batch_loss = sum_parts(job.loss_part, p.nv)
        if parallel:  # gradients to the flat buffer, summed, then every update
            backward(net, &c, xb, n, job.n_run, False, True, 0.0, p)
            if not reduce_step(job, net, &c, batch_loss, batch, p, tag) \
                    or not step_wrote_finite(job, net, batch, p, tag):
                break
            c.step += 1
            start += n
            batch += 1
            continue
        if not isfinite(batch_loss):
            keep_running_stats(net, True, p, tag)
            if lead:
                job.failed_batch, job.status = batch, 1
            break
        if lead:
            job.loss_sum += batch_loss * rows_per_weight
            if net.per_row:
                net.penalty_sum += sum_parts(job.penalty_part, p.nv) * rows_per_weight
        if net.per_row:
            c.l2_scale = 1.0 / denom if denom != 0 else 0.0
        if uses_scaled_momentum(net.opt_kind, net.hyper) and \
                c.mom_scale * net.hyper[1] < 1e-3:  # keep alpha = (1 - d) / s moderate
            unscale_momentum(net, &c, p, tag)
            fastnn_barrier(nt)  # its blocks of units are not the updates' tiles
        backward(net, &c, xb, n, job.n_run, True, True, 0.0, p)
        if uses_scaled_momentum(net.opt_kind, net.hyper):
            c.mom_scale = c.mom_scale * net.hyper[1] if c.step > 0 else 1.0
        if not step_wrote_finite(job, net, batch, p, tag):
            break
        c.step += 1
        start += n
        batch += 1
    fastnn_barrier(nt)  # every thread is done with the Net before thread 0 writes to it
    if lead:
        store_counters(net, &c)
        job.next_start, job.next_batch = start, batch


cdef void run_steps(Job* job, int tid, int nt, floating* tag) noexcept nogil:
    """Thread tid's part of predicting into job.out, or evaluating the loss (and its
    gradient, summed into the parameters' gradient arrays as the gradient of the mean
    over all n_samples, or of the weighted mean), in chunks of the buffers' capacity.
    With job.training, the layers run as in a training step (batch statistics, dropout
    masks) without changing batch norm's running statistics."""
    cdef Net* net = job.net
    cdef Counters c = counters_of(net)
    cdef LayerPlan* last = &net.layers[job.n_run - 1]
    cdef Py_ssize_t width = last.n_out, n_in = net.layers[0].n_in
    cdef Py_ssize_t start = 0, n, r0, r1, chunk = 0
    cdef int i
    cdef const floating* X = <const floating*> job.X
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
        keep_running_stats(net, False, &p, tag)
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
                job.status = -1
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
                job.loss_kind, <floating*> last.out + r0 * width,
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
        keep_running_stats(net, True, &p, tag)


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
                        Py_ssize_t n, floating* buf_a, floating* buf_b, int tid,
                        int nt, int nv, bint row_gemv) noexcept nogil:
    """Thread tid's part of a predict of n rows through the caller's two (n x widest)
    buffers, planned as nv blocks of each layer's units (as forward() splits a step) and
    run on nt threads: thread tid takes blocks tid, tid + nt, ... So the result depends
    on nv only, never on how many threads ran it. With row_gemv (predict_small: OpenBLAS's
    GEMM with one row was slower) a one-row product is a GEMV; else it is the GEMM that
    forward() makes, so infer's rows equal the team's. A barrier comes before each Dense
    layer (and Softmax) reads a whole row. A Dense layer writes the buffer it does not
    read; elementwise layers work in place, so no thread writes a buffer another may
    still be reading."""
    cdef int l, v, layout = WHOLE
    cdef LayerPlan* L
    cdef const floating* inp = x
    cdef floating* dst
    cdef Py_ssize_t c0, c1, m
    for l in range(n_run):
        L = &net.layers[l]
        m = L.n_out
        if l == n_run - 1:
            dst = out
        elif L.kind == DENSE or inp == x:
            dst = buf_b if inp == buf_a else buf_a
        else:
            dst = <floating*> inp
        if L.kind == DENSE:
            sync(&layout, WHOLE, nt)
            v = tid
            while v < nv:
                share(m, v, nv, UNIT_ALIGN, &c0, &c1)
                if c1 > c0 and n == 1 and row_gemv:
                    if L.bias != NULL:
                        memcpy(dst + c0, <floating*> L.bias + c0, (c1 - c0) * sizeof(floating))
                    gemv(False, <int> (c1 - c0), L.n_in, <floating> 1,
                         <floating*> L.weight + c0 * L.n_in, L.n_in, inp,
                         <floating> (1 if L.bias != NULL else 0), dst + c0)
                elif c1 > c0:
                    dense_forward(inp, at(L.weight, c0 * L.n_in, dst), at(L.bias, c0, dst),
                                  dst + c0, <int> n, L.n_in, <int> (c1 - c0), <int> m)
                v += nt
            layout = COLS
        elif L.kind == SOFTMAX:  # works on whole rows
            sync(&layout, ROWS, nt)
            share(n, tid, nt, 1, &c0, &c1)
            activation_forward(SOFTMAX, L.slope, inp + c0 * m, dst + c0 * m, c1 - c0, m)
            layout = ROWS
        else:  # elementwise: each entry's value does not depend on the split
            sync(&layout, COLS, nt)
            share(m, tid, nt, UNIT_ALIGN, &c0, &c1)
            if L.kind == BATCHNORM and c1 > c0:
                batchnorm_eval_forward(inp + c0, dst + c0, at(L.weight, c0, dst),
                                       at(L.bias, c0, dst), at(L.bn[0], c0, dst),
                                       at(L.bn[1], c0, dst), n, c1 - c0, m, L.eps)
            elif L.kind == DROPOUT or L.kind == IDENTITY:
                if dst != inp:
                    scale_cols(inp, <floating*> NULL, dst, n, m, c0, c1)
            elif L.kind != BATCHNORM:
                activation_cols(L.kind, L.slope, inp, dst, n, m, c0, c1)
            layout = COLS
        inp = dst


cdef struct SmallPredict:
    Net* net
    const void* x
    void* out
    void* buf_a
    void* buf_b
    Py_ssize_t n
    int plan            # the blocks of units each Dense layer is cut into
    bint f64


cdef void small_predict_job(void* ctx, int tid, int nt) noexcept nogil:
    cdef SmallPredict* p = <SmallPredict*> ctx
    if p.f64:
        forward_split(p.net, p.net.n_layers, <const double*> p.x, <double*> p.out, p.n,
                      <double*> p.buf_a, <double*> p.buf_b, tid, nt, p.plan, True)
    else:
        forward_split(p.net, p.net.n_layers, <const float*> p.x, <float*> p.out, p.n,
                      <float*> p.buf_a, <float*> p.buf_b, tid, nt, p.plan, True)


cdef Py_ssize_t infer_rows(Net* net, int n_run, const floating* X, floating* out,
                           Py_ssize_t n_rows, Py_ssize_t chunk, floating* buf_a,
                           floating* buf_b, bint check_finite) noexcept nogil:
    """Layers [0, n_run) on the calling thread, chunk rows at a time, through the caller's
    two (chunk x widest) buffers (nothing of the Net's but its parameters is touched).
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
                      0, 1, 1, False)
        start += n
    return -1


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
            fastnn_pin_away(job.help.lead_cpu)
            help_tiles(job.help, tid)
            fastnn_unpin()
        elif job.f64:
            train_steps(job, &p, <double*> NULL)
        else:
            train_steps(job, &p, <float*> NULL)
        if tid == 0:
            fastnn_flag_set(&job.help.quit)
            fastnn_pass_begin(&job.help.seq)
            fastnn_pass_post(&job.help.seq, &job.help.sleepers)
    elif job.f64:
        train_steps(job, &p, <double*> NULL)
    else:
        train_steps(job, &p, <float*> NULL)
    if job.measure:
        job.waited[tid] = fastnn_thread_wait_ns() - before if before >= 0 else -1


cdef inline Py_ssize_t predict_block(Py_ssize_t batch_size, int plan) noexcept nogil:
    """The rows of a predict's blocks: its results are fixed by them (a block's product
    is one BLAS call), so they follow the plan, not the threads that came."""
    return max(1, batch_size // plan)


cdef void predict_blocks(Job* job, int tid, int nt, floating* tag) noexcept nogil:
    """Thread tid's part of a predict: blocks of batch_size / plan rows (predict_block),
    claimed one at a time until none is left, each run through every layer in the
    thread's own rows of the buffers. No barrier until the end, so a thread the scheduler takes off its core
    holds up only the block in its hands, and the others take the rest: on a machine
    whose other processes hold a core, the team still gets what the free cores give.
    A row's result does not depend on which thread computes its block."""
    cdef Net* net = job.net
    cdef Counters c = counters_of(net)
    cdef Py_ssize_t width = net.layers[job.n_run - 1].n_out, n_in = net.layers[0].n_in
    cdef Py_ssize_t block = predict_block(job.batch_size, job.plan), start, n, bad
    cdef floating* out = <floating*> job.out
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
        job.status = -1


cdef void run_job(void* ctx, int tid, int nt) noexcept nogil:
    cdef Job* job = <Job*> ctx
    cdef bint predict = job.loss_kind < 0 and not job.training and not job.want_grads
    if job.f64:
        if predict:
            predict_blocks(job, tid, nt, <double*> NULL)
        else:
            run_steps(job, tid, nt, <double*> NULL)
    elif predict:
        predict_blocks(job, tid, nt, <float*> NULL)
    else:
        run_steps(job, tid, nt, <float*> NULL)


# Sizing the team to the cores the machine gives (Engine.train_epoch with adapt): an
# epoch runs in stretches of about STRETCH_S; after each, the team's run delays (how long
# its threads waited for a CPU: csrc/contention.h) set the next stretch's threads.
# Barrier-synchronous threads run only as fast as the slowest, so a thread sharing its
# core with another process holds the whole team back: on 2 cores with one other process
# spinning, an epoch on 2 threads took 2.02-2.11x the idle epoch and on 1 thread
# 1.67-1.70x (bench/bench_busy.py, docs/design.md). A stretch in which some thread waited
# more than CONTENDED of it drops about as many threads as the team's waits add up to
# (where that leaves one, a lead and helpers run instead: train_adapting, after_helped).
# Below the plan, after `patience` calm stretches one stretch tries the whole plan again:
# patience starts at FIRST_PATIENCE, doubles (up to MAX_PATIENCE) each time such a try
# finds the machine still busy, and starts over when one finds it free. A call more than
# STALE_S after the last starts on the whole plan: what was learned then may no longer
# hold.
cdef double STRETCH_S = 0.02
cdef double STALE_S = 0.2
cdef double JUDGE_S = 0.01      # shorter stretches are too noisy to judge (a woken
                                # thread waits for its CPU too: 1.5 ms seen here)
cdef double CONTENDED = 0.15
cdef int FIRST_PATIENCE = 2, MAX_PATIENCE = 8
cdef Py_ssize_t FIRST_STRETCH = 4
DEF MAX_TRACE = 64


cdef struct LoadState:
    int threads         # the last stretch's threads (0: none yet)
    int calm            # stretches in a row, below the plan, in which no thread waited
    int patience        # calm stretches before the next try of the whole plan (0: first)
    bint trying         # the last stretch was such a try
    double step_s       # seconds per step in the last stretch
    double ended        # when the last call ended (monotonic_s)
    int n_stretches     # the last call's stretches; the first MAX_TRACE of them:
    int trace_threads[64]       # the threads each ran on (1: a lead, helped or not)
    int trace_helpers[64]       # and the lead's helpers
    float trace_waited[64]      # and the largest share of it a thread waited for a CPU


cdef int threads_after(int k, int most, const long long* waited, int used, double wall,
                       LoadState* s) noexcept nogil:
    """The threads for the next stretch, after one of `wall` seconds on `used` threads
    (k asked for) in which thread t waited waited[t] ns for a CPU."""
    cdef double total = 0, worst = 0, f
    cdef int t
    cdef bint tried = s.trying
    if s.patience < FIRST_PATIENCE:
        s.patience = FIRST_PATIENCE
    if used < k or wall < JUDGE_S:  # another call held the team, or too short to judge
        return k
    s.trying = False
    for t in range(used):
        if waited[t] < 0:
            return k
        f = waited[t] * 1e-9 / wall
        total += f
        worst = max(worst, f)
    if 0 < s.n_stretches <= MAX_TRACE:
        s.trace_waited[s.n_stretches - 1] = <float> worst
    if worst > CONTENDED:
        s.calm = 0
        if tried:
            s.patience = min(2 * s.patience, MAX_PATIENCE)
        return max(1, k - max(1, <int> (total + 0.5)))
    if tried:
        s.patience = FIRST_PATIENCE
    if k < most:
        s.calm += 1
        if s.calm >= s.patience:
            s.calm = 0
            s.trying = True
            return most
    return k


def set_stretching(double stretch_s, double judge_s):
    """Set the length adapting training aims its stretches at and the least it judges
    (tests make every stretch one step, or never judge); returns the old pair."""
    global STRETCH_S, JUDGE_S
    old = (STRETCH_S, JUDGE_S)
    STRETCH_S, JUDGE_S = stretch_s, judge_s
    return old


def _threads_after(int k, int most, waited, int used, double wall, state):
    """threads_after for tests: state is a dict of LoadState's fields, updated in place;
    returns the threads for the next stretch."""
    cdef long long w[256]
    cdef LoadState s
    memset(&s, 0, sizeof(s))
    s.threads, s.calm, s.patience = k, state["calm"], state["patience"]
    s.trying, s.step_s = state["trying"], 0
    for t in range(used):
        w[t] = waited[t]
    k = threads_after(k, most, w, used, wall, &s)
    state.update(calm=s.calm, patience=s.patience, trying=s.trying)
    return k


# How adapting training uses a core it shares (csrc/helping.h): 0 never helps, 1 runs
# a lead and helpers in place of one thread alone, 2 always (tests, benchmarks).
cdef int HELPING = 1
cdef double HELP_GRACE = 1.5    # see lead_tiles
cdef int HELP_STRETCHES = 10    # a helped stretch is this many stretches long: it ends
                                # waiting for a helper that may be off its core for a
                                # scheduler slice, amortised over 0.2 s
cdef int HELP_PROBE = 2         # but the first after a change is a short try
cdef int FIRST_SOLO = 4, MAX_SOLO = 64  # stretches alone after helpers did not pay


def set_helping(int mode, double grace, bint pin=True):
    """Set when adapting training runs a lead with helpers (0 never, 1 in place of one
    thread alone, 2 always), the lead's grace (lead_tiles; negative, for tests: the
    lead leaves every tile but its own to the helpers and waits for them) and whether a
    helped stretch keeps the lead on one CPU and its helpers off it; returns the old
    triple."""
    global HELPING, HELP_GRACE, fastnn_help_pin
    old = (HELPING, HELP_GRACE, bool(fastnn_help_pin))
    HELPING, HELP_GRACE, fastnn_help_pin = mode, grace, pin
    return old


def set_neighbours(path):
    """Use the registry of fastnn processes at `path` (csrc/neighbours.h; None: the
    default, FASTNN_NEIGHBOURS or /dev/shm; "off": none); returns whether one is mapped."""
    cdef bytes raw = None if path is None else os.fsencode(path)
    cdef char* c_path = NULL
    if raw is not None:
        c_path = raw
    return fastnn_neighbours_open(c_path) == 0


def neighbours_registry():
    """The path of the registry of fastnn processes this process uses, or None."""
    cdef bytes path = fastnn_neighbours_path()
    return os.fsdecode(path) if path else None


def neighbours_share(int most):
    """This process's share of its CPUs, at most `most`, as a training stretch takes it
    (its entry beats); `most` when there is no registry."""
    return fastnn_neighbours_share(most)


cdef double worst_wait(const long long* waited, int first, int used,
                       double wall) noexcept nogil:
    """The largest share of `wall` a thread in [first, used) waited for a CPU (-1: unknown)."""
    cdef double worst = 0
    cdef int t
    for t in range(first, used):
        if waited[t] < 0:
            return -1
        worst = max(worst, waited[t] * 1e-9 / wall)
    return worst


cdef int after_helped(int k, int most, const long long* waited, int used, double wall,
                      long long handed_in, long long retaken, LoadState* s,
                      Help* h) noexcept nogil:
    """The threads for the next stretch after a helped one of `wall` seconds on `used`
    threads (the lead first) in which the helpers handed in `handed_in` tiles and the
    lead took back `retaken`. No thread waited for its CPU: the whole plan. The lead
    waited (it shares its CPU): the next helped stretch keeps it on another (h.avoid_cpu).
    It waited there too, or the helpers were late more often than not: the lead runs
    alone for h.solo stretches, 4, 8, ... up to 64, before it tries helpers again. Only
    after a helped stretch that went well is the next one long (HELP_STRETCHES): two
    processes that each try helpers on a machine they fill lose little to the tries."""
    cdef bint shared = waited[0] * 1e-9 > CONTENDED * wall
    cdef double worst = worst_wait(waited, 0, used, wall)
    if 0 < s.n_stretches <= MAX_TRACE:
        s.trace_waited[s.n_stretches - 1] = <float> worst
    if HELPING != 1:
        return k
    if 0 <= worst <= CONTENDED:
        s.calm, s.patience, s.trying = 0, FIRST_PATIENCE, False
        h.patience, h.avoid_cpu, h.probing = 0, -1, True
        return most
    h.probing = True
    if 2 * retaken > handed_in or (shared and h.avoid_cpu >= 0):
        h.solo = h.patience = min(2 * h.patience if h.patience else FIRST_SOLO, MAX_SOLO)
        h.avoid_cpu = -1
    else:
        h.patience = 0
        h.avoid_cpu = h.lead_cpu if shared else -1
        h.probing = shared
    return k


def _after_helped(int k, int most, waited, double wall, long long handed_in,
                  long long retaken, state):
    """after_helped for tests: state is a dict of Help's solo, patience, probing,
    avoid_cpu and lead_cpu, updated in place; returns the threads for the next stretch."""
    cdef long long w[256]
    cdef LoadState s
    cdef Help h
    memset(&s, 0, sizeof(s))
    memset(&h, 0, sizeof(h))
    h.solo, h.patience, h.probing = state["solo"], state["patience"], state["probing"]
    h.avoid_cpu, h.lead_cpu = state["avoid_cpu"], state["lead_cpu"]
    for t in range(len(waited)):
        w[t] = waited[t]
    k = after_helped(k, most, w, len(waited), wall, handed_in, retaken, &s, &h)
    state.update(solo=h.solo, patience=h.patience, avoid_cpu=h.avoid_cpu, probing=h.probing)
    return k


cdef int train_adapting(Job* job, int most, LoadState* state, Help* help) noexcept nogil:
    """Run an epoch's training job in stretches of about STRETCH_S, each on the threads
    threads_after chose from the last (the first on the last call's choice); returns the
    threads of the last stretch. Every stretch carries on from where the last stopped:
    the steps, their order and their results are those of one job on the same counts.
    Where one thread would run alone, a lead runs with most - 1 helpers (HELPING) in
    stretches HELP_STRETCHES times as long, until no thread waits for its CPU. Other
    fastnn processes training on the same CPUs cap every stretch at this process's share
    of them (csrc/neighbours.h); helpers come only where the share is more than one."""
    cdef int k = state.threads if 1 <= state.threads <= most else most, used = k
    cdef int share = most
    cdef Py_ssize_t steps = FIRST_STRETCH, first
    cdef double t0 = monotonic_s(), wall
    cdef bint parallel = job.step_rows != NULL, helped
    cdef long long tiles = 0, retaken = 0
    job.measure = True
    state.n_stretches = 0
    help.tiles = help.retaken = 0
    if t0 - state.ended > STALE_S:
        k, state.calm, state.patience, state.trying = most, 0, FIRST_PATIENCE, False
        help.solo, help.patience, help.avoid_cpu, help.probing = 0, 0, -1, True
    if state.step_s > 0:
        steps = max(1, <Py_ssize_t> (STRETCH_S / state.step_s))
    while job.status == 0 and ((job.next_batch < job.n_steps) if parallel
                               else (job.next_start < job.n_samples)):
        first = job.next_batch
        if HELPING != 2:  # forced helpers (tests) keep every thread
            share = fastnn_neighbours_share(most)
            k = min(k, share)
        helped = share > 1 and (HELPING == 2 or (HELPING == 1 and k == 1 and help.solo == 0
                                                 and fastnn_allowed_cpus() > 1))
        if k == 1 and not helped and help.solo > 0:
            help.solo -= 1
        if helped:
            tiles, retaken = help.tiles, help.retaken
            help.quit, help.grace = 0, HELP_GRACE
            job.help = help
            if state.step_s > 0:
                steps = max(1, <Py_ssize_t> (
                    STRETCH_S * (HELP_PROBE if help.probing else HELP_STRETCHES)
                    / state.step_s))
        job.end_batch = first + steps
        t0 = monotonic_s()
        if helped:
            help.lead_cpu = fastnn_pin_lead(help.avoid_cpu)
        used = run_on_team(train_job, job, share if helped else k)
        if helped:
            fastnn_unpin()
        wall = monotonic_s() - t0
        job.help = NULL
        if state.n_stretches < MAX_TRACE:
            state.trace_threads[state.n_stretches] = 1 if helped else used
            state.trace_helpers[state.n_stretches] = used - 1 if helped else 0
            state.trace_waited[state.n_stretches] = -1
        state.n_stretches += 1
        if job.next_batch == first:  # no step ran: nothing more will
            break
        state.step_s = wall / (job.next_batch - first)
        steps = max(1, <Py_ssize_t> (STRETCH_S / state.step_s))
        if not helped:
            k = threads_after(k, most, job.waited, used, wall, state)
        elif used > 1 and wall >= JUDGE_S:
            k = after_helped(k, most, job.waited, used, wall, help.tiles - tiles,
                             help.retaken - retaken, state, help)
    state.threads = k
    state.ended = monotonic_s()
    return used


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


# At most this many threads run a team job (0: no cap); tests set it (cap_team) to make a
# training step's plan run on fewer threads than it has blocks, as a busy machine does.
cdef int TEAM_CAP = 0


def cap_team(int n):
    """Run every team job on at most n threads (0: no cap); returns the old cap."""
    global TEAM_CAP
    old, TEAM_CAP = TEAM_CAP, max(0, n)
    return old


cdef int run_on_team(fastnn_job_fn fn, void* ctx, int n_threads) noexcept nogil:
    """Run fn(ctx, tid, n) on the team with BLAS pinned to one thread; returns the threads
    it ran on."""
    if TEAM_CAP > 0:
        n_threads = min(n_threads, TEAM_CAP)
    fastnn_blas_pin()
    n_threads = fastnn_team_run(n_threads, fn, ctx)
    fastnn_blas_unpin()
    return n_threads


cdef class Engine:
    """Compiled plan of a Sequential model: layer kinds, parameter pointers, buffers.

    specs: one tuple (kind, n_in, n_out, slope, weight, bias, l2, extra) per layer, with
    weight and bias C-contiguous arrays of `dtype` (None for layers without them), used
    in place, l2 the coefficient c of the weight's penalty gradient c * W (2 lambda), and
    extra a dict of layer-specific settings (batch norm: eps, momentum, running_mean,
    running_var; the running statistics are updated in place) or None.
    The gradient arrays, in parameter order, are `self.grads`.
    """
    cdef Net net
    cdef readonly object dtype
    cdef readonly list grads
    cdef readonly object flat_gradients  # grads' storage (see __cinit__)
    cdef object _reducer_keep
    cdef list _keep      # every array whose pointer the plan holds
    cdef list _buffers
    cdef list _bn_parts  # batch norm's per-block sums (LayerPlan.bn_part), per layer
    cdef int _last_threads
    cdef LoadState load      # what train_adapting learned of the machine (kept across calls)
    cdef Help help           # train_adapting's lead and helpers
    cdef Py_ssize_t widest   # the widest layer input or output (predict's buffers)
    cdef unsigned long _trainer  # the thread running fit (its ident), 0 when none
    cdef int _readers            # predicts running on their callers' threads
    cdef int _status             # the last training run's Job.status
    cdef readonly object failure  # the last train_epoch's failed batch: "loss", "update"
    cdef object _saved           # train_epoch's copy of the state a step writes

    def __cinit__(self, list specs, dtype):
        cdef LayerPlan* L
        cdef bint below_has_params = False
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"Engine dtype must be float32 or float64, not {self.dtype}")
        n = len(specs)
        self.net.n_layers = n
        self.net.layers = <LayerPlan*> calloc(max(n, 1), sizeof(LayerPlan))
        self.net.params = NULL
        self.net.capacity = 0
        self.net.l2_scale = 1.0
        if self.net.layers == NULL:
            raise MemoryError()
        self.grads = []
        self._keep = []
        self._buffers = []
        self._trainer = self._readers = 0
        params = []
        for l, (kind, n_in, n_out, slope, weight, bias, l2, extra) in enumerate(specs):
            L = &self.net.layers[l]
            L.kind, L.n_in, L.n_out, L.slope = kind, n_in, n_out, slope
            if kind == BATCHNORM:
                L.eps, L.momentum = extra["eps"], extra["momentum"]
                scratch = [extra["running_mean"], extra["running_var"]] + [
                    np.zeros(n_out, dtype=self.dtype) for _ in range(6)]
                for k, arr in enumerate(scratch):
                    if arr.dtype != self.dtype or not arr.flags.c_contiguous \
                            or arr.shape != (n_out,):
                        raise TypeError("batch-norm statistics must match the layer")
                    L.bn[k] = data_ptr(arr)
                self._keep.extend(scratch)
            L.weight, L.bias = data_ptr(weight), data_ptr(bias)
            L.weight_param = L.bias_param = -1
            L.need_grad_in = below_has_params
            for arr in (weight, bias):
                if arr is None:
                    continue
                if arr.dtype != self.dtype or not arr.flags.c_contiguous:
                    raise TypeError("parameters must be C-contiguous arrays of the engine dtype")
                params.append((arr, l2 if arr is weight else 0.0))
                self._keep.append(arr)
                below_has_params = True
                if arr is weight:
                    L.weight_param = len(params) - 1
                else:
                    L.bias_param = len(params) - 1
        kinds = [spec[0] for spec in specs]
        dense = [l for l in range(n) if kinds[l] == DENSE]
        for i, l in enumerate(dense):
            # its grid may cut rows unless batch norm on columns, whose statistics want
            # whole ones, reads its output or writes its input gradient (the layers up to
            # the next Dense and down to the one before); training lifts this once batch
            # norm runs on row blocks (_batchnorm_on_rows)
            below = dense[i - 1] + 1 if i > 0 else 0
            above = dense[i + 1] if i + 1 < len(dense) else n
            self.net.layers[l].tiles_ok = not any(kinds[k] == BATCHNORM
                                                  for k in range(below, above))
        self.widest = max([self.net.layers[0].n_in if n else 0]
                          + [self.net.layers[l].n_out for l in range(n)])
        self.net.n_params = len(params)
        self.net.params = <ParamPlan*> calloc(max(len(params), 1), sizeof(ParamPlan))
        if self.net.params == NULL:
            raise MemoryError()
        # the gradient arrays are views of one flat buffer, each starting on a 64-byte
        # boundary, then EXTRA slots: data-parallel training sums it in one allreduce
        offsets, size = [], 0
        for value, _ in params:
            offsets.append(size)
            size += -(-value.size // UNIT_ALIGN) * UNIT_ALIGN
        self.flat_gradients = np.zeros(size + EXTRA, dtype=self.dtype)
        self.net.flat = data_ptr(self.flat_gradients)
        self.net.flat_size, self.net.extra_at = size + EXTRA, size
        for (value, _), offset in zip(params, offsets):
            self.grads.append(
                self.flat_gradients[offset:offset + value.size].reshape(value.shape))
        for i, ((value, l2), grad) in enumerate(zip(params, self.grads)):
            self.net.params[i].size = value.size
            # threads own blocks of the layer's units: rows of a weight, entries of a vector
            self.net.params[i].units = value.shape[0]
            self.net.params[i].row = value.size // max(value.shape[0], 1)
            self.net.params[i].l2 = l2
            self.net.params[i].value = data_ptr(value)
            self.net.params[i].grad = data_ptr(grad)

    def __dealloc__(self):
        free(self.net.layers)
        free(self.net.params)

    @property
    def capacity(self):
        return self.net.capacity

    def reserve(self, Py_ssize_t capacity):
        """Make the buffers hold at least `capacity` rows (no-op if they already do)."""
        if capacity <= self.net.capacity:
            return
        cdef LayerPlan* layers = self.net.layers
        cdef int l, n = self.net.n_layers
        buffers = []
        for l in range(n):
            layers[l].out = self._block(buffers, capacity, layers[l].n_out, self.dtype)
            layers[l].grad = self._block(buffers, capacity, layers[l].n_out, self.dtype)
            layers[l].mask = self._block(buffers, capacity, layers[l].n_out, self.dtype) \
                if layers[l].kind == DROPOUT else NULL
        for k in range(2):
            self.net.xbuf[k] = self._block(buffers, capacity, layers[0].n_in, self.dtype)
        self.net.tbuf = self._block(buffers, capacity, layers[n - 1].n_out, self.dtype)
        self.net.lbuf = <int64_t*> self._block(buffers, capacity, 1, np.int64)
        self.net.wbuf = self._block(buffers, capacity, 1, self.dtype)
        self.net.ones = self._block(buffers, capacity, 1, self.dtype)
        buffers[len(buffers) - 1].fill(1)
        self._buffers = buffers
        self.net.capacity = capacity

    def _batchnorm_on_rows(self, int blocks):
        """Training on a plan of `blocks` blocks runs batch norm on row blocks: reserve
        its per-block sums (kept for later calls) and let every Dense layer's grid cut
        rows, batch norm's neighbours too (docs/design.md, "Batch norm on row blocks")."""
        cdef LayerPlan* L
        cdef int l
        if blocks <= 1 or not any(self.net.layers[l].kind == BATCHNORM
                                  for l in range(self.net.n_layers)):
            return
        if self._bn_parts is None:
            self._bn_parts = [None] * self.net.n_layers
        for l in range(self.net.n_layers):
            L = &self.net.layers[l]
            if L.kind == DENSE:
                L.tiles_ok = True
            elif L.kind == BATCHNORM and L.bn_blocks < blocks:
                part = np.zeros((4 * blocks + 1) * L.n_out, dtype=self.dtype)
                self._bn_parts[l] = part
                L.bn_part, L.bn_blocks = data_ptr(part), blocks

    def use_per_row_scaling(self, bint per_row):
        """scikit-learn's MLP conventions (True) or torch's (False, the default).

        per_row: loss gradients are those of the mean over rows of the per-row sum over
        outputs (half the squares for MSE); each L2 coefficient is divided by the rows of
        the step's batch; and every training step adds 0.5 * l2 * |W|^2 (parameters as the
        step found them) to `penalty_sum`."""
        self.net.per_row = per_row
        self.net.l2_scale = 1.0

    @property
    def penalty_sum(self):
        """Summed over training steps since the last reset (per_row only), see above."""
        return self.net.penalty_sum

    def reset_penalty_sum(self):
        self.net.penalty_sum = 0

    def seed_dropout(self, uint64_t seed):
        """Restart the dropout mask stream from `seed` (fit does so every epoch)."""
        self.net.rng = seed

    @property
    def step(self):
        """Optimizer updates made so far (kept when a step is interrupted)."""
        return self.net.step

    def set_optimizer(self, int kind, hyper, list states, long long step):
        """Select the update kernel, its hyperparameters, each parameter's state arrays and
        the number of updates already made."""
        if len(hyper) > MAX_HYPER:
            raise ValueError(f"at most {MAX_HYPER} optimizer hyperparameters")
        if len(states) != self.net.n_params:
            raise ValueError(f"expected state for {self.net.n_params} parameters")
        self.net.opt_kind = kind
        self.net.step = step
        self.net.mom_scale = 1.0
        for i in range(MAX_HYPER):  # unset trailing flags read as 0
            self.net.hyper[i] = hyper[i] if i < len(hyper) else 0.0
        for i, state in enumerate(states):
            for j in range(3):
                arr = state[j] if j < len(state) else None
                if arr is not None and (arr.dtype != self.dtype or not arr.flags.c_contiguous
                                        or arr.size != self.net.params[i].size):
                    raise TypeError("optimizer state must match its parameter")
                self.net.params[i].state[j] = data_ptr(arr)
        self._keep.append(states)

    @property
    def last_threads(self):
        """The threads the last train_epoch or run call ran on (its plan)."""
        return self._last_threads

    @property
    def last_stretches(self):
        """The last adapting train_epoch's stretches (the first 64): a list of (threads,
        the largest share of the stretch a thread waited for a CPU, or -1 when unknown
        or not judged)."""
        return [(self.load.trace_threads[i], self.load.trace_waited[i])
                for i in range(min(self.load.n_stretches, MAX_TRACE))]

    @property
    def last_helpers(self):
        """The last adapting train_epoch's helpers: per stretch (the first 64) the helpers
        its lead had (0: none), and the tiles they handed in and that the lead computed
        again because a helper was late (csrc/helping.h)."""
        return {"helpers": [self.load.trace_helpers[i]
                            for i in range(min(self.load.n_stretches, MAX_TRACE))],
                "tiles": self.help.tiles, "retaken": self.help.retaken}

    def predict_rows(self, Py_ssize_t rows, int n_run, int max_threads):
        """The rows of the blocks a predict in chunks of `rows` rows computes at a time,
        on the team or (infer) on the calling thread alike."""
        return predict_block(rows, plan_threads(&self.net, rows, n_run, 1, max_threads))

    def plan_threads(self, Py_ssize_t rows, int n_run, bint training, int max_threads):
        """The threads a call on batches of `rows` rows would run on (see point 4)."""
        return plan_threads(&self.net, rows, n_run, 3 if training else 1, max_threads)

    def set_reducer(self, int kind, fn=None, size_t in_place=0, size_t datatype=0,
                    size_t op=0, size_t comm=0, bint int_handles=False):
        """How data-parallel steps sum flat_gradients over the processes: 1 (MPI) with
        the address of MPI_Allreduce and the handles of MPI_IN_PLACE, the buffer's
        datatype, MPI_SUM and the communicator (ints when int_handles); 2 (Python) with
        a callable that sums flat_gradients in place and returns True; 0: none."""
        if kind not in (REDUCE_NONE, REDUCE_MPI, REDUCE_PYTHON):
            raise ValueError(f"unknown reducer kind {kind}")
        if kind == REDUCE_MPI and not (isinstance(fn, int) and fn != 0):
            raise TypeError("an MPI reducer needs MPI_Allreduce's address")
        if kind == REDUCE_PYTHON and not callable(fn):
            raise TypeError("a Python reducer must be callable")
        self._reducer_keep = fn
        self.net.reducer.kind = kind
        self.net.reducer.fn = <void*> <size_t> fn if kind == REDUCE_MPI else \
            (<void*> fn if kind == REDUCE_PYTHON else NULL)
        self.net.reducer.in_place = <void*> in_place
        self.net.reducer.datatype = <void*> datatype
        self.net.reducer.op = <void*> op
        self.net.reducer.comm = <void*> comm
        self.net.reducer.int_handles = int_handles

    def train_epoch(self, X, targets, labels, order, Py_ssize_t batch_size, int loss_kind,
                    int n_run, int max_threads=1, weights=None, step_rows=None,
                    step_denoms=None, bint adapt=False):
        """Train on the rows X[order] (all of X, in order, when order is None) in batches,
        on at most max_threads threads; with `adapt`, on as many of those as the machine
        gives (train_adapting: fewer while other processes hold cores). X is a C-contiguous
        array or a CSR matrix (see _check_inputs); `weights` (one per row of X) makes each
        batch's loss the weighted mean.

        Data-parallel (set_reducer first): step k trains on the next step_rows[k] rows
        (int64, summing to the rows given; 0 is allowed) with the mean's denominator
        step_denoms[k] (float64: the global batch's rows or summed weights), and the
        gradients are summed over the processes before each update; the returned loss
        sum is then the global one.

        Returns (loss_sum, index of the failed batch, or -1): the sum of the batches'
        (weighted) summed losses; per_row with weights, each batch's is multiplied by its
        rows over its summed weights (scikit-learn's accounting). A batch fails when its
        loss is not finite (checked before its update) or when its update wrote NaN or
        inf into a parameter, the optimizer's state or batch norm's running statistics
        (a finite loss whose float32 gradient or update overflowed); `failure` says which
        ("loss" or "update"), and either way the parameters, optimizer state and running
        statistics are left as they were before that batch. The second kind costs no
        work per step: the state is copied aside when the call starts and checked once
        when it ends. Only when something is not finite is the call run again from the
        copy, checking after each step, and then once more up to the first bad step (a
        plan gives the same bits every time it runs).
        Raises KeyboardInterrupt (or another signal's error) between steps; data-parallel,
        StopIteration when another process stopped, RuntimeError when the allreduce
        failed."""
        cdef long long step = self.net.step
        cdef uint64_t rng = self.net.rng
        cdef double penalty_sum = self.net.penalty_sum
        cdef size_t item = self.dtype.itemsize
        cdef bint finite
        args = (X, targets, labels, order, batch_size, loss_kind, n_run, max_threads,
                weights, step_rows, step_denoms)
        self.failure = None
        cdef Py_ssize_t entries = state_entries(&self.net)
        if self._saved is None or self._saved.size != entries * item:
            self._saved = np.empty(entries * item, np.uint8)  # kept for the next call
        cdef char* store = <char*> data_ptr(self._saved)
        with nogil:
            copy_state(&self.net, store, item, False, False)
        loss_sum, failed = self._train(*args, adapt=adapt)
        with nogil:
            finite = copy_state(&self.net, NULL, item, False, True)
        if finite:
            self.failure = "loss" if failed >= 0 else None
            return loss_sum, failed
        for check in (True, False):  # find the first bad step, then stop before it
            with nogil:
                copy_state(&self.net, store, item, True, False)
            self.net.step, self.net.rng, self.net.penalty_sum = step, rng, penalty_sum
            if check:
                loss_sum, failed = self._train(*args, check_steps=True)
                if failed < 0 or self._status == 1:  # a loss that became NaN came first
                    self.failure = "loss" if failed >= 0 else None
                    return loss_sum, failed
            else:
                loss_sum, _ = self._train(*args, stop_before=failed)
        self.failure = "update"
        return loss_sum, failed

    def _train(self, X, targets, labels, order, Py_ssize_t batch_size, int loss_kind,
               int n_run, int max_threads, weights, step_rows, step_denoms, *,
               bint adapt=False, bint check_steps=False, Py_ssize_t stop_before=-1):
        """One run of train_epoch's steps: with check_steps each update's writes are
        checked (status 2 at the first that wrote NaN or inf); stop_before ends the run
        before that step."""
        cdef Job job
        cdef Counters c
        cdef int n_threads
        cdef Part alone = part_of(0, 1, 1)
        if order is not None and (order.dtype != np.int64 or not order.flags.c_contiguous):
            raise TypeError("order must be a C-contiguous int64 array")
        self.reserve(batch_size)
        self._start_job(&job, X, targets, labels, weights, None, loss_kind, n_run, batch_size)
        job.order = <int64_t*> data_ptr(order)
        job.n_samples = X.shape[0] if order is None else order.shape[0]
        job.check_steps = check_steps
        if stop_before >= 0:
            job.end_batch = stop_before
            adapt = False  # (adapting sets each stretch's end)
        if step_rows is not None:
            if self.net.reducer.kind == REDUCE_NONE:
                raise ValueError("step_rows needs a reducer (set_reducer)")
            if step_rows.dtype != np.int64 or step_denoms is None \
                    or step_denoms.dtype != np.float64 \
                    or step_denoms.shape != step_rows.shape or step_rows.ndim != 1 \
                    or not step_rows.flags.c_contiguous \
                    or not step_denoms.flags.c_contiguous:
                raise TypeError("step_rows and step_denoms: int64 and float64 arrays of "
                                "one entry per step")
            if step_rows.size and (step_rows.min() < 0 or step_rows.max() > batch_size
                                   or step_rows.sum() != job.n_samples):
                raise ValueError("step_rows must lie in [0, batch_size] and sum to the "
                                 "rows given")
            job.step_rows = <int64_t*> data_ptr(step_rows)
            job.step_denoms = <double*> data_ptr(step_denoms)
            job.n_steps = step_rows.shape[0]
        n_threads = plan_threads(&self.net, batch_size, n_run, 3, max_threads)
        self._batchnorm_on_rows(n_threads)
        job.plan = n_threads
        try:
            with _blas_kept_to_one_thread():
                with nogil:
                    if adapt and n_threads > 1:
                        self._last_threads = train_adapting(&job, n_threads, &self.load,
                                                             &self.help)
                    else:
                        self._last_threads = run_on_team(train_job, &job, n_threads)
                if job.status == -1:  # raised here, before any Python code runs
                    reraise()
            if job.status == -2:
                raise StopIteration("another process stopped training")
            if job.status == -3:
                raise RuntimeError("the allreduce of the gradients failed")
        finally:  # however it ends, the momentum buffers hold torch's b again
            c = counters_of(&self.net)
            if job.f64:
                unscale_momentum(&self.net, &c, &alone, <double*> NULL)
            else:
                unscale_momentum(&self.net, &c, &alone, <float*> NULL)
            store_counters(&self.net, &c)
            self._status = job.status
        return job.loss_sum, job.failed_batch if job.status in (1, 2) else -1

    def run(self, X, out, targets, labels, int loss_kind, bint want_grads, int n_run,
            Py_ssize_t batch_size, int max_threads=1, weights=None, bint training=False,
            bint check_finite=False):
        """Predict into `out` (loss_kind -1) or evaluate the loss over X in batches, on at
        most max_threads threads; with want_grads, the gradients of the mean loss (the
        weighted mean with `weights`) land in self.grads. `training` runs the layers as a
        training step does (batch norm's statistics are those of each chunk of
        batch_size rows; its running statistics are left as they were). Returns
        (loss_sum, correct predictions), both weighted by `weights` when given.
        check_finite (a predict of a dense X): the threads check each block of rows before
        using it, and NonFiniteRow names a row with NaN or inf (`out` is then partly
        written)."""
        cdef Job job
        cdef int n_threads
        cdef Py_ssize_t i, n_samples = X.shape[0]
        self.reserve(batch_size)
        self._start_job(&job, X, targets, labels, weights, out, loss_kind, n_run,
                        batch_size)
        job.want_grads = want_grads and loss_kind >= 0
        job.training = training
        job.weight_total = float(np.sum(weights, dtype=np.float64)) \
            if weights is not None else n_samples
        if check_finite and (loss_kind >= 0 or training or job.sparse):
            raise TypeError("check_finite is for predicts of a dense X")
        job.check_finite = check_finite
        n_threads = plan_threads(&self.net, min(batch_size, n_samples), n_run,
                                 3 if job.want_grads else 1, max_threads)
        job.plan = n_threads
        for i in range(n_threads):
            job.bad_row[i] = -1
        with _blas_kept_to_one_thread():
            with nogil:
                self._last_threads = run_on_team(run_job, &job, n_threads)
            if job.status < 0:  # raised here, before any Python code runs
                reraise()
        if job.halt:
            raise NonFiniteRow(min(job.bad_row[i] for i in range(n_threads)
                                   if job.bad_row[i] >= 0))
        if job.want_grads:  # the L2 penalty's gradient, l2 * W, once for the whole mean
            for i in range(self.net.n_params):
                if self.net.params[i].l2 == 0:
                    continue
                scale = (self.net.params[i].l2 / job.weight_total if self.net.per_row
                         else self.net.params[i].l2)
                if job.f64:
                    axpy(<int> self.net.params[i].size, <double> scale,
                         <double*> self.net.params[i].value, <double*> self.net.params[i].grad)
                else:
                    axpy(<int> self.net.params[i].size, <float> scale,
                         <float*> self.net.params[i].value, <float*> self.net.params[i].grad)
        return job.loss_sum, job.correct

    def predict_small(self, X, batch_size, int max_threads):
        """Predict X in one batch; or None, having done nothing, unless X is a C-contiguous
        2-D array of this dtype with the first layer's width, 1 to SMALL_ROWS rows (at
        most batch_size, within SMALL_VALUES a buffer) and finite values, and no fit runs
        in another thread: the caller then takes the general path, which converts,
        reports or waits. After a thread's first call the output array is the only
        allocation (the buffers are the thread's scratch block, csrc/scratch.h).
        Threads: one per SMALL_GRAIN_FLOPS (within max_threads) on the team when no
        other thread predicts (see small_in_flight) and the workers are awake or the work
        reaches SMALL_WAKE_FLOPS; else the calling thread alone, rousing the workers for
        the predicts that follow when it could have split."""
        global small_in_flight, small_last_thread, small_last_end
        cdef Py_buffer view
        cdef Py_ssize_t n_rows, n_in = self.net.layers[0].n_in, widest = self.widest
        cdef int n_layers = self.net.n_layers, n_threads = 1
        cdef unsigned long me = PyThread_get_thread_ident()
        cdef SmallPredict job
        cdef double flops
        cdef bint shared
        cdef size_t itemsize = self.dtype.itemsize
        if self._trainer != 0 and self._trainer != me:
            return None
        try:
            PyObject_GetBuffer(X, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)
        except (BufferError, ValueError, TypeError):
            return None
        try:
            job.f64 = self.dtype.itemsize == 8
            n_rows = view.shape[0] if view.ndim == 2 else 0
            if view.ndim != 2 or not 1 <= n_rows <= SMALL_ROWS or batch_size < n_rows \
                    or view.shape[1] != n_in \
                    or n_rows * widest > SMALL_VALUES \
                    or view.format[1] != 0 or view.format[0] != (c'd' if job.f64 else c'f') \
                    or not (all_finite(<const double*> view.buf, n_rows * n_in) if job.f64
                            else all_finite(<const float*> view.buf, n_rows * n_in)):
                return None
            kept = []
            job.out = new_array_data((n_rows, self.net.layers[n_layers - 1].n_out),
                                     self.dtype, kept)
            job.buf_a = fastnn_thread_scratch(2 * n_rows * widest * itemsize)
            if job.buf_a == NULL:
                raise MemoryError()
            job.buf_b = (<char*> job.buf_a) + n_rows * widest * itemsize
            job.net, job.x, job.n = &self.net, view.buf, n_rows
            flops = forward_flops(&self.net, n_rows, n_layers)
            shared = small_in_flight > 0 or (small_last_thread != me and
                                             monotonic_s() - small_last_end < SMALL_SHARED_S)
            job.plan = 1  # fixed by the shape and the thread setting, not by the moment
            if max_threads > 1 and fastnn_blas_controlled():
                job.plan = <int> max(1.0, min(<double> min(max_threads, FASTNN_MAX_THREADS),
                                              flops / SMALL_GRAIN_FLOPS))
            n_threads = 1 if shared else job.plan
            self._readers += 1  # no GIL release since the trainer check: fit waits for it
            small_in_flight += 1
            try:
                with nogil:
                    if n_threads > 1 and (flops >= SMALL_WAKE_FLOPS
                                          or fastnn_team_awake(n_threads)):
                        n_threads = run_on_team(small_predict_job, &job, n_threads)
                    else:  # the plan's blocks on the calling thread, BLAS pinned as on
                        fastnn_blas_pin()        # the team: callers each on one core
                        small_predict_job(&job, 0, 1)
                        fastnn_blas_unpin()
                        if n_threads > 1:
                            fastnn_team_rouse(n_threads)
                        n_threads = 1
            finally:
                self._readers -= 1
                small_in_flight -= 1
                small_last_thread, small_last_end = me, monotonic_s()
            self._last_threads = n_threads
            return kept[0]
        finally:
            PyBuffer_Release(&view)

    def enter_reader(self, unsigned long thread):
        """Count a predict on its caller's thread in, unless another thread fits (False):
        one step under the GIL, as predict_small's own check is."""
        if self._trainer != 0 and self._trainer != thread:
            return False
        self._readers += 1
        return True

    def leave_reader(self):
        self._readers -= 1

    @property
    def readers(self):
        """Predicts running on their callers' threads now."""
        return self._readers

    def set_trainer(self, unsigned long thread):
        """Mark a fit running on `thread` (0: none); predicts from other threads then take
        the general path, which waits until fit ends."""
        self._trainer = thread

    def infer(self, X, out, buf_a, buf_b, Py_ssize_t chunk, int n_run=-1,
              bint check_finite=False):
        """Run layers [0, n_run) (all: -1) into `out` on the calling thread, without the
        team: chunk rows at a time through the caller's two buffers (chunk x the widest
        layer, this dtype). Nothing shared is written, so several Python threads may call
        it at once with their own buffers; the GIL is released. X: C-contiguous, this
        dtype, checked by the caller (its finiteness here, with check_finite: NonFiniteRow
        names the first row with NaN or inf)."""
        if n_run == -1:
            n_run = self.net.n_layers
        if not 1 <= n_run <= self.net.n_layers:
            raise ValueError(f"n_run must be in [1, {self.net.n_layers}], got {n_run}")
        cdef Py_ssize_t widest = self.widest
        if X.dtype != self.dtype or X.ndim != 2 or X.shape[1] != self.net.layers[0].n_in \
                or not X.flags.c_contiguous or out.shape != (X.shape[0], self.net.layers[
                    n_run - 1].n_out) or out.dtype != self.dtype \
                or not out.flags.c_contiguous or buf_a.size < chunk * widest \
                or buf_b.size < chunk * widest or buf_a.dtype != self.dtype \
                or buf_b.dtype != self.dtype or chunk < 1:
            raise TypeError("infer: arrays of the wrong shape, dtype or layout")
        cdef void* px = data_ptr(X)
        cdef void* po = data_ptr(out)
        cdef void* pa = data_ptr(buf_a)
        cdef void* pb = data_ptr(buf_b)
        cdef Py_ssize_t n_rows = X.shape[0]
        cdef bint f64 = self.dtype == np.float64
        cdef Py_ssize_t bad
        self._last_threads = 1
        with nogil:
            fastnn_blas_pin()  # one-thread products, as the team's: the same bits
            if f64:
                bad = infer_rows(&self.net, n_run, <double*> px, <double*> po, n_rows, chunk,
                                 <double*> pa, <double*> pb, check_finite)
            else:
                bad = infer_rows(&self.net, n_run, <float*> px, <float*> po, n_rows, chunk,
                                 <float*> pa, <float*> pb, check_finite)
            fastnn_blas_unpin()
        if bad >= 0:
            raise NonFiniteRow(bad)

    cdef _start_job(self, Job* job, X, targets, labels, weights, out, int loss_kind,
                    int n_run, Py_ssize_t batch_size):
        """Check the inputs, fill in a Job's pointers and zero its results."""
        self._check_inputs(X, weights, n_run)
        job.net = &self.net
        job.f64 = self.dtype == np.float64
        job.sparse = hasattr(X, "indptr")
        if job.sparse:
            job.X = data_ptr(X.data)
            job.sp_indices = <int64_t*> data_ptr(X.indices)
            job.sp_indptr = <int64_t*> data_ptr(X.indptr)
        else:
            job.X = data_ptr(X)
            job.sp_indices = job.sp_indptr = NULL
        job.T, job.out, job.W = data_ptr(targets), data_ptr(out), data_ptr(weights)
        job.labels = <int64_t*> data_ptr(labels)
        job.order = NULL
        job.n_samples = X.shape[0]
        job.step_rows, job.step_denoms, job.n_steps = NULL, NULL, 0
        job.reduce_failed = 0
        job.batch_size, job.loss_kind, job.n_run = batch_size, loss_kind, n_run
        job.want_grads = job.training = False
        job.weight_total = 0
        job.stop = job.status = 0
        job.loss_sum, job.correct, job.failed_batch = 0, 0, -1
        job.next_start = job.next_batch = 0
        job.check_steps = job.bad_write = 0
        job.end_batch = PY_SSIZE_T_MAX
        job.measure = job.check_finite = False
        job.next_block = job.halt = 0
        job.help = NULL

    cdef void* _block(self, list buffers, Py_ssize_t n_rows, Py_ssize_t width, dtype):
        """A new zeroed (n_rows, width) buffer, kept alive in `buffers`."""
        arr = np.zeros((n_rows, width), dtype=dtype)
        buffers.append(arr)
        return data_ptr(arr)

    cdef _check_inputs(self, X, weights, int n_run):
        """The layout the kernels read: X a C-contiguous 2-D array of the engine's dtype,
        or a CSR matrix whose values are (int64 indices and row pointers, checked by
        fastnn._validation.as_features to lie within X's shape); weights one per row."""
        if not 1 <= n_run <= self.net.n_layers:
            raise ValueError(f"n_run must be in [1, {self.net.n_layers}], got {n_run}")
        arrays = [X.data, X.indices, X.indptr] if hasattr(X, "indptr") else [X]
        if arrays[0].dtype != self.dtype or len(X.shape) != 2 \
                or X.shape[1] != self.net.layers[0].n_in \
                or any(not a.flags.c_contiguous for a in arrays) \
                or any(a.dtype != np.int64 for a in arrays[1:]):
            raise TypeError("X must be a C-contiguous 2-D array of the engine dtype, or a "
                            "CSR matrix of it with int64 indices")
        if weights is not None and (weights.dtype != self.dtype or weights.ndim != 1
                                    or not weights.flags.c_contiguous
                                    or weights.shape[0] != X.shape[0]):
            raise TypeError("weights must be a C-contiguous array of the engine dtype, one "
                            "per row of X")


cdef void barrier_job(void* ctx, int tid, int nt) noexcept nogil:
    cdef int i
    for i in range((<int*> ctx)[0]):
        fastnn_barrier(nt)


def barrier_seconds(int n_threads, int rounds=20000):
    """Seconds per team barrier, on n_threads threads (bench/bench_projection.py)."""
    import time
    cdef int used
    start = time.perf_counter()
    with nogil:
        used = fastnn_team_run(n_threads, barrier_job, &rounds)
    seconds = time.perf_counter() - start
    return seconds / rounds, used


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
