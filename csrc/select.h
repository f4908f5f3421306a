/* Branchless select: `c ? a : b` as one C expression, so the compiler can turn the
 * activation loops into vector blends instead of mispredicted branches (Cython emits
 * its conditional expressions as if/else statements). */
#ifndef FASTNN_SELECT_H
#define FASTNN_SELECT_H
static inline float fastnn_select_f(int c, float a, float b) { return c ? a : b; }
static inline double fastnn_select_d(int c, double a, double b) { return c ? a : b; }
#endif
