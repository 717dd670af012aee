"""A hand-written batched forward and backward pass for plain multilayer perceptrons.

``nn.Sequential`` stacks of ``nn.Linear`` layers with ReLU, Tanh or Sigmoid between them, trained
with cross-entropy or mean squared error, are the most common models in simulation. For them,
:class:`DenseStack` computes every client's masked-mean loss and gradient with batched matrix
products (``torch.baddbmm`` / ``torch.bmm`` over a ``[clients, ...]`` leading dimension) and
the textbook backward pass, with no ``vmap`` and no autograd graph: about twice as fast per
local step as :class:`~fedloom.executors._batched.BatchedModel`'s general path at the
benchmark's sizes (``make bench``), with the same arithmetic up to float summation order.

Any other module, loss or dtype is left to the general ``vmap`` path; the vectorized executor's
trial step checks either path against :meth:`fedloom.torch.TorchModel.loss_and_grad` before a
single client trains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from fedloom.torch.vectors import StateTensor

ACTIVATIONS: dict[type[nn.Module], str] = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid"}
"""The element-wise layers the dense path knows, by the name :func:`_activate` uses."""

LOSSES = ("cross_entropy", "mse")


@dataclass(frozen=True)
class Dense:
    """One ``nn.Linear``: where its weight ``[fan_out, fan_in]`` and bias sit in ``theta``."""

    fan_in: int
    fan_out: int
    weight: slice
    bias: slice | None


Layer = Dense | str
"""A dense layer, or the name of an activation."""


@dataclass(frozen=True)
class DenseStack:
    """A multilayer perceptron as a function of a ``[clients, dims]`` parameter matrix."""

    layers: tuple[Layer, ...]
    loss: str
    size: int

    @staticmethod
    def of(module: nn.Module, entries: Sequence[StateTensor], loss: str) -> DenseStack | None:
        """The dense path for ``module``, or None when it is not a plain float32 MLP.

        ``entries`` are the module's tensors in layout order; every one must be a trainable
        parameter of one of the module's ``nn.Linear`` layers.
        """
        if type(module) is not nn.Sequential or loss not in LOSSES:
            return None
        if not entries or any(not e.trainable or e.is_buffer for e in entries):
            return None
        if any(e.tensor.dtype != torch.float32 for e in entries):
            return None
        offsets: dict[str, slice] = {}
        start = 0
        for entry in entries:
            offsets[entry.name] = slice(start, start + entry.tensor.numel())
            start += entry.tensor.numel()
        layers: list[Layer] = []
        used = 0
        for name, child in module.named_children():
            if type(child) is nn.Linear:
                weight = offsets.get(f"{name}.weight")
                bias = offsets.get(f"{name}.bias")
                if weight is None or (child.bias is not None and bias is None):
                    return None
                layers.append(Dense(child.in_features, child.out_features, weight, bias))
                used += 1 + (bias is not None)
            elif type(child) in ACTIVATIONS:
                layers.append(ACTIVATIONS[type(child)])
            else:
                return None
        if used != len(entries) or not any(isinstance(layer, Dense) for layer in layers):
            return None
        # The gradient is assembled layer by layer, weight then bias: the layout must agree.
        order = [
            piece
            for layer in layers
            if isinstance(layer, Dense)
            for piece in (layer.weight, layer.bias)
            if piece is not None
        ]
        if [p.start for p in order] != [0, *(p.stop for p in order[:-1])]:
            return None
        return DenseStack(tuple(layers), loss, start)

    def loss_and_grad(
        self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Per-client mean losses ``[clients]`` and gradients ``[clients, dims]``, as
        :meth:`BatchedModel.loss_and_grad`; None when these inputs need the general path
        (inputs that are not ``[clients, batch, features]`` float32, targets of another shape).
        """
        computed = self.loss_and_grad_pieces(theta, x, y, mask)
        if computed is None:
            return None
        losses, pieces = computed
        return losses, torch.cat([piece for _, piece in pieces], dim=1)

    def loss_and_grad_pieces(
        self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, list[tuple[slice, torch.Tensor]]] | None:
        """:meth:`loss_and_grad` with the gradient in pieces, ``(where in theta, [clients, n])``
        in layout order, so that a caller stepping in place needs no ``[clients, dims]`` copy."""
        if x.ndim != 3 or x.dtype != torch.float32 or theta.dtype != torch.float32:
            return None
        clients = theta.shape[0]
        weights = mask.to(torch.float32)
        # Each example's share of its client's mean loss: 1/n for real examples, 0 for padding.
        share = weights / weights.sum(dim=1, keepdim=True)
        inputs: list[torch.Tensor] = []
        h = x
        for layer in self.layers:
            inputs.append(h)
            if isinstance(layer, Dense):
                w = theta[:, layer.weight].view(clients, layer.fan_out, layer.fan_in)
                if layer.bias is None:
                    h = torch.bmm(h, w.transpose(1, 2))
                else:
                    h = torch.baddbmm(theta[:, layer.bias].unsqueeze(1), h, w.transpose(1, 2))
            else:
                h = _activate(layer, h)
        terms = _loss_terms(self.loss, h, y)
        if terms is None:
            return None
        per_example, grad_out = terms
        losses = (per_example * share).sum(dim=1)
        g = grad_out * share.unsqueeze(2)
        pieces: list[tuple[slice, torch.Tensor]] = []  # last layer's first
        for index in reversed(range(len(self.layers))):
            layer, h_in = self.layers[index], inputs[index]
            if isinstance(layer, Dense):
                if layer.bias is not None:
                    pieces.append((layer.bias, g.sum(dim=1)))
                weight = torch.bmm(g.transpose(1, 2), h_in).reshape(clients, -1)
                pieces.append((layer.weight, weight))
                if index > 0:
                    w = theta[:, layer.weight].view(clients, layer.fan_out, layer.fan_in)
                    g = torch.bmm(g, w)
            elif layer == "relu":
                # Autograd's own ReLU backward (zero where the input is not positive); a boolean
                # mask multiplied in costs several times more on CPU.
                g = torch.ops.aten.threshold_backward(g, h_in, 0)
            else:
                h_out = inputs[index + 1] if index + 1 < len(inputs) else h
                g = g * _derivative(layer, h_out)
        return losses, pieces[::-1]


