/* FASTNN_CLONES: build a loop function for AVX-512, AVX2 and baseline x86-64 and let the
 * loader pick one for the CPU (GCC's target_clones on x86-64 Linux; elsewhere a plain
 * function). The build sets -ffp-contract=off, so the clones round identically. */
#ifndef FASTNN_CLONES_H
#define FASTNN_CLONES_H
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define FASTNN_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FASTNN_CLONES
#endif
#endif
