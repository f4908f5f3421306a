/* LayerNorm's row loops for one type: included by layernorm.h once with FASTNN_LN_T float
 * and FASTNN_LN(name) name##_f, once with double and _d (no include guard on purpose). */
#define T FASTNN_LN_T

/* The lanes' total, in one fixed order. */
static inline T FASTNN_LN(fastnn_ln_total)(const T *s) {
    return (((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])))
         + (((s[8] + s[9]) + (s[10] + s[11])) + ((s[12] + s[13]) + (s[14] + s[15])));
}

/* A row's mean and 1 / sqrt(biased variance + eps). */
static inline void FASTNN_LN(fastnn_ln_moments)(const T *restrict x, ptrdiff_t m, double eps,
                                                T *mean, T *invstd) {
    T acc[FASTNN_LN_LANES] = {0};
    ptrdiff_t whole = m - m % FASTNN_LN_LANES, j, l;
    T mu;
    for (j = 0; j < whole; j += FASTNN_LN_LANES)
        for (l = 0; l < FASTNN_LN_LANES; l++)
            acc[l] += x[j + l];
    for (l = 0; whole + l < m; l++)
        acc[l] += x[whole + l];
    mu = FASTNN_LN(fastnn_ln_total)(acc) / (T) m;
    for (l = 0; l < FASTNN_LN_LANES; l++)
        acc[l] = 0;
    for (j = 0; j < whole; j += FASTNN_LN_LANES)
        for (l = 0; l < FASTNN_LN_LANES; l++)
            acc[l] += (x[j + l] - mu) * (x[j + l] - mu);
    for (l = 0; whole + l < m; l++)
        acc[l] += (x[whole + l] - mu) * (x[whole + l] - mu);
    *mean = mu;
    *invstd = (T) (1 / sqrt((double) (FASTNN_LN(fastnn_ln_total)(acc) / (T) m) + eps));
}

/* n rows of m: each one's moments (kept in mean[i], invstd[i] unless those are NULL) and,
 * unless y is NULL, y = xhat gamma + beta (gamma, beta NULL: 1, 0). y may be x: a row
 * is read whole before it is written. */
FASTNN_LN_CLONED(FASTNN_LN(fastnn_ln_rows),
        (const T *x, T *y, const T *gamma, const T *beta, double eps, T *mean, T *invstd,
         ptrdiff_t n, ptrdiff_t m),
        (x, y, gamma, beta, eps, mean, invstd, n, m), {
    for (ptrdiff_t i = 0; i < n; i++) {
        const T *xi = x + i * m;
        T *yi;
        T mu, is;
        FASTNN_LN(fastnn_ln_moments)(xi, m, eps, &mu, &is);
        if (mean != NULL) {
            mean[i] = mu;
            invstd[i] = is;
        }
        if (y == NULL)
            continue;
        yi = y + i * m;
        for (ptrdiff_t j = 0; j < m; j++)
            yi[j] = ((xi[j] - mu) * is) * (gamma != NULL ? gamma[j] : 1)
                    + (beta != NULL ? beta[j] : 0);
    }
})

/* One row's out = A (scale v) from its lane sums of w = v scale and of w xhat (scale
 * NULL: 1). out may be v. */
static inline void FASTNN_LN(fastnn_ln_row_project)(const T *x, const T *v, const T *scale,
                                                    T mu, T is, const T *sums,
                                                    const T *dots, T *out, ptrdiff_t m) {
    T total = FASTNN_LN(fastnn_ln_total)(sums) / (T) m;
    T dot = FASTNN_LN(fastnn_ln_total)(dots) / (T) m;
    for (ptrdiff_t j = 0; j < m; j++) {
        T w = v[j] * (scale != NULL ? scale[j] : 1);
        out[j] = is * ((w - total) - ((x[j] - mu) * is) * dot);
    }
}

/* The backward pass's step for entry k of a row, lane l: its terms of gamma's and beta's
 * block sums and of the row's lane sums of w = gamma g and w xhat. A macro, for the whole
 * lanes' loop and the tail alike: as an inline function gcc vectorized the loop worse
 * (0.39 -> 0.55 ns an entry). */
