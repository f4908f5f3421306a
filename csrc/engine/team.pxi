# The thread team as the engine uses it (csrc/team.h holds the runtime: threads, barriers,
# BLAS pinning): running a job, the cap tests set, signals between steps, barrier timing.

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


cdef extern from "scratch.h" nogil:
    void* fastnn_thread_scratch(size_t n_bytes)


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


# At most this many threads run a team job (0: no cap); tests set it (tune(team_cap=...)) to
# training step's plan run on fewer threads than it has blocks, as a busy machine does.
cdef int TEAM_CAP = 0


cdef int run_on_team(fastnn_job_fn fn, void* ctx, int n_threads) noexcept nogil:
    """Run fn(ctx, tid, n) on the team with BLAS pinned to one thread; returns the threads
    it ran on."""
    if TEAM_CAP > 0:
        n_threads = min(n_threads, TEAM_CAP)
    fastnn_blas_pin()
    n_threads = fastnn_team_run(n_threads, fn, ctx)
    fastnn_blas_unpin()
    return n_threads


cdef extern from "Python.h":
    int PyErr_CheckSignals_status "PyErr_CheckSignals"()  # -1 leaves the exception set
    void* PyErr_Occurred_ptr "PyErr_Occurred"()


cdef int check_signals() noexcept nogil:
    """Run Python's signal handlers; -1 when one raised (the exception stays set, and the
    call that started the job raises it: see reraise)."""
    with gil:
        return PyErr_CheckSignals_status()


cdef int reraise() except -1:
    """Propagate the exception a signal handler left set (its -1 makes Cython raise it)."""
    return -1


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


cdef extern from "clones.h" nogil:
    int fastnn_isa()


def instruction_set():
    """The instruction set fastnn's own vectorized loops (csrc/clones.h) run with:
    "avx512", "avx2" or "baseline"; FASTNN_ISA=avx2 or baseline caps it."""
    return ("baseline", "avx2", "avx512")[fastnn_isa()]
