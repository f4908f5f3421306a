/* fastnn's thread team: one pool of worker threads for every pass of a training step.
 *
 * A job (a whole epoch, or a predict/evaluate/gradients call) runs on n threads at once:
 * the caller is thread 0 and workers 1..n-1 join it. Inside a job the threads meet at
 * fastnn_barrier(); between jobs the workers sleep on a condition variable, so an idle
 * fastnn uses no CPU. Waiting is spin -> yield -> short sleeps: spinning keeps a barrier
 * in the microseconds on an idle machine; sleeping (not yielding) frees the core, so on a
 * busy machine the scheduler can run the thread being waited for there, and wakes the
 * sleeper as soon as the barrier opens.
 *
 * While a job runs, BLAS is pinned to one thread (fastnn_blas_pin): each team thread
 * makes its own one-thread BLAS calls, so BLAS's own pool never wakes to compete with
 * the team. One job at a time: a caller that finds the team busy (another model training
 * in another Python thread) runs its job on its own thread, with n = 1.
 *
 * No OpenMP: the team is plain pthreads, so fastnn adds no OpenMP runtime to a process
 * that may hold scikit-learn's or torch's (see docs/design.md for the measurements). */
#ifndef FASTNN_TEAM_H
#define FASTNN_TEAM_H
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>
#ifdef __linux__
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

/* glibc 2.34 moved the pthread functions into libc under a new symbol version; a build
 * on a newer system would then need glibc >= 2.34 to load. Binding to the versions every
 * x86-64 glibc has (2.2.5; since 2.34 libc keeps them as aliases) lets the wheel carry a
 * manylinux_2_17 tag (tools/build_wheel.sh checks the tag with auditwheel). */
#if defined(__x86_64__) && defined(__GLIBC__)
__asm__(".symver pthread_create,pthread_create@GLIBC_2.2.5");
__asm__(".symver pthread_mutex_trylock,pthread_mutex_trylock@GLIBC_2.2.5");
#endif
#endif

#define FASTNN_MAX_THREADS 256
/* Waiting at a barrier: this many polls with a pause instruction, then sleep
 * until the barrier opens (a futex on Linux; 50 us naps elsewhere). */
#ifndef FASTNN_SPINS
#define FASTNN_SPINS 2000
#endif
/* A worker waits this long for the next job before it sleeps: back-to-back small
 * predicts (about 10 us apart) find it awake and split (Engine.predict_small). */
#define FASTNN_JOB_SPIN_NS 200000LL

typedef void (*fastnn_job_fn)(void *ctx, int tid, int n_threads);

typedef struct {
    pthread_mutex_t busy;      /* held by the caller running a job */
    pthread_mutex_t wake_lock; /* guards sleeping on `wake` */
    pthread_cond_t wake;
    int n_workers;             /* started workers: tids 1..n_workers */
    fastnn_job_fn job;
    void *ctx;
    int job_threads;
    _Atomic unsigned long job_gen; /* incremented for each job */
    _Atomic int done;              /* workers that finished with the current job */
    _Atomic int arrived;           /* threads at the current barrier */
    _Atomic unsigned barrier_gen;  /* incremented when a barrier opens */
    _Atomic int sleepers;          /* threads asleep on barrier_gen */
    _Atomic int asleep;            /* workers asleep on `wake`, waiting for a job */
    unsigned long spawn_gen;       /* job_gen when the newest workers were started */
    int atfork_set;
} fastnn_team_t;

static fastnn_team_t fastnn_team = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
                                    PTHREAD_COND_INITIALIZER};

static inline long long fastnn_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline void fastnn_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Sleep while *word == old (returns at once if it has changed). */
static inline void fastnn_sleep_while(_Atomic unsigned *word, unsigned old) {
#ifdef __linux__
    syscall(SYS_futex, (unsigned *)word, FUTEX_WAIT_PRIVATE, old, NULL, NULL, 0);
#else
    struct timespec ts = {0, 50000};
    if (atomic_load_explicit(word, memory_order_acquire) == old)
        nanosleep(&ts, NULL);
#endif
}

