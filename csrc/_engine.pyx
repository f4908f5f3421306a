"""The training engine: every batch of fit, predict, evaluate and gradients runs here, in
compiled code on fastnn's thread team, with the GIL released (docs/design.md says why).

The contract with the Python layer (fastnn/model.py builds one Engine per model):
- Input arrives validated and converted once per call: C-contiguous arrays of the Engine's
  dtype, or a CSR matrix of it. Nothing is allocated per step: the buffers hold
  `capacity` rows and grow only when a call needs more.
- A training step is cut into the blocks of a plan (Engine.plan_threads). Each block's
  products and partial sums are made the same way whichever thread runs it, so results
  depend on the plan only: bitwise reproducible for a given plan, however busy the machine.
- A step whose loss is not finite, or whose update writes NaN or inf, leaves the
  parameters, optimizer state and batch norm's running statistics as they were before it
  (Engine.failure says which).
- Ctrl-C is seen between steps; the parameters are then those of the last whole step.
- BLAS is pinned to one thread while the team runs, so exactly one pool is ever busy.

The parts, one concern each (csrc/engine/), included here in dependency order so that
they form one compilation unit: one team, one set of settings.
"""

from cython cimport floating
from libc.math cimport isfinite, sqrt
from libc.stdint cimport int64_t, uint64_t
from cpython.pyport cimport PY_SSIZE_T_MAX
from libc.stdlib cimport calloc, free, getenv
from libc.string cimport memcpy, memset

import contextlib
import os

import numpy as np

from _activations cimport activation_backward, activation_forward
from _blas cimport axpy, gemv, sum_of_squares
from _dense cimport dense_forward, dense_input_grad, dense_param_grad
from _batchnorm cimport (bn_colsum, bn_colsqdev, bn_grad_input, bn_grad_sums, bn_normalize,
                         batchnorm_backward, batchnorm_eval_backward, batchnorm_eval_forward,
                         batchnorm_train_forward)
from _finite cimport all_finite, first_nonfinite
from _layernorm cimport ln_backward_rows, ln_project, ln_rows
from _dropout cimport dropout_advance, dropout_backward, dropout_forward_block
from _kinds cimport (BATCHNORM, DENSE, DROPOUT, IDENTITY, RELU, LEAKY_RELU, SIGMOID, TANH, SOFTMAX,
                     GELU, GELU_TANH, SILU, ELU, SOFTPLUS, LAYERNORM,
                     RESIDUAL_BEGIN, RESIDUAL_END, EMBEDDING,
                     CROSS_ENTROPY_LABELS, CROSS_ENTROPY_PROBS, BINARY_CROSS_ENTROPY, MSE, L1,
                     POISSON, HUBER,
                     SGD, ADAM, RMSPROP, ADAGRAD, ADADELTA, NADAM)
from _losses cimport count_correct, loss_forward_backward
from _optimizers cimport (GradientDestination, TO_GRAD, destination_array,
                          gradient_destination, momentum_scale_after, momentum_scale_small,
                          optimizer_finish, uses_scaled_momentum, nadam_product_after)

from cpython.buffer cimport PyBUF_C_CONTIGUOUS, PyBUF_FORMAT, PyBuffer_Release, PyObject_GetBuffer
from cpython.pythread cimport PyThread_get_thread_ident
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

include "engine/team.pxi"
include "engine/plan.pxi"
include "engine/elementwise.pxi"
include "engine/batchnorm.pxi"
include "engine/layernorm.pxi"
include "engine/residual.pxi"
include "engine/embedding.pxi"
include "engine/updates.pxi"
include "engine/dense.pxi"
include "engine/load_policy.pxi"
include "engine/helpers.pxi"
include "engine/kinds.pxi"
include "engine/passes.pxi"
include "engine/tangent.pxi"
include "engine/clipping.pxi"
include "engine/reduce.pxi"
include "engine/state.pxi"
include "engine/train.pxi"
include "engine/evaluate.pxi"
include "engine/small.pxi"
include "engine/busy.pxi"
include "engine/engine.pxi"
include "engine/settings.pxi"
