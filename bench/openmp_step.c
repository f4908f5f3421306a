/* The design fastnn did not take, written out so it can be timed (bench/bench_openmp.py):
 * an epoch of MLP training (ReLU hidden layers, softmax cross-entropy, SGD with momentum
 * 0.9 as torch.optim.SGD) whose matrix products are BLAS calls on BLAS's own threads and
 * whose other passes (bias, activations, loss, bias gradients, update) are OpenMP loops
 * between them (`omp` != 0), or loops on the calling thread (`omp` == 0: fastnn before
 * its own team of threads). Like fastnn then, the momentum buffer is the weight-gradient
 * product's output (beta = momentum), so the update is one pass.
 *
 * The BLAS is the caller's: sgemm's address from scipy.linalg.cython_blas, so the products
 * are exactly those of fastnn's floor. Row-major arrays; float32; no allocation here.
 *
 *     cc -O3 -fopenmp -shared -fPIC openmp_step.c -o openmp_step.so
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef void (*sgemm_fn)(const char*, const char*, const int*, const int*, const int*,
                         const float*, const float*, const int*, const float*, const int*,
                         const float*, float*, const int*);

#define MAX_LAYERS 8

typedef struct {
    int n_layers;
    int width[MAX_LAYERS + 1];
    float* weight[MAX_LAYERS];     /* (width[l + 1], width[l]) */
    float* bias[MAX_LAYERS];
    float* weight_mom[MAX_LAYERS]; /* momentum buffers */
    float* bias_mom[MAX_LAYERS];
    float* out[MAX_LAYERS];        /* (batch, width[l + 1]): activations */
    float* grad[MAX_LAYERS];       /* (batch, width[l + 1]): gradients of the pre-activations */
    int64_t step;                  /* updates made so far */
} Net;

/* Y (n, m) = A (n, k) W (m, k)^T */
static void forward_product(sgemm_fn gemm, const float* A, const float* W, float* Y, int n,
                            int m, int k) {
    const float one = 1.0f, zero = 0.0f;
    gemm("T", "N", &m, &n, &k, &one, W, &k, A, &k, &zero, Y, &m);
}

/* dW (m, k) = G (n, m)^T A (n, k) + beta dW: with dW the momentum buffer and beta the
 * momentum, torch's buf = momentum buf + grad in the product itself, as fastnn folded it */
static void weight_product(sgemm_fn gemm, const float* G, const float* A, float* dW, int n,
                           int m, int k, float beta) {
    const float one = 1.0f;
    gemm("N", "T", &k, &m, &n, &one, A, &k, G, &m, &beta, dW, &k);
}

/* dA (n, k) = G (n, m) W (m, k) */
static void input_product(sgemm_fn gemm, const float* G, const float* W, float* dA, int n,
                          int m, int k) {
    const float one = 1.0f, zero = 0.0f;
    gemm("N", "N", &k, &n, &m, &one, W, &k, G, &m, &zero, dA, &k);
}

/* Trains one epoch over X's rows in order; returns the mean loss over its rows. */
double train_epoch(void* sgemm_address, Net* net, const float* X, const int64_t* labels,
                   int n_samples, int batch, float lr, float momentum, int omp) {
    sgemm_fn gemm = (sgemm_fn) sgemm_address;
    int L = net->n_layers, classes = net->width[L];
    double loss_total = 0.0;
    for (int start = 0; start < n_samples; start += batch) {
        int n = n_samples - start < batch ? n_samples - start : batch;
        const float* x = X + (int64_t) start * net->width[0];
        const int64_t* y = labels + start;
        for (int l = 0; l < L; l++) {
            int m = net->width[l + 1], k = net->width[l];
            float* out = net->out[l];
            const float* b = net->bias[l];
            forward_product(gemm, l == 0 ? x : net->out[l - 1], net->weight[l], out, n, m, k);
            int relu = l < L - 1;
#pragma omp parallel for if (omp) schedule(static)
            for (int i = 0; i < n; i++) {
                float* row = out + (int64_t) i * m;
                for (int j = 0; j < m; j++) {
                    float v = row[j] + b[j];
                    row[j] = relu && v < 0.0f ? 0.0f : v;
                }
            }
        }
        /* softmax cross-entropy, mean over the batch, and its gradient */
        double loss = 0.0;
        const float* z = net->out[L - 1];
        float* g = net->grad[L - 1];
#pragma omp parallel for if (omp) schedule(static) reduction(+ : loss)
        for (int i = 0; i < n; i++) {
            const float* zi = z + (int64_t) i * classes;
            float* gi = g + (int64_t) i * classes;
            float top = zi[0], sum = 0.0f;
            for (int j = 1; j < classes; j++)
                top = zi[j] > top ? zi[j] : top;
            for (int j = 0; j < classes; j++) {
                gi[j] = expf(zi[j] - top);
                sum += gi[j];
            }
            loss += log((double) sum) + top - zi[y[i]];
            for (int j = 0; j < classes; j++)
                gi[j] = (gi[j] / sum - (j == y[i] ? 1.0f : 0.0f)) / (float) n;
        }
        loss_total += loss;
        for (int l = L - 1; l >= 0; l--) {
            int m = net->width[l + 1], k = net->width[l];
            const float* G = net->grad[l];
            /* torch.optim.SGD: buf = momentum buf + grad (grad on the first step), p -= lr buf */
            float beta = net->step == 0 ? 0.0f : momentum;
            float* mw = net->weight_mom[l];
            weight_product(gemm, G, l == 0 ? x : net->out[l - 1], mw, n, m, k, beta);
            float* mb = net->bias_mom[l];
#pragma omp parallel for if (omp) schedule(static)
            for (int j0 = 0; j0 < m; j0 += 16) {   /* column sums, 16 columns at a time */
                int j1 = j0 + 16 < m ? j0 + 16 : m;
                float s[16] = {0};
                for (int i = 0; i < n; i++)
                    for (int j = j0; j < j1; j++)
                        s[j - j0] += G[(int64_t) i * m + j];
                for (int j = j0; j < j1; j++)
                    mb[j] = beta * mb[j] + s[j - j0];
            }
            if (l > 0) {
                float* dA = net->grad[l - 1];
                const float* a = net->out[l - 1];
                input_product(gemm, G, net->weight[l], dA, n, m, k);
#pragma omp parallel for if (omp) schedule(static)
                for (int64_t e = 0; e < (int64_t) n * k; e++)
                    dA[e] = a[e] > 0.0f ? dA[e] : 0.0f;
            }
            float* W = net->weight[l];
            int64_t size = (int64_t) m * k;
#pragma omp parallel for if (omp) schedule(static)
            for (int64_t e = 0; e < size; e++)
                W[e] -= lr * mw[e];
            float* bb = net->bias[l];
            for (int j = 0; j < m; j++)
                bb[j] -= lr * mb[j];
        }
        net->step++;
    }
    return n_samples ? loss_total / n_samples : 0.0;
}
