"""Counter-based randomness for simulation: seeds and minibatch orders from hashed keys.

A client's randomness in a round must not depend on which other clients were sampled, and a
cohort of a thousand clients must get theirs without a thousand generator constructions (about
20 µs each with NumPy's ``default_rng``, more than a small client's training step). So every
value here is a pure function of integer keys, computed for a whole cohort at once: SplitMix64's
finalizer (Steele, Lea and Flood, "Fast Splittable Pseudorandom Number Generators", 2014) mixes
the keys, and a shuffle is the argsort of one hashed key per example.

This randomness orders minibatches and seeds simulations. It is not for cryptography (secure
aggregation's masks come from the ``cryptography`` library) and not for DP noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Keys = npt.NDArray[np.uint64]
Indices = npt.NDArray[np.int64]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def mix(*keys: int | npt.ArrayLike) -> Keys:
    """A 64-bit hash of the keys, elementwise over broadcast arrays of non-negative integers.

    ``mix(a, b)`` and ``mix(b, a)`` differ; each key passes through SplitMix64's finalizer after
    being folded into the running hash, so nearby keys give unrelated outputs.
    """
    h = np.zeros((), dtype=np.uint64)
    for key in keys:
        k = np.asarray(key)
        if k.dtype.kind not in "ui" or np.any(k < 0):
            raise ValueError(f"keys must be non-negative integers, got {key!r}")
        h = _finalize(np.atleast_1d(h ^ k.astype(np.uint64)) + _GOLDEN)
    return np.atleast_1d(h)


def _finalize(z: Keys) -> Keys:
    # Arrays wrap around on overflow without a warning, which is the arithmetic wanted here.
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    out: Keys = z ^ (z >> np.uint64(31))
    return out


def client_seeds(seed: int, round_: int, clients: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Each client's own seed for a round (63 bits), from the run's seed, the round and its id."""
    ids = np.asarray(clients, dtype=np.int64)
    seeds: npt.NDArray[np.int64] = (mix(seed, round_, ids) >> np.uint64(1)).astype(np.int64)
    return seeds


def minibatches(
    sizes: Sequence[int], batch_size: int, steps: Sequence[int], seeds: Sequence[int]
) -> list[list[Indices]]:
    """For each client, its ``steps`` minibatches of row indices into its ``size`` examples.

    Every epoch visits each example once, in an order drawn afresh from ``(seed, epoch)``; an
    epoch's last batch may be short; training stops after ``steps`` batches, mid-epoch if need
    be. Clients are independent: one client's batches depend only on its own size and seed.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not len(sizes) == len(steps) == len(seeds):
        raise ValueError("sizes, steps and seeds must have one entry per client")
    out: list[list[Indices]] = [[] for _ in sizes]
    n = np.asarray(sizes, dtype=np.int64)
    if np.any(n < 1):
        raise ValueError(f"every client needs at least one example, got sizes {n.tolist()}")
    wanted = np.asarray(steps, dtype=np.int64)
    per_epoch = -(-n // batch_size)
    epochs = -(-wanted // per_epoch)
    seed_keys = np.asarray(seeds, dtype=np.int64)
    for epoch in range(int(epochs.max(initial=0))):
        rows = np.flatnonzero(epochs > epoch)
        orders = _orders(n[rows], seed_keys[rows], epoch)
        for row, order in zip(rows, orders, strict=True):
            batches = out[row]
            size = int(n[row])
            for lo in range(0, size, batch_size):
                if len(batches) == wanted[row]:
                    break
                batches.append(order[lo : lo + batch_size])
    return out


_GROUP_KEYS = 1 << 22
"""At most this many keys are sorted at once (32 MiB), whatever the spread of client sizes."""


def _orders(sizes: Indices, seeds: npt.NDArray[np.int64], epoch: int) -> list[Indices]:
    """Each client's order of its examples for ``epoch``: argsort of hashed example keys.

    Clients of similar size are sorted together in a padded matrix, largest first, in groups
    that keep the matrix small.
    """
    out: list[Indices] = [np.empty(0, np.int64)] * len(sizes)
    by_size = np.argsort(-sizes, kind="stable")
    start = 0
    while start < len(by_size):
        width = int(sizes[by_size[start]])
        stop = start + max(1, _GROUP_KEYS // width)
        rows = by_size[start:stop]
        keys = mix(seeds[rows, None], epoch, np.arange(width, dtype=np.int64)[None, :])
        real = np.arange(width)[None, :] < sizes[rows, None]
        order = np.argsort(np.where(real, keys, np.uint64(2**64 - 1)), axis=1, kind="stable")
        for i, row in enumerate(rows):
            out[row] = order[i, : sizes[row]]
        start = stop
    return out
