# Busy machines: an epoch in stretches whose threads follow how long the team waited for
# a CPU (csrc/contention.h), a lead with helpers where one thread would run alone, and
# other fastnn processes' shares (csrc/neighbours.h).

cdef extern from "contention.h" nogil:
    long long fastnn_thread_wait_ns()

cdef extern from "neighbours.h" nogil:
    int fastnn_neighbours_open(const char* group)
    int fastnn_neighbours_share(int most)
    const char* fastnn_neighbours_path()
    void fastnn_neighbours_leave()


# Sizing the team to the cores the machine gives (Engine.train_epoch with adapt): an
# epoch runs in stretches of about STRETCH_S; after each, the team's run delays (how long
# its threads waited for a CPU: csrc/contention.h) set the next stretch's threads.
# Barrier-synchronous threads run only as fast as the slowest, so a thread sharing its
# core with another process holds the whole team back (docs/design.md, "Busy machines",
# has what bench/bench_busy.py measures of each way). A stretch in which some thread waited
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


def set_neighbours(group):
    """Count the fastnn processes of group `group` (csrc/neighbours.h; None: the default,
    FASTNN_NEIGHBOURS or "default"; "off": none); returns whether a group is in use."""
    cdef bytes raw = None if group is None else os.fsencode(group)
    cdef char* c_group = NULL
    if raw is not None:
        c_group = raw
    return fastnn_neighbours_open(c_group) == 0


def neighbours_registry():
    """The name of the group of fastnn processes this process counts, or None."""
    cdef bytes group = fastnn_neighbours_path()
    return os.fsdecode(group) if group else None


def neighbours_share(int most):
    """This process's share of its CPUs, at most `most`, as a training stretch takes it
    (it joins its group until neighbours_leave or the end of a training call); `most`
    when there is no group."""
    return fastnn_neighbours_share(most)


def neighbours_leave():
    """Stop counting as a neighbour (a training call does so when it ends)."""
    fastnn_neighbours_leave()


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
    while job.status == RAN and ((job.next_batch < job.n_steps) if parallel
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
    if HELPING != 2:
        fastnn_neighbours_leave()   # the other processes no longer count this one
    state.threads = k
    state.ended = monotonic_s()
    return used
