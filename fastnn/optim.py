"""Optimizers, each following torch.optim's documented algorithm and defaults.

An optimizer holds its hyperparameters and, per parameter, the state arrays its update
needs (SGD: the momentum buffer). The compiled engine applies the update in place, one
fused pass per parameter, with no Python per step. A new optimizer slots in by naming
its kernel (`kind`), listing its hyperparameters in kernel order (`hyperparameters`)
and saying how many state arrays it keeps (`n_state`).
"""
import math
import numbers

import numpy as np

from . import _engine

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "NAdam",
           "get_optimizer",
           "LRSchedule", "StepLR", "ExponentialLR", "CosineAnnealingLR", "ReduceLROnPlateau",
           "LinearLR", "OneCycleLR"]


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
        """Attach to a model's parameter list, creating fresh state on first use."""
        if self._params is not None and len(self._params) == len(params) and all(
                a is b for a, b in zip(self._params, params)):
            return
        self._params = list(params)
        self.state = [[np.full_like(p, self._initial_state) for _ in range(self.n_state)]
                      for p in params]
        self.steps = 0

    _initial_state = 0.0

    def _rebind(self, params):
        """Attach to new arrays that hold the same parameters (a rebuilt or unpickled
        model), keeping the state and step count."""
        if self.state is None or len(self.state) != len(params) or any(
                a.shape != p.shape or a.dtype != p.dtype
                for arrays, p in zip(self.state, params) for a in arrays):
            self._params = None
            self._bind(params)
            return
        self._params = list(params)

    def _engine_args(self):
        return _engine.OPTIMIZER_KINDS[self.kind], self.hyperparameters(), self.state

    def _running_product(self):
        """What the engine carries between updates besides the step count (NAdam's
        product of momentum coefficients); 1 for the others."""
        return 1.0

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


def _check_betas(betas):
    try:
        beta1, beta2 = betas
    except (TypeError, ValueError):
        raise ValueError(f"Invalid betas: {betas!r}") from None
    for i, beta in enumerate((beta1, beta2)):
        if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not 0 <= beta < 1:
            raise ValueError(f"Invalid beta parameter at index {i}: {beta!r}")
    return float(beta1), float(beta2)


class Adam(Optimizer):
    r"""Adam, as torch.optim.Adam (Kingma & Ba, 2015). At step t, for each parameter p:

    .. math::
        g &\leftarrow g + \lambda p \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g, \quad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g^2 \\
        \hat v &= \max(\hat v_{t-1}, v_t) \ (\text{amsgrad}), \quad v_t \ (\text{otherwise}) \\
        p &\leftarrow p - \frac{\gamma}{1 - \beta_1^t} \,
            \frac{m_t}{\sqrt{\hat v} / \sqrt{1 - \beta_2^t} + \epsilon}

    Args:
        lr: gamma. betas: (beta1, beta2). eps: epsilon. weight_decay: lambda (an L2
        term added to the gradient). amsgrad: use the running maximum of v.
    """

    kind = "adam"
    n_state = 3
    _decoupled = False

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False):
        super().__init__(lr)
        self.betas = _check_betas(betas)
        self.eps = _check_number(eps, "epsilon value")
        self.weight_decay = _check_number(weight_decay, "weight_decay value")
        self.amsgrad = bool(amsgrad)

    def hyperparameters(self):
        return (self.lr, self.betas[0], self.betas[1], self.eps, self.weight_decay,
                float(self.amsgrad), float(self._decoupled))

    def _config(self):
        return {"lr": self.lr, "betas": self.betas, "eps": self.eps,
                "weight_decay": self.weight_decay, "amsgrad": self.amsgrad}


class AdamW(Adam):
    r"""AdamW, as torch.optim.AdamW (Loshchilov & Hutter, 2019): Adam with decoupled
    weight decay, p <- p (1 - gamma lambda) before the Adam step, instead of adding
    lambda p to the gradient. Same arguments as Adam; weight_decay defaults to 1e-2."""

    _decoupled = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False):
        super().__init__(lr, betas, eps, weight_decay, amsgrad)


