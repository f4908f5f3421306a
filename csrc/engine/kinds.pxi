# The layer kinds: which file's passes run for each kind. Each kind defines, in its own
# file, everything the engine does with it: its training passes (forward, backward, the
# layout each wants and leaves), its predict on the plan's blocks, and its tangents for
# forward and reverse mode. A new kind is a file of those functions, its code in
# _kinds.pxd and fastnn's name for it (LAYER_KINDS), and a line in each function here.
#
#   Dense                                dense.pxi
#   BatchNorm1d                          batchnorm.pxi
#   LayerNorm                            layernorm.pxi
#   a residual block's BEGIN and END     residual.pxi (predicts: forward_split, small.pxi)
#   Embedding (the first layer)          embedding.pxi
#   Softmax (an activation on rows)      elementwise.pxi
#   ReLU, LeakyReLU, Sigmoid, Tanh,
#   Dropout, Identity                    elementwise.pxi


cdef inline void layer_forward(LayerPlan* L, Pass* s, const floating* inp,
                               floating* out) noexcept nogil:
    """The thread's part of L's forward pass on s.n rows: a barrier first where L reads
    what other threads wrote; s.layout says how the thread wrote `out`."""
    if L.kind == DENSE:
        dense_forward_pass(L, s, inp, out)
    elif L.kind == BATCHNORM:
        batchnorm_forward_pass(L, s, inp, out)
    elif L.kind == LAYERNORM:
        layernorm_forward_pass(L, s, inp, out)
    elif L.kind == RESIDUAL_BEGIN or L.kind == RESIDUAL_END:
        residual_forward_pass(L, s, inp, out)
    elif L.kind == EMBEDDING:
        embedding_forward_pass(L, s, inp, out)
    elif L.kind == SOFTMAX:
        softmax_forward_pass(L, s, inp, out)
    else:
        elementwise_forward_pass(L, s, inp, out)


cdef inline void layer_backward(LayerPlan* L, Pass* s, const floating* inp,
                                const floating* g, floating* grad_in) noexcept nogil:
    """The thread's part of L's backward pass: from g = dL/d(out), its parameters'
    gradients landed where the optimizer wants them (s.update) or in the gradient arrays,
    and the input gradient into grad_in (NULL: no layer below needs it)."""
    if L.kind == DENSE:
        dense_backward_pass(L, s, inp, g, grad_in)
    elif L.kind == BATCHNORM:
        batchnorm_backward_pass(L, s, inp, g, grad_in)
    elif L.kind == LAYERNORM:
        layernorm_backward_pass(L, s, inp, g, grad_in)
    elif L.kind == RESIDUAL_BEGIN or L.kind == RESIDUAL_END:
        residual_backward_pass(L, s, inp, g, grad_in)
    elif L.kind == EMBEDDING:
        embedding_backward_pass(L, s, inp, g)
    elif L.kind == SOFTMAX:
        softmax_backward_pass(L, s, inp, g, grad_in)
    else:
        elementwise_backward_pass(L, s, inp, g, grad_in)


cdef inline bint layer_in_place(const LayerPlan* L) noexcept nogil:
    """Whether a predict may write L's output over its input (every kind but Dense and
    Embedding, whose widths change)."""
    return L.kind != DENSE and L.kind != EMBEDDING


cdef inline void layer_predict(LayerPlan* L, const floating* inp, floating* dst,
                               Py_ssize_t n, int tid, int nt, int nv, bint row_gemv,
                               int* layout) noexcept nogil:
    """Thread tid of nt's part of L in a predict of n rows planned as nv blocks."""
    if L.kind == DENSE:
        dense_predict(L, inp, dst, n, tid, nt, nv, row_gemv, layout)
    elif L.kind == BATCHNORM:
        batchnorm_predict(L, inp, dst, n, tid, nt, layout)
    elif L.kind == LAYERNORM:
        layernorm_predict(L, inp, dst, n, tid, nt, layout)
    elif L.kind == EMBEDDING:
        embedding_predict(L, inp, dst, n, tid, nt, layout)
    elif L.kind == SOFTMAX:
        softmax_predict(L, inp, dst, n, tid, nt, layout)
    else:
        elementwise_predict(L, inp, dst, n, tid, nt, layout)


cdef inline void layer_tangent(LayerPlan* L, const floating* val_in, floating* val_out,
                               const floating* tan_in, floating* tan_out, floating* scratch,
                               Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """Forward mode: n rows of values and their n k tangents (tan_in NULL: zero) through
    L as predict computes it; scratch holds 3 x the widest layer."""
    if L.kind == DENSE:
        dense_tangent(L, val_in, val_out, tan_in, tan_out, scratch, n, k)
    elif L.kind == BATCHNORM:
        batchnorm_tangent(L, val_in, val_out, tan_in, tan_out, scratch, n, k)
    elif L.kind == LAYERNORM:
        layernorm_tangent(L, val_in, val_out, tan_in, tan_out, n, k)
    elif L.kind == RESIDUAL_BEGIN or L.kind == RESIDUAL_END:
        residual_tangent(L, val_in, val_out, tan_in, tan_out, n, k)
    elif L.kind == EMBEDDING:
        embedding_tangent(L, val_in, val_out, tan_in, tan_out, n, k)
    else:
        elementwise_tangent(L, val_in, val_out, tan_in, tan_out, n, k)


cdef inline void layer_cotangent(LayerPlan* L, const floating* val_in,
                                 const floating* val_out, const floating* cot_in,
                                 floating* cot_out, floating* scratch, Py_ssize_t n,
                                 Py_ssize_t k) noexcept nogil:
    """Reverse mode: n k cotangents of L's output back to its input, given L's input and
    output values."""
    if L.kind == DENSE:
        dense_cotangent(L, cot_in, cot_out, n, k)
    elif L.kind == BATCHNORM:
        batchnorm_cotangent(L, val_in, cot_in, cot_out, scratch, n, k)
    elif L.kind == LAYERNORM:
        layernorm_cotangent(L, val_in, cot_in, cot_out, n, k)
    elif L.kind == RESIDUAL_BEGIN or L.kind == RESIDUAL_END:
        residual_cotangent(L, cot_in, cot_out, n, k)
    elif L.kind == EMBEDDING:
        embedding_cotangent(L, cot_in, cot_out, n, k)
    else:
        elementwise_cotangent(L, val_in, val_out, cot_in, cot_out, n, k)
