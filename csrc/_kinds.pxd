"""Integer codes shared by the kernels and the driver (exposed to Python by _engine)."""

cdef enum LayerKind:
    DENSE = 0
    IDENTITY = 1
    RELU = 2
    LEAKY_RELU = 3
    SIGMOID = 4
    TANH = 5
    SOFTMAX = 6
    DROPOUT = 7         # slope holds p
    BATCHNORM = 8
    GELU = 9            # exact: z * Phi(z)
    GELU_TANH = 10      # torch's approximate="tanh"
    SILU = 11
    ELU = 12            # slope holds alpha
    SOFTPLUS = 13       # slope holds beta, threshold the linear region's start
    LAYERNORM = 14
    RESIDUAL_BEGIN = 15 # link: the offset to its RESIDUAL_END
    RESIDUAL_END = 16   # link: the offset (negative) to its RESIDUAL_BEGIN
    EMBEDDING = 17      # the first layer only: code columns to learned vectors

cdef enum LossKind:
    CROSS_ENTROPY_LABELS = 0
    CROSS_ENTROPY_PROBS = 1
    BINARY_CROSS_ENTROPY = 2
    MSE = 3
    L1 = 4
    POISSON = 5         # Poisson NLL on the log of the rate
    HUBER = 6           # the setting holds delta

cdef enum OptimizerKind:
    SGD = 0
    ADAM = 1            # Adam and AdamW (decoupled weight decay)
    RMSPROP = 2
    ADAGRAD = 3
    ADADELTA = 4
    NADAM = 5