class RMSprop(Optimizer):
    r"""RMSprop, as torch.optim.RMSprop. At each step, for each parameter p:

    .. math::
        g &\leftarrow g + \lambda p, \quad v = \alpha v + (1 - \alpha) g^2 \\
        \tilde v &= v - a^2 \text{ with } a = \alpha a + (1 - \alpha) g \ (\text{centered}),
            \quad v \ (\text{otherwise}) \\
        b &= \mu b + g / (\sqrt{\tilde v} + \epsilon), \quad p \leftarrow p - \gamma b
            \quad (\mu > 0); \qquad p \leftarrow p - \gamma g / (\sqrt{\tilde v} + \epsilon)
            \quad (\mu = 0)

    Args:
        lr: gamma. alpha: smoothing constant. eps: epsilon. weight_decay: lambda.
        momentum: mu. centered: normalise by the estimated variance of the gradient.
    """

    kind = "rmsprop"
    n_state = 3

    def __init__(self, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False):
        super().__init__(lr)
        self.alpha = _check_number(alpha, "alpha value")
        self.eps = _check_number(eps, "epsilon value")
        self.weight_decay = _check_number(weight_decay, "weight_decay value")
        self.momentum = _check_number(momentum, "momentum value")
        self.centered = bool(centered)

    def hyperparameters(self):
        return (self.lr, self.alpha, self.eps, self.weight_decay, self.momentum,
                float(self.centered))

    def _config(self):
        return {"lr": self.lr, "alpha": self.alpha, "eps": self.eps,
                "weight_decay": self.weight_decay, "momentum": self.momentum,
                "centered": self.centered}


class Adagrad(Optimizer):
    r"""Adagrad, as torch.optim.Adagrad. At step t, for each parameter p:

    .. math::
        g \leftarrow g + \lambda p, \quad s \leftarrow s + g^2, \quad
        p \leftarrow p - \frac{\gamma}{1 + (t - 1) \eta} \, \frac{g}{\sqrt{s} + \epsilon}

    Args:
        lr: gamma. lr_decay: eta. weight_decay: lambda.
        initial_accumulator_value: the starting value of s. eps: epsilon.
    """

    kind = "adagrad"
    n_state = 1

    def __init__(self, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                 eps=1e-10):
        super().__init__(lr)
        self.lr_decay = _check_number(lr_decay, "lr_decay value")
        self.weight_decay = _check_number(weight_decay, "weight_decay value")
        self.initial_accumulator_value = _check_number(
            initial_accumulator_value, "initial_accumulator_value")
        self.eps = _check_number(eps, "epsilon value")

    @property
    def _initial_state(self):
        return self.initial_accumulator_value

    def hyperparameters(self):
        return (self.lr, self.lr_decay, self.weight_decay, self.eps)

    def _config(self):
        return {"lr": self.lr, "lr_decay": self.lr_decay, "weight_decay": self.weight_decay,
                "initial_accumulator_value": self.initial_accumulator_value, "eps": self.eps}


class Adadelta(Optimizer):
    r"""Adadelta, as torch.optim.Adadelta (Zeiler, 2012). At each step, for each p:

    .. math::
        g &\leftarrow g + \lambda p, \quad v \leftarrow \rho v + (1 - \rho) g^2 \\
        d &= \frac{\sqrt{u + \epsilon}}{\sqrt{v + \epsilon}} g, \quad
        u \leftarrow \rho u + (1 - \rho) d^2, \quad p \leftarrow p - \gamma d

    Args:
        lr: gamma (torch's default 1). rho: the averages' decay. eps: epsilon.
        weight_decay: lambda.
    """

    kind = "adadelta"
    n_state = 2

    def __init__(self, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0):
        super().__init__(lr)
        if isinstance(rho, bool) or not isinstance(rho, numbers.Real) or not 0 <= rho <= 1:
            raise ValueError(f"Invalid rho value: {rho!r}")
        self.rho = float(rho)
        self.eps = _check_number(eps, "epsilon value")
        self.weight_decay = _check_number(weight_decay, "weight_decay value")

    def hyperparameters(self):
        return (self.lr, self.rho, self.eps, self.weight_decay)

    def _config(self):
        return {"lr": self.lr, "rho": self.rho, "eps": self.eps,
                "weight_decay": self.weight_decay}


