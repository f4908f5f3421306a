/* fastnn processes that share CPUs divide them (docs/design.md, "Busy machines").
 *
 * Why: from inside one process another fastnn looks like any busy process. Two fastnn
 * processes training at once on 2 cores each dropped to one thread, then each tried a
 * lead with helpers (csrc/helping.h) and took CPU time from the other
 * (bench/bench_neighbours.py's "no registry" way; docs/design.md has its figures).
 *
 * How, writing no file: while a process trains with an adapting thread count it holds a
 * Unix socket bound to an abstract name (Linux's abstract namespace: no file, gone when
 * the socket closes or the process dies), "fastnn-neighbours/<group>/<uid>/<pid>/<the
 * CPUs it may run on, hex>". At every stretch of training steps it counts, in
 * /proc/net/unix, the other names of its group and user whose CPUs meet its own; its share
 * is its CPUs divided among them and itself, at least one. The engine caps its team at
 * the share and uses helpers only where the share is more than one thread. The group is
 * "default", or FASTNN_NEIGHBOURS (tests give each session its own); "off" turns it off.
 * Everything is advisory: where the names cannot be made or read, each process stays on
 * its own. */
#ifndef FASTNN_NEIGHBOURS_H
#define FASTNN_NEIGHBOURS_H
#include <stdint.h>
#include <string.h>
#if defined(__linux__)
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "team.h" /* fastnn_now_ns: CLOCK_MONOTONIC */

#define FASTNN_GROUP_CHARS 40       /* a group name's length, at most */
#define FASTNN_MASK_CHARS 32        /* the CPUs in a name: 128 CPUs in hex, low first */
#define FASTNN_RECOUNT_NS 100000000LL /* count again after 0.1 s: a machine with thousands
                                       * of sockets lists them in a millisecond or two */

static char fastnn_group[FASTNN_GROUP_CHARS + 1];
static int fastnn_group_tried = 0, fastnn_group_on = 0;
static int fastnn_socket = -1;      /* bound while a training call runs */
static long fastnn_socket_pid = 0;  /* the process that bound it (a forked child did not) */
static int fastnn_counted = -1;     /* the last count of neighbours, and when, for whom */
static long long fastnn_counted_at = 0;
static char fastnn_counted_for[FASTNN_MASK_CHARS + 1];
/* All of the above is this process's, behind one lock: two models may train at once from
 * two Python threads (a stretch takes it every ~20 ms). */
static pthread_mutex_t fastnn_group_lock = PTHREAD_MUTEX_INITIALIZER;
static int fastnn_group_atfork = 0;

/* A child forked while another thread held the lock starts with it free. */
static void fastnn_neighbours_after_fork(void) { pthread_mutex_init(&fastnn_group_lock, NULL); }

/* The allowed CPUs as FASTNN_MASK_CHARS hex digits, CPU 0 in the first digit's low bit. */
static void fastnn_cpu_hex(const cpu_set_t *mask, char *out) {
    for (int d = 0; d < FASTNN_MASK_CHARS; d++) {
        int v = 0;
        for (int b = 0; b < 4; b++)
            if (d * 4 + b < CPU_SETSIZE && CPU_ISSET(d * 4 + b, mask))
                v |= 1 << b;
        out[d] = "0123456789abcdef"[v];
    }
    out[FASTNN_MASK_CHARS] = 0;
}

/* fastnn_neighbours_open with the lock held */
static int fastnn_neighbours_open_locked(const char *group) {
    if (!fastnn_group_atfork) {
        pthread_atfork(NULL, NULL, fastnn_neighbours_after_fork);
        fastnn_group_atfork = 1;
    }
    if (fastnn_socket >= 0 && fastnn_socket_pid == (long)getpid())
        close(fastnn_socket);
    fastnn_socket = -1;
    fastnn_group_tried = 1;
    fastnn_group_on = 0;
    fastnn_counted = -1;
    if (group == NULL)
        group = getenv("FASTNN_NEIGHBOURS");
    if (group == NULL)
        group = "default";
    if (group[0] == 0 || strcmp(group, "off") == 0 || strlen(group) > FASTNN_GROUP_CHARS)
        return -1;
    for (const char *c = group; *c; c++)  /* one path component of printable characters */
        if (*c <= ' ' || *c > '~' || *c == '/')
            return -1;
    snprintf(fastnn_group, sizeof(fastnn_group), "%s", group);
    fastnn_group_on = 1;
    return 0;
}

/* Use the group named `group` (NULL: FASTNN_NEIGHBOURS, else "default"; "off": none),
 * leaving any joined before; 0 when on, -1 when each process stays on its own. */
static int fastnn_neighbours_open(const char *group) {
    int rc;
    pthread_mutex_lock(&fastnn_group_lock);
    rc = fastnn_neighbours_open_locked(group);
    pthread_mutex_unlock(&fastnn_group_lock);
    return rc;
}

/* The group's name, choosing it first if no call has; "" when there is none. */
static const char *fastnn_neighbours_path(void) {
    pthread_mutex_lock(&fastnn_group_lock);
    if (!fastnn_group_tried)
        fastnn_neighbours_open_locked(NULL);
    pthread_mutex_unlock(&fastnn_group_lock);
    return fastnn_group_on ? fastnn_group : "";
}

