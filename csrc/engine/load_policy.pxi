# The busy-machine policy (busy.pxi runs it): pure functions from what a stretch measured
# (how long each thread waited for a CPU, what helpers handed in) to the next stretch's
# threads. Kept apart so that the test-support module (_kernels.pyx) includes it too and
# tests hold the rules to synthetic measurements; the engine's tuning settings change
# the engine's copy.

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


cdef struct HelpPolicy:
    int lead_cpu        # the lead's CPU while it is kept there (-1: not kept)
    int avoid_cpu       # the CPU the lead shared with another process last time
    int solo            # stretches the lead runs alone before it tries helpers again
    int patience        # and how many it waits after the next try that does not pay
    bint probing        # the next helped stretch is a short try (HELP_PROBE)


# How adapting training uses a core it shares (csrc/helping.h): 0 never helps, 1 runs
# a lead and helpers in place of one thread alone, 2 always (tests, benchmarks).
cdef int HELPING = 1
cdef int FIRST_SOLO = 4, MAX_SOLO = 64  # stretches alone after helpers did not pay


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
                      HelpPolicy* h) noexcept nogil:
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
