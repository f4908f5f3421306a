# Forward and reverse mode with respect to the inputs (and forward mode in parameters):
# the passes behind Sequential.jvp, vjp, jacobian and jvp_parameters (fastnn/forward.py).
#
# The network is the function predict computes: batch norm with its running statistics,
# dropout as the identity, a final Softmax or Sigmoid included. Forward mode carries k
# tangents per row beside each row's values through every layer (each kind's tangent,
# kinds.pxi); reverse mode runs the forward pass keeping every layer's output, then
# carries k cotangents per row back to the input. The k tangents (cotangents) of a row are
# rows i k .. i k + k - 1 of an (n k) x width block, so a Dense layer is one product for
# all of them. Rows go in chunks, through buffers allocated once per call; the GIL is
# released for the whole pass, and BLAS runs the products with its own threads (no other
# pool is busy meanwhile).

cdef LayerPlan* tangent_plans(list specs, list directions) except NULL:
    """The layers' plans from their specs (read_spec); directions: per layer (dW, db) or
    None, a direction in parameter space for forward mode."""
    cdef LayerPlan* plans = <LayerPlan*> calloc(max(1, len(specs)), sizeof(LayerPlan))
    if plans == NULL:
        raise MemoryError()
    try:
        for l, spec in enumerate(specs):
            read_spec(&plans[l], spec)
            if directions is not None and directions[l] is not None:
                plans[l].dweight = data_ptr(directions[l][0])
                plans[l].dbias = data_ptr(directions[l][1])
    except BaseException:
        free(plans)
        raise
    return plans


cdef void forward_chunks(LayerPlan* plans, int n_layers, const floating* X,
                         const floating* V, floating* out, floating* JV, Py_ssize_t n_rows,
                         Py_ssize_t k, Py_ssize_t chunk, floating* vals, floating* tans,
                         floating* scratch, Py_ssize_t width) noexcept nogil:
    """Forward mode over all rows, `chunk` rows at a time; vals and tans hold two
    buffers each (chunk x width, chunk k x width)."""
    cdef Py_ssize_t start = 0, n, d = plans[0].n_in, m_out = plans[n_layers - 1].n_out
    cdef int l, flip
    cdef const floating* vin
    cdef const floating* tin
    cdef floating* vout
    cdef floating* tout
    while start < n_rows:
        n = min(chunk, n_rows - start)
        vin = X + start * d
        tin = (V + start * k * d) if V != NULL else NULL
        flip = 0
        for l in range(n_layers):
            if plans[l].kind == RESIDUAL_BEGIN:  # buffers of its own, kept for its END
                vout, tout = <floating*> plans[l].res_val, <floating*> plans[l].res_tan
                layer_tangent(&plans[l], vin, vout, tin, tout, scratch, n, k)
                vin, tin = vout, tout
                continue
            vout = out + start * m_out if l == n_layers - 1 else vals + flip * chunk * width
            tout = JV + start * k * m_out if l == n_layers - 1 \
                else tans + flip * chunk * k * width
            layer_tangent(&plans[l], vin, vout, tin, tout, scratch, n, k)
            vin, tin, flip = vout, tout, 1 - flip
        start += n


cdef void reverse_chunks(LayerPlan* plans, int n_layers, const floating* X,
                         const floating* U, floating* out, floating* grad_X,
                         Py_ssize_t n_rows, Py_ssize_t k, Py_ssize_t chunk,
                         floating** layer_vals, floating* cots, floating* scratch,
                         Py_ssize_t width) noexcept nogil:
    """Reverse mode: each chunk's forward pass keeps every layer's output (layer_vals),
    then its n k cotangents run back to the input."""
    cdef Py_ssize_t start = 0, n, d = plans[0].n_in, m_out = plans[n_layers - 1].n_out
    cdef int l, flip
    cdef const floating* vin
    cdef const floating* cin
    cdef floating* cout
    while start < n_rows:
        n = min(chunk, n_rows - start)
        vin = X + start * d
        for l in range(n_layers):
            layer_tangent(&plans[l], vin, layer_vals[l], <floating*> NULL,
                          scratch + 2 * width, scratch, n, 0)
            vin = layer_vals[l]
        memcpy(out + start * m_out, layer_vals[n_layers - 1], n * m_out * sizeof(floating))
        cin = U + start * k * m_out
        flip = 0
        for l in range(n_layers - 1, -1, -1):
            vin = (X + start * d) if l == 0 else layer_vals[l - 1]
            cout = (grad_X + start * k * d) if l == 0 else cots + flip * chunk * k * width
            layer_cotangent(&plans[l], vin, layer_vals[l], cin, cout, scratch, n, k)
            cin, flip = cout, 1 - flip
        start += n


