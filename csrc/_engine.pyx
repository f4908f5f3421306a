"""The training driver: runs every batch of an epoch in compiled code.

Design, in five points:
1. Python (fastnn/model.py) validates the input, converts it once per call to a
   C-contiguous array of the model's dtype, and builds one Engine per model. Every
   batch of fit, predict, evaluate and gradients then runs here with the GIL released.
2. Buffers: the Engine owns, per layer, an output block and a gradient block of
   `capacity` rows, plus the gathered input batch, targets and a vector of ones. They
   are (re)allocated only when a call needs more rows: nothing is allocated per step.
   Parameters are the layers' own numpy arrays (live); the Engine holds their pointers.
3. Threads: the matrix products are threaded by BLAS, called from the driver thread
   only. The elementwise work between them (bias, activations, loss, optimizer passes)
   runs on the driver thread too: an OpenMP region there wakes a second thread pool
   whose spinning workers fight BLAS's for the cores. Measured on 2 cores (OpenBLAS
   pthreads + libgomp, default OMP_WAIT_POLICY): epochs 7-35x slower; with passive
   waiting no faster than one thread. So no BLAS call ever runs inside an OpenMP
   region, and no OpenMP region runs between BLAS calls. (OpenMP serves the
   standalone passes: input validation, kernels called on their own.)
4. A training step: gather the batch (shuffled order), forward through the trained
   layers, fused loss + gradient, stop if the loss is not finite (parameters untouched),
   backward (no input gradient below the first layer with parameters), then one fused
   in-place optimizer update per parameter.
5. Between steps the driver takes the GIL just long enough to check for signals, so
   Ctrl-C stops within one batch and leaves the parameters of the last completed step.
"""
from cpython.exc cimport PyErr_CheckSignals
from cython cimport floating
from libc.math cimport isfinite
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy

import numpy as np

from _activations cimport activation_backward, activation_forward
from _blas cimport axpy, sum_of_squares
from _dense cimport dense_backward, dense_forward
from _batchnorm cimport (batchnorm_backward, batchnorm_eval_backward, batchnorm_eval_forward,
                         batchnorm_train_forward)
from _dropout cimport dropout_backward, dropout_forward
from _kinds cimport (BATCHNORM, DENSE, DROPOUT, IDENTITY, RELU, LEAKY_RELU, SIGMOID, TANH, SOFTMAX,
                     CROSS_ENTROPY_LABELS, CROSS_ENTROPY_PROBS, BINARY_CROSS_ENTROPY, MSE, L1,
                     POISSON,
                     SGD, ADAM, RMSPROP, ADAGRAD)
from _losses cimport count_correct, loss_forward_backward
from _optimizers cimport (GradientDestination, TO_GRAD, destination_array,
                          gradient_destination, optimizer_finish, uses_scaled_momentum)

# The codes of _kinds.pxd, by the names the Python layer uses.
LAYER_KINDS = {"dense": DENSE, "identity": IDENTITY, "relu": RELU, "leaky_relu": LEAKY_RELU,
               "sigmoid": SIGMOID, "tanh": TANH, "softmax": SOFTMAX, "dropout": DROPOUT,
               "batchnorm": BATCHNORM}
LOSS_KINDS = {"cross_entropy_labels": CROSS_ENTROPY_LABELS,
              "cross_entropy_probs": CROSS_ENTROPY_PROBS,
              "binary_cross_entropy": BINARY_CROSS_ENTROPY, "mse": MSE, "l1": L1,
              "poisson_nll": POISSON}
OPTIMIZER_KINDS = {"sgd": SGD, "adam": ADAM, "rmsprop": RMSPROP, "adagrad": ADAGRAD}

cdef enum:
    MAX_HYPER = 16
    STEP_THREADS = 1    # elementwise threads inside the BLAS-threaded loop (see point 3)


cdef struct LayerPlan:
    int kind
    int n_in
    int n_out
    double slope
    void* weight
    void* bias
    int weight_param    # index into Net.params, -1 if none
    int bias_param
    void* out           # (capacity, n_out) output block
    void* grad          # (capacity, n_out) dL/d(out)
    void* mask          # (capacity, n_out) dropout scale factors (dropout layers only)
    # batch norm: running mean, running variance, batch mean, batch 1/std, dgamma, dbeta,
    # and the running mean and variance as the step found them (restored if it fails)
    void* bn[8]
    double eps
    double momentum
    bint need_grad_in   # whether a layer below has parameters


