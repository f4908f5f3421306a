# The forward and backward passes over the layers: each layer's part runs through the
# kind registry (kinds.pxi); the Pass carries the layout the last layer left, so a layer
# meets the other threads at a barrier only where it reads what they wrote.

cdef int forward(Net* net, Counters* c, const floating* x, Py_ssize_t n, int n_run,
                 floating* last_out, bint training, Py_ssize_t row0,
                 const Part* p) noexcept nogil:
    """Run layers [0, n_run) on n rows of x (complete); the last writes to last_out if not
    NULL, the others to rows [row0, row0 + n) of their buffers. Dropout draws masks when
    `training`, else passes its input through. Returns the layout in which the last
    layer's output was written."""
    cdef Pass s = pass_of(net, c, p, n, training)
    cdef const floating* inp = x
    cdef floating* out
    s.row0 = row0
    cdef LayerPlan* L
    cdef int l
    s.f64 = floating is double
    for l in range(n_run):
        L = &net.layers[l]
        out = last_out if (l == n_run - 1 and last_out != NULL) else \
            <floating*> L.out + row0 * L.n_out
        layer_forward(L, &s, inp, out)
        inp = out
    return s.layout


cdef void backward(Net* net, Counters* c, const floating* x, Py_ssize_t n, int n_run,
                   bint update, bint training, double grad_beta,
                   const Part* p) noexcept nogil:
    """Backpropagate layers[n_run - 1].grad (complete); each parameter block's gradient
    lands where the optimizer wants it (update: a training step) or in the gradient arrays
    (beta = grad_beta). With `training` the forward pass ran in training mode: dropout
    uses its masks (else is the identity) and batch norm its batch statistics. Stops
    below the last layer whose input gradient a layer with parameters needs."""
    cdef Pass s = pass_of(net, c, p, n, training)
    cdef const floating* inp
    cdef floating* grad_in
    cdef LayerPlan* L
    cdef int l
    s.f64 = floating is double
    s.update, s.grad_beta = update, grad_beta
    for l in range(n_run - 1, -1, -1):
        L = &net.layers[l]
        inp = x if l == 0 else <floating*> net.layers[l - 1].out
        grad_in = <floating*> net.layers[l - 1].grad if L.need_grad_in else NULL
        layer_backward(L, &s, inp, <floating*> L.grad, grad_in)
        if not L.need_grad_in:
            break
    if s.pending != NULL:
        fastnn_barrier(p.nt)
        run_pending_update(&s)


cdef inline void pass_meet(Pass* s, int wanted) noexcept nogil:
    """A backward pass's sync(): after a barrier, the weight update a Dense layer left
    pending (every thread has read that W for its input gradient by then)."""
    if sync(&s.layout, wanted, s.p.nt) and s.pending != NULL:
        run_pending_update(s)


cdef void run_pending_update(Pass* s) noexcept nogil:
    if s.f64:
        dense_update(s, s.pending, <const double*> s.pending_inp)
    else:
        dense_update(s, s.pending, <const float*> s.pending_inp)
    s.pending = NULL
