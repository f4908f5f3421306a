"""Fused in-place optimizer updates following torch.optim, folded into the gradient.

The weight-gradient product G = dL/dW comes out of a GEMM, C = alpha * G + beta * C,
so an optimizer chooses where that product lands (`gradient_destination`) and then
finishes the update in at most one pass over the parameter (`optimizer_finish`):

  SGD, momentum = 0:  C = p,      alpha = -lr, beta = 1 - lr * weight_decay: no pass left.
  SGD, momentum, not nesterov:  the buffer is kept as c = b / s, s = momentum^k, so the
                      product needs no beta pass: C = c, alpha = (1 - dampening) / s_new,
                      beta = 1 with s_new = momentum * s (first step: s = 1, alpha = 1,
                      beta = 0); pass: c += alpha * wd * p; p -= lr * s_new * c. The driver
                      folds s back into c (c *= s) when s gets small and at every epoch's
                      end, so the stored state is torch's buffer b between calls.
  anything else:      C = grad, alpha = 1, beta = 0; pass: the full update from grad.

`hyper` holds an optimizer's hyperparameters as doubles in the order its Python class
documents; `step` counts the updates already made (0 on the first, where torch creates
its state); state0..2 are per-parameter buffers of the parameter's size (unused: NULL).

Below, t = step + 1 is torch's 1-based step count, and every state starts at zero
(Adagrad's sum at initial_accumulator_value, set by its Python class). Every kernel also
takes `l2`, a per-parameter coupled decay added to the gradient, g = g + l2 * p, on top
of the optimizer's own weight_decay: it is how a layer's L2 penalty lambda * sum(W^2)
enters the update (l2 = 2 lambda for weights, 0 for biases).

SGD, hyper = (lr, momentum, dampening, nesterov, weight_decay), state0 = momentum buffer b:
    g = g + weight_decay * p
    b = g (first step) or momentum * b + (1 - dampening) * g
    g = g + momentum * b (nesterov) or b           (when momentum != 0)
    p = p - lr * g

Adam/AdamW, hyper = (lr, beta1, beta2, eps, weight_decay, amsgrad, decoupled[, eps_raw]),
state0 = m, state1 = v, state2 = v_max (amsgrad):
    p = p * (1 - lr * weight_decay)  (decoupled, AdamW)  or  g = g + weight_decay * p (Adam)
    m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2;  v_max = max(v_max, v)
    p = p - lr / (1 - beta1^t) * m / (sqrt(v or v_max) / sqrt(1 - beta2^t) + eps)
    (eps_raw, scikit-learn's and Keras' placement: eps is added to sqrt(v) itself,
    i.e. the eps above becomes eps / sqrt(1 - beta2^t))

RMSprop, hyper = (lr, alpha, eps, weight_decay, momentum, centered),
state0 = v, state1 = momentum buffer b, state2 = mean gradient a (centered):
    g = g + weight_decay * p;  v = alpha v + (1 - alpha) g^2
    a = alpha a + (1 - alpha) g;  d = sqrt(v - a^2) + eps (centered) or sqrt(v) + eps
    b = momentum b + g / d;  p = p - lr b   (momentum > 0)  or  p = p - lr g / d

Adagrad, hyper = (lr, lr_decay, weight_decay, eps), state0 = sum s:
    g = g + weight_decay * p;  s = s + g^2
    p = p - lr / (1 + (t - 1) lr_decay) * g / (sqrt(s) + eps)

Adadelta, hyper = (lr, rho, eps, weight_decay), state0 = square average v,
state1 = accumulated delta u:
    g = g + weight_decay * p;  v = rho v + (1 - rho) g^2
    d = sqrt(u + eps) / sqrt(v + eps) * g;  u = rho u + (1 - rho) d^2;  p = p - lr d

NAdam, hyper = (lr, beta1, beta2, eps, weight_decay, momentum_decay, decoupled),
state0 = m, state1 = v; `product` is prod_{i < t} mu_i over the updates already made
(the driver's counter, advanced by nadam_product_after):
    mu_i = beta1 (1 - 0.96^(i momentum_decay) / 2);  P = product * mu_t
    p = p * (1 - lr * weight_decay) (decoupled)  or  g = g + weight_decay * p
    m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
    d = sqrt(v / (1 - beta2^t)) + eps
    p = p - lr (1 - mu_t) / (1 - P) * g / d - lr mu_{t+1} / (1 - P mu_{t+1}) * m / d
"""
from cython cimport floating
from libc.math cimport pow, sqrt, sqrtf

from _kinds cimport ADADELTA, ADAGRAD, ADAM, NADAM, RMSPROP, SGD
from _mathf cimport select

