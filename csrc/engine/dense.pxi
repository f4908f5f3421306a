# Dense layers: their products cut into a grid of tiles (dense_grid), each tile's product
# and the optimizer update folded into a weight tile's pass.

# A pass of one Dense layer's products, cut into the tiles of its grid (dense_grid):
# what run_tiles hands a lead's helpers (csrc/helping.h).
cdef enum TileKind:
    TILE_FORWARD = 0        # Y[rows_r, units_c] = A[rows_r] W[units_c]^T + b
    TILE_INPUT_GRAD = 1     # dA[rows_r, inputs_c] = dZ[rows_r] W[:, inputs_c]
    TILE_PARAM_GRAD = 2     # dW[units_c, inputs_r] over the batch (+ the bias, first row)


cdef struct TilePass:
    int kind
    bint f64
    LayerPlan* L
    const void* inp     # forward: the layer's input; param grad: the batch's input
    const void* grad    # the layer's output gradient (input and param grad)
    void* out           # forward: Y (stride n_out); input grad: dA (stride n_in)
    void* dest_w        # param grad: where the products land (destination())
    void* dest_b
    double alpha
    double beta_w
    double beta_b
    const void* ones
    Py_ssize_t n        # the step's rows
    int grid            # dense_grid's rows
    int nv
    # for the lead only: each weight tile's update after its product
    Net* net
    Counters* c
    bint update
    GradientDestination wdest
    GradientDestination bdest


# Tests and benchmarks force every Dense layer's grid to this many rows (0: dense_grid's rule).
cdef int GRID_ROWS_FORCED = 0


