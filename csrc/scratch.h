/* Per-thread scratch memory for predicts on the calling thread (Engine.predict_small).
 *
 * Each Python thread that predicts gets one 64-byte-aligned block, grown when a call
 * needs more and freed when the thread exits (a pthread key's destructor): after a
 * thread's first call, a small predict allocates nothing but its output array. The
 * block is the thread's own, so predicts from several threads never share buffers. */
#ifndef FASTNN_SCRATCH_H
#define FASTNN_SCRATCH_H
#include <pthread.h>
#include <stdlib.h>

/* The wheel's manylinux_2_17 tag: bind to versions every x86-64 glibc has (team.h). */
#if defined(__x86_64__) && defined(__GLIBC__)
__asm__(".symver pthread_once,pthread_once@GLIBC_2.2.5");
__asm__(".symver pthread_key_create,pthread_key_create@GLIBC_2.2.5");
__asm__(".symver pthread_getspecific,pthread_getspecific@GLIBC_2.2.5");
__asm__(".symver pthread_setspecific,pthread_setspecific@GLIBC_2.2.5");
#endif

typedef struct {
    void *data;
    size_t bytes;
} fastnn_scratch_t;

static pthread_key_t fastnn_scratch_key;
static pthread_once_t fastnn_scratch_once = PTHREAD_ONCE_INIT;

static void fastnn_scratch_free(void *p) {
    fastnn_scratch_t *s = (fastnn_scratch_t *)p;
    free(s->data);
    free(s);
}

static void fastnn_scratch_init(void) {
    pthread_key_create(&fastnn_scratch_key, fastnn_scratch_free);
}

/* The calling thread's block of at least `bytes` bytes (its contents are not kept when it
 * grows), or NULL when memory runs out. */
static void *fastnn_thread_scratch(size_t bytes) {
    fastnn_scratch_t *s;
    void *data;
    pthread_once(&fastnn_scratch_once, fastnn_scratch_init);
    s = (fastnn_scratch_t *)pthread_getspecific(fastnn_scratch_key);
    if (s == NULL) {
        s = (fastnn_scratch_t *)calloc(1, sizeof(fastnn_scratch_t));
        if (s == NULL || pthread_setspecific(fastnn_scratch_key, s) != 0) {
            free(s);
            return NULL;
        }
    }
    if (s->bytes < bytes) {
        bytes = (bytes + 63) / 64 * 64;
        if (posix_memalign(&data, 64, bytes) != 0)
            return NULL;
        free(s->data);
        s->data = data;
        s->bytes = bytes;
    }
    return s->data;
}
#endif
