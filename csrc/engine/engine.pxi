# The Engine: a Sequential model's compiled plan, its buffers, and the calls the Python
# layer makes (train_epoch, run, predict_small, infer).

cdef class Engine:
    """Compiled plan of a Sequential model: layer kinds, parameter pointers, buffers.

    specs: one fastnn.layers.LayerSpec per layer (kind, n_in, n_out, slope, weight, bias,
    l2, extra, trainable), with weight and bias C-contiguous arrays of `dtype` (None for
    layers without them), used in place, l2 the coefficient c of the weight's penalty
    gradient c * W (2 lambda), extra a dict of layer-specific settings (batch norm: eps,
    momentum, running_mean, running_var; the running statistics are updated in place)
    or None, and trainable False for a frozen layer, whose weight and bias are constants.
    The gradient arrays, in the order of the trainable parameters, are `self.grads`.
    """
    cdef Net net
    cdef readonly object dtype
    cdef readonly list grads
    cdef readonly object flat_gradients  # grads' storage (see __cinit__)
    cdef object _reducer_keep
    cdef list _keep      # every array whose pointer the plan holds
    cdef list _buffers
    cdef list _bn_parts  # batch norm's per-block sums (LayerPlan.bn_part), per layer
    cdef int _last_threads
    cdef LoadState load      # what train_adapting learned of the machine (kept across calls)
    cdef Help help           # train_adapting's lead and helpers
    cdef Py_ssize_t widest   # the widest layer input or output (predict's buffers)
    cdef unsigned long _trainer  # the thread running fit (its ident), 0 when none
    cdef int _readers            # predicts running on their callers' threads
    cdef int _status             # the last training run's Job.status
    cdef readonly object failure  # the last train_epoch's failed batch: "loss", "update",
    #                               "not restored" (copy_aside=False)
    cdef object _saved           # train_epoch's copy of the state a step writes
    cdef object _saved_counters  # and its step, generator, penalty and NAdam product

    def __cinit__(self, list specs, dtype):
        cdef LayerPlan* L
        cdef bint below_has_params = False
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"Engine dtype must be float32 or float64, not {self.dtype}")
        n = len(specs)
        self.net.n_layers = n
        self.net.f64 = self.dtype == np.float64
        self.net.layers = <LayerPlan*> calloc(max(n, 1), sizeof(LayerPlan))
        self.net.params = NULL
        self.net.capacity = 0
        self.net.l2_scale = 1.0
        if self.net.layers == NULL:
            raise MemoryError()
        self.grads = []
        self._keep = []
        self._buffers = []
        self._trainer = self._readers = 0
        params = []
        for l, spec in enumerate(specs):
            L = &self.net.layers[l]
            read_spec(L, spec)
            kind, n_in, n_out, slope, weight, bias, l2, extra, trainable = spec
            if kind == BATCHNORM:
                scratch = [extra["running_mean"], extra["running_var"]] + [
                    np.zeros(n_out, dtype=self.dtype) for _ in range(6)]
                for arr in scratch:
                    if arr.dtype != self.dtype or not arr.flags.c_contiguous \
                            or arr.shape != (n_out,):
                        raise TypeError("batch-norm statistics must match the layer")
                L.batch_mean, L.batch_invstd, L.dgamma, L.dbeta, L.saved_mean, L.saved_var = (
                    data_ptr(scratch[2]), data_ptr(scratch[3]), data_ptr(scratch[4]),
                    data_ptr(scratch[5]), data_ptr(scratch[6]), data_ptr(scratch[7]))
                self._keep.extend(scratch)
            if kind == LAYERNORM:
                sums = np.zeros(2 * n_out, dtype=self.dtype)
                L.dgamma, L.dbeta = data_ptr(sums), data_ptr(sums[n_out:])
                self._keep.append(sums)
            if kind == EMBEDDING:
                if l != 0:
                    raise ValueError(f"layer {l}: an Embedding must be the first layer")
                table_grad = np.zeros(weight.size, dtype=self.dtype)
                L.emb_grad = data_ptr(table_grad)
                self._keep += [table_grad, extra]
            L.weight_param = L.bias_param = -1
            L.need_grad_in = below_has_params
            for arr in (weight, bias):
                if arr is None:
                    continue
                if arr.dtype != self.dtype or not arr.flags.c_contiguous:
                    raise TypeError("parameters must be C-contiguous arrays of the engine dtype")
                self._keep.append(arr)
                if not trainable:  # a constant: no gradient, no update (L's pointers hold it)
                    continue
                params.append((arr, l2 if arr is weight else 0.0))
                below_has_params = True
                if arr is weight:
                    L.weight_param = len(params) - 1
                else:
                    L.bias_param = len(params) - 1
        kinds = [spec[0] for spec in specs]
        dense = [l for l in range(n) if kinds[l] == DENSE]
        for i, l in enumerate(dense):
            # its grid may cut rows unless batch norm on columns, whose statistics want
            # whole ones, reads its output or writes its input gradient (the layers up to
            # the next Dense and down to the one before); training lifts this once batch
            # norm runs on row blocks (_batchnorm_on_rows)
            below = dense[i - 1] + 1 if i > 0 else 0
            above = dense[i + 1] if i + 1 < len(dense) else n
            self.net.layers[l].tiles_ok = not any(kinds[k] == BATCHNORM
                                                  for k in range(below, above))
        self.widest = max([self.net.layers[0].n_in if n else 0]
                          + [self.net.layers[l].n_out for l in range(n)])
        self.net.widest = self.widest
        self.net.res_depth = residual_depth(kinds, specs)
        self.net.n_params = len(params)
        self.net.params = <ParamPlan*> calloc(max(len(params), 1), sizeof(ParamPlan))
        if self.net.params == NULL:
            raise MemoryError()
        # the gradient arrays are views of one flat buffer, each starting on a 64-byte
        # boundary, then EXTRA slots: data-parallel training sums it in one allreduce
        offsets, size = [], 0
        for value, _ in params:
            offsets.append(size)
            size += -(-value.size // UNIT_ALIGN) * UNIT_ALIGN
        self.flat_gradients = np.zeros(size + EXTRA, dtype=self.dtype)
        self.net.flat = data_ptr(self.flat_gradients)
        self.net.flat_size, self.net.extra_at = size + EXTRA, size
        for (value, _), offset in zip(params, offsets):
            self.grads.append(
                self.flat_gradients[offset:offset + value.size].reshape(value.shape))
        for i, ((value, l2), grad) in enumerate(zip(params, self.grads)):
            self.net.params[i].size = value.size
            # threads own blocks of the layer's units: rows of a weight, entries of a vector
            self.net.params[i].units = value.shape[0]
            self.net.params[i].row = value.size // max(value.shape[0], 1)
            self.net.params[i].l2 = l2
            self.net.params[i].value = data_ptr(value)
            self.net.params[i].grad = data_ptr(grad)

    def __dealloc__(self):
        free(self.net.layers)
        free(self.net.params)

    @property
    def residual_depth(self):
        """How deep residual blocks nest (0: none): a predict's saved buffers."""
        return self.net.res_depth

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
        for l in range(n):  # (residual blocks share some: alias_residual_buffers)
            layers[l].out = NULL if layers[l].kind == RESIDUAL_BEGIN and l > 0 else \
                self._block(buffers, capacity, layers[l].n_out, self.dtype)
            layers[l].grad = NULL if l + 1 < n and layers[l + 1].kind == RESIDUAL_END else \
                self._block(buffers, capacity, layers[l].n_out, self.dtype)
            layers[l].mask = self._block(buffers, capacity, layers[l].n_out, self.dtype) \
                if layers[l].kind == DROPOUT else NULL
            if layers[l].kind == LAYERNORM:
                layers[l].row_mean = self._block(buffers, capacity, 1, self.dtype)
                layers[l].row_invstd = self._block(buffers, capacity, 1, self.dtype)
        alias_residual_buffers(&self.net)
        for k in range(2):
            self.net.xbuf[k] = self._block(buffers, capacity, layers[0].n_in, self.dtype)
        self.net.tbuf = self._block(buffers, capacity, layers[n - 1].n_out, self.dtype)
        self.net.lbuf = <int64_t*> self._block(buffers, capacity, 1, np.int64)
        self.net.wbuf = self._block(buffers, capacity, 1, self.dtype)
        self.net.ones = self._block(buffers, capacity, 1, self.dtype)
        buffers[len(buffers) - 1].fill(1)
        self._buffers = buffers
        self.net.capacity = capacity

    def _layernorm_sums(self, int blocks):
        """Room for layer norm's per-block sums of a plan of `blocks` blocks, kept for later
        calls."""
        cdef LayerPlan* L
        cdef int l
        if self._bn_parts is None:
            self._bn_parts = [None] * self.net.n_layers
        for l in range(self.net.n_layers):
            L = &self.net.layers[l]
            if L.kind == LAYERNORM and L.bn_blocks < blocks:
                part = np.zeros(2 * blocks * L.n_out, dtype=self.dtype)
                self._bn_parts[l] = part
                L.bn_part, L.bn_blocks = data_ptr(part), blocks

    def _batchnorm_on_rows(self, int blocks):
        """Training on a plan of `blocks` blocks runs batch norm on row blocks: reserve
        its per-block sums (kept for later calls) and let every Dense layer's grid cut
        rows, batch norm's neighbours too (docs/design.md, "The layer kinds")."""
        cdef LayerPlan* L
        cdef int l
        if blocks <= 1 or not any(self.net.layers[l].kind == BATCHNORM
                                  for l in range(self.net.n_layers)):
            return
        if self._bn_parts is None:
            self._bn_parts = [None] * self.net.n_layers
        for l in range(self.net.n_layers):
            L = &self.net.layers[l]
            if L.kind == DENSE:
                L.tiles_ok = True
            elif L.kind == BATCHNORM and L.bn_blocks < blocks:
                part = np.zeros((4 * blocks + 1) * L.n_out, dtype=self.dtype)
                self._bn_parts[l] = part
                L.bn_part, L.bn_blocks = data_ptr(part), blocks

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

    def set_optimizer(self, int kind, hyper, list states, long long step,
                      double mu_product=1.0):
        """Select the update kernel, its hyperparameters, each parameter's state arrays,
        the number of updates already made and (NAdam) the product of its momentum
        coefficients over them."""
        if len(hyper) > MAX_HYPER:
            raise ValueError(f"at most {MAX_HYPER} optimizer hyperparameters")
        if len(states) != self.net.n_params:
            raise ValueError(f"expected state for {self.net.n_params} parameters")
        self.net.opt_kind = kind
        self.net.step = step
        self.net.mom_scale = 1.0
        self.net.mu_product = mu_product
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

    @property
    def last_threads(self):
        """The threads the last train_epoch or run call ran on (its plan)."""
        return self._last_threads

    @property
    def last_stretches(self):
        """The last adapting train_epoch's stretches (the first 64): a list of (threads,
        the largest share of the stretch a thread waited for a CPU, or -1 when unknown
        or not judged)."""
        return [(self.load.trace_threads[i], self.load.trace_waited[i])
                for i in range(min(self.load.n_stretches, MAX_TRACE))]

    @property
    def last_helpers(self):
        """The last adapting train_epoch's helpers: per stretch (the first 64) the helpers
        its lead had (0: none), and the tiles they handed in and that the lead computed
        again because a helper was late (csrc/helping.h)."""
        return {"helpers": [self.load.trace_helpers[i]
                            for i in range(min(self.load.n_stretches, MAX_TRACE))],
                "tiles": self.help.tiles, "retaken": self.help.retaken}

    def predict_rows(self, Py_ssize_t rows, int n_run, int max_threads):
        """The rows of the blocks a predict in chunks of `rows` rows computes at a time,
        on the team or (infer) on the calling thread alike."""
        return predict_block(rows, plan_threads(&self.net, rows, n_run, 1, max_threads))

    def plan_threads(self, Py_ssize_t rows, int n_run, bint training, int max_threads):
        """The threads a call on batches of `rows` rows would run on (plan_threads)."""
        return plan_threads(&self.net, rows, n_run, 3 if training else 1, max_threads)

    def set_reducer(self, int kind, fn=None, size_t in_place=0, size_t datatype=0,
                    size_t op=0, size_t comm=0, bint int_handles=False, stop_request=None):
        """How data-parallel steps sum flat_gradients over the processes: 1 (MPI) with
        the address of MPI_Allreduce and the handles of MPI_IN_PLACE, the buffer's
        datatype, MPI_SUM and the communicator (ints when int_handles); 2 (Python) with
        a callable that sums flat_gradients in place and returns True; 0: none.
        stop_request: a one-byte uint8 array that Python sets (fastnn.distributed's
        Ctrl-C handler, which does not raise): read before each step, nonzero stops every
        process at that step, and this one raises KeyboardInterrupt."""
        if kind not in (REDUCE_NONE, REDUCE_MPI, REDUCE_PYTHON):
            raise ValueError(f"unknown reducer kind {kind}")
        if kind == REDUCE_MPI and not (isinstance(fn, int) and fn != 0):
            raise TypeError("an MPI reducer needs MPI_Allreduce's address")
        if kind == REDUCE_PYTHON and not callable(fn):
            raise TypeError("a Python reducer must be callable")
        if stop_request is not None and (not isinstance(stop_request, np.ndarray)
                                         or stop_request.dtype != np.uint8
                                         or stop_request.size != 1):
            raise TypeError("stop_request must be a one-byte uint8 array")
        self._reducer_keep = (fn, stop_request)
        self.net.reducer.stop_request = NULL if stop_request is None or kind == REDUCE_NONE \
            else <const unsigned char*> data_ptr(stop_request)
        self.net.reducer.kind = kind
        self.net.reducer.fn = <void*> <size_t> fn if kind == REDUCE_MPI else \
            (<void*> fn if kind == REDUCE_PYTHON else NULL)
        self.net.reducer.in_place = <void*> in_place
        self.net.reducer.datatype = <void*> datatype
        self.net.reducer.op = <void*> op
        self.net.reducer.comm = <void*> comm
        self.net.reducer.int_handles = int_handles

    def train_epoch(self, X, targets, labels, order, Py_ssize_t batch_size, loss_kind,
                    int n_run, int max_threads=1, weights=None, step_rows=None,
                    step_denoms=None, bint adapt=False, double clip_norm=0,
                    double clip_value=0, step_lr=None, step_momentum=None,
                    bint copy_aside=True):
        """Train on the rows X[order] (all of X, in order, when order is None) in batches,
        on at most max_threads threads; with `adapt`, on as many of those as the machine
        gives (train_adapting: fewer while other processes hold cores). X is a C-contiguous
        array or a CSR matrix (see _check_inputs); `weights` (one per row of X) makes each
        batch's loss the weighted mean.

        Data-parallel (set_reducer first): step k trains on the next step_rows[k] rows
        (int64, summing to the rows given; 0 is allowed) with the mean's denominator
        step_denoms[k] (float64: the global batch's rows or summed weights), and the
        gradients are summed over the processes before each update; the returned loss
        sum is then the global one. clip_norm / clip_value (> 0) clip each step's
        gradient (data-parallel: the summed one) before its update (clipping.pxi). step_lr and
        step_momentum (float64, one entry per step of the call, or None) replace the
        learning rate and the momentum (SGD's, or Adam's beta1) step by step: a per-step
        schedule.

        Returns (loss_sum, index of the failed batch, or -1): the sum of the batches'
        (weighted) summed losses; per_row with weights, each batch's is multiplied by its
        rows over its summed weights (scikit-learn's accounting). A batch fails when its
        loss is not finite (checked before its update) or when its update wrote NaN or
        inf into a parameter, the optimizer's state or batch norm's running statistics
        (a finite loss whose float32 gradient or update overflowed); `failure` says which
        ("loss" or "update"), and either way the parameters, optimizer state and running
        statistics are left as they were before that batch. The second kind costs no
        work per step: the state is copied aside when the call starts and checked once
        when it ends. Only when something is not finite is the call run again from the
        copy, checking after each step, and then once more up to the first bad step (a
        plan gives the same bits every time it runs). copy_aside=False (the later calls
        of an epoch cut in pieces, fastnn.training) keeps the copy the epoch's first call
        made: such a call still checks its writes, and where they are not finite leaves
        them, with `failure` "not restored", for rerun_from_copy over the epoch's rows up
        to its end.
        Raises KeyboardInterrupt (or another signal's error) between steps; data-parallel,
        StopIteration when another process stopped, RuntimeError when the allreduce
        failed."""
        cdef size_t item = self.dtype.itemsize
        cdef bint finite
        if not (clip_norm >= 0 and clip_value >= 0):
            raise ValueError("clip_norm and clip_value must be >= 0")
        steps = step_rows.shape[0] if step_rows is not None else \
            -(-(X.shape[0] if order is None else order.shape[0]) // max(batch_size, 1))
        for table in (step_lr, step_momentum):
            if table is not None and (table.dtype != np.float64 or table.ndim != 1
                                      or not table.flags.c_contiguous
                                      or table.shape[0] < steps):
                raise TypeError(f"step_lr and step_momentum: C-contiguous float64 arrays of "
                                f"at least {steps} entries (one per step)")
        args = (X, targets, labels, order, batch_size, loss_kind, n_run, max_threads,
                weights, step_rows, step_denoms, clip_norm, clip_value, step_lr,
                step_momentum)
        self.failure = None
        cdef Py_ssize_t entries = state_entries(&self.net)
        cdef char* store
        if copy_aside or self._saved is None:
            if self._saved is None or self._saved.size != entries * item:
                self._saved = np.empty(entries * item, np.uint8)  # kept for the next call
            store = <char*> data_ptr(self._saved)
            with nogil:
                copy_state(&self.net, store, item, False, False)
            self._saved_counters = (self.net.step, self.net.rng, self.net.penalty_sum,
                                    self.net.mu_product)
        loss_sum, failed = self._train(*args, adapt=adapt)
        with nogil:
            finite = copy_state(&self.net, NULL, item, False, True)
        if finite:
            self.failure = "loss" if failed >= 0 else None
            return loss_sum, failed
        if not copy_aside:
            self.failure = "not restored"
            return loss_sum, failed
        return self._rerun(args)

    def rerun_from_copy(self, X, targets, labels, order, Py_ssize_t batch_size, loss_kind,
                        int n_run, int max_threads=1, weights=None, double clip_norm=0,
                        double clip_value=0, step_lr=None, step_momentum=None):
        """After a call with copy_aside=False whose writes were not finite: from the copy
        (and the counters) the epoch's first call set aside, train_epoch's search over
        these rows (that call's and every one since, to the failed call's end): the first
        bad step, and the state just before it. Returns what train_epoch returns."""
        self.failure = None
        return self._rerun((X, targets, labels, order, batch_size, loss_kind, n_run,
                            max_threads, weights, None, None, clip_norm, clip_value,
                            step_lr, step_momentum))

    def _rerun(self, args):
        """The state from the copy, then the steps again checking each (the first bad
        one), then once more up to it; failure "update"."""
        cdef char* store = <char*> data_ptr(self._saved)
        cdef size_t item = self.dtype.itemsize
        for check in (True, False):  # find the first bad step, then stop before it
            with nogil:
                copy_state(&self.net, store, item, True, False)
            (self.net.step, self.net.rng, self.net.penalty_sum,
             self.net.mu_product) = self._saved_counters
            if check:
                loss_sum, failed = self._train(*args, check_steps=True)
                if failed < 0 or self._status == BAD_LOSS:  # a loss that became NaN came first
                    self.failure = "loss" if failed >= 0 else None
                    return loss_sum, failed
            else:
                loss_sum, _ = self._train(*args, stop_before=failed)
        self.failure = "update"
        return loss_sum, failed

    def _train(self, X, targets, labels, order, Py_ssize_t batch_size, loss_kind,
               int n_run, int max_threads, weights, step_rows, step_denoms,
               double clip_norm, double clip_value, step_lr, step_momentum, *,
               bint adapt=False, bint check_steps=False, Py_ssize_t stop_before=-1):
        """One run of train_epoch's steps: with check_steps each update's writes are
        checked (BAD_UPDATE at the first that wrote NaN or inf); stop_before ends the run
        before that step."""
        cdef Job job
        cdef Counters c
        cdef int n_threads
        cdef Part alone = part_of(0, 1, 1)
        if order is not None and (order.dtype != np.int64 or not order.flags.c_contiguous):
            raise TypeError("order must be a C-contiguous int64 array")
        self.reserve(batch_size)
        self._start_job(&job, X, targets, labels, weights, None, loss_kind, n_run, batch_size)
        job.order = <int64_t*> data_ptr(order)
        job.n_samples = X.shape[0] if order is None else order.shape[0]
        job.check_steps = check_steps
        job.clip_norm, job.clip_value = clip_norm, clip_value
        job.step_lr = <const double*> data_ptr(step_lr)
        job.step_momentum = <const double*> data_ptr(step_momentum)
        if stop_before >= 0:
            job.end_batch = stop_before
            adapt = False  # (adapting sets each stretch's end)
        if step_rows is not None:
            if self.net.reducer.kind == REDUCE_NONE:
                raise ValueError("step_rows needs a reducer (set_reducer)")
            if step_rows.dtype != np.int64 or step_denoms is None \
                    or step_denoms.dtype != np.float64 \
                    or step_denoms.shape != step_rows.shape or step_rows.ndim != 1 \
                    or not step_rows.flags.c_contiguous \
                    or not step_denoms.flags.c_contiguous:
                raise TypeError("step_rows and step_denoms: int64 and float64 arrays of "
                                "one entry per step")
            if step_rows.size and (step_rows.min() < 0 or step_rows.max() > batch_size
                                   or step_rows.sum() != job.n_samples):
                raise ValueError("step_rows must lie in [0, batch_size] and sum to the "
                                 "rows given")
            job.step_rows = <int64_t*> data_ptr(step_rows)
            job.step_denoms = <double*> data_ptr(step_denoms)
            job.n_steps = step_rows.shape[0]
        n_threads = plan_threads(&self.net, batch_size, n_run, 3, max_threads)
        self._batchnorm_on_rows(n_threads)
        self._layernorm_sums(n_threads)
        job.plan = n_threads
        try:
            with _blas_kept_to_one_thread():
                with nogil:
                    if adapt and n_threads > 1:
                        self._last_threads = train_adapting(&job, n_threads, &self.load,
                                                             &self.help)
                    else:
                        self._last_threads = run_on_team(train_job, &job, n_threads)
                if job.status == INTERRUPTED:  # raised here, before any Python code runs
                    if PyErr_Occurred_ptr() != NULL:
                        reraise()
                    raise KeyboardInterrupt  # (stop_request: its handler did not raise)
            if job.status == PEER_STOPPED:
                raise StopIteration("another process stopped training")
            if job.status == REDUCE_FAILED:
                raise RuntimeError("the allreduce of the gradients failed")
        finally:  # however it ends, the momentum buffers hold torch's b again
            c = counters_of(&self.net)
            unscale_momentum(&self.net, &c, &alone)
            store_counters(&self.net, &c)
            self._status = job.status
        return job.loss_sum, job.failed_batch if job.status in (BAD_LOSS, BAD_UPDATE) else -1

    def run(self, X, out, targets, labels, loss_kind, bint want_grads, int n_run,
            Py_ssize_t batch_size, int max_threads=1, weights=None, bint training=False,
            bint check_finite=False):
        """Predict into `out` (loss_kind -1) or evaluate the loss over X in batches (loss_kind
        a loss's code, or (code, setting): see _start_job), on at
        most max_threads threads; with want_grads, the gradients of the mean loss (the
        weighted mean with `weights`) land in self.grads. `training` runs the layers as a
        training step does (batch norm's statistics are those of each chunk of
        batch_size rows; its running statistics are left as they were). Returns
        (loss_sum, correct predictions), both weighted by `weights` when given.
        check_finite (a predict of a dense X): the threads check each block of rows before
        using it, and NonFiniteRow names a row with NaN or inf (`out` is then partly
        written)."""
        cdef Job job
        cdef int n_threads
        cdef Py_ssize_t i, n_samples = X.shape[0]
        self.reserve(batch_size)
        self._start_job(&job, X, targets, labels, weights, out, loss_kind, n_run,
                        batch_size)
        job.want_grads = want_grads and job.loss_kind >= 0
        job.training = training
        job.weight_total = float(np.sum(weights, dtype=np.float64)) \
            if weights is not None else n_samples
        if check_finite and (job.loss_kind >= 0 or training or job.sparse):
            raise TypeError("check_finite is for predicts of a dense X")
        job.check_finite = check_finite
        n_threads = plan_threads(&self.net, min(batch_size, n_samples), n_run,
                                 3 if job.want_grads else 1, max_threads)
        self._layernorm_sums(n_threads)
        job.plan = n_threads
        for i in range(n_threads):
            job.bad_row[i] = -1
        with _blas_kept_to_one_thread():
            with nogil:
                self._last_threads = run_on_team(run_job, &job, n_threads)
            if job.status == INTERRUPTED:  # raised here, before any Python code runs
                reraise()
        if job.halt:
            raise NonFiniteRow(min(job.bad_row[i] for i in range(n_threads)
                                   if job.bad_row[i] >= 0))
        if job.want_grads:  # the L2 penalty's gradient, l2 * W, once for the whole mean
            for i in range(self.net.n_params):
                if self.net.params[i].l2 == 0:
                    continue
                scale = (self.net.params[i].l2 / job.weight_total if self.net.per_row
                         else self.net.params[i].l2)
                if job.f64:
                    axpy(<int> self.net.params[i].size, <double> scale,
                         <double*> self.net.params[i].value, <double*> self.net.params[i].grad)
                else:
                    axpy(<int> self.net.params[i].size, <float> scale,
                         <float*> self.net.params[i].value, <float*> self.net.params[i].grad)
        return job.loss_sum, job.correct

    def predict_small(self, X, batch_size, int max_threads):
        """Predict X in one batch; or None, having done nothing, unless X is a C-contiguous
        2-D array of this dtype with the first layer's width, 1 to SMALL_ROWS rows (at
        most batch_size, within SMALL_VALUES a buffer) and finite values, and no fit runs
        in another thread: the caller then takes the general path, which converts,
        reports or waits. After a thread's first call the output array is the only
        allocation (the buffers are the thread's scratch block, csrc/scratch.h).
        Threads: one per SMALL_GRAIN_FLOPS (within max_threads) on the team when no
        other thread predicts (see small_in_flight) and the workers are awake or the work
        reaches SMALL_WAKE_FLOPS; else the calling thread alone, rousing the workers for
        the predicts that follow when it could have split."""
        global small_in_flight, small_last_thread, small_last_end
        cdef Py_buffer view
        cdef Py_ssize_t n_rows, n_in = self.net.layers[0].n_in, widest = self.widest
        cdef int n_layers = self.net.n_layers, n_threads = 1
        cdef unsigned long me = PyThread_get_thread_ident()
        cdef SmallPredict job
        cdef double flops
        cdef bint shared
        cdef size_t itemsize = self.dtype.itemsize
        if self._trainer != 0 and self._trainer != me:
            return None
        try:
            PyObject_GetBuffer(X, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)
        except (BufferError, ValueError, TypeError):
            return None
        try:
            job.f64 = self.dtype.itemsize == 8
            n_rows = view.shape[0] if view.ndim == 2 else 0
            if view.ndim != 2 or not 1 <= n_rows <= SMALL_ROWS or batch_size < n_rows \
                    or view.shape[1] != n_in \
                    or n_rows * widest > SMALL_VALUES \
                    or view.format[1] != 0 or view.format[0] != (c'd' if job.f64 else c'f') \
                    or not (all_finite(<const double*> view.buf, n_rows * n_in) if job.f64
                            else all_finite(<const float*> view.buf, n_rows * n_in)):
                return None
            kept = []
            job.out = new_array_data((n_rows, self.net.layers[n_layers - 1].n_out),
                                     self.dtype, kept)
            job.buf_a = fastnn_thread_scratch((2 + self.net.res_depth) * n_rows * widest
                                              * itemsize)
            if job.buf_a == NULL:
                raise MemoryError()
            job.buf_b = (<char*> job.buf_a) + n_rows * widest * itemsize
            job.saved = (<char*> job.buf_b) + n_rows * widest * itemsize
            job.net, job.x, job.n = &self.net, view.buf, n_rows
            flops = forward_flops(&self.net, n_rows, n_layers)
            shared = small_in_flight > 0 or (small_last_thread != me and
                                             monotonic_s() - small_last_end < SMALL_SHARED_S)
            job.plan = 1  # fixed by the shape and the thread setting, not by the moment
            if max_threads > 1 and fastnn_blas_controlled():
                job.plan = <int> max(1.0, min(<double> min(max_threads, FASTNN_MAX_THREADS),
                                              flops / SMALL_GRAIN_FLOPS))
            n_threads = 1 if shared else job.plan
            self._readers += 1  # no GIL release since the trainer check: fit waits for it
            small_in_flight += 1
            try:
                with nogil:
                    if n_threads > 1 and (flops >= SMALL_WAKE_FLOPS
                                          or fastnn_team_awake(n_threads)):
                        n_threads = run_on_team(small_predict_job, &job, n_threads)
                    else:  # the plan's blocks on the calling thread, BLAS pinned as on
                        fastnn_blas_pin()        # the team: callers each on one core
                        small_predict_job(&job, 0, 1)
                        fastnn_blas_unpin()
                        if n_threads > 1:
                            fastnn_team_rouse(n_threads)
                        n_threads = 1
            finally:
                self._readers -= 1
                small_in_flight -= 1
                small_last_thread, small_last_end = me, monotonic_s()
            self._last_threads = n_threads
            return kept[0]
        finally:
            PyBuffer_Release(&view)

    def enter_reader(self, unsigned long thread):
        """Count a predict on its caller's thread in, unless another thread fits (False):
        one step under the GIL, as predict_small's own check is."""
        if self._trainer != 0 and self._trainer != thread:
            return False
        self._readers += 1
        return True

    def leave_reader(self):
        self._readers -= 1

    @property
    def readers(self):
        """Predicts running on their callers' threads now."""
        return self._readers

    def set_trainer(self, unsigned long thread):
        """Mark a fit running on `thread` (0: none); predicts from other threads then take
        the general path, which waits until fit ends."""
        self._trainer = thread

    def infer(self, X, out, buf_a, buf_b, Py_ssize_t chunk, int n_run=-1,
              bint check_finite=False, saved=None):
        """Run layers [0, n_run) (all: -1) into `out` on the calling thread, without the
        team: chunk rows at a time through the caller's two buffers (chunk x the widest
        layer, this dtype) and, for residual blocks, `saved` (residual_depth x chunk x the
        widest layer). Nothing shared is written, so several Python threads may call
        it at once with their own buffers; the GIL is released. X: C-contiguous, this
        dtype, checked by the caller (its finiteness here, with check_finite: NonFiniteRow
        names the first row with NaN or inf)."""
        if n_run == -1:
            n_run = self.net.n_layers
        if not 1 <= n_run <= self.net.n_layers:
            raise ValueError(f"n_run must be in [1, {self.net.n_layers}], got {n_run}")
        cdef Py_ssize_t widest = self.widest
        if X.dtype != self.dtype or X.ndim != 2 or X.shape[1] != self.net.layers[0].n_in \
                or not X.flags.c_contiguous or out.shape != (X.shape[0], self.net.layers[
                    n_run - 1].n_out) or out.dtype != self.dtype \
                or not out.flags.c_contiguous or buf_a.size < chunk * widest \
                or buf_b.size < chunk * widest or buf_a.dtype != self.dtype \
                or buf_b.dtype != self.dtype or chunk < 1 or (self.net.res_depth > 0 and (
                    saved is None or saved.dtype != self.dtype
                    or saved.size < self.net.res_depth * chunk * widest)):
            raise TypeError("infer: arrays of the wrong shape, dtype or layout")
        cdef void* px = data_ptr(X)
        cdef void* po = data_ptr(out)
        cdef void* pa = data_ptr(buf_a)
        cdef void* pb = data_ptr(buf_b)
        cdef void* psaved = data_ptr(saved) if self.net.res_depth > 0 else NULL
        cdef Py_ssize_t n_rows = X.shape[0]
        cdef bint f64 = self.dtype == np.float64
        cdef Py_ssize_t bad
        self._last_threads = 1
        with nogil:
            fastnn_blas_pin()  # one-thread products, as the team's: the same bits
            if f64:
                bad = infer_rows(&self.net, n_run, <double*> px, <double*> po, n_rows, chunk,
                                 <double*> pa, <double*> pb, <double*> psaved, check_finite)
            else:
                bad = infer_rows(&self.net, n_run, <float*> px, <float*> po, n_rows, chunk,
                                 <float*> pa, <float*> pb, <float*> psaved, check_finite)
            fastnn_blas_unpin()
        if bad >= 0:
            raise NonFiniteRow(bad)

    cdef _start_job(self, Job* job, X, targets, labels, weights, out, loss_kind,
                    int n_run, Py_ssize_t batch_size):
        """Check the inputs, fill in a Job's pointers and zero its results. loss_kind is a
        loss's code (LOSS_KINDS; -1: none) or (code, setting), the setting being the
        loss's one number (Huber's delta, cross-entropy's label smoothing; 0 without)."""
        self._check_inputs(X, weights, n_run)
        job.net = &self.net
        job.f64 = self.dtype == np.float64
        job.sparse = hasattr(X, "indptr")
        if job.sparse:
            job.X = data_ptr(X.data)
            job.sp_indices = <int64_t*> data_ptr(X.indices)
            job.sp_indptr = <int64_t*> data_ptr(X.indptr)
        else:
            job.X = data_ptr(X)
            job.sp_indices = job.sp_indptr = NULL
        job.T, job.out, job.W = data_ptr(targets), data_ptr(out), data_ptr(weights)
        job.labels = <int64_t*> data_ptr(labels)
        job.order = NULL
        job.n_samples = X.shape[0]
        job.step_rows, job.step_denoms, job.n_steps = NULL, NULL, 0
        job.reduce_failed = 0
        code, setting = loss_kind if isinstance(loss_kind, tuple) else (loss_kind, 0.0)
        job.batch_size, job.loss_kind, job.loss_setting = batch_size, code, setting
        job.n_run = n_run
        job.want_grads = job.training = False
        job.weight_total = 0
        job.stop, job.status = 0, RAN
        job.loss_sum, job.correct, job.failed_batch = 0, 0, -1
        job.next_start = job.next_batch = 0
        job.check_steps = job.bad_write = 0
        job.clip_norm = job.clip_value = 0
        job.step_lr = job.step_momentum = NULL
        job.end_batch = PY_SSIZE_T_MAX
        job.measure = job.check_finite = False
        job.next_block = job.halt = 0
        job.help = NULL

    cdef void* _block(self, list buffers, Py_ssize_t n_rows, Py_ssize_t width, dtype):
        """A new zeroed (n_rows, width) buffer, kept alive in `buffers`."""
        arr = np.zeros((n_rows, width), dtype=dtype)
        buffers.append(arr)
        return data_ptr(arr)

    cdef _check_inputs(self, X, weights, int n_run):
        """The layout the kernels read: X a C-contiguous 2-D array of the engine's dtype,
        or a CSR matrix whose values are (int64 indices and row pointers, checked by
        fastnn._validation.as_features to lie within X's shape); weights one per row."""
        if not 1 <= n_run <= self.net.n_layers:
            raise ValueError(f"n_run must be in [1, {self.net.n_layers}], got {n_run}")
        arrays = [X.data, X.indices, X.indptr] if hasattr(X, "indptr") else [X]
        if arrays[0].dtype != self.dtype or len(X.shape) != 2 \
                or X.shape[1] != self.net.layers[0].n_in \
                or any(not a.flags.c_contiguous for a in arrays) \
                or any(a.dtype != np.int64 for a in arrays[1:]):
            raise TypeError("X must be a C-contiguous 2-D array of the engine dtype, or a "
                            "CSR matrix of it with int64 indices")
        if weights is not None and (weights.dtype != self.dtype or weights.ndim != 1
                                    or not weights.flags.c_contiguous
                                    or weights.shape[0] != X.shape[0]):
            raise TypeError("weights must be a C-contiguous array of the engine dtype, one "
                            "per row of X")


def residual_depth(list kinds, list specs):
    """The deepest nesting of residual blocks in a plan, after checking that each BEGIN's
    link reaches its END and back, around a block that keeps the width."""
    depth = deepest = 0
    for l, kind in enumerate(kinds):
        if kind != RESIDUAL_BEGIN and kind != RESIDUAL_END:
            continue
        link = specs[l][7]["link"]
        partner = l + link
        if not 0 <= partner < len(kinds) or kinds[partner] != (
                RESIDUAL_END if kind == RESIDUAL_BEGIN else RESIDUAL_BEGIN) \
                or specs[partner][7]["link"] != -link or (link > 0) != (kind == RESIDUAL_BEGIN) \
                or specs[l][1] != specs[l][2] or specs[l][1] != specs[partner][1]:
            raise ValueError(f"layer {l}: a residual block's ends do not match")
        depth += 1 if kind == RESIDUAL_BEGIN else -1
        deepest = max(deepest, depth)
    return deepest