cdef struct ParamPlan:
    Py_ssize_t size
    double l2           # coupled decay from the layer's L2 penalty (2 lambda; 0 for biases)
    void* value
    void* grad
    void* state[3]


cdef struct Net:
    int n_layers
    LayerPlan* layers
    int n_params
    ParamPlan* params
    Py_ssize_t capacity
    void* ones
    void* xbuf          # (capacity, n_in of layer 0) gathered inputs
    void* tbuf          # (capacity, n_out of last layer) gathered float targets
    int64_t* lbuf       # (capacity,) gathered labels
    uint64_t rng        # dropout's splitmix64 state
    int opt_kind
    double hyper[MAX_HYPER]
    long long step      # optimizer updates made so far
    double mom_scale    # SGD momentum buffers hold b / mom_scale (see _optimizers.pxd)
    bint per_row        # scikit-learn's conventions (Engine.use_per_row_scaling)
    double l2_scale     # the L2 coefficients' factor in the current step (1, or 1/rows)
    double penalty_sum  # per_row: the sum over steps of 0.5 * l2 * |W|^2 before each step


cdef void* data_ptr(object arr):
    """Address of a C-contiguous numpy array's first element (None -> NULL)."""
    if arr is None:
        return NULL
    return <void*> <size_t> arr.__array_interface__["data"][0]


cdef int check_signals() except -1 nogil:
    with gil:
        return PyErr_CheckSignals()


cdef void forward(Net* net, const floating* x, Py_ssize_t n, int n_run, floating* last_out,
                  bint training, int n_threads) noexcept nogil:
    """Run layers [0, n_run) on n rows of x; the last writes to last_out if not NULL.
    Dropout draws masks when `training`, else passes its input through."""
    cdef int l
    cdef LayerPlan* L
    cdef const floating* inp = x
    cdef floating* out
    for l in range(n_run):
        L = &net.layers[l]
        out = last_out if (l == n_run - 1 and last_out != NULL) else <floating*> L.out
        if L.kind == DENSE:
            dense_forward(inp, <floating*> L.weight, <floating*> L.bias, out, <int> n,
                          L.n_in, L.n_out, n_threads)
        elif L.kind == BATCHNORM:
            if training:
                batchnorm_train_forward(inp, out, <floating*> L.weight, <floating*> L.bias,
                                        <floating*> L.bn[2], <floating*> L.bn[3],
                                        <floating*> L.bn[0], <floating*> L.bn[1], n, L.n_out,
                                        L.eps, L.momentum)
            else:
                batchnorm_eval_forward(inp, out, <floating*> L.weight, <floating*> L.bias,
                                       <floating*> L.bn[0], <floating*> L.bn[1], n, L.n_out,
                                       L.eps)
        elif L.kind == DROPOUT:
            if training:
                dropout_forward(inp, out, <floating*> L.mask, n * L.n_out, L.slope, &net.rng)
            else:
                memcpy(out, inp, n * L.n_out * sizeof(floating))
        else:
            activation_forward(L.kind, L.slope, inp, out, n, L.n_out, n_threads)
        inp = out


cdef void* destination(Net* net, int param, bint update, GradientDestination* dest) noexcept nogil:
    """The array that parameter `param`'s gradient product is written to; when training
    (`update`), dest becomes that parameter's destination, alpha and beta."""
    cdef ParamPlan* P
    if param < 0:
        return NULL
    P = &net.params[param]
    if update:
        dest[0] = gradient_destination(net.opt_kind, net.hyper, net.step, P.l2 * net.l2_scale,
                                       net.mom_scale)
    return destination_array(dest.where, P.value, P.grad, P.state[0])


cdef void finish_update(Net* net, int param, GradientDestination dest,
                        floating* tag, int n_threads) noexcept nogil:
    """Complete the optimizer update of parameter `param` (if any)."""
    cdef ParamPlan* P
    if param < 0:
        return
    P = &net.params[param]
    optimizer_finish(net.opt_kind, net.hyper, P.l2 * net.l2_scale, net.step, dest,
                     <floating*> P.value,
                     <floating*> P.grad, <floating*> P.state[0], <floating*> P.state[1],
                     <floating*> P.state[2], P.size, n_threads)


