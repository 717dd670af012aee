"""Communication-efficient training: codecs for updates and broadcasts, with exact byte counts.

Each function returns a stage to append with ``algorithm.with_stages(...)``; the last stage of a
pipeline that is a codec decides what a client sends, and ``algorithm.with_broadcast(...)``
takes the same values for the server-to-client model. See docs/compression.md.

    algorithm = fl.fedavg(train).with_stages(fl.clip_by_norm(5.0), fl.compression.qsgd(levels=4))
    algorithm = algorithm.with_broadcast(fl.compression.float16())
"""

from __future__ import annotations

from fedloom.compression.casts import Cast
from fedloom.compression.codec import Codec, CodecTraits
from fedloom.compression.quantizers import QSGD, Sign, Uniform
from fedloom.compression.rotation import Rotated
from fedloom.compression.sparsifiers import RandomK, TopK
from fedloom.compression.stage import Compress
from fedloom.compression.wire import PayloadError


def compress(codec: Codec, *, error_feedback: bool = False, name: str | None = None) -> Compress:
    """A stage that encodes every client's update with ``codec`` (any :class:`Codec`)."""
    return Compress(codec, error_feedback, name or codec.kind)


def float32(*, name: str | None = None) -> Compress:
    """Updates as plain float32 in a checked envelope: no compression, the baseline."""
    return compress(Cast("float32"), name=name)


def float16(*, error_feedback: bool = False, name: str | None = None) -> Compress:
    """Updates cast to IEEE float16 (half the bytes; ±65504, 11 significant bits)."""
    return compress(Cast("float16"), error_feedback=error_feedback, name=name)


def bfloat16(*, error_feedback: bool = False, name: str | None = None) -> Compress:
    """Updates cast to bfloat16 (half the bytes; float32's range, 8 significant bits)."""
    return compress(Cast("bfloat16"), error_feedback=error_feedback, name=name)


def uniform(
    bits: int = 8,
    *,
    bound: float | None = None,
    rotate: bool = False,
    block: int = 64,
    error_feedback: bool = False,
    name: str | None = None,
) -> Compress:
    """Unbiased ``bits``-bit stochastic quantization (1 to 8 bits an entry) between the update's
    minimum and maximum, or on the shared grid ``[-bound, bound]`` (summable: allowed before
    secure aggregation); optionally after a randomized Hadamard rotation in blocks of ``block``
    entries (Suresh et al. 2017), which makes it per-client again."""
    codec: Codec = Uniform(bits, bound)
    if rotate:
        codec = Rotated(codec, block)
    return compress(codec, error_feedback=error_feedback, name=name or "uniform")


def qsgd(
    levels: int = 16,
    *,
    bucket: int = 512,
    norm: str = "l2",
    rotate: bool = False,
    block: int = 64,
    error_feedback: bool = False,
    name: str | None = None,
) -> Compress:
    """QSGD with ``levels`` quantization levels per sign, one norm per ``bucket`` entries
    (Alistarh et al. 2017); ``norm="max"`` scales by the largest magnitude instead (with
    ``levels=1``: TernGrad, Wen et al. 2017); optionally after a randomized Hadamard rotation."""
    codec: Codec = QSGD(levels, bucket, norm)
    if rotate:
        codec = Rotated(codec, block)
    return compress(codec, error_feedback=error_feedback, name=name or "qsgd")


def sign(*, bucket: int = 512, error_feedback: bool = True, name: str | None = None) -> Compress:
    """One bit an entry, the sign, scaled by each bucket's mean magnitude; with error feedback
    by default, which this biased codec needs (Karimireddy et al. 2019)."""
    return compress(Sign(bucket), error_feedback=error_feedback, name=name)


def top_k(
    k: int | None = None,
    *,
    fraction: float | None = None,
    values: str = "float32",
    error_feedback: bool = True,
    name: str | None = None,
) -> Compress:
    """The ``k`` (or ``fraction`` of the) largest-magnitude entries, with error feedback by
    default (Stich et al. 2018). Per-client positions: refused before secure aggregation."""
    codec = TopK(k, fraction, values)
    return compress(codec, error_feedback=error_feedback, name=name)


def random_k(
    k: int | None = None,
    *,
    fraction: float | None = None,
    unbiased: bool = True,
    values: str = "float32",
    error_feedback: bool = False,
    name: str | None = None,
) -> Compress:
    """``k`` (or ``fraction`` of the) entries at random positions, scaled by ``n/k`` when
    ``unbiased`` (the default)."""
    codec = RandomK(k, fraction, values, unbiased)
    return compress(codec, error_feedback=error_feedback, name=name)


__all__ = [
    "QSGD",
    "Cast",
    "Codec",
    "CodecTraits",
    "Compress",
    "PayloadError",
    "RandomK",
    "Rotated",
    "Sign",
    "TopK",
    "Uniform",
    "bfloat16",
    "compress",
    "float16",
    "float32",
    "qsgd",
    "random_k",
    "sign",
    "top_k",
    "uniform",
]