def _activate(name: str, h: torch.Tensor) -> torch.Tensor:
    if name == "relu":
        return torch.relu(h)
    if name == "tanh":
        return torch.tanh(h)
    return torch.sigmoid(h)


def _derivative(name: str, after: torch.Tensor) -> torch.Tensor:
    """d activation / d input for Tanh and Sigmoid, from their output ``after``, as autograd
    computes it (ReLU's backward is :func:`torch.ops.aten.threshold_backward`)."""
    if name == "tanh":
        return 1 - after * after
    return after * (1 - after)


def _loss_terms(
    loss: str, output: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Each example's loss ``[clients, batch]`` and its gradient with respect to the output."""
    if loss == "cross_entropy":
        if y.shape != output.shape[:2] or y.dtype != torch.int64:
            return None
        # The log-sum-exp by hand: torch's log_softmax over a short last dimension is several
        # times slower on CPU than these few elementwise passes, with the same stable arithmetic.
        shifted = output - output.amax(dim=2, keepdim=True)
        exp = shifted.exp()
        total = exp.sum(dim=2, keepdim=True)
        index = y.unsqueeze(2)
        per_example = (total.log() - shifted.gather(2, index)).squeeze(2)
        grad = exp.div_(total)
        grad.scatter_add_(2, index, torch.full_like(index, -1, dtype=grad.dtype))
        return per_example, grad
    target = y
    if y.shape != output.shape:
        if not (y.ndim == 2 and output.shape == (*y.shape, 1)):
            return None
        target = y.unsqueeze(2)
    diff = output - target.to(output.dtype)
    outputs = output.shape[2]
    return (diff * diff).mean(dim=2), diff * (2.0 / outputs)