cdef void land(Net* net, int param, const floating* grad, bint update,
               GradientDestination dest, int n_threads) noexcept nogil:
    """Put a gradient computed elementwise (not by a GEMM) where the optimizer wants it,
    dest = alpha * grad + beta * dest, as the GEMM does for Dense; then finish the update."""
    cdef Py_ssize_t i
    cdef floating* target
    cdef floating alpha, beta
    if param < 0:
        return
    target = <floating*> destination(net, param, update, &dest)
    alpha, beta = <floating> dest.alpha, <floating> dest.beta
    for i in range(net.params[param].size):
        target[i] = alpha * grad[i] + (beta * target[i] if beta != 0 else 0)
    if update:
        finish_update(net, param, dest, <floating*> NULL, n_threads)


cdef void backward(Net* net, const floating* x, Py_ssize_t n, int n_run,
                   GradientDestination dest, bint update, int n_threads) noexcept nogil:
    """Backpropagate layers[n_run - 1].grad; each parameter's gradient product lands
    where `dest` says (the gradient arrays, or folded into an optimizer update). With
    `update` (training), each layer's optimizer update is completed as soon as its
    gradient exists, while that layer's arrays are still in cache (lower layers no
    longer need it), and dropout uses its masks; otherwise dropout is the identity."""
    cdef int l
    cdef LayerPlan* L
    cdef const floating* inp
    cdef floating* grad_in
    cdef floating* dest_w
    cdef floating* dest_b
    cdef GradientDestination wdest = dest, bdest = dest
    for l in range(n_run - 1, -1, -1):
        L = &net.layers[l]
        inp = x if l == 0 else <floating*> net.layers[l - 1].out
        grad_in = <floating*> net.layers[l - 1].grad if L.need_grad_in else NULL
        if L.kind == DENSE:
            # weight and bias land alike, but with the L2 term in the weight's beta
            dest_w = <floating*> destination(net, L.weight_param, update, &wdest)
            dest_b = <floating*> destination(net, L.bias_param, update, &bdest)
            dense_backward(inp, <floating*> L.weight, <floating*> L.grad, grad_in, dest_w,
                           dest_b, <floating> wdest.alpha, <floating> wdest.beta,
                           <floating> bdest.beta, <floating*> net.ones, <int> n, L.n_in,
                           L.n_out)
            if update:
                finish_update(net, L.weight_param, wdest, <floating*> NULL, n_threads)
                finish_update(net, L.bias_param, bdest, <floating*> NULL, n_threads)
        elif L.kind == BATCHNORM:
            if update:
                batchnorm_backward(inp, <floating*> L.grad, <floating*> L.weight,
                                   <floating*> L.bn[2], <floating*> L.bn[3],
                                   <floating*> L.bn[4], <floating*> L.bn[5], grad_in, n, L.n_out)
            else:
                batchnorm_eval_backward(inp, <floating*> L.grad, <floating*> L.weight,
                                        <floating*> L.bn[0], <floating*> L.bn[1],
                                        <floating*> L.bn[4], <floating*> L.bn[5], grad_in, n,
                                        L.n_out, L.eps)
            land(net, L.weight_param, <floating*> L.bn[4], update, wdest, n_threads)
            land(net, L.bias_param, <floating*> L.bn[5], update, bdest, n_threads)
        elif grad_in != NULL and L.kind == DROPOUT:
            if update:  # training: the masks of this step's forward pass
                dropout_backward(<floating*> L.grad, <floating*> L.mask, grad_in, n * L.n_out)
            else:       # evaluation: dropout is the identity
                memcpy(grad_in, L.grad, n * L.n_out * sizeof(floating))
        elif grad_in != NULL:
            activation_backward(L.kind, L.slope, inp, <floating*> L.out, <floating*> L.grad,
                                grad_in, n, L.n_out, n_threads)
        if not L.need_grad_in:
            break


cdef void unscale_momentum(Net* net, floating* tag) noexcept nogil:
    """Fold the momentum scale into the buffers (c *= s), so they hold torch's b again."""
    cdef Py_ssize_t i, j, size
    cdef floating s = <floating> net.mom_scale
    cdef floating* buf
    if net.mom_scale != 1.0 and uses_scaled_momentum(net.opt_kind, net.hyper):
        for i in range(net.n_params):
            buf = <floating*> net.params[i].state[0]
            size = net.params[i].size
            for j in range(size):
                buf[j] = buf[j] * s
    net.mom_scale = 1.0


