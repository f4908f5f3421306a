"""Forward and reverse mode with respect to the inputs (and forward mode in parameters):
the passes behind Sequential.jvp, vjp, jacobian and jvp_parameters (fastnn/forward.py).

The network is the function predict computes: batch norm with its running statistics,
dropout as the identity, a final Softmax or Sigmoid included.

- Forward mode carries, beside each row's values, k tangents per row through every
  layer: Dense maps a tangent t to t W^T (plus a_in dW^T + db along a parameter
  direction), an elementwise activation multiplies it by f'(z), softmax applies its row
  Jacobian diag(s) - s s^T, batch norm scales it by gamma / sqrt(running_var + eps) (plus
  dgamma * xhat + dbeta along a direction). Every Jacobian of an activation is symmetric,
  so the kernels that apply J^T in backpropagation (activation_backward) apply J here.
- Reverse mode runs the forward pass keeping every layer's output, then carries k
  cotangents per row back to the input: Dense u -> u W, the activations J^T u.
- The k tangents (cotangents) of a row are rows i*k .. i*k+k-1 of a (n k) x width block,
  so a Dense layer is one matrix product for all of them.

Rows are processed in chunks of `chunk` rows, with buffers allocated once per call; the
GIL is released for the whole pass. BLAS runs the products with its own threads (no
other pool is busy meanwhile).
"""
from cython cimport floating
from libc.math cimport sqrt
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy

import numpy as np

from _activations cimport activation_backward, activation_forward
from _batchnorm cimport batchnorm_eval_backward, batchnorm_eval_forward
from _dense cimport dense_forward, dense_input_grad
from _kinds cimport BATCHNORM, DENSE, DROPOUT, IDENTITY


cdef struct Plan:
    int kind
    int n_in
    int n_out
    double slope
    void* weight        # Dense: W (n_out, n_in); batch norm: gamma (or NULL)
    void* bias          # Dense: b (or NULL); batch norm: beta (or NULL)
    void* mean          # batch norm: running mean and variance
    void* var
    double eps
    void* dweight       # a direction in parameter space (forward mode in parameters)
    void* dbias


cdef void* pointer(object arr):
    if arr is None:
        return NULL
    return <void*> <size_t> arr.__array_interface__["data"][0]


cdef Plan* make_plans(list specs, list directions, list keep) except NULL:
    """The layers' plans from Engine-style specs; directions: per layer (dW, db) or None."""
    cdef Plan* plans = <Plan*> calloc(max(1, len(specs)), sizeof(Plan))
    if plans == NULL:
        raise MemoryError()
    for l, (kind, n_in, n_out, slope, weight, bias, _, extra) in enumerate(specs):
        plans[l].kind, plans[l].n_in, plans[l].n_out, plans[l].slope = kind, n_in, n_out, slope
        plans[l].weight, plans[l].bias = pointer(weight), pointer(bias)
        if kind == BATCHNORM:
            plans[l].mean = pointer(extra["running_mean"])
            plans[l].var = pointer(extra["running_var"])
            plans[l].eps = extra["eps"]
        if directions is not None and directions[l] is not None:
            plans[l].dweight = pointer(directions[l][0])
            plans[l].dbias = pointer(directions[l][1])
        keep.append((weight, bias, extra))
    return plans