#define FASTNN_LN_BACKWARD_ENTRY(k, l)                      \
    do {                                                    \
        T xhat = (xi[k] - mu) * is;                         \
        T w = gi[k] * (gamma != NULL ? gamma[k] : 1);       \
        part[k] += gi[k] * xhat;                            \
        part_beta[k] += gi[k];                              \
        sums[l] += w;                                       \
        dots[l] += w * xhat;                                \
    } while (0)

/* The backward pass over one block of n rows, each row read once: gamma's and beta's
 * gradients as the block's partial sums, part[j] = sum_i g[i, j] xhat[i, j], part_beta[j]
 * = sum_i g[i, j] (in row order), and, unless out is NULL, the input gradient out = A
 * (gamma g) (gamma NULL: 1). out may be g: a row is read whole before it is written. */
FASTNN_LN_CLONED(FASTNN_LN(fastnn_ln_backward_rows),
        (const T *x, const T *g, const T *mean, const T *invstd, const T *gamma,
         T *restrict part, T *restrict part_beta, T *out, ptrdiff_t n, ptrdiff_t m),
        (x, g, mean, invstd, gamma, part, part_beta, out, n, m), {
    ptrdiff_t whole = m - m % FASTNN_LN_LANES;
    memset(part, 0, m * sizeof(T));
    memset(part_beta, 0, m * sizeof(T));
    for (ptrdiff_t i = 0; i < n; i++) {
        const T *xi = x + i * m, *gi = g + i * m;
        const T mu = mean[i], is = invstd[i];
        T sums[FASTNN_LN_LANES] = {0}, dots[FASTNN_LN_LANES] = {0};
        ptrdiff_t j, l;
        for (j = 0; j < whole; j += FASTNN_LN_LANES)
            for (l = 0; l < FASTNN_LN_LANES; l++)
                FASTNN_LN_BACKWARD_ENTRY(j + l, l);
        for (l = 0; whole + l < m; l++)
            FASTNN_LN_BACKWARD_ENTRY(whole + l, l);
        if (out != NULL)
            FASTNN_LN(fastnn_ln_row_project)(xi, gi, gamma, mu, is, sums, dots, out + i * m,
                                             m);
    }
})
#undef FASTNN_LN_BACKWARD_ENTRY

/* out = A (scale v) for n rows of m (scale NULL: 1), each row's moments in mean[i],
 * invstd[i]: forward mode's tangents (v = t, scale NULL) and reverse mode's cotangents
 * (v = c, scale = gamma); the backward pass's input gradient by the same row step. out
 * may be v. */
FASTNN_LN_CLONED(FASTNN_LN(fastnn_ln_project),
        (const T *x, const T *mean, const T *invstd, const T *v, const T *scale, T *out,
         ptrdiff_t n, ptrdiff_t m),
        (x, mean, invstd, v, scale, out, n, m), {
    ptrdiff_t whole = m - m % FASTNN_LN_LANES;
    for (ptrdiff_t i = 0; i < n; i++) {
        const T *xi = x + i * m, *vi = v + i * m;
        const T mu = mean[i], is = invstd[i];
        T sums[FASTNN_LN_LANES] = {0}, dots[FASTNN_LN_LANES] = {0};
        ptrdiff_t j, l;
        for (j = 0; j < whole; j += FASTNN_LN_LANES)
            for (l = 0; l < FASTNN_LN_LANES; l++) {
                T w = vi[j + l] * (scale != NULL ? scale[j + l] : 1);
                sums[l] += w;
                dots[l] += w * ((xi[j + l] - mu) * is);
            }
        for (l = 0; whole + l < m; l++) {
            T w = vi[whole + l] * (scale != NULL ? scale[whole + l] : 1);
            sums[l] += w;
            dots[l] += w * ((xi[whole + l] - mu) * is);
        }
        FASTNN_LN(fastnn_ln_row_project)(xi, vi, scale, mu, is, sums, dots, out + i * m, m);
    }
})

#undef T