cdef void keep_running_stats(Net* net, bint restore, floating* tag) noexcept nogil:
    """Copy batch norm's running statistics aside before a training step (restore=False),
    or back when the step's loss was not finite (restore=True), so a failed step leaves
    them as they were, like the parameters."""
    cdef int l
    cdef LayerPlan* L
    cdef size_t size
    for l in range(net.n_layers):
        L = &net.layers[l]
        if L.kind == BATCHNORM:
            size = L.n_out * sizeof(floating)
            if restore:
                memcpy(L.bn[0], L.bn[6], size)
                memcpy(L.bn[1], L.bn[7], size)
            else:
                memcpy(L.bn[6], L.bn[0], size)
                memcpy(L.bn[7], L.bn[1], size)


cdef void gather(const floating* src, const int64_t* order, Py_ssize_t start, Py_ssize_t n,
                 Py_ssize_t width, floating* dst) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        memcpy(dst + i * width, src + order[start + i] * width, width * sizeof(floating))


cdef double loss_scale(int loss_kind, Py_ssize_t n, Py_ssize_t width,
                       bint per_row) noexcept nogil:
    """The factor that turns summed losses into the mean (reduction "mean"); per_row
    (scikit-learn): the mean over rows of the sum over outputs, and half the squares."""
    if per_row:
        return 0.5 / n if loss_kind == MSE else 1.0 / n
    if loss_kind == CROSS_ENTROPY_LABELS or loss_kind == CROSS_ENTROPY_PROBS:
        return 1.0 / n
    return 1.0 / (n * width)


cdef double half_l2_penalty(Net* net, floating* tag) noexcept nogil:
    """0.5 * sum over penalised parameters of l2 * |W|^2 (scikit-learn's alpha term)."""
    cdef Py_ssize_t i
    cdef double total = 0
    for i in range(net.n_params):
        if net.params[i].l2 != 0:
            total += 0.5 * net.params[i].l2 * sum_of_squares(
                <int> net.params[i].size, <floating*> net.params[i].value)
    return total


cdef int train_epoch(Net* net, const floating* X, const floating* T, const int64_t* labels,
                     const int64_t* order, Py_ssize_t n_samples, Py_ssize_t batch_size,
                     int loss_kind, int n_run, double* loss_sum,
                     Py_ssize_t* failed_batch, int n_threads) except -1 nogil:
    """One epoch of mini-batch training; returns 1 if a batch's loss was not finite."""
    cdef LayerPlan* last = &net.layers[n_run - 1]
    cdef Py_ssize_t width = last.n_out, n_in = net.layers[0].n_in
    cdef Py_ssize_t start, n, i, batch = 0
    cdef const floating* xb
    cdef const floating* tb = NULL
    cdef const int64_t* lb = NULL
    cdef double batch_loss
    cdef GradientDestination dest    # backward sets it per parameter from the optimizer
    dest.where, dest.alpha, dest.beta = TO_GRAD, 1.0, 0.0
    start = 0
    while start < n_samples:
        check_signals()
        n = min(batch_size, n_samples - start)
        if order != NULL:
            gather(X, order, start, n, n_in, <floating*> net.xbuf)
            xb = <floating*> net.xbuf
            if T != NULL:
                gather(T, order, start, n, width, <floating*> net.tbuf)
                tb = <floating*> net.tbuf
            if labels != NULL:
                for i in range(n):
                    net.lbuf[i] = labels[order[start + i]]
                lb = net.lbuf
        else:
            xb = X + start * n_in
            if T != NULL:
                tb = T + start * width
            if labels != NULL:
                lb = labels + start
        keep_running_stats(net, False, <floating*> NULL)
        forward(net, xb, n, n_run, <floating*> NULL, True, n_threads)
        batch_loss = loss_forward_backward(
            loss_kind, <floating*> last.out, tb, lb, <floating*> last.grad, n, width,
            <floating> loss_scale(loss_kind, n, width, net.per_row), n_threads)
        if not isfinite(batch_loss):
            keep_running_stats(net, True, <floating*> NULL)
            failed_batch[0] = batch
            return 1
        loss_sum[0] += batch_loss
        if net.per_row:
            net.l2_scale = 1.0 / n
            net.penalty_sum += half_l2_penalty(net, <floating*> NULL)
        if net.mom_scale * net.hyper[1] < 1e-3:  # keep alpha = (1 - d) / s moderate
            unscale_momentum(net, <floating*> NULL)
        backward(net, xb, n, n_run, dest, True, n_threads)
        if uses_scaled_momentum(net.opt_kind, net.hyper):
            net.mom_scale = net.mom_scale * net.hyper[1] if net.step > 0 else 1.0
        net.step += 1
        start += n
        batch += 1
    return 0