/* Leave the group until the next stretch (the end of a training call). */
static void fastnn_neighbours_leave(void) {
    pthread_mutex_lock(&fastnn_group_lock);
    if (fastnn_socket >= 0 && fastnn_socket_pid == (long)getpid())
        close(fastnn_socket);
    fastnn_socket = -1;
    pthread_mutex_unlock(&fastnn_group_lock);
}

/* Hold this process's name, "fastnn-neighbours/<group>/<uid>/<pid>/<cpus>"; `prefix`
 * gets the part every member of the group and user shares. With the lock held. */
static void fastnn_neighbours_join(const char *cpus, char *prefix, size_t size) {
    struct sockaddr_un addr;
    long pid = (long)getpid();
    int n = snprintf(prefix, size, "fastnn-neighbours/%s/%ld/", fastnn_group,
                     (long)geteuid());
    if (fastnn_socket >= 0 && fastnn_socket_pid == pid)
        return;
    fastnn_socket = -1;             /* (a forked child's inherited socket is its parent's) */
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    n = snprintf(addr.sun_path + 1, sizeof(addr.sun_path) - 1, "%s%ld/%s", prefix, pid, cpus);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    if (bind(fd, (struct sockaddr *)&addr,
             (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n)) != 0) {
        close(fd);
        return;
    }
    fastnn_socket = fd;
    fastnn_socket_pid = pid;
}

/* Whether two CPU masks in hex (fastnn_cpu_hex) share a CPU. */
static int fastnn_masks_meet(const char *a, const char *b) {
    for (int d = 0; d < FASTNN_MASK_CHARS; d++) {
        int x = a[d] <= '9' ? a[d] - '0' : a[d] - 'a' + 10;
        int y = b[d] <= '9' ? b[d] - '0' : b[d] - 'a' + 10;
        if (b[d] == 0 || x < 0 || y < 0 || x > 15 || y > 15)
            return 0;
        if (x & y)
            return 1;
    }
    return 0;
}

/* The other members of the group (prefix: its and this user's part of a name) whose CPUs
 * meet `cpus`, from /proc/net/unix, where each line ends with a socket's path (an abstract
 * name with '@' first); -1 if it cannot be read. */
static int fastnn_count_neighbours(const char *prefix, const char *cpus) {
    char mine[200], line[512];
    size_t plen = strlen(prefix);
    int others = 0;
    FILE *f = fopen("/proc/net/unix", "re");
    if (f == NULL)
        return -1;
    snprintf(mine, sizeof(mine), "@%s%ld/", prefix, (long)getpid());
    while (fgets(line, sizeof(line), f) != NULL) {
        char *at = strstr(line, " @fastnn-neighbours/");
        if (at == NULL || strncmp(at + 2, prefix, plen) != 0
                || strncmp(at + 1, mine, strlen(mine)) == 0)
            continue;
        char *slash = strchr(at + 2 + plen, '/');   /* after the pid: its CPUs */
        if (slash != NULL && fastnn_masks_meet(cpus, slash + 1))
            others++;
    }
    fclose(f);
    return others;
}

/* Join the group (if not joined) and return this process's share of its CPUs (most at
 * most, at least 1): its allowed CPUs divided among itself and the group's other
 * processes of this user training on any of them (counted at most every 0.1 s). `most`
 * where there is no group or no such process. Call it unpinned (csrc/helping.h pins the
 * lead during helped stretches). */
static int fastnn_neighbours_share(int most) {
    cpu_set_t mask;
    char cpus[FASTNN_MASK_CHARS + 1], prefix[160];
    int others, share;
    long long now = fastnn_now_ns();
    if (sched_getaffinity(0, sizeof(mask), &mask) != 0)
        return most;
    fastnn_cpu_hex(&mask, cpus);
    pthread_mutex_lock(&fastnn_group_lock);
    if (!fastnn_group_tried)
        fastnn_neighbours_open_locked(NULL);
    if (!fastnn_group_on) {
        pthread_mutex_unlock(&fastnn_group_lock);
        return most;
    }
    fastnn_neighbours_join(cpus, prefix, sizeof(prefix));
    if (fastnn_counted < 0 || now - fastnn_counted_at > FASTNN_RECOUNT_NS
            || strcmp(cpus, fastnn_counted_for) != 0) {
        fastnn_counted = fastnn_count_neighbours(prefix, cpus);
        fastnn_counted_at = now;
        snprintf(fastnn_counted_for, sizeof(fastnn_counted_for), "%s", cpus);
    }
    others = fastnn_counted;
    pthread_mutex_unlock(&fastnn_group_lock);
    if (others <= 0)                /* alone: as if there were no group */
        return most;
    share = CPU_COUNT(&mask) / (1 + others);
    return share < 1 ? 1 : (share < most ? share : most);
}

#else
static int fastnn_neighbours_open(const char *group) { (void)group; return -1; }
static int fastnn_neighbours_share(int most) { return most; }
static const char *fastnn_neighbours_path(void) { return ""; }
static void fastnn_neighbours_leave(void) {}
#endif
#endif