static inline void fastnn_wake_all(_Atomic unsigned *word) {
#ifdef __linux__
    syscall(SYS_futex, (unsigned *)word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
#else
    (void)word;
#endif
}

/* Wait until *word != old: spin a little, then sleep (counted in *sleepers, so the
 * thread that changes *word knows whether to wake anyone). */
static inline void fastnn_wait_change(_Atomic unsigned *word, unsigned old, _Atomic int *sleepers) {
    int round;
    for (round = 0; round < FASTNN_SPINS; round++) {
        if (atomic_load_explicit(word, memory_order_acquire) != old)
            return;
        fastnn_pause();
    }
    atomic_fetch_add_explicit(sleepers, 1, memory_order_seq_cst);
    while (atomic_load_explicit(word, memory_order_seq_cst) == old)
        fastnn_sleep_while(word, old);
    atomic_fetch_sub_explicit(sleepers, 1, memory_order_relaxed);
}

/* All n threads of the running job meet here; returns when every one has arrived. */
static inline void fastnn_barrier(int n) {
    fastnn_team_t *t = &fastnn_team;
    unsigned gen;
    if (n <= 1)
        return;
    gen = atomic_load_explicit(&t->barrier_gen, memory_order_acquire);
    if (atomic_fetch_add_explicit(&t->arrived, 1, memory_order_acq_rel) == n - 1) {
        atomic_store_explicit(&t->arrived, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&t->barrier_gen, 1, memory_order_seq_cst);
        if (atomic_load_explicit(&t->sleepers, memory_order_seq_cst) > 0)
            fastnn_wake_all(&t->barrier_gen);
        return;
    }
    fastnn_wait_change(&t->barrier_gen, gen, &t->sleepers);
}

static void *fastnn_worker(void *arg) {
    fastnn_team_t *t = &fastnn_team;
    int tid = (int)(intptr_t)arg, round, n;
    long long spin_from;
    /* Started just before a job is posted: that job is the first one to run. */
    unsigned long seen = t->spawn_gen, g;
    fastnn_job_fn job;
    void *ctx;
    for (;;) {
        round = 0;
        spin_from = fastnn_now_ns();
        while ((g = atomic_load_explicit(&t->job_gen, memory_order_acquire)) == seen) {
            /* Spin for FASTNN_JOB_SPIN_NS after a job (a count of pauses would be a
             * different time on each CPU), then sleep. */
            if (++round % 64 != 0 || fastnn_now_ns() - spin_from < FASTNN_JOB_SPIN_NS) {
                fastnn_pause();
                continue;
            }
            /* One wait: woken by a job, or roused (fastnn_team_rouse) to spin again. */
            pthread_mutex_lock(&t->wake_lock);
            atomic_fetch_add_explicit(&t->asleep, 1, memory_order_relaxed);
            if (atomic_load_explicit(&t->job_gen, memory_order_acquire) == seen)
                pthread_cond_wait(&t->wake, &t->wake_lock);
            atomic_fetch_sub_explicit(&t->asleep, 1, memory_order_relaxed);
            pthread_mutex_unlock(&t->wake_lock);
            round = 0;
            spin_from = fastnn_now_ns();
        }
        /* Every worker acknowledges every job (those outside its n at once), so the
         * caller never posts the next job while one is still reading this one. */
        seen = g;
        n = t->job_threads;
        job = t->job;
        ctx = t->ctx;
        if (tid < n)
            job(ctx, tid, n);
        atomic_fetch_add_explicit(&t->done, 1, memory_order_release);
    }
    return NULL;
}

static void fastnn_team_after_fork(void) {
    /* The child has none of the parent's workers: start afresh. */
    fastnn_team_t *t = &fastnn_team;
    pthread_mutex_init(&t->busy, NULL);
    pthread_mutex_init(&t->wake_lock, NULL);
    pthread_cond_init(&t->wake, NULL);
    t->n_workers = 0;
    atomic_store(&t->arrived, 0);
    atomic_store(&t->done, 0);
    atomic_store(&t->asleep, 0);
}

/* Start workers until there are n - 1 of them (or as many as the system gives). */
static int fastnn_team_grow(int n) {
    fastnn_team_t *t = &fastnn_team;
    pthread_attr_t attr;
    pthread_t thread;
    if (!t->atfork_set) {
        pthread_atfork(NULL, NULL, fastnn_team_after_fork);
        t->atfork_set = 1;
    }
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    t->spawn_gen = atomic_load(&t->job_gen);
    while (t->n_workers < n - 1 && t->n_workers < FASTNN_MAX_THREADS - 1) {
        if (pthread_create(&thread, &attr, fastnn_worker, (void *)(intptr_t)(t->n_workers + 1)))
            break;
        t->n_workers++;
    }
    pthread_attr_destroy(&attr);
    return t->n_workers + 1;
}

/* Whether a job of n threads posted now would start at once: n - 1 workers exist and
 * none sleeps (they spin for a while after each job). A job of microseconds (a one-row
 * predict) is worth splitting only then; waking a sleeping worker costs more. */
static int fastnn_team_awake(int n) {
    fastnn_team_t *t = &fastnn_team;
    return n > 1 && t->n_workers >= n - 1 && atomic_load_explicit(&t->asleep, memory_order_relaxed) == 0;
}

/* Wake the sleeping workers without a job: they spin again (FASTNN_JOB_SPIN_NS), so a job
 * posted in the next few tens of microseconds finds them awake. Started when needed. */
static void fastnn_team_rouse(int n) {
    fastnn_team_t *t = &fastnn_team;
    if (pthread_mutex_trylock(&t->busy) != 0)
        return;  /* a job runs: its workers are awake */
    fastnn_team_grow(n);
    pthread_mutex_unlock(&t->busy);
    pthread_mutex_lock(&t->wake_lock);
    pthread_cond_broadcast(&t->wake);
    pthread_mutex_unlock(&t->wake_lock);
}

/* Run job(ctx, tid, n) on n threads (the caller is tid 0) and return n, the count used:
 * 1 when n <= 1 or when the team is busy with another caller's job. */
static int fastnn_team_run(int n, fastnn_job_fn job, void *ctx) {
    fastnn_team_t *t = &fastnn_team;
    int round = 0;
    if (n <= 1 || pthread_mutex_trylock(&t->busy) != 0) {
        job(ctx, 0, 1);
        return 1;
    }
    if (n > FASTNN_MAX_THREADS)
        n = FASTNN_MAX_THREADS;
    if (fastnn_team_grow(n) < n)
        n = t->n_workers + 1;
    if (n <= 1) {
        pthread_mutex_unlock(&t->busy);
        job(ctx, 0, 1);
        return 1;
    }
    t->job = job;
    t->ctx = ctx;
    t->job_threads = n;
    atomic_store_explicit(&t->done, 0, memory_order_relaxed);
    pthread_mutex_lock(&t->wake_lock);
    atomic_fetch_add_explicit(&t->job_gen, 1, memory_order_release);
    pthread_cond_broadcast(&t->wake);
    pthread_mutex_unlock(&t->wake_lock);
    job(ctx, 0, n);
    while (atomic_load_explicit(&t->done, memory_order_acquire) < t->n_workers) {
        if (round++ < FASTNN_SPINS) {
            fastnn_pause();
        } else {
            struct timespec ts = {0, 20000};
            nanosleep(&ts, NULL);
        }
    }
    pthread_mutex_unlock(&t->busy);
    return n;
}

/* Work shared by claiming: each call returns the next index of *counter (from 0). */
static inline long fastnn_claim(long *counter) {
    return __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
}

/* A flag several threads read while one may set it (no ordering needed beyond it). */
static inline int fastnn_flag_get(int *flag) { return __atomic_load_n(flag, __ATOMIC_RELAXED); }
static inline void fastnn_flag_set(int *flag) { __atomic_store_n(flag, 1, __ATOMIC_RELAXED); }

/* ---- BLAS pinned to one thread while fastnn's calls run ----
 * scipy's OpenBLAS is found once from Python (fastnn/_threads.py) and its
 * openblas_set/get_num_threads registered here. Calls nest and may overlap across
 * Python threads: the first pins (remembering the count), the last restores it. */
typedef void (*fastnn_blas_set_fn)(int);
typedef int (*fastnn_blas_get_fn)(void);
static fastnn_blas_set_fn fastnn_blas_set = NULL;
static fastnn_blas_get_fn fastnn_blas_get = NULL;
static pthread_mutex_t fastnn_blas_lock = PTHREAD_MUTEX_INITIALIZER;
static int fastnn_blas_pins = 0, fastnn_blas_saved = 1;

static void fastnn_blas_register(void *set, void *get) {
    fastnn_blas_set = (fastnn_blas_set_fn)set;
    fastnn_blas_get = (fastnn_blas_get_fn)get;
}

static int fastnn_blas_controlled(void) { return fastnn_blas_set != NULL && fastnn_blas_get != NULL; }

static void fastnn_blas_pin(void) {
    if (!fastnn_blas_controlled())
        return;
    pthread_mutex_lock(&fastnn_blas_lock);
    if (fastnn_blas_pins++ == 0) {
        fastnn_blas_saved = fastnn_blas_get();
        if (fastnn_blas_saved != 1)
            fastnn_blas_set(1);
    }
    pthread_mutex_unlock(&fastnn_blas_lock);
}

static void fastnn_blas_unpin(void) {
    if (!fastnn_blas_controlled())
        return;
    pthread_mutex_lock(&fastnn_blas_lock);
    if (--fastnn_blas_pins == 0 && fastnn_blas_saved != 1)
        fastnn_blas_set(fastnn_blas_saved);
    pthread_mutex_unlock(&fastnn_blas_lock);
}
#endif
