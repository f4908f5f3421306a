"""Residual blocks: Residual(*layers) computes x + block(x), the block's layers in order
(its output must keep the input's width), as a Sequential's layer; blocks nest.

The engine sees a block as its layers between two markers, a BEGIN and an END that hold
the offset to each other (csrc/engine/residual.pxi): a model's plan is the flat list of
engine layers that Layer._plan_layers() gives.
"""
from . import _engine
from .layers import Layer, LayerSpec, check_trainable, get_activation

__all__ = ["Residual"]


class _Marker(Layer):
    """A block's BEGIN or END in the engine's plan (no parameters)."""

    def __init__(self, kind, link):
        self.kind, self.link = kind, link

    def _spec(self, in_width):
        return LayerSpec(_engine.LAYER_KINDS[self.kind], in_width, in_width, 0.0, None, None,
                         0.0, {"link": self.link})


class Residual(Layer):
    """x + block(x), as the residual blocks of ResNets (e.g. the tabular ResNet's
    Residual(BatchNorm1d(d), Dense(d, h), ReLU(), Dropout(p), Dense(h, d), Dropout(p))).

    Args:
        layers: the block's layers (or activation names), in order, or one list of them;
            the block must map its input's width to the same width.
    """

    kind = "residual"

    def __init__(self, *layers):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = layers[0]
        layers = [get_activation(layer) if isinstance(layer, str) else layer
                  for layer in layers]
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Residual's layer {i} is a {type(layer).__name__}, not a "
                                f"fastnn layer or an activation name")
        self.layers = list(layers)

    @property
    def trainable(self):
        """Whether any layer of the block trains; setting it sets every layer's."""
        return any(layer.trainable for layer in self.layers)

    @trainable.setter
    def trainable(self, value):
        value = check_trainable(value)
        for layer in self.layers:
            layer.trainable = value

    def parameters(self):
        return [p for layer in self.layers for p in layer.parameters()]

    def buffers(self):
        return [b for layer in self.layers for b in layer.buffers()]

    def penalty(self):
        return sum(layer.penalty() for layer in self.layers)

    def _build(self, in_width, dtype, rng):
        width = in_width
        for i, layer in enumerate(self.layers):
            try:
                layer._build(width, dtype, rng)
            except ValueError as exc:
                raise ValueError(f"Residual's layer {i}: {exc}") from None
            width = layer.output_width(width)
        if width != in_width:
            raise ValueError(f"a Residual block must keep the width: it maps {in_width} "
                             f"features to {width}")

    def _plan_layers(self):
        inner = [plan for layer in self.layers for plan in layer._plan_layers()]
        span = len(inner) + 1
        return [_Marker("residual_begin", span)] + inner + [_Marker("residual_end", -span)]

    def _config(self):
        return {"kind": self.kind, "layers": [layer._config() for layer in self.layers]}

    def __repr__(self):
        inner = ", ".join(repr(layer) for layer in self.layers)
        return f"Residual({inner})"