cdef int run_batches(Net* net, const floating* X, const floating* T, const int64_t* labels,
                     Py_ssize_t n_samples, int n_run, floating* out, int loss_kind,
                     bint want_grads, double* loss_sum, Py_ssize_t* correct,
                     int n_threads) except -1 nogil:
    """Predict into `out`, or evaluate the loss (and its gradient, summed into the
    parameters' gradient arrays as the gradient of the mean over all n_samples)."""
    cdef LayerPlan* last = &net.layers[n_run - 1]
    cdef Py_ssize_t width = last.n_out, n_in = net.layers[0].n_in
    cdef Py_ssize_t start = 0, n, i
    cdef const floating* tb
    cdef const int64_t* lb
    cdef floating scale = <floating> loss_scale(loss_kind, n_samples, width, net.per_row)
    cdef GradientDestination dest
    dest.where, dest.alpha, dest.beta = TO_GRAD, 1.0, 0.0
    while start < n_samples:
        check_signals()
        n = min(net.capacity, n_samples - start)
        forward(net, X + start * n_in, n, n_run,
                (out + start * width) if out != NULL else <floating*> NULL, False, n_threads)
        if loss_kind >= 0:
            tb = (T + start * width) if T != NULL else NULL
            lb = (labels + start) if labels != NULL else NULL
            loss_sum[0] += loss_forward_backward(
                loss_kind, <floating*> last.out, tb, lb,
                <floating*> last.grad if want_grads else <floating*> NULL, n, width, scale,
                n_threads)
            correct[0] += count_correct(loss_kind, <floating*> last.out, tb, lb, n, width)
            if want_grads:
                dest.beta = 0.0 if start == 0 else 1.0
                backward(net, X + start * n_in, n, n_run, dest, False, n_threads)
        start += n
    if want_grads:  # the L2 penalty's gradient, l2 * W, once for the whole mean
        for i in range(net.n_params):
            if net.params[i].l2 != 0:
                axpy(<int> net.params[i].size,
                     <floating> (net.params[i].l2 / n_samples if net.per_row
                                 else net.params[i].l2),
                     <floating*> net.params[i].value, <floating*> net.params[i].grad)
    return 0


