"""Plain NumPy versions of every compiled kernel, written from the documented formulas.

They share the kernels' meaning (not their speed) and exist so tests can hold the
compiled code against an independent statement of the maths. They compute in the
dtype they are given; pass float64 for reference values.
"""
import numpy as np


def dense_forward(x, weight, bias=None):
    """x @ weight.T + bias."""
    out = x @ weight.T
    return out if bias is None else out + bias


def dense_backward(x, weight, grad_out):
    """(grad_x, grad_weight, grad_bias) of an affine layer."""
    return grad_out @ weight, grad_out.T @ x, grad_out.sum(axis=0)


def _normal_cdf(z):
    """Phi(z), accurate in the lower tail too (1 + erf cancels there)."""
    from scipy.special import ndtr
    return ndtr(z)


def _gelu_tanh_parts(z):
    """(tanh of the tanh form's inner term, the inner term's derivative)."""
    c = np.sqrt(2 / np.pi)
    return np.tanh(c * (z + 0.044715 * z ** 3)), c * (1 + 3 * 0.044715 * z ** 2)


def activation(kind, z, slope=0.01, threshold=20.0):
    """f(z); slope is LeakyReLU's slope, ELU's alpha, Softplus's beta."""
    if kind == "gelu":
        return z * _normal_cdf(z)
    if kind == "gelu_tanh":
        return 0.5 * z * (1 + _gelu_tanh_parts(z)[0])
    if kind == "silu":
        return z * activation("sigmoid", z)
    if kind == "elu":
        return np.where(z > 0, z, slope * np.expm1(np.minimum(z, 0)))
    if kind == "softplus":
        return np.where(slope * z > threshold, z,
                        np.logaddexp(0, slope * np.minimum(z, threshold / slope)) / slope)
    if kind == "identity":
        return z.copy()
    if kind == "relu":
        return np.where(z > 0, z, 0).astype(z.dtype)
    if kind == "leaky_relu":
        return np.where(z > 0, z, slope * z).astype(z.dtype)
    if kind == "sigmoid":
        return 0.5 * (1 + np.tanh(0.5 * z))  # overflow-free form of 1 / (1 + exp(-z))
    if kind == "tanh":
        return np.tanh(z)
    if kind == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    raise ValueError(kind)


def activation_grad(kind, z, g, slope=0.01, threshold=20.0):
    """dL/dz from g = dL/da for a = activation(kind, z)."""
    a = activation(kind, z, slope, threshold)
    if kind == "gelu":
        return g * (_normal_cdf(z) + z * np.exp(-z * z / 2) / np.sqrt(2 * np.pi))
    if kind == "gelu_tanh":
        t, inner = _gelu_tanh_parts(z)
        return g * (0.5 * (1 + t) + 0.5 * z * (1 - t * t) * inner)
    if kind == "silu":
        s = activation("sigmoid", z)
        return g * s * (1 + z * (1 - s))
    if kind == "elu":
        return np.where(z > 0, g, g * slope * np.exp(np.minimum(z, 0)))
    if kind == "softplus":
        return np.where(slope * z > threshold, g,
                        g * activation("sigmoid", slope * np.minimum(z, threshold / slope)))
    if kind == "identity":
        return g.copy()
    if kind == "relu":
        return np.where(z > 0, g, 0).astype(z.dtype)
    if kind == "leaky_relu":
        return np.where(z > 0, g, slope * g).astype(z.dtype)
    if kind == "sigmoid":
        return g * a * (1 - a)
    if kind == "tanh":
        return g * (1 - a * a)
    if kind == "softmax":
        return a * (g - (g * a).sum(axis=1, keepdims=True))
    raise ValueError(kind)


def log_softmax(x):
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def loss(name, x, target, setting=0.0):
    """(mean loss, gradient of the mean w.r.t. x), as torch.nn defines each loss.

    name: "cross_entropy" (target: int labels (N,) or probabilities (N, C)),
    "binary_cross_entropy" (on logits), "mse", "l1", "poisson_nll" (on the log rate),
    "huber"; `setting` is Huber's delta or cross-entropy's label smoothing.
    """
    n = x.shape[0]
    if name == "cross_entropy":
        logp = log_softmax(x)
        if target.ndim == 1:
            onehot = np.zeros_like(x)
            onehot[np.arange(n), target] = 1
            target = onehot
        if setting:
            target = (1 - setting) * target + setting / x.shape[1]
        value = -(target * logp).sum() / n
        grad = (np.exp(logp) * target.sum(axis=1, keepdims=True) - target) / n
        return value, grad
    target = target.reshape(x.shape)
    if name == "binary_cross_entropy":
        value = np.mean(np.maximum(x, 0) - x * target + np.log1p(np.exp(-np.abs(x))))
        return value, (activation("sigmoid", x) - target) / x.size
    if name == "mse":
        return np.mean((x - target) ** 2), 2 * (x - target) / x.size
    if name == "l1":
        return np.mean(np.abs(x - target)), np.sign(x - target) / x.size
    if name == "poisson_nll":
        return np.mean(np.exp(x) - x * target), (np.exp(x) - target) / x.size
    if name == "huber":
        d, delta = x - target, setting
        value = np.where(np.abs(d) < delta, 0.5 * d * d, delta * (np.abs(d) - delta / 2))
        return np.mean(value), np.clip(d, -delta, delta) / x.size
    raise ValueError(name)


