/* fastnn processes that share CPUs divide them (docs/design.md, "Busy machines").
 *
 * Why: from inside one process another fastnn looks like any busy process. Two fastnn
 * processes training at once on 2 cores each dropped to one thread, then each tried a
 * lead with helpers (csrc/helping.h) and took CPU time from the other
 * (bench/bench_neighbours.py's "no registry" way; docs/design.md has its figures).
 *
 * How: a small file shared by one user's processes (in /dev/shm; FASTNN_NEIGHBOURS names
 * another, or "off") holds one entry per process that is training with an adapting thread
 * count: a random key, the pid, a heartbeat (CLOCK_MONOTONIC, the same clock for every
 * process of the machine) and the CPUs it may run on. At every stretch of training steps
 * a process beats its entry and counts the entries that beat within FASTNN_NEIGHBOUR_S
 * and share a CPU with it; its share is its CPUs divided among them and itself, at least
 * one. The engine caps its team at the share and uses helpers only where the share is
 * more than one thread. A process that stops training (its fit ended, or it died) is
 * forgotten half a second after its last beat. Everything is advisory: a file that cannot be
 * opened, is not the user's own, or is not a registry leaves each process on its own. */
#ifndef FASTNN_NEIGHBOURS_H
#define FASTNN_NEIGHBOURS_H
#include <stdint.h>
#include <string.h>
#if defined(__linux__)
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "team.h" /* fastnn_now_ns: CLOCK_MONOTONIC */

#define FASTNN_NEIGHBOURS 64        /* entries: processes training at once, at most */
#define FASTNN_MASK_WORDS 16        /* 1024 CPUs */
#define FASTNN_NEIGHBOUR_S 0.5      /* an entry that has not beaten for this long is gone */
#define FASTNN_REGISTRY_MAGIC 0x666e6e6e65696731LL /* "fnnneig1" */

typedef struct {
    long long key;                  /* 0: free */
    long long pid;
    long long beat_ns;              /* 0: not training */
    unsigned long long mask[FASTNN_MASK_WORDS];
    char pad[40];                   /* one entry per 192 bytes: whole cache lines */
} fastnn_neighbour;

typedef struct {
    long long magic;                /* the layout's version; a file without it is refused */
    char pad[56];
    fastnn_neighbour at[FASTNN_NEIGHBOURS];
} fastnn_registry;

static fastnn_registry *fastnn_reg = NULL;
static int fastnn_reg_tried = 0;
static long long fastnn_reg_key = 0, fastnn_reg_pid = 0;
static int fastnn_reg_slot = -1;
static char fastnn_reg_path[512];   /* the mapped registry's path ("" when none) */
/* All of the above is this process's, behind one lock: two models may train at once from
 * two Python threads (a stretch takes it for a few microseconds every ~20 ms). */
static pthread_mutex_t fastnn_reg_lock = PTHREAD_MUTEX_INITIALIZER;
static int fastnn_reg_atfork = 0;

/* A child forked while another thread held the lock starts with it free. */
static void fastnn_neighbours_after_fork(void) { pthread_mutex_init(&fastnn_reg_lock, NULL); }

/* fstat without glibc 2.33's fstat symbol, which the manylinux_2_17 tag forbids: the
 * system call itself, whose struct stat is glibc's on 64-bit x86 and ARM. */
static int fastnn_fstat(int fd, struct stat *st) {
#if defined(SYS_fstat) && (defined(__x86_64__) || defined(__aarch64__))
    return (int)syscall(SYS_fstat, fd, st);
#else
    return fstat(fd, st);
#endif
}

