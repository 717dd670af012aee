"""Model parameters as one flat ``float32`` vector plus the layout that names its pieces.

Every numeric part of fedloom (clipping, reducers, server optimizers, noise, masks) works on flat
vectors, and a cohort's updates stack into one ``[clients, size]`` matrix. The layout is fixed when
a run starts; it is the only thing that knows the original names and shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from math import prod

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]
"""A flat, contiguous ``float32`` vector: parameters, an update, a control variate."""

_FLOAT_KINDS = frozenset({"float16", "bfloat16", "float32", "float64"})


@dataclass(frozen=True)
class Field:
    """One named tensor inside the flat vector.

    ``trainable`` is False for state that travels with the model but receives no gradient, such
    as BatchNorm running statistics: clients update it by running the model, the server averages
    it, and server optimizers leave it alone (see :func:`fedloom.engine` for where that happens).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    trainable: bool = True

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("Field name must be a non-empty string")
        if any((not isinstance(d, int)) or d < 0 for d in self.shape):
            raise ValueError(
                f"Field {self.name!r}: shape must be non-negative integers, got {self.shape!r}"
            )
        if self.dtype not in _FLOAT_KINDS:
            raise ValueError(
                f"Field {self.name!r}: dtype {self.dtype!r} cannot travel in a float32 vector; "
                f"accepted: {sorted(_FLOAT_KINDS)}"
            )

    @property
    def size(self) -> int:
        return prod(self.shape)


@dataclass(frozen=True)
class Layout:
    """The names, shapes and dtypes of the tensors packed into one flat vector, in order."""

    fields: tuple[Field, ...]

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"Layout field names must be unique; repeated: {duplicated}")

    @classmethod
    def from_arrays(
        cls,
        arrays: Mapping[str, npt.ArrayLike],
        *,
        frozen: frozenset[str] = frozenset(),
    ) -> Layout:
        """Build a layout from named arrays; names in ``frozen`` are marked non-trainable."""
        fields = []
        for name, value in arrays.items():
            array = np.asarray(value)
            fields.append(
                Field(
                    name, tuple(int(d) for d in array.shape), str(array.dtype), name not in frozen
                )
            )
        unknown = frozen - set(arrays)
        if unknown:
            raise ValueError(f"frozen names {sorted(unknown)} are not among {list(arrays)}")
        return cls(tuple(fields))

    @cached_property
    def offsets(self) -> tuple[int, ...]:
        """Start of each field in the flat vector, plus the total size at the end."""
        starts = [0]
        for f in self.fields:
            starts.append(starts[-1] + f.size)
        return tuple(starts)

    @property
    def size(self) -> int:
        return self.offsets[-1]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @cached_property
    def trainable_mask(self) -> npt.NDArray[np.bool_]:
        """Boolean mask over the flat vector: True where the entry receives gradients."""
        mask = np.zeros(self.size, dtype=bool)
        for f, start, stop in zip(self.fields, self.offsets, self.offsets[1:], strict=False):
            mask[start:stop] = f.trainable
        return mask

    def flatten(self, arrays: Mapping[str, npt.ArrayLike]) -> Vector:
        """Pack named arrays into a new contiguous ``float32`` vector, checking every shape."""
        missing = [n for n in self.names if n not in arrays]
        extra = [n for n in arrays if n not in self.names]
        if missing or extra:
            raise ValueError(
                f"arrays do not match the layout: missing {missing}, unexpected {extra}"
            )
        out = np.empty(self.size, dtype=np.float32)
        for f, start, stop in zip(self.fields, self.offsets, self.offsets[1:], strict=False):
            value = np.asarray(arrays[f.name])
            if value.shape != f.shape:
                raise ValueError(
                    f"array {f.name!r} has shape {value.shape}, the layout expects {f.shape}"
                )
            out[start:stop] = value.reshape(-1)
        return out

    def unflatten(self, vector: npt.ArrayLike) -> dict[str, npt.NDArray[np.float32]]:
        """Split a flat vector into named ``float32`` views (no copy) with the layout's shapes."""
        flat = self.check(vector)
        return {
            f.name: flat[start:stop].reshape(f.shape)
            for f, start, stop in zip(self.fields, self.offsets, self.offsets[1:], strict=False)
        }

    def check(self, vector: npt.ArrayLike, *, what: str = "vector") -> Vector:
        """Return ``vector`` as a 1-D float32 array of this layout's size, or raise ValueError."""
        flat = np.asarray(vector)
        if flat.ndim != 1 or flat.shape[0] != self.size:
            raise ValueError(f"{what} has shape {flat.shape}, the layout expects ({self.size},)")
        if flat.dtype != np.float32:
            flat = flat.astype(np.float32)
        return np.ascontiguousarray(flat)
