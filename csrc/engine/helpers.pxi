# A lead with helpers (csrc/helping.h): on a busy machine one thread runs every pass and
# the others take tiles of its Dense passes into scratch; a late helper's tile the lead
# computes again, so a helper off its core never holds the step.

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


# A lead and its helpers (train_adapting on a busy machine; csrc/helping.h): the posted
# pass, each tile's state word, when a helper took it and where it left its result.
cdef struct Help:
    unsigned seq        # the sequence lock: odd while a pass is written
    int sleepers
    int quit
    HelpPolicy policy   # where the lead runs, and when it tries helpers again
    long claim          # the next tile a helper may try
    double grace        # the lead computes a helper's tile again after this many
                        # times its own tile's time
    long long tiles     # tiles the helpers handed in (for the trace)
    long long retaken   # and tiles the lead computed again
    TilePass posted
    uint64_t state[256]
    uint64_t taken_at[256]
    void* scratch[256]


cdef void lead_tiles(Help* h, TilePass* t) noexcept nogil:
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
    lead_tile(t, last)
    took = fastnn_now_ns() - start
    while h.grace >= 0:  # (a negative grace, for tests: the helpers take every other tile)
        v = <int> fastnn_claim(&h.claim)
        if v >= last:
            break
        if fastnn_swap_word(&h.state[v], fastnn_tile_word(seq, 0, FASTNN_TILE_FREE),
                            fastnn_tile_word(seq, 0, FASTNN_TILE_LEAD)):
            lead_tile(t, v)
    for v in range(last):
        while True:
            word = fastnn_load_word(&h.state[v])
            status = fastnn_tile_status(word)
            if status == FASTNN_TILE_LEAD:
                break
            if status == FASTNN_TILE_DONE:
                if t.f64:
                    commit_tile(t, v, <double*> h.scratch[fastnn_tile_helper(word)])
                else:
                    commit_tile(t, v, <float*> h.scratch[fastnn_tile_helper(word)])
                finish_tile(t, v)
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
                    lead_tile(t, v)
                    if status == FASTNN_TILE_TAKEN:
                        h.retaken += 1
                    break
            else:
                fastnn_pause()


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
