/* FASTNN_CLONED(NAME, (params), (args), { body }): a loop function built for AVX-512, AVX2
 * and baseline x86-64 (NAME_avx512, NAME_avx2, NAME_base), and NAME, which calls the
 * widest one the CPU has. FASTNN_ISA=avx2 or FASTNN_ISA=baseline in the environment caps
 * the choice (read once per process), so one machine runs every clone: the tests compare
 * them bit for bit. The build sets -ffp-contract=off, so the clones round identically.
 * Elsewhere than GCC on x86-64 Linux, NAME is the plain function. */
#ifndef FASTNN_CLONES_H
#define FASTNN_CLONES_H
#include <stdlib.h>
#include <string.h>

enum { FASTNN_ISA_BASELINE = 0, FASTNN_ISA_AVX2 = 1, FASTNN_ISA_AVX512 = 2 };

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
static int fastnn_isa_level = -1;

static int fastnn_isa_choose(void) {
    __builtin_cpu_init();
    int level = __builtin_cpu_supports("avx512f") ? FASTNN_ISA_AVX512
              : __builtin_cpu_supports("avx2") ? FASTNN_ISA_AVX2 : FASTNN_ISA_BASELINE;
    const char *cap = getenv("FASTNN_ISA");
    if (cap != NULL && strcmp(cap, "baseline") == 0)
        level = FASTNN_ISA_BASELINE;
    else if (cap != NULL && strcmp(cap, "avx2") == 0 && level > FASTNN_ISA_AVX2)
        level = FASTNN_ISA_AVX2;
    __atomic_store_n(&fastnn_isa_level, level, __ATOMIC_RELAXED);
    return level;
}

/* The instruction set the cloned loops run with (any thread may be the first to ask:
 * each computes the same level). */
static inline int fastnn_isa(void) {
    int level = __atomic_load_n(&fastnn_isa_level, __ATOMIC_RELAXED);
    return level >= 0 ? level : fastnn_isa_choose();
}

#define FASTNN_CLONED(NAME, PARAMS, ARGS, ...)                                          \
    __attribute__((target("avx512f"))) static void NAME##_avx512 PARAMS __VA_ARGS__     \
    __attribute__((target("avx2"))) static void NAME##_avx2 PARAMS __VA_ARGS__         \
    static void NAME##_base PARAMS __VA_ARGS__                                        \
    static void NAME PARAMS {                                                         \
        int level = fastnn_isa();                                                     \
        if (level == FASTNN_ISA_AVX512)                                               \
            NAME##_avx512 ARGS;                                                       \
        else if (level == FASTNN_ISA_AVX2)                                            \
            NAME##_avx2 ARGS;                                                         \
        else                                                                          \
            NAME##_base ARGS;                                                         \
    }
#else
static inline int fastnn_isa(void) { return FASTNN_ISA_BASELINE; }
#define FASTNN_CLONED(NAME, PARAMS, ARGS, ...) static void NAME PARAMS __VA_ARGS__
#endif
#endif
