"""Optimizers, each following torch.optim's documented algorithm and defaults.

An optimizer holds its hyperparameters and, per parameter, the state arrays its update
needs (SGD: the momentum buffer). The compiled engine applies the update in place, one
fused pass per parameter, with no Python per step. A new optimizer slots in by naming
its kernel (`kind`), listing its hyperparameters in kernel order (`hyperparameters`)
and saying how many state arrays it keeps (`n_state`).
"""
import numbers

import numpy as np

from . import _engine

__all__ = ["Optimizer", "SGD"]


def _check_number(value, name, minimum=0.0):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not np.isfinite(value) or value < minimum:
        raise ValueError(f"Invalid {name}: {value!r}")
    return float(value)


class Optimizer:
    """Base class: per-parameter state and the step count, bound to one model."""

    kind = None      # key of _engine.OPTIMIZER_KINDS
    n_state = 0      # state arrays per parameter

    def __init__(self, lr):
        self.lr = lr
        self.steps = 0          # updates made so far (torch's per-parameter `step`)
        self.state = None       # per parameter: list of n_state arrays
        self._params = None

    @property
    def lr(self):
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = _check_number(value, "learning rate")

    def hyperparameters(self):
        """The kernel's hyperparameters, in the order the kernel reads them."""
        raise NotImplementedError

    def _bind(self, params):
        """Attach to a model's parameter list, creating zeroed state on first use."""
        if self._params is not None and len(self._params) == len(params) and all(
                a is b for a, b in zip(self._params, params)):
            return
        self._params = list(params)
        self.state = [[np.zeros_like(p) for _ in range(self.n_state)] for p in params]
        self.steps = 0

    def _engine_args(self):
        return _engine.OPTIMIZER_KINDS[self.kind], self.hyperparameters(), self.state

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"{type(self).__name__}({args})"

    def _config(self):
        return {"lr": self.lr}


class SGD(Optimizer):
    r"""Stochastic gradient descent with momentum, as torch.optim.SGD.

    For each parameter p with gradient g, at step t (t = 1 first):

    .. math::
        g &\leftarrow g + \lambda p \quad (\text{weight\_decay } \lambda) \\
        b_t &= g \ (t = 1), \quad \mu b_{t-1} + (1 - \tau) g \ (t > 1) \\
        g &\leftarrow g + \mu b_t \ (\text{nesterov}), \quad b_t \ (\text{otherwise}),
            \quad \text{when } \mu \ne 0 \\
        p &\leftarrow p - \gamma g

    Args:
        lr: learning rate gamma.
        momentum: mu (0 disables the buffer).
        dampening: tau.
        nesterov: Nesterov momentum (needs momentum > 0 and dampening = 0).
        weight_decay: lambda, an L2 term added to the gradient.
    """

    kind = "sgd"
    n_state = 1

    def __init__(self, lr=0.01, momentum=0.0, dampening=0.0, nesterov=False,
                 weight_decay=0.0):
        super().__init__(lr)
        self.momentum = _check_number(momentum, "momentum value")
        self.dampening = _check_number(dampening, "dampening value", minimum=-np.inf)
        self.weight_decay = _check_number(weight_decay, "weight_decay value")
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def hyperparameters(self):
        return (self.lr, self.momentum, self.dampening, float(self.nesterov),
                self.weight_decay)

    def _config(self):
        return {"lr": self.lr, "momentum": self.momentum, "dampening": self.dampening,
                "nesterov": self.nesterov, "weight_decay": self.weight_decay}