cdef void tangent_layer(Plan* L, const floating* val_in, floating* val_out,
                        const floating* tan_in, floating* tan_out, floating* scratch,
                        Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """One layer on n rows of values and their n k tangents (tan_in NULL: all zero)."""
    cdef Py_ssize_t i, j, m = L.n_out, size = n * k * m
    cdef floating invstd
    if L.kind == DENSE:
        dense_forward(val_in, <floating*> L.weight, <floating*> L.bias, val_out, <int> n,
                      L.n_in, L.n_out, L.n_out)
        if tan_in != NULL:
            dense_forward(tan_in, <floating*> L.weight, <floating*> NULL, tan_out,
                          <int> (n * k), L.n_in, L.n_out, L.n_out)
        else:
            for i in range(size):
                tan_out[i] = 0
        if L.dweight != NULL:  # + a_in dW^T + db, the same for each of a row's k tangents
            for i in range(n):
                for j in range(k):
                    dense_forward(val_in + i * L.n_in, <floating*> L.dweight,
                                  <floating*> NULL, scratch, 1, L.n_in, L.n_out, L.n_out)
                    add_row(tan_out + (i * k + j) * m, scratch, <floating*> L.dbias, m)
        return
    if L.kind == BATCHNORM:
        batchnorm_eval_forward(val_in, val_out, <floating*> L.weight, <floating*> L.bias,
                               <floating*> L.mean, <floating*> L.var, n, m, m, L.eps)
        for i in range(n):
            for j in range(k):
                if tan_in != NULL:  # scratch: the dgamma/dbeta sums it also makes, unused
                    batchnorm_eval_backward(val_in + i * m, tan_in + (i * k + j) * m,
                                            <floating*> L.weight, <floating*> L.mean,
                                            <floating*> L.var, scratch, scratch + m,
                                            tan_out + (i * k + j) * m, 1, m, m, L.eps)
                else:
                    zero(tan_out + (i * k + j) * m, m)
                if L.dweight != NULL or L.dbias != NULL:
                    bn_direction(L, val_in + i * m, tan_out + (i * k + j) * m, m)
        return
    if L.kind == DROPOUT or L.kind == IDENTITY:
        memcpy(val_out, val_in, n * m * sizeof(floating))
        if tan_in != NULL:
            memcpy(tan_out, tan_in, size * sizeof(floating))
        else:
            zero(tan_out, size)
        return
    activation_forward(L.kind, L.slope, val_in, val_out, n, m)
    for i in range(n):
        for j in range(k):
            if tan_in != NULL:
                activation_backward(L.kind, L.slope, val_in + i * m, val_out + i * m,
                                    tan_in + (i * k + j) * m, tan_out + (i * k + j) * m, 1, m)
            else:
                zero(tan_out + (i * k + j) * m, m)


cdef inline void add_row(floating* dst, const floating* src, const floating* bias,
                         Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(m):
        dst[j] += src[j] + (bias[j] if bias != NULL else 0)


cdef inline void zero(floating* dst, Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(m):
        dst[j] = 0


cdef void bn_direction(Plan* L, const floating* x, floating* t, Py_ssize_t m) noexcept nogil:
    """t += dgamma * xhat + dbeta for one row (batch norm with running statistics)."""
    cdef Py_ssize_t j
    cdef floating xhat
    for j in range(m):
        xhat = <floating> ((x[j] - (<floating*> L.mean)[j])
                           / sqrt((<floating*> L.var)[j] + L.eps))
        if L.dweight != NULL:
            t[j] += (<floating*> L.dweight)[j] * xhat
        if L.dbias != NULL:
            t[j] += (<floating*> L.dbias)[j]


cdef void forward_chunks(Plan* plans, int n_layers, const floating* X, const floating* V,
                         floating* out, floating* JV, Py_ssize_t n_rows, Py_ssize_t k,
                         Py_ssize_t chunk, floating* vals, floating* tans,
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
            vout = out + start * m_out if l == n_layers - 1 else vals + flip * chunk * width
            tout = JV + start * k * m_out if l == n_layers - 1 \
                else tans + flip * chunk * k * width
            tangent_layer(&plans[l], vin, vout, tin, tout, scratch, n, k)
            vin, tin, flip = vout, tout, 1 - flip
        start += n


cdef void reverse_chunks(Plan* plans, int n_layers, const floating* X, const floating* U,
                         floating* out, floating* grad_X, Py_ssize_t n_rows, Py_ssize_t k,
                         Py_ssize_t chunk, floating** layer_vals, floating* cots,
                         floating* scratch, Py_ssize_t width) noexcept nogil:
    """Reverse mode: each chunk's forward pass keeps every layer's output (layer_vals),
    then its n k cotangents run back to the input."""
    cdef Py_ssize_t start = 0, n, i, j, d = plans[0].n_in, m_out = plans[n_layers - 1].n_out
    cdef Py_ssize_t m
    cdef int l, flip
    cdef const floating* vin
    cdef const floating* cin
    cdef floating* cout
    cdef Plan* L
    while start < n_rows:
        n = min(chunk, n_rows - start)
        vin = X + start * d
        for l in range(n_layers):
            tangent_layer(&plans[l], vin, layer_vals[l], <floating*> NULL, scratch + 2 * width,
                          scratch, n, 0)
            vin = layer_vals[l]
        memcpy(out + start * m_out, layer_vals[n_layers - 1], n * m_out * sizeof(floating))
        cin = U + start * k * m_out
        flip = 0
        for l in range(n_layers - 1, -1, -1):
            L = &plans[l]
            m = L.n_out
            vin = (X + start * d) if l == 0 else layer_vals[l - 1]
            cout = (grad_X + start * k * d) if l == 0 else cots + flip * chunk * k * width
            if L.kind == DENSE:
                dense_input_grad(cin, <floating*> L.weight, cout, <int> (n * k), L.n_in,
                                 L.n_in, L.n_out)
            elif L.kind == DROPOUT or L.kind == IDENTITY:
                memcpy(cout, cin, n * k * m * sizeof(floating))
            else:
                for i in range(n):
                    for j in range(k):
                        if L.kind == BATCHNORM:
                            batchnorm_eval_backward(vin + i * m, cin + (i * k + j) * m,
                                                    <floating*> L.weight, <floating*> L.mean,
                                                    <floating*> L.var, scratch, scratch + m,
                                                    cout + (i * k + j) * m, 1, m, m, L.eps)
                        else:
                            activation_backward(L.kind, L.slope, vin + i * m,
                                                layer_vals[l] + i * m, cin + (i * k + j) * m,
                                                cout + (i * k + j) * m, 1, m)
            cin, flip = cout, 1 - flip
        start += n


def _width(list specs):
    return max([specs[0][1]] + [s[2] for s in specs])


def forward_mode(list specs, X, V, Py_ssize_t k, Py_ssize_t chunk, list directions=None):
    """(out (n, n_out), JV (n k, n_out)): the values and their derivatives along the k
    tangents of each row, V (n k, n_features) (None: only parameter directions, given
    per layer as (dW, db) or None). X, V and the directions C-contiguous, the model's
    dtype."""
    cdef list keep = []
    cdef Plan* plans = make_plans(specs, directions, keep)
    cdef Py_ssize_t n_rows = X.shape[0], width = _width(specs)
    n_layers = len(specs)
    dtype = X.dtype
    out = np.empty((n_rows, specs[len(specs) - 1][2]), dtype=dtype)
    JV = np.empty((n_rows * k, specs[len(specs) - 1][2]), dtype=dtype)
    vals = np.empty(2 * chunk * width, dtype=dtype)
    tans = np.empty(2 * chunk * k * width, dtype=dtype)
    scratch = np.empty(3 * width, dtype=dtype)
    cdef void* px = pointer(X)
    cdef void* pv = pointer(V)
    cdef void* po = pointer(out)
    cdef void* pj = pointer(JV)
    cdef void* pvals = pointer(vals)
    cdef void* ptans = pointer(tans)
    cdef void* ps = pointer(scratch)
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
    cdef list keep = []
    cdef Plan* plans = make_plans(specs, None, keep)
    cdef Py_ssize_t n_rows = X.shape[0], width = _width(specs)
    cdef int l, nl = len(specs)
    dtype = X.dtype
    out = np.empty((n_rows, specs[len(specs) - 1][2]), dtype=dtype)
    grad = np.empty((n_rows * k, specs[0][1]), dtype=dtype)
    layer_arrays = [np.empty(chunk * s[2], dtype=dtype) for s in specs]
    cots = np.empty(2 * chunk * k * width, dtype=dtype)
    scratch = np.empty(3 * width, dtype=dtype)
    cdef void** layer_vals = <void**> calloc(nl, sizeof(void*))
    if layer_vals == NULL:
        free(plans)
        raise MemoryError()
    for l in range(nl):
        layer_vals[l] = pointer(layer_arrays[l])
    cdef void* px = pointer(X)
    cdef void* pu = pointer(U)
    cdef void* po = pointer(out)
    cdef void* pg = pointer(grad)
    cdef void* pc = pointer(cots)
    cdef void* ps = pointer(scratch)
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
