"""``TorchModel``: a PyTorch module behind fedloom's stateless :class:`~fedloom.core.model.Model`.

The module built by ``make_model`` is only a recipe for the computation: every call is handed a
flat parameter vector and runs the module on views of it with :func:`torch.func.functional_call`,
so nothing about one call's parameters survives into the next.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from fedloom.core.layout import Layout, Vector
from fedloom.torch.vectors import (
    StateTensor,
    module_layout,
    module_to_vector,
    split_vector,
    state_tensors,
)

LOSSES = ("cross_entropy", "mse", "bce_with_logits")
"""Accepted values of :attr:`TorchModel.loss`."""

_CLASSIFICATION_LOSSES = frozenset({"cross_entropy", "bce_with_logits"})


@dataclass(frozen=True)
class TorchModel:
    """A PyTorch module, seen by fedloom as a function of one flat ``float32`` vector.

    ``make_model`` builds the module; it must be importable by reference (a module-level function
    or a dataclass such as :func:`fedloom.torch.mlp`'s result, not a lambda) so that the model can
    be sent to worker processes. ``loss`` is ``"cross_entropy"`` (integer class labels),
    ``"mse"`` (float targets shaped like the output), or ``"bce_with_logits"`` (one output per
    example, 0/1 labels); the loss is the mean over the batch, as PyTorch's default reduction.
    ``eval_batch_size`` bounds the examples :meth:`evaluate` runs through the module at once.

    One module is built on first use and cached. Calls on one ``TorchModel`` from several threads
    are serialized, since ``functional_call`` swaps tensors into that shared module. Only CPU
    modules are supported for now.
    """

    make_model: Callable[[], nn.Module]
    loss: str = "cross_entropy"
    eval_batch_size: int = 1024

    def __post_init__(self) -> None:
        if not callable(self.make_model):
            raise TypeError(
                f"make_model must be a callable that returns a torch.nn.Module, "
                f"got {self.make_model!r}"
            )
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {list(LOSSES)}, got {self.loss!r}")
        if (
            isinstance(self.eval_batch_size, bool)
            or not isinstance(self.eval_batch_size, int)
            or self.eval_batch_size < 1
        ):
            raise ValueError(
                f"eval_batch_size must be a positive integer, got {self.eval_batch_size!r}"
            )

    def __getstate__(self) -> dict[str, Any]:
        # Pickle the configuration only; the receiving process builds its own module.
        return {
            "make_model": self.make_model,
            "loss": self.loss,
            "eval_batch_size": self.eval_batch_size,
        }

    @property
    def layout(self) -> Layout:
        return self._runtime.layout

    def init(self, seed: int) -> Vector:
        """Parameters of a fresh ``make_model()`` built under ``torch.manual_seed(seed)``.

        The global torch random state is saved and restored around the call.
        """
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
            raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            module = self.make_model()
        fresh = module_layout(module)
        if fresh != self.layout:
            raise ValueError(
                "make_model returned modules with different layouts on different calls; "
                f"first {self.layout.names}, now {fresh.names}"
            )
        return module_to_vector(module)

    def loss_and_grad(
        self, params: Vector, x: npt.NDArray[np.generic], y: npt.NDArray[np.generic]
    ) -> tuple[float, Vector]:
        """Mean loss over the batch and its gradient, in training mode.

        Running statistics (BatchNorm's ``running_mean``/``running_var``) are updated in place in
        ``params``, which must then be a writable, contiguous ``float32`` vector.
        """
        runtime = self._runtime
        vector = self._training_vector(params)
        x_t, y_t = self._batch(x, y)
        flat = torch.from_numpy(vector)
        leaf = flat.clone().requires_grad_(True)
        flat_views = split_vector(flat, runtime.entries)
        leaf_views = split_vector(leaf, runtime.entries)
        cast = {
            entry.name: (from_leaf if entry.trainable else from_flat).to(entry.tensor.dtype)
            for entry, from_leaf, from_flat in zip(
                runtime.entries, leaf_views, flat_views, strict=True
            )
        }
        with runtime.lock:
            runtime.module.train()
            output = functional_call(runtime.module, cast, (x_t,))
        # A buffer that is not float32 was updated in a cast copy, not in params: write it back.
        with torch.no_grad():
            for entry, view in zip(runtime.entries, flat_views, strict=True):
                if entry.is_buffer and cast[entry.name] is not view:
                    view.copy_(cast[entry.name])
        loss = self._loss(_checked_output(output), y_t)
        if not loss.requires_grad:
            return float(loss), np.zeros_like(vector)
        (grad,) = torch.autograd.grad(loss, leaf, allow_unused=True, materialize_grads=True)
        return float(loss.detach()), grad.numpy()

    def evaluate(
        self, params: Vector, x: npt.NDArray[np.generic], y: npt.NDArray[np.generic]
    ) -> dict[str, float]:
        """Mean loss (and accuracy, for classification) over all examples, in evaluation mode.

        Examples go through the module ``eval_batch_size`` at a time; ``params`` is not modified.
        """
        runtime = self._runtime
        flat = torch.from_numpy(np.array(self.layout.check(params, what="params"), copy=True))
        tensors = {
            entry.name: t.to(entry.tensor.dtype)
            for entry, t in zip(runtime.entries, split_vector(flat, runtime.entries), strict=True)
        }
        x_all, y_all = self._batch(x, y)
        count = x_all.shape[0]
        loss_sum = 0.0
        correct = 0
        with torch.no_grad():
            for start in range(0, count, self.eval_batch_size):
                x_t = x_all[start : start + self.eval_batch_size]
                y_t = y_all[start : start + self.eval_batch_size]
                with runtime.lock:
                    runtime.module.eval()
                    output = _checked_output(functional_call(runtime.module, tensors, (x_t,)))
                loss_sum += float(self._loss(output, y_t)) * x_t.shape[0]
                if self.loss in _CLASSIFICATION_LOSSES:
                    correct += self._correct(output, y_t)
        metrics = {"loss": loss_sum / count}
        if self.loss in _CLASSIFICATION_LOSSES:
            metrics["accuracy"] = correct / _label_count(y_all, self.loss)
        return metrics

    @cached_property
    def _runtime(self) -> _Runtime:
        # Built on first use. Two threads racing here each build a _Runtime and one is kept;
        # the other is used once by its builder alone, so no module is ever shared unlocked.
        with torch.random.fork_rng():
            module = self.make_model()
        if not isinstance(module, nn.Module):
            raise TypeError(
                f"make_model must return a torch.nn.Module, got {type(module).__name__}"
            )
        return _Runtime(module)

    def _training_vector(self, params: Vector) -> Vector:
        runtime = self._runtime
        vector = self.layout.check(params, what="params")
        if runtime.has_buffers:
            given = np.asarray(params)
            if not (np.may_share_memory(vector, given) and given.flags.writeable):
                raise ValueError(
                    "params must be a writable, contiguous float32 vector, because loss_and_grad "
                    "writes the module's running statistics back into it; got dtype "
                    f"{given.dtype}, contiguous={given.flags.c_contiguous}, "
                    f"writable={given.flags.writeable}"
                )
        elif not vector.flags.writeable:
            vector = vector.copy()
        return vector

    def _batch(
        self, x: npt.NDArray[np.generic], y: npt.NDArray[np.generic]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x_np, y_np = np.asarray(x), np.asarray(y)
        if x_np.ndim == 0 or x_np.shape[0] == 0:
            raise ValueError(f"x must hold at least one example, got shape {x_np.shape}")
        if y_np.ndim == 0 or y_np.shape[0] != x_np.shape[0]:
            raise ValueError(
                f"y must hold one label per example of x: x has shape {x_np.shape}, "
                f"y has shape {y_np.shape}"
            )
        x_t = _tensor(x_np)
        if x_t.is_floating_point() and self._runtime.compute_dtype is not None:
            x_t = x_t.to(self._runtime.compute_dtype)
        if self.loss == "cross_entropy":
            if not np.issubdtype(y_np.dtype, np.integer):
                raise ValueError(
                    f"y must hold integer class labels for loss='cross_entropy', "
                    f"got dtype {y_np.dtype}"
                )
            return x_t, _tensor(y_np).long()
        if not (np.issubdtype(y_np.dtype, np.floating) or np.issubdtype(y_np.dtype, np.integer)):
            raise ValueError(f"y must hold numbers for loss={self.loss!r}, got dtype {y_np.dtype}")
        return x_t, _tensor(y_np).float()

    def _loss(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        output = output.to(torch.promote_types(output.dtype, torch.float32))
        if self.loss == "cross_entropy":
            return F.cross_entropy(output, y)
        target = _target_like(output, y, self.loss)
        if self.loss == "mse":
            return F.mse_loss(output, target.to(output.dtype))
        return F.binary_cross_entropy_with_logits(output.reshape(-1), target.to(output.dtype))

    def _correct(self, output: torch.Tensor, y: torch.Tensor) -> int:
        if self.loss == "cross_entropy":
            return int((output.argmax(dim=1) == y).sum())
        predicted = output.reshape(-1) > 0
        return int((predicted == (y.reshape(-1) > 0.5)).sum())


class _Runtime:
    """The cached module of one TorchModel and what is derived from it once."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.entries: list[StateTensor] = state_tensors(module)
        self.layout = module_layout(module)
        self.lock = threading.Lock()
        self.has_buffers = any(e.is_buffer for e in self.entries)
        self.compute_dtype = next(
            (p.dtype for p in module.parameters() if p.is_floating_point()), None
        )
        devices = {t.device.type for t in (*module.parameters(), *module.buffers())}
        if devices - {"cpu"}:
            raise ValueError(
                f"TorchModel runs modules on the CPU; make_model returned one on {sorted(devices)}"
            )


def _tensor(array: npt.NDArray[np.generic]) -> torch.Tensor:
    """A tensor sharing ``array``'s memory when torch can, else a copy."""
    if not array.flags.writeable or not array.flags.c_contiguous:
        array = np.array(array, copy=True, order="C")
    return torch.from_numpy(array)


def _checked_output(output: object) -> torch.Tensor:
    if not isinstance(output, torch.Tensor):
        raise TypeError(
            f"the module must return one tensor of outputs, got {type(output).__name__}"
        )
    return output


def _target_like(output: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    if loss == "bce_with_logits":
        if output.numel() != output.shape[0]:
            raise ValueError(
                f"loss='bce_with_logits' needs one output per example; the module returned shape "
                f"{tuple(output.shape)}"
            )
        if y.numel() != output.shape[0]:
            raise ValueError(f"y must hold one 0/1 label per example, got shape {tuple(y.shape)}")
        return y.reshape(-1)
    if y.shape == output.shape:
        return y
    if y.ndim == 1 and output.shape == (y.shape[0], 1):
        return y.reshape(-1, 1)
    raise ValueError(
        f"y must have the shape of the module's output {tuple(output.shape)} for loss='mse', "
        f"got {tuple(y.shape)}"
    )


def _label_count(y: torch.Tensor, loss: str) -> int:
    return y.numel() if loss == "cross_entropy" else y.shape[0]
