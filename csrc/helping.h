/* A lead thread and its helpers: how a training step uses a core it shares with another
 * process (csrc/_engine.pyx, point 4).
 *
 * On a busy machine a barrier-synchronous team runs at the pace of its slowest thread,
 * and a thread sharing its core with another process is off its core for whole
 * scheduler slices (about 1.5-3 ms here), longer than a step's pass. Here one thread,
 * the lead, runs every pass of the step; for each pass of matrix products it posts the
 * pass's tiles, and helpers take tiles as they come, each into its own scratch block.
 * The lead never waits long for a helper: it takes the tiles no helper took, copies the
 * finished ones in, and computes again any tile whose helper has not finished it well
 * after the lead finished one of its own (a helper taken off its core). A tile is the
 * same product wherever it runs, so results are those of the plan, bit for bit.
 *
 * The lead posts a pass under a sequence lock (odd while the pass's description is
 * written), so a helper that reads it while a new one is written reads it again. Each
 * tile's state word holds the pass, the helper and the tile's status; the lead and the
 * helpers move it with compare-and-swap, so a helper late from an old pass can neither
 * take a tile of a new pass nor hand in a result the lead did not wait for. */
#ifndef FASTNN_HELPING_H
#define FASTNN_HELPING_H
#include <stdint.h>
#include "team.h"

/* A tile's status, in the low 2 bits of its state word; bits 2-15 the helper's tid,
 * the rest the pass's sequence number. */
#define FASTNN_TILE_FREE 0
#define FASTNN_TILE_TAKEN 1     /* a helper is computing it */
#define FASTNN_TILE_DONE 2      /* in that helper's scratch block */
#define FASTNN_TILE_LEAD 3      /* the lead computes it (or computed it) */

static inline uint64_t fastnn_tile_word(uint64_t pass, int helper, int status) {
    return (pass << 16) | ((uint64_t)helper << 2) | (uint64_t)status;
}
static inline int fastnn_tile_status(uint64_t word) { return (int)(word & 3); }
static inline int fastnn_tile_helper(uint64_t word) { return (int)((word >> 2) & 0x3fff); }

static inline uint64_t fastnn_load_word(uint64_t *word) {
    return __atomic_load_n(word, __ATOMIC_ACQUIRE);
}
static inline void fastnn_store_word(uint64_t *word, uint64_t value) {
    __atomic_store_n(word, value, __ATOMIC_RELEASE);
}
/* Move *word from `expected` to `desired`; returns whether it did. Sequentially
 * consistent: a result written before a swap is seen by whoever sees the swap. */
static inline int fastnn_swap_word(uint64_t *word, uint64_t expected, uint64_t desired) {
    return __atomic_compare_exchange_n(word, &expected, desired, 0, __ATOMIC_SEQ_CST,
                                       __ATOMIC_SEQ_CST);
}

/* The pass's sequence lock: odd while the lead writes a pass's description. */
static inline void fastnn_pass_begin(unsigned *seq) {
    __atomic_fetch_add(seq, 1, __ATOMIC_SEQ_CST);
}
/* Ends the writing and wakes the helpers that sleep on the sequence. */
static inline void fastnn_pass_post(unsigned *seq, int *sleepers) {
    __atomic_fetch_add(seq, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(sleepers, __ATOMIC_SEQ_CST) > 0)
        fastnn_wake_all((_Atomic unsigned *)seq);
}
/* Whether a helped stretch keeps the lead on its CPU and the helpers off it
 * (_engine.set_helping turns it off for the benchmark's "unpinned helpers"). */
static int fastnn_help_pin = 1;
#ifdef __linux__
static __thread cpu_set_t fastnn_saved_mask;
static __thread int fastnn_mask_saved;
/* Keep the calling thread on one CPU (its mask kept for fastnn_unpin): the one it runs
 * on, unless that is `avoid`, then the first other it may run on. Returns it, or -1. */
static int fastnn_pin_lead(int avoid) {
    cpu_set_t one;
    int cpu, c;
    if (!fastnn_help_pin) return -1;
    cpu = sched_getcpu();
    if (cpu < 0 || sched_getaffinity(0, sizeof(cpu_set_t), &fastnn_saved_mask) != 0)
        return -1;
    if (cpu == avoid)
        for (c = 0; c < CPU_SETSIZE; c++)
            if (c != avoid && CPU_ISSET(c, &fastnn_saved_mask)) {
                cpu = c;
                break;
            }
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    if (sched_setaffinity(0, sizeof(cpu_set_t), &one) != 0)
        return -1;
    fastnn_mask_saved = 1;
    return cpu;
}
/* Keep the calling thread off `cpu` (its mask kept for fastnn_unpin). */
static void fastnn_pin_away(int cpu) {
    cpu_set_t rest;
    if (cpu < 0 || sched_getaffinity(0, sizeof(cpu_set_t), &fastnn_saved_mask) != 0)
        return;
    rest = fastnn_saved_mask;
    CPU_CLR(cpu, &rest);
    if (CPU_COUNT(&rest) > 0 && sched_setaffinity(0, sizeof(cpu_set_t), &rest) == 0)
        fastnn_mask_saved = 1;
}
/* The CPUs the calling thread may run on (1 where that cannot be read). */
static int fastnn_allowed_cpus(void) {
    cpu_set_t mask;
    if (sched_getaffinity(0, sizeof(cpu_set_t), &mask) != 0)
        return 1;
    return CPU_COUNT(&mask);
}
static void fastnn_unpin(void) {
    if (fastnn_mask_saved)
        sched_setaffinity(0, sizeof(cpu_set_t), &fastnn_saved_mask);
    fastnn_mask_saved = 0;
}
#else
static int fastnn_pin_lead(int avoid) { (void)avoid; return -1; }
static void fastnn_pin_away(int cpu) { (void)cpu; }
static void fastnn_unpin(void) {}
static int fastnn_allowed_cpus(void) { return 2; }
#endif
/* A helper waits for a posted pass after `seen` (spin, then sleep); returns its number. */
static inline unsigned fastnn_pass_wait(unsigned *seq, unsigned seen, int *sleepers) {
    unsigned now;
    int round;
    for (;;) {
        for (round = 0; round < FASTNN_SPINS; round++) {
            now = __atomic_load_n(seq, __ATOMIC_ACQUIRE);
            if (now != seen && (now & 1) == 0)
                return now;
            fastnn_pause();
        }
        __atomic_fetch_add(sleepers, 1, __ATOMIC_SEQ_CST);
        now = __atomic_load_n(seq, __ATOMIC_SEQ_CST);
        if (now == seen || (now & 1) != 0)
            fastnn_sleep_while((_Atomic unsigned *)seq, now);
        __atomic_fetch_sub(sleepers, 1, __ATOMIC_RELAXED);
    }
}
/* The sequence as a helper starts: it waits for the next pass after this one. */
static inline unsigned fastnn_pass_now(unsigned *seq) { return __atomic_load_n(seq, __ATOMIC_ACQUIRE); }
/* The lead opens a pass's tiles to the helpers' claims (fastnn_claim) from the first. */
static inline void fastnn_reset_claims(long *counter) { __atomic_store_n(counter, 0, __ATOMIC_RELAXED); }
/* Whether the sequence still reads `seen` (the description copied after it is whole). */
static inline int fastnn_pass_still(unsigned *seq, unsigned seen) {
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return __atomic_load_n(seq, __ATOMIC_RELAXED) == seen;
}
#endif