def sgd_step(p, g, buf, step, lr, momentum=0.0, dampening=0.0, nesterov=False,
             weight_decay=0.0):
    """One torch.optim.SGD update; returns the new (p, buf). step = updates made before."""
    g = g + weight_decay * p
    if momentum != 0:
        buf = g.copy() if step == 0 else momentum * buf + (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf
    return p - lr * g, buf


def adam_step(p, g, state, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
              amsgrad=False, decoupled=False):
    """One torch.optim.Adam (decoupled: AdamW) update; state = [m, v, v_max] or None."""
    m, v, vmax = state or (np.zeros_like(p), np.zeros_like(p), np.zeros_like(p))
    t = step + 1
    if decoupled:
        p = p * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    m = betas[0] * m + (1 - betas[0]) * g
    v = betas[1] * v + (1 - betas[1]) * g * g
    vmax = np.maximum(vmax, v)
    denom = np.sqrt(vmax if amsgrad else v) / np.sqrt(1 - betas[1] ** t) + eps
    return p - lr / (1 - betas[0] ** t) * m / denom, [m, v, vmax]


def adamw_step(p, g, state, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
               amsgrad=False):
    """One torch.optim.AdamW update (its own defaults)."""
    return adam_step(p, g, state, step, lr, betas, eps, weight_decay, amsgrad, decoupled=True)


def rmsprop_step(p, g, state, step, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0,
                 momentum=0.0, centered=False):
    """One torch.optim.RMSprop update; state = [v, buf, grad_avg] or None."""
    v, buf, avg = state or (np.zeros_like(p), np.zeros_like(p), np.zeros_like(p))
    g = g + weight_decay * p
    v = alpha * v + (1 - alpha) * g * g
    if centered:
        avg = alpha * avg + (1 - alpha) * g
        denom = np.sqrt(v - avg * avg) + eps
    else:
        denom = np.sqrt(v) + eps
    if momentum > 0:
        buf = momentum * buf + g / denom
        return p - lr * buf, [v, buf, avg]
    return p - lr * g / denom, [v, buf, avg]


def adagrad_step(p, g, state, step, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10):
    """One torch.optim.Adagrad update; state = [sum] or None."""
    total = state[0] if state else np.full_like(p, initial_accumulator_value)
    g = g + weight_decay * p
    total = total + g * g
    return p - lr / (1 + step * lr_decay) * g / (np.sqrt(total) + eps), [total]


def adadelta_step(p, g, state, step, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0):
    """torch.optim.Adadelta; state = [square average v, accumulated delta u]."""
    v, u = state if state is not None else (np.zeros_like(p), np.zeros_like(p))
    g = g + weight_decay * p
    v = rho * v + (1 - rho) * g * g
    d = np.sqrt(u + eps) / np.sqrt(v + eps) * g
    u = rho * u + (1 - rho) * d * d
    return p - lr * d, [v, u]


def nadam_step(p, g, state, step, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
               momentum_decay=4e-3, decoupled_weight_decay=False):
    """torch.optim.NAdam; state = [m, v, product of the momentum coefficients so far]."""
    m, v, product = state if state is not None else (np.zeros_like(p), np.zeros_like(p), 1.0)
    beta1, beta2 = betas
    t = step + 1
    mu = beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))
    mu_next = beta1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
    product = product * mu
    if decoupled_weight_decay:
        p = p * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    d = np.sqrt(v / (1 - beta2 ** t)) + eps
    p = p - lr * (1 - mu) / (1 - product) * g / d \
        - lr * mu_next / (1 - product * mu_next) * m / d
    return p, [m, v, product]


def mlp_forward(layers, x):
    """Forward through [(kind, params)], params (W, b) for "dense", the activation's
    settings (slope[, threshold]) or None otherwise; returns every layer's input and the
    output."""
    inputs = []
    for kind, params in layers:
        inputs.append(x)
        if kind == "dense":
            x = dense_forward(x, *params)
        else:
            x = activation(kind, x, *(() if params is None else params))
    return inputs, x


def mlp_loss_and_gradients(layers, x, target, loss_name, setting=0.0):
    """(mean loss, [dW1, db1, ...]) for a network given as in mlp_forward."""
    inputs, out = mlp_forward(layers, x)
    value, g = loss(loss_name, out, target, setting)
    grads = []
    for (kind, params), inp in zip(reversed(layers), reversed(inputs)):
        if kind == "dense":
            grad_x, gw, gb = dense_backward(inp, params[0], g)
            grads = [gw] + ([gb] if params[1] is not None else []) + grads
            g = grad_x
        else:
            g = activation_grad(kind, inp, g, *(() if params is None else params))
    return value, grads


def dropout_mask(shape, p, seed):
    """Dropout's scale factors as csrc/_dropout.pxd defines them: element e (row-major) is
    dropped when the low (e even) or high (e odd) 32 bits of splitmix64's draw e // 2 + 1
    from `seed` are below p * 2^32, else scaled by 1 / (1 - p)."""
    with np.errstate(over="ignore"):
        e = np.arange(int(np.prod(shape)), dtype=np.uint64)
        x = np.uint64(seed) + (e // np.uint64(2) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = (x ^ (x >> np.uint64(31))) >> (np.uint64(32) * (e & np.uint64(1)))
    kept = (x & np.uint64(0xFFFFFFFF)) >= np.uint64(int(p * 4294967296.0))
    return np.where(kept, 1.0 / (1.0 - p), 0.0).reshape(shape)