cdef extern from "updates.h":
    void fastnn_adam_f(float* p, const float* g, float* m, float* v, Py_ssize_t n,
                       float beta1, float beta2, float coupled, float decay, float step_size,
                       float bc2_sqrt, float eps) noexcept nogil
    void fastnn_adam_d(double* p, const double* g, double* m, double* v, Py_ssize_t n,
                       double beta1, double beta2, double coupled, double decay,
                       double step_size, double bc2_sqrt, double eps) noexcept nogil
    void fastnn_rmsprop_f(float* p, const float* g, float* sq, float* buf, float* avg,
                          Py_ssize_t n, float lr, float alpha, float eps, float wd,
                          float momentum, int centered, int use_momentum) noexcept nogil
    void fastnn_rmsprop_d(double* p, const double* g, double* sq, double* buf, double* avg,
                          Py_ssize_t n, double lr, double alpha, double eps, double wd,
                          double momentum, int centered, int use_momentum) noexcept nogil
    void fastnn_adagrad_f(float* p, const float* g, float* total, Py_ssize_t n, float clr,
                          float wd, float eps) noexcept nogil
    void fastnn_adagrad_d(double* p, const double* g, double* total, Py_ssize_t n,
                          double clr, double wd, double eps) noexcept nogil
    void fastnn_adadelta_f(float* p, const float* g, float* sq, float* acc, Py_ssize_t n,
                           float lr, float rho, float eps, float wd) noexcept nogil
    void fastnn_adadelta_d(double* p, const double* g, double* sq, double* acc,
                           Py_ssize_t n, double lr, double rho, double eps,
                           double wd) noexcept nogil
    void fastnn_nadam_f(float* p, const float* g, float* m, float* v, Py_ssize_t n,
                        float beta1, float beta2, float coupled, float decay, float bc2,
                        float eps, float grad_step, float m_step) noexcept nogil
    void fastnn_nadam_d(double* p, const double* g, double* m, double* v, Py_ssize_t n,
                        double beta1, double beta2, double coupled, double decay,
                        double bc2, double eps, double grad_step,
                        double m_step) noexcept nogil
    void fastnn_momentum_f(float* p, float* c, Py_ssize_t n, float decay,
                           float step) noexcept nogil
    void fastnn_momentum_d(double* p, double* c, Py_ssize_t n, double decay,
                           double step) noexcept nogil


cdef enum Destination:
    TO_GRAD = 0
    TO_STATE0 = 1
    TO_PARAM = 2


cdef struct GradientDestination:
    int where           # a Destination
    double alpha
    double beta
    double scale        # TO_STATE0: the buffer's scale s after this step (b = s * c)


cdef inline GradientDestination gradient_destination(int kind, const double* hyper,
                                                     long long step, double l2,
                                                     double scale) noexcept nogil:
    """Where the product dL/dW of the coming update lands, and its alpha/beta; `scale` is
    the momentum buffer's current scale s (see the header)."""
    cdef GradientDestination d
    d.where, d.alpha, d.beta, d.scale = TO_GRAD, 1.0, 0.0, 1.0
    if kind == SGD:
        if hyper[1] == 0:
            d.where, d.alpha, d.beta = TO_PARAM, -hyper[0], 1.0 - hyper[0] * (hyper[4] + l2)
        elif hyper[3] == 0:
            d.where = TO_STATE0
            if step > 0:
                d.scale = hyper[1] * scale
                d.alpha, d.beta = (1.0 - hyper[2]) / d.scale, 1.0
    return d


cdef inline bint uses_scaled_momentum(int kind, const double* hyper) noexcept nogil:
    """SGD with momentum, not nesterov: its buffer is kept as c = b / s (see the header)."""
    return kind == SGD and hyper[1] != 0 and hyper[3] == 0


cdef inline bint momentum_scale_small(int kind, const double* hyper,
                                      double scale) noexcept nogil:
    """Whether the next step's scale s = momentum * scale would make alpha = (1 - d) / s
    immoderate, so the driver folds s back into the buffer first (c *= s)."""
    return uses_scaled_momentum(kind, hyper) and scale * hyper[1] < 1e-3


cdef inline double momentum_scale_after(int kind, const double* hyper, double scale,
                                        long long step) noexcept nogil:
    """The buffer's scale s once update number `step` (0-based) is made: 1 for the first
    (the buffer is the gradient itself), momentum * s after it; 1 where no scale is kept."""
    if not uses_scaled_momentum(kind, hyper):
        return scale
    return scale * hyper[1] if step > 0 else 1.0