cdef int dense_grid(const LayerPlan* L, Py_ssize_t n, int nv) noexcept nogil:
    """R: a Dense layer's products on n rows are cut into an R x C grid of the plan's nv
    blocks (R C = nv). Block v is tile (v / C, v % C): rows of the batch by units for Y and
    the input gradient (units of this layer, inputs of the layer below), units by inputs
    for dW. C blocks of units make C threads each pack the whole input, R blocks of rows
    make R threads each pack the whole of W, so the rule takes the R that packs least,
    C n + R n_out (times n_in), among those that give every column block units; ties go
    to fewer rows. With R = 1 this is a block of units per thread; a layer of fewer
    units than blocks of 16 (a 10-class output) splits its rows rather than idle threads.
    docs/design.md, "The layer kinds", has what it is worth."""
    cdef int rows, best = 1
    cdef Py_ssize_t blocks = (L.n_out + UNIT_ALIGN - 1) // UNIT_ALIGN
    cdef double cost, least = -1
    if nv <= 1 or not L.tiles_ok:
        return 1
    if GRID_ROWS_FORCED > 0:
        return GRID_ROWS_FORCED if nv % GRID_ROWS_FORCED == 0 else 1
    for rows in range(1, nv + 1):
        if nv % rows != 0 or (nv // rows > blocks and rows < nv):
            continue
        cost = <double> (nv // rows) * n + <double> rows * L.n_out
        if least < 0 or cost < least:
            best, least = rows, cost
    return best


def grid_rows(int n_in, int n_out, Py_ssize_t n, int nv):
    """dense_grid's R for a Dense(n_in, n_out) on n rows and nv blocks, free of batch
    norm (benchmarks project with it)."""
    cdef LayerPlan L
    L.n_in, L.n_out, L.tiles_ok = n_in, n_out, True
    return dense_grid(&L, n, nv)


cdef inline int grid_layout(int rows, int nv) noexcept nogil:
    """The layout a grid of `rows` rows leaves: one row of tiles is COLS, one column ROWS."""
    return COLS if rows == 1 else (ROWS if rows == nv else TILES)


cdef inline void tile(int v, int rows, int nv, Py_ssize_t n, Py_ssize_t m, Py_ssize_t* r0,
                      Py_ssize_t* r1, Py_ssize_t* c0, Py_ssize_t* c1) noexcept nogil:
    """Block v's tile of an (n x m) product cut in a grid of `rows` rows: its rows
    [r0, r1) and its columns [c0, c1) (in blocks of UNIT_ALIGN)."""
    cdef int cols = nv // rows
    share(n, v // cols, rows, 1, r0, r1)
    share(m, v % cols, cols, UNIT_ALIGN, c0, c1)


cdef Py_ssize_t tile_entries(const TilePass* t, int v) noexcept nogil:
    """The entries a helper's scratch block needs for tile v of pass t (see tile_product)."""
    cdef Py_ssize_t r0, r1, c0, c1
    cdef int cols = t.nv // t.grid
    if t.kind == TILE_FORWARD:
        tile(v, t.grid, t.nv, t.n, t.L.n_out, &r0, &r1, &c0, &c1)
        return (r1 - r0) * (c1 - c0)
    if t.kind == TILE_INPUT_GRAD:
        tile(v, t.grid, t.nv, t.n, t.L.n_in, &r0, &r1, &c0, &c1)
        return (r1 - r0) * t.L.n_in
    share(t.L.n_out, v % cols, cols, UNIT_ALIGN, &c0, &c1)
    return (c1 - c0) * (t.L.n_in + 1)


cdef void tile_product(const TilePass* t, int v, floating* scratch) noexcept nogil:
    """Tile v of pass t, into its place, or (a helper) into `scratch`: a forward tile with
    its own width as stride, the others with the full arrays' strides from scratch's
    start (a weight tile followed by its bias entries). A destination the product adds
    to (beta != 0) is copied into scratch first. The product is the same call either
    way, so its result is the same bit for bit."""
    cdef LayerPlan* L = t.L
    cdef Py_ssize_t r0, r1, c0, c1, k0, k1, u, m = L.n_out
    cdef int cols = t.nv // t.grid
    cdef const floating* g = <const floating*> t.grad
    cdef floating* out = <floating*> t.out
    cdef floating* dw
    cdef floating* db = NULL
    if t.kind == TILE_FORWARD:
        tile(v, t.grid, t.nv, t.n, m, &r0, &r1, &c0, &c1)
        if r1 > r0:
            dense_forward(<const floating*> t.inp + r0 * L.n_in,
                          at(<floating*> L.weight, c0 * L.n_in), at(<floating*> L.bias, c0),
                          scratch if scratch != NULL else out + r0 * m + c0,
                          <int> (r1 - r0), L.n_in, <int> (c1 - c0),
                          <int> (c1 - c0) if scratch != NULL else <int> m)
    elif t.kind == TILE_INPUT_GRAD:
        tile(v, t.grid, t.nv, t.n, L.n_in, &r0, &r1, &c0, &c1)
        if r1 > r0:
            dense_input_grad(g + r0 * m, at(<floating*> L.weight, c0),
                             scratch if scratch != NULL else out + r0 * L.n_in + c0,
                             <int> (r1 - r0), <int> (c1 - c0), L.n_in, <int> m)
    else:
        share(m, v % cols, cols, UNIT_ALIGN, &c0, &c1)
        share(L.n_in, v // cols, t.grid, UNIT_ALIGN, &k0, &k1)
        if c1 <= c0:
            return
        dw = <floating*> t.dest_w + c0 * L.n_in + k0
        if t.dest_b != NULL and v < cols:  # the grid's first row makes the bias gradient
            db = <floating*> t.dest_b + c0
        if scratch != NULL:
            if t.beta_w != 0:
                for u in range(c1 - c0):
                    memcpy(scratch + u * L.n_in, dw + u * L.n_in, (k1 - k0) * sizeof(floating))
            if db != NULL and t.beta_b != 0:
                memcpy(scratch + (c1 - c0) * L.n_in, db, (c1 - c0) * sizeof(floating))
            dw = scratch
            if db != NULL:
                db = scratch + (c1 - c0) * L.n_in
        dense_param_grad(<const floating*> t.inp + k0, g + c0, dw, db, <floating> t.alpha,
                         <floating> t.beta_w, <floating> t.beta_b,
                         <const floating*> t.ones, <int> t.n, L.n_in, <int> (c1 - c0), L.n_out,
                         <int> (k1 - k0))


cdef void commit_tile(const TilePass* t, int v, const floating* scratch) noexcept nogil:
    """A helper's tile v, from its scratch block (tile_product's layout) into place."""
    cdef LayerPlan* L = t.L
    cdef Py_ssize_t r0, r1, c0, c1, k0, k1, i, m = L.n_out
    cdef int cols = t.nv // t.grid
    cdef floating* out = <floating*> t.out
    if t.kind == TILE_FORWARD:
        tile(v, t.grid, t.nv, t.n, m, &r0, &r1, &c0, &c1)
        for i in range(r1 - r0):
            memcpy(out + (r0 + i) * m + c0, scratch + i * (c1 - c0),
                   (c1 - c0) * sizeof(floating))
    elif t.kind == TILE_INPUT_GRAD:
        tile(v, t.grid, t.nv, t.n, L.n_in, &r0, &r1, &c0, &c1)
        for i in range(r1 - r0):
            memcpy(out + (r0 + i) * L.n_in + c0, scratch + i * L.n_in,
                   (c1 - c0) * sizeof(floating))
    else:
        share(m, v % cols, cols, UNIT_ALIGN, &c0, &c1)
        share(L.n_in, v // cols, t.grid, UNIT_ALIGN, &k0, &k1)
        for i in range(c1 - c0):
            memcpy(<floating*> t.dest_w + (c0 + i) * L.n_in + k0, scratch + i * L.n_in,
                   (k1 - k0) * sizeof(floating))
        if t.dest_b != NULL and v < cols and c1 > c0:
            memcpy(<floating*> t.dest_b + c0, scratch + (c1 - c0) * L.n_in,
                   (c1 - c0) * sizeof(floating))


cdef void finish_tile(const TilePass* t, int v) noexcept nogil:
    """After a weight tile's product: the rest of its optimizer update (and its bias's,
    in the grid's first row), while its weights are in this core's cache."""
    cdef LayerPlan* L = t.L
    cdef Py_ssize_t c0, c1, k0, k1, u
    cdef int cols = t.nv // t.grid
    if t.kind != TILE_PARAM_GRAD or not t.update:
        return
    share(L.n_out, v % cols, cols, UNIT_ALIGN, &c0, &c1)
    share(L.n_in, v // cols, t.grid, UNIT_ALIGN, &k0, &k1)
    if c1 <= c0:
        return
    if k1 - k0 == L.n_in:
        finish_update(t.net, t.c, L.weight_param, t.wdest, c0 * L.n_in, (c1 - c0) * L.n_in)
    else:
        for u in range(c0, c1):
            finish_update(t.net, t.c, L.weight_param, t.wdest, u * L.n_in + k0, k1 - k0)
    if v < cols:
        finish_update(t.net, t.c, L.bias_param, t.bdest, c0, c1 - c0)


cdef inline void lead_tile(TilePass* t, int v) noexcept nogil:
    """Tile v of pass t, into its place, then its update."""
    if t.f64:
        tile_product(t, v, <double*> NULL)
    else:
        tile_product(t, v, <float*> NULL)
    finish_tile(t, v)


cdef inline TilePass tile_pass(int kind, LayerPlan* L, const floating* inp,
                               const floating* grad, floating* out, Py_ssize_t n, int grid,
                               int nv) noexcept nogil:
    cdef TilePass t
    memset(&t, 0, sizeof(t))
    t.kind, t.f64, t.L, t.inp, t.grad, t.out = kind, floating is double, L, inp, grad, out
    t.n, t.grid, t.nv = n, grid, nv
    return t


cdef void run_tiles(TilePass* t, const Part* p) noexcept nogil:
    """p's tiles of pass t, each followed by its update (param grad); a lead with helpers
    shares the pass with them."""
    cdef int v
    if p.help != NULL and p.nv > 1:
        lead_tiles(p.help, t)
        return
    for v in range(p.v0, p.v1):
        lead_tile(t, v)


cdef void dense_update(Pass* s, LayerPlan* L, const floating* inp) noexcept nogil:
    """Each of the thread's blocks of Dense layer L: its tile of the weight gradient (units
    by inputs, dense_grid) and, in the grid's first row, its units' bias gradient, landed
    where the optimizer wants them (folded into the update where the formula allows),
    then the rest of the tile's update, while its weights are in this core's cache."""
    cdef Net* net = s.net
    cdef TilePass products = tile_pass(TILE_PARAM_GRAD, L, inp, <floating*> L.grad, NULL, s.n,
                                       dense_grid(L, s.n, s.p.nv), s.p.nv)
    products.dest_w = destination(net, s.c, L.weight_param, s.update, s.grad_beta,
                                  &products.wdest)
    products.dest_b = destination(net, s.c, L.bias_param, s.update, s.grad_beta,
                                  &products.bdest)
    products.alpha, products.beta_w = products.wdest.alpha, products.wdest.beta
    products.beta_b = products.bdest.beta
    products.ones, products.net, products.c, products.update = net.ones, net, s.c, s.update
    run_tiles(&products, s.p)


cdef void dense_forward_pass(LayerPlan* L, Pass* s, const floating* inp,
                             floating* out) noexcept nogil:
    """Y = A W^T + b on the thread's tiles of the layer's grid (it reads all of A: a
    barrier first unless A is whole)."""
    cdef TilePass products
    sync(&s.layout, WHOLE, s.p.nt)
    s.grid = dense_grid(L, s.n, s.p.nv)
    products = tile_pass(TILE_FORWARD, L, inp, NULL, out, s.n, s.grid, s.p.nv)
    run_tiles(&products, s.p)
    s.layout = grid_layout(s.grid, s.p.nv)


cdef void dense_backward_pass(LayerPlan* L, Pass* s, const floating* inp,
                              const floating* g, floating* grad_in) noexcept nogil:
    """dA = dZ W on the thread's tiles for the layer below, then, after the next barrier
    (other threads still read W), the weight tiles' gradients and updates; with no layer
    below to feed, the weight tiles at once."""
    cdef TilePass products
    cdef bint learns = L.weight_param >= 0 or L.bias_param >= 0  # not frozen
    pass_meet(s, WHOLE)
    if grad_in == NULL:
        if learns:
            dense_update(s, L, inp)
        return
    s.grid = dense_grid(L, s.n, s.p.nv)
    products = tile_pass(TILE_INPUT_GRAD, L, NULL, g, grad_in, s.n, s.grid, s.p.nv)
    run_tiles(&products, s.p)
    if learns:
        s.pending, s.pending_inp = L, inp
    s.layout = grid_layout(s.grid, s.p.nv)


cdef void dense_predict(LayerPlan* L, const floating* inp, floating* dst, Py_ssize_t n,
                        int tid, int nt, int nv, bint row_gemv, int* layout) noexcept nogil:
    """Blocks tid, tid + nt, ... of the plan's nv blocks of units (the result depends on
    nv only). With row_gemv a one-row product is a GEMV (OpenBLAS's GEMM with one row was
    slower); else it is the GEMM a training pass makes, so infer's rows equal the team's."""
    cdef Py_ssize_t m = L.n_out, c0, c1
    cdef int v = tid
    sync(layout, WHOLE, nt)
    while v < nv:
        share(m, v, nv, UNIT_ALIGN, &c0, &c1)
        if c1 > c0 and n == 1 and row_gemv:
            if L.bias != NULL:
                memcpy(dst + c0, <floating*> L.bias + c0, (c1 - c0) * sizeof(floating))
            gemv(False, <int> (c1 - c0), L.n_in, <floating> 1,
                 <floating*> L.weight + c0 * L.n_in, L.n_in, inp,
                 <floating> (1 if L.bias != NULL else 0), dst + c0)
        elif c1 > c0:
            dense_forward(inp, at(<floating*> L.weight, c0 * L.n_in),
                          at(<floating*> L.bias, c0), dst + c0, <int> n, L.n_in,
                          <int> (c1 - c0), <int> m)
        v += nt
    layout[0] = COLS


cdef void dense_tangent(LayerPlan* L, const floating* val_in, floating* val_out,
                        const floating* tan_in, floating* tan_out, floating* scratch,
                        Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """Forward mode: values, and tangents t W^T (one product for a row's k tangents), plus
    a_in dW^T + db along a parameter direction."""
    cdef Py_ssize_t i, j, u, m = L.n_out
    dense_forward(val_in, <floating*> L.weight, <floating*> L.bias, val_out, <int> n,
                  L.n_in, L.n_out, L.n_out)
    if tan_in != NULL:
        dense_forward(tan_in, <floating*> L.weight, <floating*> NULL, tan_out,
                      <int> (n * k), L.n_in, L.n_out, L.n_out)
    else:
        memset(tan_out, 0, n * k * m * sizeof(floating))
    if L.dweight == NULL:
        return
    for i in range(n):  # the same for each of a row's k tangents
        for j in range(k):
            dense_forward(val_in + i * L.n_in, <floating*> L.dweight, <floating*> NULL,
                          scratch, 1, L.n_in, L.n_out, L.n_out)
            for u in range(m):
                tan_out[(i * k + j) * m + u] += scratch[u] + (
                    (<floating*> L.dbias)[u] if L.dbias != NULL else 0)


cdef void dense_cotangent(LayerPlan* L, const floating* cot_in, floating* cot_out,
                          Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """Reverse mode: a row's k cotangents u -> u W, one product."""
    dense_input_grad(cot_in, <floating*> L.weight, cot_out, <int> (n * k), L.n_in, L.n_in,
                     L.n_out)