cdef list residual_buffers(LayerPlan* plans, list specs, Py_ssize_t chunk, Py_ssize_t k,
                           dtype, bint forward):
    """Residual blocks' buffers that outlive their blocks: forward mode, each BEGIN's
    values and tangents (chunk x width, chunk k x width); reverse mode, each END's copy of
    its cotangents (chunk k x width). Returns the arrays (the caller keeps them)."""
    kept = []
    for l, spec in enumerate(specs):
        if forward and spec[0] == RESIDUAL_BEGIN:
            values = np.empty(chunk * spec[2], dtype=dtype)
            tangents = np.empty(max(1, chunk * k * spec[2]), dtype=dtype)
            plans[l].res_val, plans[l].res_tan = data_ptr(values), data_ptr(tangents)
            kept += [values, tangents]
        elif not forward and spec[0] == RESIDUAL_END:
            tangents = np.empty(max(1, chunk * k * spec[2]), dtype=dtype)
            plans[l].res_tan = data_ptr(tangents)
            kept.append(tangents)
    return kept


def _width(list specs):
    return max([specs[0][1]] + [s[2] for s in specs])


def forward_mode(list specs, X, V, Py_ssize_t k, Py_ssize_t chunk, list directions=None):
    """(out (n, n_out), JV (n k, n_out)): the values and their derivatives along the k
    tangents of each row, V (n k, n_features) (None: only parameter directions, given
    per layer as (dW, db) or None). X, V and the directions C-contiguous, the model's
    dtype."""
    cdef LayerPlan* plans = tangent_plans(specs, directions)
    cdef Py_ssize_t n_rows = X.shape[0], width = _width(specs)
    n_layers = len(specs)
    dtype = X.dtype
    out = np.empty((n_rows, specs[len(specs) - 1][2]), dtype=dtype)
    JV = np.empty((n_rows * k, specs[len(specs) - 1][2]), dtype=dtype)
    vals = np.empty(2 * chunk * width, dtype=dtype)
    tans = np.empty(2 * chunk * k * width, dtype=dtype)
    scratch = np.empty(3 * width, dtype=dtype)
    kept = residual_buffers(plans, specs, chunk, k, dtype, True)
    cdef void* px = data_ptr(X)
    cdef void* pv = data_ptr(V)
    cdef void* po = data_ptr(out)
    cdef void* pj = data_ptr(JV)
    cdef void* pvals = data_ptr(vals)
    cdef void* ptans = data_ptr(tans)
    cdef void* ps = data_ptr(scratch)
    cdef int nl = n_layers
    cdef bint f64 = dtype == np.float64
    try:
        with nogil:
            if f64:
                forward_chunks(plans, nl, <double*> px, <double*> pv, <double*> po,
                               <double*> pj, n_rows, k, chunk, <double*> pvals,
                               <double*> ptans, <double*> ps, width)
            else:
                forward_chunks(plans, nl, <float*> px, <float*> pv, <float*> po,
                               <float*> pj, n_rows, k, chunk, <float*> pvals,
                               <float*> ptans, <float*> ps, width)
    finally:
        free(plans)
    return out, JV


def reverse_mode(list specs, X, U, Py_ssize_t k, Py_ssize_t chunk):
    """(out (n, n_out), grad (n k, n_features)): the values and U^T J for the k
    cotangents of each row, U (n k, n_out)."""
    cdef LayerPlan* plans = tangent_plans(specs, None)
    cdef Py_ssize_t n_rows = X.shape[0], width = _width(specs)
    cdef int l, nl = len(specs)
    dtype = X.dtype
    out = np.empty((n_rows, specs[len(specs) - 1][2]), dtype=dtype)
    grad = np.empty((n_rows * k, specs[0][1]), dtype=dtype)
    layer_arrays = [np.empty(chunk * s[2], dtype=dtype) for s in specs]
    cots = np.empty(2 * chunk * k * width, dtype=dtype)
    scratch = np.empty(3 * width, dtype=dtype)
    kept = residual_buffers(plans, specs, chunk, k, dtype, False)
    cdef void** layer_vals = <void**> calloc(nl, sizeof(void*))
    if layer_vals == NULL:
        free(plans)
        raise MemoryError()
    for l in range(nl):
        layer_vals[l] = data_ptr(layer_arrays[l])
        if plans[l].kind == RESIDUAL_BEGIN:  # its END reads the block's input there
            plans[l].res_val = layer_vals[l]
    cdef void* px = data_ptr(X)
    cdef void* pu = data_ptr(U)
    cdef void* po = data_ptr(out)
    cdef void* pg = data_ptr(grad)
    cdef void* pc = data_ptr(cots)
    cdef void* ps = data_ptr(scratch)
    cdef bint f64 = dtype == np.float64
    try:
        with nogil:
            if f64:
                reverse_chunks(plans, nl, <double*> px, <double*> pu, <double*> po,
                               <double*> pg, n_rows, k, chunk, <double**> layer_vals,
                               <double*> pc, <double*> ps, width)
            else:
                reverse_chunks(plans, nl, <float*> px, <float*> pu, <float*> po,
                               <float*> pg, n_rows, k, chunk, <float**> layer_vals,
                               <float*> pc, <float*> ps, width)
    finally:
        free(plans)
        free(layer_vals)
    return out, grad
