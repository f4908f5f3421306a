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




cdef double HELP_GRACE = 1.5    # see lead_tiles
cdef int HELP_STRETCHES = 10    # a helped stretch is this many stretches long: it ends
                                # waiting for a helper that may be off its core for a
                                # scheduler slice, amortised over 0.2 s
cdef int HELP_PROBE = 2         # but the first after a change is a short try


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
        help.policy.solo, help.policy.patience = 0, 0
        help.policy.avoid_cpu, help.policy.probing = -1, True
    if state.step_s > 0:
        steps = max(1, <Py_ssize_t> (STRETCH_S / state.step_s))
    while job.status == RAN and ((job.next_batch < job.n_steps) if parallel
                               else (job.next_start < job.n_samples)):
        first = job.next_batch
        if HELPING != 2:  # forced helpers (tests) keep every thread
            share = fastnn_neighbours_share(most)
            k = min(k, share)
        helped = share > 1 and (HELPING == 2 or (HELPING == 1 and k == 1
                                                 and help.policy.solo == 0
                                                 and fastnn_allowed_cpus() > 1))
        if k == 1 and not helped and help.policy.solo > 0:
            help.policy.solo -= 1
        if helped:
            tiles, retaken = help.tiles, help.retaken
            help.quit, help.grace = 0, HELP_GRACE
            job.help = help
            if state.step_s > 0:
                steps = max(1, <Py_ssize_t> (
                    STRETCH_S * (HELP_PROBE if help.policy.probing else HELP_STRETCHES)
                    / state.step_s))
        job.end_batch = first + steps
        t0 = monotonic_s()
        if helped:
            help.policy.lead_cpu = fastnn_pin_lead(help.policy.avoid_cpu)
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
                             help.retaken - retaken, state, &help.policy)
    if HELPING != 2:
        fastnn_neighbours_leave()   # the other processes no longer count this one
    state.threads = k
    state.ended = monotonic_s()
    return used
