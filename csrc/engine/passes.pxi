# The forward and backward passes over the layers: each kind's part, and the barriers
# where a pass reads what another thread wrote.

cdef int forward(Net* net, Counters* c, const floating* x, Py_ssize_t n, int n_run,
                 floating* last_out, bint training, Py_ssize_t row0,
                 const Part* p) noexcept nogil:
    """Run layers [0, n_run) on n rows of x (complete); the last writes to last_out if not
    NULL, the others to rows [row0, row0 + n) of their buffers. Dropout draws masks when
    `training`, else passes its input through. Returns the layout in which the last
    layer's output was written."""
    cdef int l, layout = WHOLE, grid = 1
    cdef LayerPlan* L
    cdef TilePass products
    cdef const floating* inp = x
    cdef floating* out
    cdef Py_ssize_t c0, c1, r0, r1, m
    cdef int v
    for l in range(n_run):
        L = &net.layers[l]
        m = L.n_out
        out = last_out if (l == n_run - 1 and last_out != NULL) else \
            <floating*> L.out + row0 * m
        if L.kind == DENSE:
            sync(&layout, WHOLE, p.nt)
            grid = dense_grid(L, n, p.nv)
            products = tile_pass(TILE_FORWARD, L, inp, NULL, out, n, grid, p.nv, out)
            run_tiles(&products, p, out)
            layout = grid_layout(grid, p.nv)
        elif L.kind == SOFTMAX:  # works on whole rows
            sync(&layout, ROWS, p.nt)
            span(p, n, 1, &c0, &c1)
            activation_forward(SOFTMAX, L.slope, inp + c0 * m, out + c0 * m, c1 - c0, m)
            layout = ROWS
        elif bn_on_rows(L, training, p):
            sync(&layout, ROWS, p.nt)
            batchnorm_rows_forward(L, inp, out, n, p)
            layout = ROWS
        elif L.kind != BATCHNORM and layout != COLS:
            # elementwise, on the rows or tiles this thread wrote (no barrier)
            if layout == TILES:
                for v in range(p.v0, p.v1):
                    tile(v, grid, p.nv, n, m, &r0, &r1, &c0, &c1)
                    elementwise_forward(L, c.rng, inp, out, r0, r1, m, c0, c1, training)
            else:
                layout = ROWS
                span(p, n, 1, &r0, &r1)
                elementwise_forward(L, c.rng, inp, out, r0, r1, m, 0, m, training)
            if L.kind == DROPOUT and training:
                c.rng = dropout_advance(c.rng, n * m)
        else:
            sync(&layout, COLS, p.nt)
            span(p, m, UNIT_ALIGN, &c0, &c1)
            if L.kind == BATCHNORM and c1 > c0:
                if training:
                    batchnorm_train_forward(inp + c0, out + c0, at(L.weight, c0, out),
                                            at(L.bias, c0, out), at(L.batch_mean, c0, out),
                                            at(L.batch_invstd, c0, out), at(L.running_mean, c0, out),
                                            at(L.running_var, c0, out), n, c1 - c0, m, L.eps,
                                            L.momentum)
                else:
                    batchnorm_eval_forward(inp + c0, out + c0, at(L.weight, c0, out),
                                           at(L.bias, c0, out), at(L.running_mean, c0, out),
                                           at(L.running_var, c0, out), n, c1 - c0, m, L.eps)
            elif L.kind != BATCHNORM:
                elementwise_forward(L, c.rng, inp, out, 0, n, m, c0, c1, training)
                if L.kind == DROPOUT and training:
                    c.rng = dropout_advance(c.rng, n * m)
            layout = COLS
        inp = out
    return layout


cdef inline void meet(Net* net, Counters* c, int* layout, int wanted, int* pending,
                      Py_ssize_t n, bint update, double grad_beta, const Part* p,
                      floating* tag) noexcept nogil:
    """sync(); after a barrier, the weight update a Dense layer left pending (every thread
    has read that W for its input-gradient columns by then)."""
    if sync(layout, wanted, p.nt) and pending[0] >= 0:
        dense_update(net, c, pending[0], <floating*> net.layers[pending[0] - 1].out, n,
                     update, grad_beta, p)
        pending[0] = -1


