"""Loss kernels, each fused with its gradient, defined as torch.nn defines them.

Each returns the SUM of the per-sample (cross-entropy) or per-element (the others)
losses over the block (each row's weighted by its sample weight, when given), accumulated in double, and writes grad = scale * dloss/dout
when grad is not NULL. The caller picks scale so the gradient is that of the mean:
1/N for cross-entropy, 1/(N*C) for the elementwise losses (reduction "mean").

  cross-entropy, labels y:     l_i = logsumexp(x_i) - x_i[y_i];   grad = softmax(x_i) - onehot
  cross-entropy, targets t:    l_i = -sum_c t_ic log_softmax(x_i)_c;
                               grad = softmax(x_i) * sum_c t_ic - t_i
  binary cross-entropy (logits): l = max(x, 0) - x t + log1p(exp(-|x|)); grad = sigmoid(x) - t
  mse:  l = (x - t)^2;  grad = 2 (x - t)
  l1:   l = |x - t|;    grad = sign(x - t)
  poisson (x = log rate):  l = exp(x) - x t;  grad = exp(x) - t
  huber (delta):  l = d^2 / 2 (|d| < delta), delta (|d| - delta / 2) otherwise, d = x - t;
                  grad = clamp(d, -delta, delta)

`setting` is the loss's one setting: Huber's delta, and cross-entropy's label smoothing
eps, which replaces every row's target t by (1 - eps) t + eps / C (torch's
label_smoothing; for a label y, t is its one-hot row).

Infinite logits take the limits of these formulas, so losses and gradients are finite
wherever the mathematics is: softmax puts 1/k on each of a row's k entries equal to +inf
(loss log k at such a label, +inf elsewhere), -inf entries get probability 0, and binary
cross-entropy of +-inf is 0 or +inf as the target makes it. NaN propagates.
"""
from cython cimport floating
from libc.math cimport INFINITY, fabs, log
from libc.stdint cimport int64_t

from _activations cimport sigmoid
from _kinds cimport (CROSS_ENTROPY_LABELS, CROSS_ENTROPY_PROBS, BINARY_CROSS_ENTROPY,
                     MSE, L1, POISSON, HUBER)
from _mathf cimport fexp, flog, flog1p, select


cdef inline floating smoothed_target(const floating* t, int64_t label, Py_ssize_t j,
                                    Py_ssize_t m, floating smoothing) noexcept nogil:
    """Entry j of a row's target (t's, or the label's one-hot) with label smoothing."""
    cdef floating target = t[j] if t != NULL else <floating> (j == label)
    if smoothing == 0:
        return target
    return (1 - smoothing) * target + smoothing / <floating> m


cdef inline double cross_entropy_infinite_row(const floating* x, const floating* t,
                                              int64_t label, floating* grad, Py_ssize_t m,
                                              floating scale,
                                              floating smoothing) noexcept nogil:
    """A row with +inf logits: the limit of softmax puts 1/k on each of its k +inf entries."""
    cdef Py_ssize_t j, k = 0
    cdef double loss = 0, tsum = 0
    cdef floating target
    for j in range(m):
        k += x[j] == INFINITY
    for j in range(m):
        target = smoothed_target(t, label, j, m, smoothing)
        tsum += target
        if target != 0:
            loss += target * (log(<double> k) if x[j] == INFINITY else INFINITY)
    cdef floating share = <floating> (tsum / k)
    if grad != NULL:
        for j in range(m):
            grad[j] = scale * ((share if x[j] == INFINITY else 0)
                               - smoothed_target(t, label, j, m, smoothing))
    return loss


cdef inline double cross_entropy_row(const floating* x, const floating* t, int64_t label,
                                     floating* grad, Py_ssize_t m, floating scale,
                                     floating smoothing) noexcept nogil:
    """One row of softmax cross-entropy; t is NULL for an integer label."""
    cdef Py_ssize_t j
    cdef floating xmax = x[0]
    cdef floating total = 0
    cdef floating lse, tsum = 0
    cdef double loss = 0
    for j in range(1, m):
        if x[j] > xmax:
            xmax = x[j]
    cdef floating target
    if xmax == INFINITY:
        return cross_entropy_infinite_row(x, t, label, grad, m, scale, smoothing)
    for j in range(m):
        total += fexp(x[j] - xmax)
    lse = xmax + flog(total)
    if t == NULL and smoothing == 0:
        loss = lse - x[label]
    else:
        for j in range(m):
            target = smoothed_target(t, label, j, m, smoothing)
            loss += target * (<double> lse - x[j])
            tsum += target
    if grad != NULL:
        # softmax as exp(x - max) / total: exp(x - lse) would carry lse's rounding error,
        # which is large in float32 when |x| is large.
        if t == NULL and smoothing == 0:
            for j in range(m):
                grad[j] = scale * (fexp(x[j] - xmax) / total)
            grad[label] -= scale
        else:
            for j in range(m):
                grad[j] = scale * (fexp(x[j] - xmax) / total * tsum
                                   - smoothed_target(t, label, j, m, smoothing))
    return loss