class NAdam(Optimizer):
    r"""NAdam, as torch.optim.NAdam (Dozat, 2016): Adam with Nesterov momentum and a
    momentum schedule. At step t, with
    :math:`\mu_t = \beta_1 (1 - 0.96^{t \psi} / 2)` and :math:`P_t = \prod_{i \le t} \mu_i`:

    .. math::
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g, \quad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g^2, \quad
        d = \sqrt{v_t / (1 - \beta_2^t)} + \epsilon \\
        p &\leftarrow p - \gamma \frac{1 - \mu_t}{1 - P_t} \frac{g}{d}
            - \gamma \frac{\mu_{t+1}}{1 - P_t \mu_{t+1}} \frac{m_t}{d}

    Args:
        lr: gamma. betas: (beta1, beta2). eps: epsilon. weight_decay: lambda, added to
        the gradient, or with decoupled_weight_decay p <- p (1 - gamma lambda) first
        (torch's NAdamW form). momentum_decay: psi.
    """

    kind = "nadam"
    n_state = 2

    def __init__(self, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 momentum_decay=4e-3, decoupled_weight_decay=False):
        super().__init__(lr)
        self.betas = _check_betas(betas)
        self.eps = _check_number(eps, "epsilon value")
        self.weight_decay = _check_number(weight_decay, "weight_decay value")
        self.momentum_decay = _check_number(momentum_decay, "momentum_decay value")
        self.decoupled_weight_decay = bool(decoupled_weight_decay)
        self._products = None  # P after 0, 1, ... updates, for (beta1, psi) as first

    def hyperparameters(self):
        return (self.lr, self.betas[0], self.betas[1], self.eps, self.weight_decay,
                self.momentum_decay, float(self.decoupled_weight_decay))

    def _running_product(self):
        # torch multiplies the coefficients one step at a time; so does the engine, so
        # the product over `steps` is formed the same way, in the same order
        beta1, psi = self.betas[0], self.momentum_decay
        if self._products is None or self._products[0] != (beta1, psi):
            self._products = [(beta1, psi), 1.0]
        while len(self._products) <= self.steps + 1:
            t = len(self._products) - 1
            self._products.append(self._products[-1] * (beta1 * (1.0 - 0.5 * 0.96 ** (t * psi))))
        return self._products[self.steps + 1]

    def _config(self):
        return {"lr": self.lr, "betas": self.betas, "eps": self.eps,
                "weight_decay": self.weight_decay, "momentum_decay": self.momentum_decay,
                "decoupled_weight_decay": self.decoupled_weight_decay}


# -- learning-rate schedules (stepped once per epoch, as torch.optim.lr_scheduler) -------

OPTIMIZER_NAMES = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop,
                   "adagrad": Adagrad, "adadelta": Adadelta, "nadam": NAdam}


def get_optimizer(optimizer, **settings):
    """An optimizer from its name ("sgd", "adam", "adamw", "rmsprop", "adagrad",
    "adadelta", "nadam"), with
    torch's defaults except the `settings` given (e.g. lr=0.1); an Optimizer is returned
    as it is."""
    if isinstance(optimizer, Optimizer) and not settings:
        return optimizer
    if not isinstance(optimizer, str) or optimizer.lower() not in OPTIMIZER_NAMES:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected one of "
                         f"{sorted(OPTIMIZER_NAMES)} or a fastnn.optim optimizer")
    return OPTIMIZER_NAMES[optimizer.lower()](**settings)


class LRSchedule:
    """Base class: sets optimizer.lr from the count of scheduler steps, `epoch` (torch's
    last_epoch). A per-epoch schedule's `step(metric)` is called by fit after each epoch.
    A per-step schedule (per_step True) is stepped after every optimizer update, as torch's
    scheduler.step() in the batch loop: fit hands the engine each epoch's learning rates
    (and momenta, momentum_at) as tables, so the steps stay in compiled code."""

    per_step = False

    def __init__(self):
        self.optimizer = None
        self.base_lr = None
        self.epoch = 0

    def _attach(self, optimizer):
        if self.optimizer is not optimizer:
            self._started(optimizer)
            self.optimizer, self.base_lr, self.epoch = optimizer, optimizer.lr, 0
            if self.per_step:  # the optimizer shows the first update's settings
                self._advance(0)

    def _started(self, optimizer):
        """A schedule's own check and setup when it meets its optimizer."""

    def step(self, metric=None):
        if self.per_step:
            return  # fit steps it per update (_tables, _advance)
        self.epoch += 1
        self.optimizer.lr = self.lr_at(self.epoch)

    def lr_at(self, epoch):
        raise NotImplementedError

    def momentum_at(self, step):
        """The momentum (SGD) or beta1 (Adam, AdamW, NAdam) for a step, or None to leave
        it."""
        return None

    def _tables(self, n_steps):
        """(learning rates, momenta or None) of the next n_steps updates, float64."""
        steps = range(self.epoch, self.epoch + n_steps)
        lr = np.array([self.lr_at(k) for k in steps], dtype=np.float64)
        momentum = None
        if self.momentum_at(self.epoch) is not None:
            momentum = np.array([self.momentum_at(k) for k in steps], dtype=np.float64)
        return lr, momentum

    def _advance(self, n_steps):
        """n_steps updates were made: the optimizer holds the next step's settings."""
        self.epoch += n_steps
        self.optimizer.lr = self.lr_at(self.epoch)
        momentum = self.momentum_at(self.epoch)
        if momentum is not None:
            _set_momentum(self.optimizer, momentum)

    def state_dict(self):
        return {k: v for k, v in vars(self).items() if k != "optimizer"}

    def load_state_dict(self, state):
        vars(self).update(state)


