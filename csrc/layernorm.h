/* LayerNorm's row loops (csrc/engine/layernorm.pxi calls them), in float and double, built
 * per instruction set (clones.h).
 *
 * A sum over a row is 16 partial sums, entry j going to lane j % 16, the lanes then added
 * in one fixed tree. The compiler keeps the lanes in vector registers (one AVX-512
 * register of floats, two of AVX2, four of SSE2), and every clone makes the same additions
 * in the same order: all of them give the same bits (tests/test_instruction_sets.py).
 * `python bench/bench_norm_traffic.py` measures what a LayerNorm adds to an epoch.
 *
 * The row formulas (torch.nn.LayerNorm over the last dimension, biased variance):
 *   mean = sum(x) / m, invstd = 1 / sqrt(sum((x - mean)^2) / m + eps)  (two passes: no
 *   cancellation), xhat = (x - mean) invstd, y = xhat gamma + beta;
 *   the Jacobian of xhat, A = invstd (I - 1 1^T / m - xhat xhat^T / m), applied to
 *   w = v scale: out = invstd (w - sum(w) / m - xhat sum(w xhat) / m).
 */
#ifndef FASTNN_LAYERNORM_H
#define FASTNN_LAYERNORM_H
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "clones.h"

#define FASTNN_LN_LANES 16

/* the cloned functions' names pasted after their type suffix is expanded */
#define FASTNN_LN_CLONED(NAME, PARAMS, ARGS, ...) FASTNN_CLONED(NAME, PARAMS, ARGS, __VA_ARGS__)

#define FASTNN_LN_T float
#define FASTNN_LN(name) name##_f
#include "layernorm_rows.h"
#undef FASTNN_LN_T
#undef FASTNN_LN

#define FASTNN_LN_T double
#define FASTNN_LN(name) name##_d
#include "layernorm_rows.h"
#undef FASTNN_LN_T
#undef FASTNN_LN
#endif
