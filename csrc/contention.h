/* How long the calling thread has waited for a CPU: the sign that the machine is busy.
 *
 * Linux counts, per thread, the time it was runnable but not running ("run delay", the
 * second field of /proc/thread-self/schedstat). A team thread that sleeps at a barrier is
 * not runnable, so this counts only the time another process (or one thread too many)
 * held its core. On an idle 2-core VM a training epoch's threads waited under 1% of the
 * epoch; with one other process spinning they waited 28% each (docs/design.md). The
 * engine reads it around each stretch of training steps to size the team to the cores
 * it actually gets (Engine.train_epoch). */
#ifndef FASTNN_CONTENTION_H
#define FASTNN_CONTENTION_H
#ifdef __linux__
#include <fcntl.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

/* The calling thread's total run delay in nanoseconds, or -1 where it cannot be read
 * (not Linux, or a kernel without schedstat). A few microseconds: two syscalls. */
static long long fastnn_thread_wait_ns(void) {
#ifdef __linux__
    char buf[96], *end;
    long long waited;
    ssize_t got;
    int fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        /* kernels before 3.17 have no thread-self */
        char path[64];
        snprintf(path, sizeof(path), "/proc/self/task/%ld/schedstat", (long)syscall(SYS_gettid));
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return -1;
    }
    got = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (got <= 0)
        return -1;
    buf[got] = 0;
    /* "<time on a CPU> <time waiting for one> <slices>": skip the first number. Parsed
     * by hand: glibc 2.38 redirects strtoll to a symbol the manylinux tag forbids. */
    end = buf;
    while (*end >= '0' && *end <= '9')
        end++;
    if (end == buf || *end != ' ')
        return -1;
    end++;
    if (*end < '0' || *end > '9')
        return -1;
    for (waited = 0; *end >= '0' && *end <= '9'; end++)
        waited = waited * 10 + (*end - '0');
    return waited;
#else
    return -1;
#endif
}
#endif