class StepLR(LRSchedule):
    """lr = base_lr * gamma ** (epoch // step_size)."""

    def __init__(self, step_size, gamma=0.1):
        super().__init__()
        if isinstance(step_size, bool) or not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"Invalid step_size: {step_size!r}")
        self.step_size = step_size
        self.gamma = _check_number(gamma, "gamma")

    def lr_at(self, epoch):
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class ExponentialLR(LRSchedule):
    """lr = base_lr * gamma ** epoch."""

    def __init__(self, gamma):
        super().__init__()
        self.gamma = _check_number(gamma, "gamma")

    def lr_at(self, epoch):
        return self.base_lr * self.gamma ** epoch


class CosineAnnealingLR(LRSchedule):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2, epoch
    counting epochs, or with per_step=True the optimizer's updates (T_max in updates)."""

    def __init__(self, T_max, eta_min=0.0, per_step=False):
        super().__init__()
        self.per_step = bool(per_step)
        if isinstance(T_max, bool) or not isinstance(T_max, int) or T_max < 1:
            raise ValueError(f"Invalid T_max: {T_max!r}")
        self.T_max = T_max
        self.eta_min = _check_number(eta_min, "eta_min")

    def lr_at(self, epoch):
        return self.eta_min + (self.base_lr - self.eta_min) * (
            1 + np.cos(np.pi * epoch / self.T_max)) / 2


def _set_momentum(optimizer, value):
    if isinstance(optimizer, SGD):
        optimizer.momentum = value
    else:
        optimizer.betas = (value, optimizer.betas[1])


def _check_cycles_momentum(optimizer):
    if isinstance(optimizer, SGD) and optimizer.momentum <= 0:
        raise ValueError("cycle_momentum needs SGD with momentum > 0 (or "
                         "cycle_momentum=False)")
    if not isinstance(optimizer, (SGD, Adam, NAdam)):
        raise ValueError(f"cycle_momentum cycles SGD's momentum or Adam's, AdamW's and "
                         f"NAdam's beta1; {type(optimizer).__name__} has neither here: "
                         f"give cycle_momentum=False")


class LinearLR(LRSchedule):
    """Linear warmup (or decay), stepped per update as torch's LinearLR in the batch loop:
    lr = base_lr * (start_factor + (end_factor - start_factor) * min(t, total_iters) /
    total_iters) at update t (0-based)."""

    per_step = True

    def __init__(self, start_factor=1.0 / 3, end_factor=1.0, total_iters=5):
        super().__init__()
        if not 0 < start_factor <= 1 or not 0 <= end_factor <= 1:
            raise ValueError("start_factor must be in (0, 1] and end_factor in [0, 1]")
        if isinstance(total_iters, bool) or not isinstance(total_iters, int) \
                or total_iters < 1:
            raise ValueError(f"Invalid total_iters: {total_iters!r}")
        self.start_factor, self.end_factor = float(start_factor), float(end_factor)
        self.total_iters = total_iters

    def lr_at(self, step):
        return self.base_lr * (self.start_factor + (self.end_factor - self.start_factor)
                               * min(self.total_iters, step) / self.total_iters)