cdef inline void sgd_update(const double* hyper, double l2, long long step, floating* p,
                            const floating* g, floating* buf, Py_ssize_t n) noexcept nogil:
    """The complete SGD update from a plain gradient g (torch.optim.SGD's algorithm)."""
    cdef floating lr = <floating> hyper[0]
    cdef floating momentum = <floating> hyper[1]
    cdef floating damp = 1 - <floating> hyper[2]
    cdef bint nesterov = hyper[3] != 0
    cdef floating wd = <floating> (hyper[4] + l2)
    cdef bint first = step == 0
    cdef Py_ssize_t i
    cdef floating d
    if momentum == 0:
        for i in range(n):
            d = g[i] if wd == 0 else g[i] + wd * p[i]
            p[i] = p[i] - lr * d
        return
    for i in range(n):
        d = g[i] if wd == 0 else g[i] + wd * p[i]
        if first:
            buf[i] = d
        else:
            buf[i] = momentum * buf[i] + damp * d
        if nesterov:
            d = d + momentum * buf[i]
        else:
            d = buf[i]
        p[i] = p[i] - lr * d


cdef inline void sgd_momentum_finish(const double* hyper, double l2, floating alpha,
                                     double scale, floating* p, floating* buf,
                                     Py_ssize_t n) noexcept nogil:
    """After c = c + alpha * g (the GEMM; b = scale * c): fold in weight decay, step p
    (updates.h: one loop whose every entry rounds the same wherever a call begins)."""
    cdef floating decay = alpha * <floating> (hyper[4] + l2)
    if floating is float:
        fastnn_momentum_f(p, buf, n, decay, <float> (-hyper[0] * scale))
    else:
        fastnn_momentum_d(p, buf, n, decay, <double> (-hyper[0] * scale))


cdef inline floating fsqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline void adam_update(const double* hyper, double l2, long long step, floating* p,
                             const floating* g, floating* m, floating* v, floating* vmax,
                             Py_ssize_t n) noexcept nogil:
    # Straight-line loop bodies (selects on loop-invariant flags) so they vectorize.
    cdef floating beta1 = <floating> hyper[1], beta2 = <floating> hyper[2]
    cdef floating eps = <floating> (hyper[3] / sqrt(1 - pow(hyper[2], step + 1.0))
                                    if hyper[7] != 0 else hyper[3])
    cdef bint amsgrad = hyper[5] != 0, decoupled = hyper[6] != 0
    cdef floating coupled = <floating> (l2 if decoupled else hyper[4] + l2)
    cdef floating decay = <floating> (1 - hyper[0] * hyper[4]) if decoupled else 1
    cdef double t = step + 1
    cdef floating step_size = <floating> (hyper[0] / (1 - pow(hyper[1], t)))
    cdef floating bc2_sqrt = <floating> sqrt(1 - pow(hyper[2], t))
    cdef Py_ssize_t i
    cdef floating d, old
    if amsgrad:
        for i in range(n):
            old = p[i]  # the gradient's own terms use p as the forward pass saw it
            d = g[i] + coupled * old
            m[i] = beta1 * m[i] + (1 - beta1) * d
            v[i] = beta2 * v[i] + (1 - beta2) * d * d
            vmax[i] = select(v[i] > vmax[i], v[i], vmax[i])
            p[i] = old * decay - step_size * (m[i] / (fsqrt(vmax[i]) / bc2_sqrt + eps))
        return
    # no v_max: the same loop in C, built for several instruction sets (updates.h)
    if floating is float:
        fastnn_adam_f(p, g, m, v, n, beta1, beta2, coupled, decay, step_size, bc2_sqrt, eps)
    else:
        fastnn_adam_d(p, g, m, v, n, beta1, beta2, coupled, decay, step_size, bc2_sqrt, eps)


cdef inline void rmsprop_update(const double* hyper, double l2, floating* p, const floating* g,
                                floating* sq, floating* buf, floating* avg, Py_ssize_t n) noexcept nogil:
    cdef floating lr = <floating> hyper[0], alpha = <floating> hyper[1]
    cdef floating eps = <floating> hyper[2], wd = <floating> (hyper[3] + l2)
    cdef floating momentum = <floating> hyper[4]
    cdef bint centered = hyper[5] != 0, use_momentum = hyper[4] > 0
    if floating is float:  # built for several instruction sets (updates.h)
        fastnn_rmsprop_f(p, g, sq, buf, avg, n, lr, alpha, eps, wd, momentum, centered,
                         use_momentum)
    else:
        fastnn_rmsprop_d(p, g, sq, buf, avg, n, lr, alpha, eps, wd, momentum, centered,
                         use_momentum)