cdef void backward(Net* net, Counters* c, const floating* x, Py_ssize_t n, int n_run,
                   bint update, bint training, double grad_beta,
                   const Part* p) noexcept nogil:
    """Backpropagate layers[n_run - 1].grad (complete); each parameter block's gradient
    lands where the optimizer wants it (update: a training step) or in the gradient arrays
    (beta = grad_beta). With `training` the forward pass ran in training mode: dropout
    uses its masks (else is the identity) and batch norm its batch statistics.

    A Dense layer's weight blocks are updated only after the next barrier: until then
    other threads read all of W for the input gradient of their columns."""
    cdef int l, layout = WHOLE, pending = -1, grid = 1
    cdef LayerPlan* L
    cdef TilePass products
    cdef const floating* inp
    cdef floating* grad_in
    cdef floating* g
    cdef Py_ssize_t c0, c1, r0, r1, m
    cdef int v
    for l in range(n_run - 1, -1, -1):
        L = &net.layers[l]
        m = L.n_out
        g = <floating*> L.grad
        inp = x if l == 0 else <floating*> net.layers[l - 1].out
        grad_in = <floating*> net.layers[l - 1].grad if L.need_grad_in else NULL
        if L.kind == DENSE:
            meet(net, c, &layout, WHOLE, &pending, n, update, grad_beta, p, g)
            if grad_in != NULL:
                grid = dense_grid(L, n, p.nv)
                products = tile_pass(TILE_INPUT_GRAD, L, NULL, g, grad_in, n, grid, p.nv, g)
                run_tiles(&products, p, g)
                pending = l
                layout = grid_layout(grid, p.nv)
            else:
                dense_update(net, c, l, inp, n, update, grad_beta, p)
        elif L.kind == SOFTMAX:
            meet(net, c, &layout, ROWS, &pending, n, update, grad_beta, p, g)
            if grad_in != NULL:
                span(p, n, 1, &c0, &c1)
                activation_backward(SOFTMAX, L.slope, inp + c0 * m,
                                    <floating*> L.out + c0 * m, g + c0 * m, grad_in + c0 * m,
                                    c1 - c0, m)
                layout = ROWS
        elif bn_on_rows(L, training, p):
            meet(net, c, &layout, ROWS, &pending, n, update, grad_beta, p, g)
            batchnorm_rows_backward(net, c, L, inp, g, grad_in, n, update, grad_beta, p)
            layout = ROWS
        elif L.kind != BATCHNORM and (layout == ROWS or layout == TILES):
            # elementwise, on the rows or tiles this thread wrote (no barrier)
            if grad_in != NULL and layout == TILES:
                for v in range(p.v0, p.v1):
                    tile(v, grid, p.nv, n, m, &r0, &r1, &c0, &c1)
                    elementwise_backward(L, inp, g, grad_in, r0, r1, m, c0, c1, training)
            elif grad_in != NULL:
                span(p, n, 1, &r0, &r1)
                elementwise_backward(L, inp, g, grad_in, r0, r1, m, 0, m, training)
        else:
            meet(net, c, &layout, COLS, &pending, n, update, grad_beta, p, g)
            span(p, m, UNIT_ALIGN, &c0, &c1)
            if L.kind == BATCHNORM:
                if c1 > c0 and training:
                    batchnorm_backward(inp + c0, g + c0, at(L.weight, c0, g),
                                       at(L.batch_mean, c0, g), at(L.batch_invstd, c0, g),
                                       at(L.dgamma, c0, g), at(L.dbeta, c0, g),
                                       NULL if grad_in == NULL else grad_in + c0, n, c1 - c0, m)
                elif c1 > c0:
                    batchnorm_eval_backward(inp + c0, g + c0, at(L.weight, c0, g),
                                            at(L.running_mean, c0, g), at(L.running_var, c0, g),
                                            at(L.dgamma, c0, g), at(L.dbeta, c0, g),
                                            NULL if grad_in == NULL else grad_in + c0, n,
                                            c1 - c0, m, L.eps)
                land(net, c, L.weight_param, <floating*> L.dgamma, c0, c1, update, grad_beta)
                land(net, c, L.bias_param, <floating*> L.dbeta, c0, c1, update, grad_beta)
            elif grad_in != NULL:
                elementwise_backward(L, inp, g, grad_in, 0, n, m, c0, c1, training)
            layout = COLS
        if not L.need_grad_in:
            break
    if pending >= 0:
        fastnn_barrier(p.nt)
        dense_update(net, c, pending, <floating*> net.layers[pending - 1].out, n, update,
                     grad_beta, p)