class OneCycleLR(LRSchedule):
    """The one-cycle policy, as torch's OneCycleLR stepped per update: the learning rate
    rises from max_lr / div_factor to max_lr over the first pct_start of total_steps,
    then falls to max_lr / (div_factor * final_div_factor) (cosine or linear annealing;
    three_phase: back to the start first, then down), while the momentum (SGD's, or
    Adam's, AdamW's and NAdam's beta1) moves the opposite way between max_momentum and
    base_momentum (cycle_momentum). Training past total_steps is an error, as in torch;
    after the cycle the optimizer keeps the last update's settings."""

    per_step = True

    def __init__(self, max_lr, total_steps, pct_start=0.3, anneal_strategy="cos",
                 cycle_momentum=True, base_momentum=0.85, max_momentum=0.95, div_factor=25.0,
                 final_div_factor=1e4, three_phase=False):
        super().__init__()
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) \
                or total_steps < 1:
            raise ValueError(f"Expected positive integer total_steps, but got {total_steps!r}")
        if not 0 <= pct_start <= 1:
            raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start!r}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must be one of 'cos' or 'linear', "
                             f"instead got {anneal_strategy!r}")
        self.max_lr = _check_number(max_lr, "max_lr")
        self.total_steps, self.pct_start = total_steps, float(pct_start)
        self.anneal_strategy, self.cycle_momentum = anneal_strategy, bool(cycle_momentum)
        self.base_momentum, self.max_momentum = float(base_momentum), float(max_momentum)
        self.div_factor, self.final_div_factor = float(div_factor), float(final_div_factor)
        self.three_phase = bool(three_phase)
        initial = self.max_lr / self.div_factor
        low = initial / self.final_div_factor
        up, down = (self.max_momentum, self.base_momentum), (self.base_momentum,
                                                             self.max_momentum)
        end = float(self.pct_start * total_steps) - 1
        if self.three_phase:  # (end step, lr from, lr to, momentum from, momentum to)
            self.phases = [(end, initial, self.max_lr) + up,
                           (float(2 * self.pct_start * total_steps) - 2, self.max_lr,
                            initial) + down,
                           (total_steps - 1, initial, low) + (self.max_momentum,) * 2]
        else:
            self.phases = [(end, initial, self.max_lr) + up,
                           (total_steps - 1, self.max_lr, low) + down]

    def _started(self, optimizer):
        if self.cycle_momentum:
            _check_cycles_momentum(optimizer)

    def _anneal(self, start, end, pct):
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _at(self, step, what):
        if step > self.total_steps:
            raise ValueError(f"Tried to step {step} times. The specified number of total "
                             f"steps is {self.total_steps}")
        start = 0
        for i, phase in enumerate(self.phases):
            if step <= phase[0] or i == len(self.phases) - 1:
                pct = (step - start) / (phase[0] - start)
                return self._anneal(phase[1 + 2 * what], phase[2 + 2 * what], pct)
            start = phase[0]

    def lr_at(self, step):
        # after the last update the optimizer keeps the last one's settings
        return self._at(min(step, self.total_steps - 1), 0)

    def momentum_at(self, step):
        return self._at(min(step, self.total_steps - 1), 1) if self.cycle_momentum else None

    def _tables(self, n_steps):
        if self.epoch + n_steps > self.total_steps:
            raise ValueError(f"OneCycleLR has total_steps={self.total_steps}, and this "
                             f"epoch would take the updates to {self.epoch + n_steps}")
        return super()._tables(n_steps)


class ReduceLROnPlateau(LRSchedule):
    """Multiply lr by `factor` once the monitored loss (validation loss when fit has
    validation data, else the training loss) has not improved for more than `patience`
    epochs, as torch's ReduceLROnPlateau (threshold_mode "rel", no cooldown, min_lr 0).
    mode "min": improved means metric < best * (1 - threshold); "max": > best * (1 +
    threshold)."""

    def __init__(self, mode="min", factor=0.1, patience=10, threshold=1e-4):
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if not 0 <= factor < 1:
            raise ValueError("Factor should be < 1.0.")
        self.mode, self.factor = mode, float(factor)
        self.patience, self.threshold = int(patience), float(threshold)
        self.best = np.inf if mode == "min" else -np.inf
        self.num_bad_epochs = 0

    def step(self, metric=None):
        if metric is None:
            raise ValueError("ReduceLROnPlateau needs the monitored loss")
        self.epoch += 1
        better = metric < self.best * (1 - self.threshold) if self.mode == "min" else \
            metric > self.best * (1 + self.threshold)
        if better:
            self.best, self.num_bad_epochs = metric, 0
        else:
            self.num_bad_epochs += 1
        if self.num_bad_epochs > self.patience:
            new_lr = self.optimizer.lr * self.factor
            if self.optimizer.lr - new_lr > 1e-8:
                self.optimizer.lr = new_lr
            self.num_bad_epochs = 0