cdef class Engine:
    """Compiled plan of a Sequential model: layer kinds, parameter pointers, buffers.

    specs: one tuple (kind, n_in, n_out, slope, weight, bias, l2, extra) per layer, with
    weight and bias C-contiguous arrays of `dtype` (None for layers without them), used
    in place, l2 the coefficient c of the weight's penalty gradient c * W (2 lambda), and
    extra a dict of layer-specific settings (batch norm: eps, momentum, running_mean,
    running_var; the running statistics are updated in place) or None.
    The gradient arrays, in parameter order, are `self.grads`.
    """
    cdef Net net
    cdef readonly object dtype
    cdef readonly list grads
    cdef list _keep      # every array whose pointer the plan holds
    cdef list _buffers

    def __cinit__(self, list specs, dtype):
        cdef LayerPlan* L
        cdef bint below_has_params = False
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"Engine dtype must be float32 or float64, not {self.dtype}")
        n = len(specs)
        self.net.n_layers = n
        self.net.layers = <LayerPlan*> calloc(max(n, 1), sizeof(LayerPlan))
        self.net.params = NULL
        self.net.capacity = 0
        self.net.l2_scale = 1.0
        if self.net.layers == NULL:
            raise MemoryError()
        self.grads = []
        self._keep = []
        self._buffers = []
        params = []
        for l, (kind, n_in, n_out, slope, weight, bias, l2, extra) in enumerate(specs):
            L = &self.net.layers[l]
            L.kind, L.n_in, L.n_out, L.slope = kind, n_in, n_out, slope
            if kind == BATCHNORM:
                L.eps, L.momentum = extra["eps"], extra["momentum"]
                scratch = [extra["running_mean"], extra["running_var"]] + [
                    np.zeros(n_out, dtype=self.dtype) for _ in range(6)]
                for k, arr in enumerate(scratch):
                    if arr.dtype != self.dtype or not arr.flags.c_contiguous \
                            or arr.shape != (n_out,):
                        raise TypeError("batch-norm statistics must match the layer")
                    L.bn[k] = data_ptr(arr)
                self._keep.extend(scratch)
            L.weight, L.bias = data_ptr(weight), data_ptr(bias)
            L.weight_param = L.bias_param = -1
            L.need_grad_in = below_has_params
            for arr in (weight, bias):
                if arr is None:
                    continue
                if arr.dtype != self.dtype or not arr.flags.c_contiguous:
                    raise TypeError("parameters must be C-contiguous arrays of the engine dtype")
                grad = np.zeros_like(arr)
                params.append((arr, grad, l2 if arr is weight else 0.0))
                self.grads.append(grad)
                self._keep.append(arr)
                below_has_params = True
                if arr is weight:
                    L.weight_param = len(params) - 1
                else:
                    L.bias_param = len(params) - 1
        self.net.n_params = len(params)
        self.net.params = <ParamPlan*> calloc(max(len(params), 1), sizeof(ParamPlan))
        if self.net.params == NULL:
            raise MemoryError()
        for i, (value, grad, l2) in enumerate(params):
            self.net.params[i].size = value.size
            self.net.params[i].l2 = l2
            self.net.params[i].value = data_ptr(value)
            self.net.params[i].grad = data_ptr(grad)

    def __dealloc__(self):
        free(self.net.layers)
        free(self.net.params)

    @property
    def capacity(self):
        return self.net.capacity

    def reserve(self, Py_ssize_t capacity):
        """Make the buffers hold at least `capacity` rows (no-op if they already do)."""
        if capacity <= self.net.capacity:
            return
        cdef LayerPlan* layers = self.net.layers
        cdef int l, n = self.net.n_layers
        buffers = []
        for l in range(n):
            layers[l].out = self._block(buffers, capacity, layers[l].n_out, self.dtype)
            layers[l].grad = self._block(buffers, capacity, layers[l].n_out, self.dtype)
            layers[l].mask = self._block(buffers, capacity, layers[l].n_out, self.dtype) \
                if layers[l].kind == DROPOUT else NULL
        self.net.xbuf = self._block(buffers, capacity, layers[0].n_in, self.dtype)
        self.net.tbuf = self._block(buffers, capacity, layers[n - 1].n_out, self.dtype)
        self.net.lbuf = <int64_t*> self._block(buffers, capacity, 1, np.int64)
        self.net.ones = self._block(buffers, capacity, 1, self.dtype)
        buffers[len(buffers) - 1].fill(1)
        self._buffers = buffers
        self.net.capacity = capacity

    def use_per_row_scaling(self, bint per_row):
        """scikit-learn's MLP conventions (True) or torch's (False, the default).

        per_row: loss gradients are those of the mean over rows of the per-row sum over
        outputs (half the squares for MSE); each L2 coefficient is divided by the rows of
        the step's batch; and every training step adds 0.5 * l2 * |W|^2 (parameters as the
        step found them) to `penalty_sum`."""
        self.net.per_row = per_row
        self.net.l2_scale = 1.0

    @property
    def penalty_sum(self):
        """Summed over training steps since the last reset (per_row only), see above."""
        return self.net.penalty_sum

    def reset_penalty_sum(self):
        self.net.penalty_sum = 0

    def seed_dropout(self, uint64_t seed):
        """Restart the dropout mask stream from `seed` (fit does so every epoch)."""
        self.net.rng = seed

    @property
    def step(self):
        """Optimizer updates made so far (kept when a step is interrupted)."""
        return self.net.step

    def set_optimizer(self, int kind, hyper, list states, long long step):
        """Select the update kernel, its hyperparameters, each parameter's state arrays and
        the number of updates already made."""
        if len(hyper) > MAX_HYPER:
            raise ValueError(f"at most {MAX_HYPER} optimizer hyperparameters")
        if len(states) != self.net.n_params:
            raise ValueError(f"expected state for {self.net.n_params} parameters")
        self.net.opt_kind = kind
        self.net.step = step
        self.net.mom_scale = 1.0
        for i in range(MAX_HYPER):  # unset trailing flags read as 0
            self.net.hyper[i] = hyper[i] if i < len(hyper) else 0.0
        for i, state in enumerate(states):
            for j in range(3):
                arr = state[j] if j < len(state) else None
                if arr is not None and (arr.dtype != self.dtype or not arr.flags.c_contiguous
                                        or arr.size != self.net.params[i].size):
                    raise TypeError("optimizer state must match its parameter")
                self.net.params[i].state[j] = data_ptr(arr)
        self._keep.append(states)

    def train_epoch(self, X, targets, labels, order, Py_ssize_t batch_size, int loss_kind,
                    int n_run):
        """Train on the rows X[order] (all of X, in order, when order is None) in batches.

        Returns (loss_sum, index of the batch whose loss was not finite, or -1). Raises
        KeyboardInterrupt (or another signal's error) between steps."""
        cdef Py_ssize_t n_samples = X.shape[0] if order is None else order.shape[0]
        cdef void* x = data_ptr(X)
        cdef void* t = data_ptr(targets)
        cdef int64_t* lab = <int64_t*> data_ptr(labels)
        cdef int64_t* ordp = <int64_t*> data_ptr(order)
        cdef double loss_sum = 0
        cdef Py_ssize_t failed = -1
        cdef int status
        self._check_run(X, n_run)
        if order is not None and (order.dtype != np.int64 or not order.flags.c_contiguous):
            raise TypeError("order must be a C-contiguous int64 array")
        self.reserve(batch_size)
        try:
            if self.dtype == np.float64:
                with nogil:
                    status = train_epoch(&self.net, <double*> x, <double*> t, lab, ordp,
                                         n_samples, batch_size, loss_kind, n_run, &loss_sum,
                                         &failed, STEP_THREADS)
            else:
                with nogil:
                    status = train_epoch(&self.net, <float*> x, <float*> t, lab, ordp,
                                         n_samples, batch_size, loss_kind, n_run, &loss_sum,
                                         &failed, STEP_THREADS)
        finally:  # however it ends, the momentum buffers hold torch's b again
            if self.dtype == np.float64:
                unscale_momentum(&self.net, <double*> NULL)
            else:
                unscale_momentum(&self.net, <float*> NULL)
        return loss_sum, failed if status else -1

    def run(self, X, out, targets, labels, int loss_kind, bint want_grads, int n_run,
            Py_ssize_t batch_size):
        """Predict into `out` (loss_kind -1) or evaluate the loss over X in batches;
        with want_grads, the gradients of the mean loss land in self.grads.
        Returns (loss_sum, n_correct)."""
        cdef Py_ssize_t n_samples = X.shape[0]
        cdef void* x = data_ptr(X)
        cdef void* o = data_ptr(out)
        cdef void* t = data_ptr(targets)
        cdef int64_t* lab = <int64_t*> data_ptr(labels)
        cdef double loss_sum = 0
        cdef Py_ssize_t correct = 0
        self._check_run(X, n_run)
        self.reserve(batch_size)
        if self.dtype == np.float64:
            with nogil:
                run_batches(&self.net, <double*> x, <double*> t, lab, n_samples, n_run,
                            <double*> o, loss_kind, want_grads, &loss_sum, &correct,
                            STEP_THREADS)
        else:
            with nogil:
                run_batches(&self.net, <float*> x, <float*> t, lab, n_samples, n_run,
                            <float*> o, loss_kind, want_grads, &loss_sum, &correct,
                            STEP_THREADS)
        return loss_sum, correct

    cdef void* _block(self, list buffers, Py_ssize_t n_rows, Py_ssize_t width, dtype):
        """A new zeroed (n_rows, width) buffer, kept alive in `buffers`."""
        arr = np.zeros((n_rows, width), dtype=dtype)
        buffers.append(arr)
        return data_ptr(arr)

    cdef _check_run(self, X, int n_run):
        if not 1 <= n_run <= self.net.n_layers:
            raise ValueError(f"n_run must be in [1, {self.net.n_layers}], got {n_run}")
        if X.dtype != self.dtype or not X.flags.c_contiguous or X.ndim != 2 \
                or X.shape[1] != self.net.layers[0].n_in:
            raise TypeError("X must be a C-contiguous 2-D array of the engine dtype")
