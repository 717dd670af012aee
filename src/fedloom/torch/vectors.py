"""Converting a ``torch.nn.Module`` to and from fedloom's flat ``float32`` vector.

What travels, in order: every parameter (``named_parameters()``), then every floating-point
persistent buffer (``named_buffers()`` that also appear in ``state_dict()``). The rules, and why,
are in the docstring of :mod:`fedloom.torch`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from fedloom.core.layout import Field, Layout, Vector

_DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.float32: "float32",
    torch.float64: "float64",
}


@dataclass(frozen=True)
class StateTensor:
    """One tensor of a module that travels in the vector, with where it came from."""

    name: str
    tensor: torch.Tensor
    trainable: bool
    is_buffer: bool


def state_tensors(module: nn.Module) -> list[StateTensor]:
    """The tensors of ``module`` that travel in the vector, in layout order.

    Parameters come first (trainable unless ``requires_grad`` is False), then floating-point
    persistent buffers (never trainable). Tied parameters appear once, under their first name.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    persistent = set(module.state_dict(keep_vars=True))
    entries = [
        StateTensor(name, _checked(name, p), bool(p.requires_grad), is_buffer=False)
        for name, p in module.named_parameters()
    ]
    entries += [
        StateTensor(name, _checked(name, b), trainable=False, is_buffer=True)
        for name, b in module.named_buffers()
        if b.is_floating_point() and name in persistent
    ]
    return entries


def module_layout(module: nn.Module) -> Layout:
    """The layout of ``module``'s parameters and floating-point buffers in the flat vector."""
    return _layout(state_tensors(module))


def module_to_vector(module: nn.Module) -> Vector:
    """A new ``float32`` vector holding ``module``'s parameters and floating-point buffers."""
    entries = state_tensors(module)
    out = np.empty(_layout(entries).size, dtype=np.float32)
    flat = torch.from_numpy(out)
    with torch.no_grad():
        for entry, chunk in zip(entries, _chunks(flat, entries), strict=True):
            chunk.copy_(entry.tensor.detach().reshape(-1))
    return out


def vector_to_module(vector: npt.ArrayLike, module: nn.Module) -> None:
    """Copy ``vector`` into ``module``'s parameters and floating-point buffers, in place.

    Each tensor keeps its own dtype and device: ``float64``, ``float16`` and ``bfloat16``
    parameters are cast back from the vector's ``float32``. Integer buffers are left as they are.
    """
    entries = state_tensors(module)
    flat = torch.from_numpy(_layout(entries).check(vector).copy())
    with torch.no_grad():
        for entry, chunk in zip(entries, _chunks(flat, entries), strict=True):
            entry.tensor.copy_(chunk.view(entry.tensor.shape))


def split_vector(flat: torch.Tensor, entries: list[StateTensor]) -> list[torch.Tensor]:
    """Views of the 1-D tensor ``flat``, one per entry, shaped like that entry's tensor.

    A single ``split`` keeps autograd's backward pass to one concatenation, however many tensors
    the module has.
    """
    return [
        chunk.view(entry.tensor.shape)
        for entry, chunk in zip(entries, _chunks(flat, entries), strict=True)
    ]


def _chunks(flat: torch.Tensor, entries: list[StateTensor]) -> Iterator[torch.Tensor]:
    yield from torch.split(flat, [e.tensor.numel() for e in entries])


def _layout(entries: list[StateTensor]) -> Layout:
    return Layout(
        tuple(
            Field(e.name, tuple(e.tensor.shape), _DTYPE_NAMES[e.tensor.dtype], e.trainable)
            for e in entries
        )
    )


def _checked(name: str, tensor: torch.Tensor) -> torch.Tensor:
    if nn.parameter.is_lazy(tensor):
        raise ValueError(
            f"tensor {name!r} is not initialized yet (a lazy module); run the module once on an "
            "example input inside make_model before converting it"
        )
    if tensor.dtype not in _DTYPE_NAMES:
        raise ValueError(
            f"tensor {name!r} has dtype {tensor.dtype}, which cannot travel in a float32 vector; "
            f"accepted: {', '.join(str(d) for d in _DTYPE_NAMES)}"
        )
    return tensor
