"""Many clients' local SGD as one batched torch computation, for :mod:`.vectorized`.

A cohort's parameter vectors stack into a ``[clients, dims]`` matrix. Every local step gathers
each client's minibatch into a padded ``[clients, batch, ...]`` tensor with a ``[clients, batch]``
mask of real examples, and one ``vmap(grad)`` call (:mod:`torch.func`) gives every client its own
masked-mean loss and gradient (a step whose minibatch sizes vary widely is cut into a few such
batches, see :func:`_buckets`). Gradient corrections and the local optimizer then run on the
matrix in NumPy, with the very arithmetic of :class:`~fedloom.client.LocalSGD` (plain SGD steps
in place in torch, ``params − lr · g`` in float32 as NumPy computes it), so the only numerical
difference from training clients one by one is the order of floating-point sums inside the
batched forward and backward passes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from fedloom.client.local_sgd import LocalSGD
from fedloom.core.layout import Vector
from fedloom.core.messages import Broadcast
from fedloom.core.seeding import minibatches
from fedloom.data import ClientData
from fedloom.executors._dense import DenseStack
from fedloom.optimizers import SGD, OptimizerState
from fedloom.torch.model import TorchModel
from fedloom.torch.vectors import StateTensor, module_layout, state_tensors

Indices = npt.NDArray[np.int64]


class BatchedModel:
    """A :class:`TorchModel`'s module as a function of a ``[clients, dims]`` parameter matrix.

    It builds its own module from ``make_model`` (so it never shares the model's cached module
    and its lock), and runs it in training mode as :meth:`TorchModel.loss_and_grad` does.
    """

    def __init__(self, model: TorchModel) -> None:
        with torch.random.fork_rng():
            module = model.make_model()
        if module_layout(module) != model.layout:
            raise ValueError("make_model returned modules with different layouts on two calls")
        self.module = module
        self.loss = model.loss
        self.entries: list[StateTensor] = state_tensors(module)
        self.compute_dtype = next(
            (p.dtype for p in module.parameters() if p.is_floating_point()), None
        )
        self._sizes = [e.tensor.numel() for e in self.entries]
        self.dense = DenseStack.of(module, self.entries, self.loss)
        """The hand-written path for plain MLPs (:mod:`._dense`), or None."""
        # randomness="error": a module that draws random numbers while training (Dropout) cannot
        # reproduce the one-client-at-a-time loop, so it must fail here and fall back.
        self._losses: Callable[..., torch.Tensor] = vmap(self._masked_loss, randomness="error")

    def loss_and_grad(
        self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-client mean losses ``[clients]`` and gradients ``[clients, dims]``.

        ``theta`` is ``[clients, dims]``; ``x`` and ``y`` are ``[clients, batch, ...]``; ``mask``
        (``[clients, batch]``, bool) marks the real examples, over which each loss is averaged.
        """
        if self.dense is not None:
            computed = self.dense.loss_and_grad(theta, x, y, mask)
            if computed is not None:
                return computed
        return self.general_loss_and_grad(theta, x, y, mask)

    def sgd_step(
        self,
        theta: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor,
        lr: np.float32,
    ) -> torch.Tensor:
        """One plain SGD step in place, ``theta −= lr · gradient``, and the per-client losses
        before it; the same arithmetic as LocalSGD's step (``params + lr · (−g)``) in float32."""
        if self.dense is not None:
            computed = self.dense.loss_and_grad_pieces(theta, x, y, mask)
            if computed is not None:
                losses, pieces = computed
                for where, piece in pieces:
                    theta[:, where].sub_(piece.mul_(float(lr)))
                return losses
        losses, grad = self.general_loss_and_grad(theta, x, y, mask)
        theta.sub_(grad.mul_(float(lr)))
        return losses

    def general_loss_and_grad(
        self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`loss_and_grad` through ``vmap`` and autograd, for any module."""
        self.module.train()
        # vmap runs the forward pass; one ordinary backward pass of the summed losses then gives
        # every client its own gradient, since client c's loss depends on row c alone. (This
        # avoids torch.func.grad, whose first call imports torch._dynamo: about 1.5 s.)
        leaf = theta.detach().requires_grad_()
        losses = self._losses(leaf, x, y, mask)
        (grads,) = torch.autograd.grad(losses.sum(), leaf)
        return losses.detach(), grads

    def _masked_loss(
        self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        tensors = {
            # Non-trainable entries get no gradient, as in TorchModel.loss_and_grad.
            entry.name: (chunk if entry.trainable else chunk.detach())
            .view(entry.tensor.shape)
            .to(entry.tensor.dtype)
            for entry, chunk in zip(self.entries, torch.split(theta, self._sizes), strict=True)
        }
        output = functional_call(self.module, tensors, (x,))
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"the module must return one tensor, got {type(output).__name__}")
        per_example = per_example_loss(self.loss, output, y)
        weights = mask.to(per_example.dtype)
        return (per_example * weights).sum() / weights.sum()


def per_example_loss(loss: str, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The loss of each example of a batch, ``[batch]``; their mean is :class:`TorchModel`'s loss.

    Where one example has several loss terms (``mse`` on vector outputs), they are averaged, which
    keeps the batch mean equal to PyTorch's mean over all terms.
    """
    output = output.to(torch.promote_types(output.dtype, torch.float32))
    if loss == "cross_entropy":
        terms = F.cross_entropy(output, y, reduction="none")
    elif loss == "mse":
        target = y
        if y.shape != output.shape:
            if not (y.ndim == 1 and output.shape == (y.shape[0], 1)):
                raise ValueError(
                    f"y must have the shape of the module's output {tuple(output.shape)} for "
                    f"loss='mse', got {tuple(y.shape)}"
                )
            target = y.reshape(-1, 1)
        terms = F.mse_loss(output, target.to(output.dtype), reduction="none")
    elif loss == "bce_with_logits":
        if output.numel() != output.shape[0] or y.numel() != output.shape[0]:
            raise ValueError("loss='bce_with_logits' needs one output and one label per example")
        terms = F.binary_cross_entropy_with_logits(
            output.reshape(-1), y.reshape(-1).to(output.dtype), reduction="none"
        )
    else:
        raise ValueError(f"unknown loss {loss!r}")
    return terms.reshape(terms.shape[0], -1).mean(dim=1)


class ClientStore:
    """Every client's training data, concatenated once into two tensors and found by offset.

    Rows are converted as :class:`TorchModel` converts a batch: floating inputs to the module's
    parameter dtype, labels to ``long`` for cross-entropy and to ``float32`` otherwise.
    """

    def __init__(self, clients: Sequence[ClientData], model: BatchedModel) -> None:
        present = [c for c in clients if c.num_train > 0]
        xs = [np.asarray(c.x_train) for c in present]
        ys = [np.asarray(c.y_train) for c in present]
        for what, arrays in (("x_train", xs), ("y_train", ys)):
            shapes = {a.shape[1:] for a in arrays}
            if len(shapes) > 1:
                raise ValueError(f"clients' {what} rows differ in shape: {sorted(shapes)}")
        if model.loss == "cross_entropy" and not all(
            np.issubdtype(y.dtype, np.integer) for y in ys
        ):
            raise ValueError("loss='cross_entropy' needs integer class labels in every y_train")
        starts = np.cumsum([0] + [c.num_train for c in present])
        self.offsets = {c.client_id: int(s) for c, s in zip(present, starts, strict=False)}
        x = torch.from_numpy(np.ascontiguousarray(np.concatenate(xs))) if xs else torch.empty(0)
        if x.is_floating_point() and model.compute_dtype is not None:
            x = x.to(model.compute_dtype)
        y = torch.from_numpy(np.ascontiguousarray(np.concatenate(ys))) if ys else torch.empty(0)
        self.x = x
        self.y = y.long() if model.loss == "cross_entropy" else y.float()

    def gather_x(self, rows: torch.Tensor) -> torch.Tensor:
        """Inputs at store ``rows`` (any shape of int64 indices): ``[*rows.shape, *features]``."""
        return self.x.index_select(0, rows.reshape(-1)).reshape(*rows.shape, *self.x.shape[1:])

    def gather_y(self, rows: torch.Tensor) -> torch.Tensor:
        """Targets at store ``rows``, shaped as :meth:`gather_x`'s inputs."""
        return self.y.index_select(0, rows.reshape(-1)).reshape(*rows.shape, *self.y.shape[1:])


@dataclass(frozen=True)
class ChunkTraining:
    """What a chunk of clients ended local training with, row for row as given."""

    params: Vector
    """``[clients, dims]`` parameters after each client's last local step."""
    mean_losses: npt.NDArray[np.float64]
    """Each client's mean loss over its local steps."""
    steps: npt.NDArray[np.int64]
    """Each client's number of local steps."""


def train_chunk(
    work: LocalSGD,
    model: BatchedModel,
    store: ClientStore,
    clients: Sequence[ClientData],
    starts: Vector,
    broadcasts: Sequence[Broadcast],
    constants: Vector | None,
) -> ChunkTraining:
    """Run :meth:`LocalSGD.train`'s loop for every client of a chunk at once.

    ``starts`` is the ``[clients, dims]`` matrix of broadcast parameters (a read-only broadcast
    view of one vector does, when every client starts from the same one), ``broadcasts`` the
    clients' broadcasts (their seeds and step limits), ``constants`` SCAFFOLD's
    ``(c − c_i) · mask`` rows (None without SCAFFOLD).
    Clients are sorted by their number of local steps, longest first, so that the clients still
    training at any step are a prefix of the matrix: that prefix is the step mask, and clients
    that have finished cost nothing.
    """
    sizes = np.array([c.num_train for c in clients])
    steps = np.array(
        [work.num_steps(int(n), b.max_steps) for n, b in zip(sizes, broadcasts, strict=True)]
    )
    # Most steps first; among equal steps, most examples first, so that a step's batch sizes
    # fall along the rows and _buckets can cut the padding.
    order = np.lexsort((-sizes, -steps))
    sequences = minibatches(
        sizes[order].tolist(),
        work.batch_size,
        steps[order].tolist(),
        [broadcasts[i].seed for i in order],
    )
    offsets = np.array([store.offsets[clients[i].client_id] for i in order], dtype=np.int64)
    sorted_steps = steps[order]
    shared_start = starts.strides[0] == 0
    start = starts if shared_start else starts[order]
    constant = None if constants is None else constants[order]
    # One float32 matrix, seen by NumPy and torch alike: steps update it in place.
    params = np.array(start, dtype=np.float32, order="C")  # not "K": a broadcast copies to F
    theta = torch.from_numpy(params)
    mask = work.model.layout.trainable_mask.astype(np.float32)
    optimizer = work.local_optimizer()
    # Plain SGD with no gradient term steps in torch, in place (``params − lr · g``); every other
    # optimizer and correction runs LocalSGD's own NumPy arithmetic on the matrix.
    in_place_lr = (
        np.float32(optimizer.lr)
        if type(optimizer) is SGD
        and not (work.weight_decay or work.prox_mu or constant is not None)
        else None
    )
    opt_state = optimizer.init(params)
    losses = np.zeros((len(clients), int(steps.max(initial=0))), dtype=np.float64)

    for step in range(losses.shape[1]):
        active = int(np.count_nonzero(sorted_steps > step))
        counts = np.fromiter((len(b[step]) for b in sequences[:active]), np.int64, active)
        index, real = _step_indices([b[step] for b in sequences[:active]], counts, offsets[:active])
        grad = None if in_place_lr is not None else np.empty((active, params.shape[1]), np.float32)
        for low, high in _buckets(counts):
            width = int(counts[low:high].max())
            rows = torch.from_numpy(np.ascontiguousarray(index[low:high, :width]))
            batch = (
                theta[low:high],
                store.gather_x(rows),
                store.gather_y(rows),
                torch.from_numpy(real[low:high, :width]),
            )
            if grad is None:
                assert in_place_lr is not None
                loss = model.sgd_step(*batch, in_place_lr)
            else:
                loss, grad_t = model.loss_and_grad(*batch)
                grad[low:high] = grad_t.detach().numpy()
            losses[low:high, step] = loss.detach().double().numpy()
        if grad is None:
            continue
        grad = work.corrected_gradient(
            grad,
            params[:active],
            start[:active],
            mask,
            None if constant is None else constant[:active],
        )
        delta, opt_state = optimizer.update(-grad, _first_rows(opt_state, active))
        params[:active] += delta

    unsort = np.empty_like(order)
    unsort[order] = np.arange(len(order))
    return ChunkTraining(
        params=params[unsort],
        mean_losses=(losses.sum(axis=1) / np.maximum(sorted_steps, 1))[unsort],
        steps=steps,
    )


def _first_rows(state: OptimizerState, rows: int) -> OptimizerState:
    """The optimizer state of the clients still training (fedloom's optimizers are elementwise)."""
    return replace(
        state,
        m=None if state.m is None else state.m[:rows],
        v=None if state.v is None else state.v[:rows],
    )


def _buckets(lengths: Indices) -> list[tuple[int, int]]:
    """Row ranges ``[low, high)`` of one step's clients to compute as separate padded batches.

    A batch is padded to its longest minibatch, so a step whose minibatch sizes vary (clients
    of 30 examples beside clients of 3) wastes most of its work on padding. Rows come sorted by
    size, largest first (see :func:`train_chunk`); a range is cut in two where that saves at
    least a quarter of its padded rows, up to four ranges, since every batch has a fixed cost.
    """
    ranges = [(0, len(lengths))]
    for _ in range(2):
        cut: list[tuple[int, int]] = []
        for low, high in ranges:
            cut.extend(_best_split(lengths, low, high))
        ranges = cut
    return ranges


def _best_split(lengths: Indices, low: int, high: int) -> list[tuple[int, int]]:
    part = lengths[low:high]
    if len(part) < 2 * _MIN_BUCKET:
        return [(low, high)]
    head = np.maximum.accumulate(part)[:-1]
    tail = np.maximum.accumulate(part[::-1])[::-1][1:]
    sizes = np.arange(1, len(part))
    cost = sizes * head + (len(part) - sizes) * tail
    allowed = (sizes >= _MIN_BUCKET) & (len(part) - sizes >= _MIN_BUCKET)
    cost = np.where(allowed, cost, np.iinfo(np.int64).max)
    best = int(np.argmin(cost))
    if cost[best] > 0.75 * len(part) * int(part.max()):
        return [(low, high)]
    return [(low, low + best + 1), (low + best + 1, high)]


_MIN_BUCKET = 8
"""Fewest clients in a padded batch of its own: smaller ones cost more than their padding."""


def _step_indices(
    batches: Sequence[Indices], counts: Indices, offsets: Indices
) -> tuple[Indices, npt.NDArray[np.bool_]]:
    """Rows of the store for one step, ``[clients, width]``, and the mask of real examples.

    ``counts`` are the batches' lengths. Short batches are padded with their own first example,
    so padding never feeds the module values it would not see anyway; the mask gives padded rows
    zero weight.
    """
    width = int(counts.max())
    real = np.arange(width)[None, :] < counts[:, None]
    starts = np.cumsum(counts) - counts
    flat = np.concatenate(batches)
    index = flat[starts[:, None] + np.where(real, np.arange(width)[None, :], 0)]
    index += offsets[:, None]
    return index, real


def trial_mismatch(model: TorchModel, batched: BatchedModel, client: ClientData) -> str | None:
    """Why the batched gradient would differ from :meth:`TorchModel.loss_and_grad`, or None.

    Two virtual clients with different parameters train on ``client``'s first examples: one on
    up to four of them, the other on the first half of those, padded with the rest. Equal losses
    and gradients show that per-client parameters, masking and padding work for this module; a
    module that mixes the examples of a batch (BatchNorm without running statistics) fails.
    Errors of the batched step propagate.
    """
    count = min(client.num_train, 4)
    real = max(1, count // 2)
    x, y = np.asarray(client.x_train)[:count], np.asarray(client.y_train)[:count]
    first = model.init(0)
    wiggle = np.float32(0.01) * np.sin(np.arange(first.size, dtype=np.float32))
    second = (first + wiggle).astype(np.float32)
    try:
        expected = [
            model.loss_and_grad(first.copy(), x, y),
            model.loss_and_grad(second.copy(), x[:real], y[:real]),
        ]
    except Exception as error:
        return (
            f"a trial step on client {client.client_id} fails even one client at a time "
            f"({type(error).__name__}: {error})"
        )
    store = ClientStore([client], batched)
    index = torch.arange(count, dtype=torch.int64).repeat(2, 1)
    masks = torch.arange(count)[None, :] < torch.tensor([[count], [real]])
    losses, grads = batched.loss_and_grad(
        torch.from_numpy(np.stack([first, second])), store.x[index], store.y[index], masks
    )
    for row, (loss, grad) in enumerate(expected):
        got_loss, got_grad = float(losses[row]), grads[row].detach().numpy()
        if not (
            np.isclose(got_loss, loss, rtol=1e-4, atol=1e-6, equal_nan=True)
            and np.allclose(got_grad, grad, rtol=1e-3, atol=1e-5, equal_nan=True)
        ):
            gap = float(np.max(np.abs(got_grad.astype(np.float64) - grad)))
            return (
                "the batched loss and gradient differ from TorchModel.loss_and_grad on a trial "
                f"batch (loss {got_loss:.6g} vs {loss:.6g}, largest gradient difference "
                f"{gap:.3g}); the module may mix the examples of a batch (BatchNorm without "
                "running statistics, say)"
            )
    return None
