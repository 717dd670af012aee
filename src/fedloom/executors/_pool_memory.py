"""Shared-memory blocks through which the process pool moves vectors without pickling them.

The parent owns every block: it creates, grows and unlinks them. Workers attach by name and read
or write through NumPy views. An array travels as an :class:`ArrayRef` (byte offset, dtype,
shape) into a block; anything that is not a plain numeric array, or does not fit where it was
meant to go, travels as itself and is pickled with the small message that carries it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np
import numpy.typing as npt

ALIGNMENT = 64
"""Byte alignment of every array in a block (a cache line; enough for any dtype)."""

_MIN_BLOCK_BYTES = 4096


def aligned(nbytes: int) -> int:
    """``nbytes`` rounded up to a multiple of :data:`ALIGNMENT`."""
    return -(-nbytes // ALIGNMENT) * ALIGNMENT


@dataclass(frozen=True)
class ArrayRef:
    """Where an array lies in a shared block: its byte offset, dtype string and shape."""

    offset: int
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return int(np.dtype(self.dtype).itemsize * np.prod(self.shape, dtype=np.int64))


Packed = Any
"""An :class:`ArrayRef`, or the value itself when it does not travel through shared memory."""


def shareable(value: object) -> bool:
    """Whether ``value`` can travel as raw bytes: a NumPy array of numbers or booleans."""
    return isinstance(value, np.ndarray) and value.dtype.kind in "biufc"


def view(buffer: memoryview, ref: ArrayRef) -> npt.NDArray[Any]:
    """A NumPy array over ``ref``'s bytes in ``buffer`` (no copy)."""
    if ref.nbytes == 0:
        return np.empty(ref.shape, dtype=ref.dtype)
    return np.ndarray(ref.shape, dtype=ref.dtype, buffer=buffer, offset=ref.offset)


def read_only(buffer: memoryview, packed: Packed) -> Any:
    """``packed`` as a read-only view into ``buffer``, or as itself if it is not a reference."""
    if not isinstance(packed, ArrayRef):
        return packed
    array = view(buffer, packed)
    array.flags.writeable = False
    return array


def copied(buffer: memoryview, packed: Packed) -> Any:
    """``packed`` as a private copy of its bytes in ``buffer``, or as itself."""
    if not isinstance(packed, ArrayRef):
        return packed
    return np.array(view(buffer, packed), copy=True)


def copied_mapping(buffer: memoryview, packed: Mapping[str, Packed]) -> dict[str, Any]:
    """Every value of ``packed`` copied out of ``buffer``."""
    return {name: copied(buffer, value) for name, value in packed.items()}


class Packer:
    """Lays out arrays one after another, each once however often it is added.

    The parent adds every vector a wave of tasks reads, then writes them all into the input
    block with :meth:`write`: a broadcast shared by a whole cohort is written once.
    """

    def __init__(self) -> None:
        self.size = 0
        self._placed: dict[int, tuple[ArrayRef, npt.NDArray[Any]]] = {}

    def add(self, value: object) -> Packed:
        """A reference to where ``value`` will lie, or ``value`` if it is not shareable."""
        if not shareable(value):
            return value
        assert isinstance(value, np.ndarray)
        placed = self._placed.get(id(value))
        if placed is None:
            ref = ArrayRef(self.size, value.dtype.str, value.shape)
            placed = self._placed[id(value)] = (ref, value)
            self.size += aligned(value.nbytes)
        return placed[0]

    def add_mapping(self, values: Mapping[str, object]) -> dict[str, Packed]:
        return {name: self.add(value) for name, value in values.items()}

    def write(self, buffer: memoryview) -> None:
        """Copy every added array into ``buffer`` at its reference."""
        for ref, value in self._placed.values():
            if value.nbytes:
                view(buffer, ref)[...] = value


class SlotWriter:
    """Writes a worker's result arrays into its task's slot of the result block.

    Arrays that do not fit in the slot's ``capacity`` bytes stay as themselves (and are pickled);
    :attr:`needed` counts the bytes all shareable arrays would have taken, so the parent can size
    later slots to fit.
    """

    def __init__(self, buffer: memoryview, offset: int, capacity: int):
        self._buffer = buffer
        self._offset = offset
        self._end = offset + capacity
        self.needed = 0

    def put(self, value: object) -> Packed:
        if not shareable(value):
            return value
        assert isinstance(value, np.ndarray)
        size = aligned(value.nbytes)
        self.needed += size
        if self._offset + size > self._end:
            return value
        ref = ArrayRef(self._offset, value.dtype.str, value.shape)
        if value.nbytes:
            view(self._buffer, ref)[...] = value
        self._offset += size
        return ref

    def put_mapping(self, values: Mapping[str, object]) -> dict[str, Packed]:
        return {name: self.put(value) for name, value in values.items()}


def create_block(nbytes: int) -> SharedMemory:
    """A new shared block of at least ``nbytes`` bytes, owned (and later unlinked) by the caller."""
    return SharedMemory(create=True, size=max(nbytes, _MIN_BLOCK_BYTES))


def attach_block(name: str) -> SharedMemory:
    """The existing block ``name``, attached by a worker that must never unlink it.

    Before Python 3.13 attaching also registers the block with the resource tracker; workers
    share their parent's tracker, and the parent's unlink unregisters the name for everyone.
    """
    if sys.version_info >= (3, 13):
        return SharedMemory(name=name, track=False)  # type: ignore[call-arg,unused-ignore]
    return SharedMemory(name=name)


def buffer(block: SharedMemory) -> memoryview:
    """The bytes of an open ``block``."""
    assert block.buf is not None, "the shared block is closed"
    return block.buf


def release_block(block: SharedMemory, *, unlink: bool) -> None:
    """Unmap ``block`` (and remove its name when ``unlink``), tolerating views still alive and a
    name already gone."""
    with contextlib.suppress(BufferError):
        block.close()
    if unlink:
        with contextlib.suppress(FileNotFoundError):
            block.unlink()