cdef inline double elementwise_loss(int kind, floating x, floating t, floating* grad,
                                    floating scale, floating delta) noexcept nogil:
    """One element of binary cross-entropy (on logits), MSE, L1, Poisson or Huber."""
    cdef floating d, rate
    if kind == POISSON:
        rate = fexp(x)
        if grad != NULL:
            grad[0] = scale * (rate - t)
        return rate - x * t
    if kind == BINARY_CROSS_ENTROPY:
        if grad != NULL:
            grad[0] = scale * (sigmoid(x) - t)
        # at +-inf the limit: 0 when the target agrees completely, else +inf
        return select(fabs(x) == INFINITY,
                      select((t < 1) if x > 0 else (t > 0), <floating> INFINITY, 0),
                      (x if x > 0 else 0) - x * t + flog1p(fexp(-fabs(x))))
    d = x - t
    if kind == MSE:
        if grad != NULL:
            grad[0] = scale * 2 * d
        return d * d
    if kind == HUBER:
        if grad != NULL:
            grad[0] = scale * select(d < -delta, -delta, select(d > delta, delta, d))
        return select(fabs(d) < delta, <floating> 0.5 * d * d, delta * (fabs(d) - delta / 2))
    if grad != NULL:
        grad[0] = scale * ((d > 0) - (d < 0))
    return fabs(d)


cdef inline double loss_forward_backward(int kind, double setting, const floating* out,
                                         const floating* targets, const int64_t* labels,
                                         const floating* weights, floating* grad, Py_ssize_t n,
                                         Py_ssize_t m, floating scale) noexcept nogil:
    """Sum of the losses over an (n x m) block of outputs; writes the scaled gradient.
    With `weights` (one per row, else NULL), row i's losses and gradient are multiplied
    by weights[i]: the sum is then the weighted sum."""
    cdef Py_ssize_t i, j
    cdef double total = 0, row
    cdef floating w = 1
    for i in range(n):
        if weights != NULL:
            w = weights[i]
        if kind == CROSS_ENTROPY_LABELS:
            row = cross_entropy_row(out + i * m, <floating*> NULL, labels[i],
                                    NULL if grad == NULL else grad + i * m, m, scale * w,
                                    <floating> setting)
        elif kind == CROSS_ENTROPY_PROBS:
            row = cross_entropy_row(out + i * m, targets + i * m, 0,
                                    NULL if grad == NULL else grad + i * m, m, scale * w,
                                    <floating> setting)
        else:
            row = 0
            for j in range(i * m, (i + 1) * m):
                row += elementwise_loss(kind, out[j], targets[j],
                                        NULL if grad == NULL else grad + j, scale * w,
                                        <floating> setting)
        total += row if weights == NULL else w * row
    return total


cdef inline Py_ssize_t argmax_row(const floating* x, Py_ssize_t m) noexcept nogil:
    """Index of the first largest entry, as numpy.argmax."""
    cdef Py_ssize_t j, best = 0
    for j in range(1, m):
        if x[j] > x[best]:
            best = j
    return best


cdef inline double count_correct(int kind, const floating* out, const floating* targets,
                                 const int64_t* labels, const floating* weights, Py_ssize_t n,
                                 Py_ssize_t m) noexcept nogil:
    """Correct predictions in a block (each row's counting weights[i] when given): argmax
    for cross-entropy, logit > 0 per element for binary cross-entropy (target > 0.5); 0
    for regression losses."""
    cdef Py_ssize_t i, j
    cdef double correct = 0, row
    if kind != CROSS_ENTROPY_LABELS and kind != CROSS_ENTROPY_PROBS \
            and kind != BINARY_CROSS_ENTROPY:
        return 0
    for i in range(n):
        if kind == CROSS_ENTROPY_LABELS:
            row = argmax_row(out + i * m, m) == labels[i]
        elif kind == CROSS_ENTROPY_PROBS:
            row = argmax_row(out + i * m, m) == argmax_row(targets + i * m, m)
        else:
            row = 0
            for j in range(i * m, (i + 1) * m):
                row += (out[j] > 0) == (targets[j] > 0.5)
        correct += row if weights == NULL else weights[i] * row
    return correct