/* fastnn_neighbours_open with the lock held */
static int fastnn_neighbours_open_locked(const char *path) {
    char fallback[96];
    struct stat st;
    fastnn_registry *reg;
    int fd;
    if (!fastnn_reg_atfork) {
        pthread_atfork(NULL, NULL, fastnn_neighbours_after_fork);
        fastnn_reg_atfork = 1;
    }
    if (fastnn_reg != NULL) {
        munmap(fastnn_reg, sizeof(fastnn_registry));
        fastnn_reg = NULL;
    }
    fastnn_reg_tried = 1;
    fastnn_reg_slot = -1;
    fastnn_reg_path[0] = 0;
    if (path == NULL)
        path = getenv("FASTNN_NEIGHBOURS");
    if (path != NULL && (path[0] == 0 || strcmp(path, "off") == 0))
        return -1;
    if (path == NULL) {
        snprintf(fallback, sizeof(fallback), "/dev/shm/fastnn-%ld.neighbours", (long)geteuid());
        path = fallback;
    }
    fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    /* only a regular file of this user, no larger than a registry (a fresh one is 0) */
    if (fastnn_fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()
            || (st.st_mode & 077) != 0
            || (st.st_size != 0 && st.st_size != (off_t)sizeof(fastnn_registry))
            || (st.st_size == 0 && ftruncate(fd, sizeof(fastnn_registry)) != 0)) {
        close(fd);
        return -1;
    }
    reg = mmap(NULL, sizeof(fastnn_registry), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (reg == MAP_FAILED)
        return -1;
    {   /* a fresh file is zeros: the first process to map it stamps it */
        long long zero = 0;
        __atomic_compare_exchange_n(&reg->magic, &zero, FASTNN_REGISTRY_MAGIC, 0,
                                    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    }
    if (__atomic_load_n(&reg->magic, __ATOMIC_ACQUIRE) != FASTNN_REGISTRY_MAGIC) {
        munmap(reg, sizeof(fastnn_registry));
        return -1;
    }
    fastnn_reg = reg;
    snprintf(fastnn_reg_path, sizeof(fastnn_reg_path), "%s", path);
    return 0;
}

/* Map the registry at `path` (NULL: FASTNN_NEIGHBOURS, else /dev/shm/fastnn-<uid>
 * .neighbours), dropping any mapped before (tests: while nothing trains); 0 when mapped,
 * -1 when each process stays on its own. */
static int fastnn_neighbours_open(const char *path) {
    int rc;
    pthread_mutex_lock(&fastnn_reg_lock);
    rc = fastnn_neighbours_open_locked(path);
    pthread_mutex_unlock(&fastnn_reg_lock);
    return rc;
}

/* The registry's path, mapping it first if no call has tried; "" when there is none. */
static const char *fastnn_neighbours_path(void) {
    pthread_mutex_lock(&fastnn_reg_lock);
    if (!fastnn_reg_tried)
        fastnn_neighbours_open_locked(NULL);
    pthread_mutex_unlock(&fastnn_reg_lock);
    return fastnn_reg_path;
}

/* This process's entry, claimed on first use (again after a fork): a free entry or one
 * that stopped beating long ago; -1 if all are taken. */
static int fastnn_neighbours_slot(long long now) {
    long long pid = (long long)getpid(), old;
    int i, pass;
    if (fastnn_reg_slot >= 0 && fastnn_reg_pid == pid
            && __atomic_load_n(&fastnn_reg->at[fastnn_reg_slot].key, __ATOMIC_ACQUIRE)
               == fastnn_reg_key)
        return fastnn_reg_slot;
    if (fastnn_reg_pid != pid) {    /* first use, or a forked child: a key of its own */
        fastnn_reg_key = (long long)(((unsigned long long)now * 0x9E3779B97F4A7C15ULL)
                                     ^ ((unsigned long long)pid << 32)
                                     ^ (unsigned long long)(uintptr_t)&old) | 1;
        fastnn_reg_pid = pid;
    }
    /* a free entry first, then one whose process stopped beating long ago */
    for (pass = 0; pass < 2; pass++)
        for (i = 0; i < FASTNN_NEIGHBOURS; i++) {
            fastnn_neighbour *e = &fastnn_reg->at[i];
            old = __atomic_load_n(&e->key, __ATOMIC_ACQUIRE);
            if (pass == 0 ? old != 0
                    : now - __atomic_load_n(&e->beat_ns, __ATOMIC_ACQUIRE)
                      < (long long)(10 * FASTNN_NEIGHBOUR_S * 1e9))
                continue;
            if (__atomic_compare_exchange_n(&e->key, &old, fastnn_reg_key, 0,
                                            __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
                __atomic_store_n(&e->pid, pid, __ATOMIC_RELAXED);
                fastnn_reg_slot = i;
                return i;
            }
        }
    fastnn_reg_slot = -1;
    return -1;
}

/* Beat this process's entry and return its share of its CPUs (most at most, at least 1):
 * its allowed CPUs divided among itself and the fastnn processes training on any of them.
 * Returns `most` where there is no registry or no such process. Call it unpinned
 * (csrc/helping.h pins the lead during helped stretches). */
static int fastnn_neighbours_share(int most) {
    cpu_set_t mask;
    unsigned long long mine[FASTNN_MASK_WORDS];
    long long now, beat, stale;
    int i, w, cpus, others = 0, share;
    if (sched_getaffinity(0, sizeof(mask), &mask) != 0)
        return most;
    pthread_mutex_lock(&fastnn_reg_lock);
    if (!fastnn_reg_tried)
        fastnn_neighbours_open_locked(NULL);
    if (fastnn_reg == NULL) {
        pthread_mutex_unlock(&fastnn_reg_lock);
        return most;
    }
    memset(mine, 0, sizeof(mine));
    for (i = 0; i < FASTNN_MASK_WORDS * 64 && i < CPU_SETSIZE; i++)
        if (CPU_ISSET(i, &mask))
            mine[i / 64] |= 1ULL << (i % 64);
    cpus = CPU_COUNT(&mask);
    now = fastnn_now_ns();
    stale = now - (long long)(FASTNN_NEIGHBOUR_S * 1e9);
    i = fastnn_neighbours_slot(now);
    if (i >= 0) {
        fastnn_neighbour *e = &fastnn_reg->at[i];
        for (w = 0; w < FASTNN_MASK_WORDS; w++)
            __atomic_store_n(&e->mask[w], mine[w], __ATOMIC_RELAXED);
        __atomic_store_n(&e->beat_ns, now, __ATOMIC_RELEASE);
    }
    for (i = 0; i < FASTNN_NEIGHBOURS; i++) {
        fastnn_neighbour *e = &fastnn_reg->at[i];
        if (i == fastnn_reg_slot || __atomic_load_n(&e->key, __ATOMIC_ACQUIRE) == 0)
            continue;
        beat = __atomic_load_n(&e->beat_ns, __ATOMIC_ACQUIRE);
        if (beat <= stale || beat > now + 1000000000LL)
            continue;
        for (w = 0; w < FASTNN_MASK_WORDS; w++)
            if (__atomic_load_n(&e->mask[w], __ATOMIC_RELAXED) & mine[w])
                break;
        others += w < FASTNN_MASK_WORDS;
    }
    pthread_mutex_unlock(&fastnn_reg_lock);
    if (others == 0)                /* alone: as if there were no registry */
        return most;
    share = cpus / (1 + others);
    return share < 1 ? 1 : (share < most ? share : most);
}

#else
static int fastnn_neighbours_open(const char *path) { (void)path; return -1; }
static int fastnn_neighbours_share(int most) { return most; }
static const char *fastnn_neighbours_path(void) { return ""; }
#endif
#endif