cdef inline void adagrad_update(const double* hyper, double l2, long long step, floating* p,
                                const floating* g, floating* total, Py_ssize_t n) noexcept nogil:
    cdef floating clr = <floating> (hyper[0] / (1 + step * hyper[1]))
    cdef floating wd = <floating> (hyper[2] + l2), eps = <floating> hyper[3]
    if floating is float:  # built for several instruction sets (updates.h)
        fastnn_adagrad_f(p, g, total, n, clr, wd, eps)
    else:
        fastnn_adagrad_d(p, g, total, n, clr, wd, eps)


cdef inline void adadelta_update(const double* hyper, double l2, floating* p, const floating* g,
                                 floating* sq, floating* acc, Py_ssize_t n) noexcept nogil:
    cdef floating lr = <floating> hyper[0], rho = <floating> hyper[1]
    cdef floating eps = <floating> hyper[2], wd = <floating> (hyper[3] + l2)
    if floating is float:  # built for several instruction sets (updates.h)
        fastnn_adadelta_f(p, g, sq, acc, n, lr, rho, eps, wd)
    else:
        fastnn_adadelta_d(p, g, sq, acc, n, lr, rho, eps, wd)


cdef inline double nadam_mu(const double* hyper, double t) noexcept nogil:
    """NAdam's momentum coefficient at (1-based) step t."""
    return hyper[1] * (1.0 - 0.5 * pow(0.96, t * hyper[5]))


cdef inline double nadam_product_after(int kind, const double* hyper, double product,
                                       long long step) noexcept nogil:
    """The product of NAdam's momentum coefficients once update `step` (0-based) is made."""
    return product * nadam_mu(hyper, step + 1.0) if kind == NADAM else product


cdef inline void nadam_update(const double* hyper, double l2, long long step, double product,
                              floating* p, const floating* g, floating* m, floating* v,
                              Py_ssize_t n) noexcept nogil:
    cdef double t = step + 1, mu = nadam_mu(hyper, t), mu_next = nadam_mu(hyper, t + 1)
    cdef double product_now = product * mu
    cdef bint decoupled = hyper[6] != 0
    cdef floating beta1 = <floating> hyper[1], beta2 = <floating> hyper[2]
    cdef floating eps = <floating> hyper[3]
    cdef floating coupled = <floating> (l2 if decoupled else hyper[4] + l2)
    cdef floating decay = <floating> (1 - hyper[0] * hyper[4]) if decoupled else 1
    cdef floating bc2 = <floating> (1 - pow(hyper[2], t))
    cdef floating grad_step = <floating> (-hyper[0] * (1 - mu) / (1 - product_now))
    cdef floating m_step = <floating> (-hyper[0] * mu_next / (1 - product_now * mu_next))
    if floating is float:  # built for several instruction sets (updates.h)
        fastnn_nadam_f(p, g, m, v, n, beta1, beta2, coupled, decay, bc2, eps, grad_step,
                       m_step)
    else:
        fastnn_nadam_d(p, g, m, v, n, beta1, beta2, coupled, decay, bc2, eps, grad_step,
                       m_step)


cdef inline void optimizer_finish(int kind, const double* hyper, double l2, long long step,
                                  double product, GradientDestination dest, floating* p,
                                  const floating* g, floating* state0, floating* state1,
                                  floating* state2, Py_ssize_t n) noexcept nogil:
    """Complete the update of the n entries of p once the gradient product has landed
    where gradient_destination said (`product`: NAdam's, see the header)."""
    if dest.where == TO_PARAM:
        return
    if kind == SGD:
        if dest.where == TO_STATE0:
            sgd_momentum_finish(hyper, l2, <floating> dest.alpha, dest.scale, p, state0, n)
        else:
            sgd_update(hyper, l2, step, p, g, state0, n)
    elif kind == ADAM:
        adam_update(hyper, l2, step, p, g, state0, state1, state2, n)
    elif kind == RMSPROP:
        rmsprop_update(hyper, l2, p, g, state0, state1, state2, n)
    elif kind == ADAGRAD:
        adagrad_update(hyper, l2, step, p, g, state0, n)
    elif kind == ADADELTA:
        adadelta_update(hyper, l2, p, g, state0, state1, n)
    elif kind == NADAM:
        nadam_update(hyper, l2, step, product, p, g, state0, state1, n)


cdef inline void* destination_array(int where, void* param, void* grad,
                                    void* state0) noexcept nogil:
    """Which of a parameter's arrays a gradient product lands in (see the header)."""
    if where == TO_PARAM:
        return param
    if where == TO_STATE0:
        return state0
    return grad
