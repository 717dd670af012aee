"""A site's own pieces: its data from a file, its model from an import path it chose.

Nothing the server sends is ever imported or unpickled: the model comes from
``package.module:function`` named on the site's command line, the data from its own ``.npz``
file (read with ``allow_pickle=False``) or ``.csv`` file, and the training configuration is
plain values. The client state the program keeps between rounds can go to a file on the site's
disk after every training task (:mod:`fedloom.deploy.site_state`), so a restarted site goes on
from it.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fedloom.algorithms import ClientProgram
from fedloom.client.work import Array
from fedloom.compression import Codec
from fedloom.compression.chain import apply_links, model_digest, unpack_chain
from fedloom.core.layout import Vector
from fedloom.core.messages import Broadcast, ClientResult, ClientState
from fedloom.core.model import Model
from fedloom.data.files import load_csv
from fedloom.deploy.site_state import SiteStateFile, fingerprint
from fedloom.deploy.training import site_algorithm
from fedloom.engine import Evaluation
from fedloom.transport.config import TrainingConfig

MODEL_REFERENCE = "package.module:function"

log = logging.getLogger("fedloom.site")


class SiteError(Exception):
    """A site's own setup (data file, model) that cannot be used, and why."""


@dataclass(frozen=True)
class SiteData:
    """A site's training examples and (possibly empty) local test split."""

    x_train: Array
    y_train: Array
    x_test: Array
    y_test: Array


LABEL_KINDS = ("class", "value")
"""How a CSV's label column is read: whole-number class labels, or regression targets."""


def load_site_data(
    path: str | Path, *, label: str = "label", label_kind: str = "class"
) -> SiteData:
    """A site's examples from an ``.npz`` archive or a ``.csv`` file.

    ``.npz``: arrays ``x_train``, ``y_train`` and optionally ``x_test``, ``y_test`` (or ``x`` and
    ``y``, all for training). ``.csv``: a header row, then one example a row; the column named
    ``label`` is the label and every other column, in file order, a numeric feature; all rows
    train. Labels are used as stored, so every site must number classes as the experiment
    does: a CSV's ``label_kind="class"`` labels must be whole numbers >= 0 (``"value"``: any
    number, for regression)."""
    file = Path(path)
    if not file.exists():
        raise SiteError(f"the data file {str(file)!r} does not exist")
    if file.suffix.lower() == ".csv":
        return _load_csv(file, label, label_kind)
    if file.suffix.lower() != ".npz":
        raise SiteError(
            f"{str(file)!r}: --data must be an .npz archive or a .csv file, got a "
            f"{file.suffix or 'suffix-less'} file"
        )
    try:
        archive = np.load(file, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise SiteError(f"cannot read {str(file)!r} as an .npz archive: {error}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise SiteError(
            f"{str(file)!r} holds one array; save x_train=..., y_train=... with np.savez"
        )
    with archive:
        names = set(archive.files)
        try:
            if {"x_train", "y_train"} <= names:
                x, y = archive["x_train"], archive["y_train"]
                if {"x_test", "y_test"} <= names:
                    xt, yt = archive["x_test"], archive["y_test"]
                else:
                    xt, yt = x[:0], y[:0]
            elif {"x", "y"} <= names:
                x, y = archive["x"], archive["y"]
                xt, yt = x[:0], y[:0]
            else:
                raise SiteError(
                    f"{str(file)!r} has arrays {sorted(names)}; expected x_train and y_train "
                    "(and optionally x_test, y_test), or x and y"
                )
        except ValueError as error:
            raise SiteError(
                f"{str(file)!r}: arrays of Python objects are refused: {error}"
            ) from None
    for split, (a, b) in {"train": (x, y), "test": (xt, yt)}.items():
        if len(a) != len(b):
            raise SiteError(f"{str(file)!r}: x_{split} has {len(a)} rows, y_{split} {len(b)}")
        if a.dtype.kind not in "biuf" or b.dtype.kind not in "biuf":
            raise SiteError(f"{str(file)!r}: {split} arrays must be numeric")
    if len(x) == 0:
        raise SiteError(f"{str(file)!r} has no training examples")
    return SiteData(x, y, xt, yt)


def _load_csv(file: Path, label: str, kind: str) -> SiteData:
    """See :func:`load_site_data`; labels are never re-encoded (a site sees only its classes)."""
    if kind not in LABEL_KINDS:
        raise SiteError(f"the label kind must be one of {list(LABEL_KINDS)}, got {kind!r}")
    try:
        dataset = load_csv(file, target=label, classification=False)
    except (ValueError, UnicodeDecodeError) as error:
        message = str(error).removeprefix("load_csv: ").replace("target=", "--label-column ")
        raise SiteError(message.replace(", so choose columns with features=[...]", "")) from None
    x, y = dataset.x, dataset.y
    if kind == "class":
        bad = np.flatnonzero((y != np.round(y)) | (y < 0))
        if len(bad):
            raise SiteError(
                f"{str(file)!r} row {int(bad[0]) + 1}: label {float(y[bad[0]])!r} in column "
                f"{label!r} is not a class number (a whole number >= 0); use --label-kind value "
                "for a regression target"
            )
        labels = y.astype(np.int64)
    else:
        labels = y.astype(np.float32)
    return SiteData(x, labels, x[:0], labels[:0])


def load_model(reference: str, *, loss: str | None = None) -> Model:
    """Call ``package.module:function`` (no arguments) for the site's model: a fedloom
    :class:`~fedloom.core.model.Model`, or a ``torch.nn.Module`` trained with ``loss``."""
    module_name, colon, attribute = reference.partition(":")
    if not colon or not module_name or not attribute:
        raise SiteError(f"--model must be {MODEL_REFERENCE!r}, got {reference!r}")
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise SiteError(f"--model: cannot import {module_name!r}: {error}") from None
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise SiteError(f"--model: {module_name!r} has no attribute {attribute!r}")
        found = getattr(found, part)
    if not callable(found):
        raise SiteError(f"--model: {reference!r} is not callable")
    made = found()
    if hasattr(made, "layout") and hasattr(made, "loss_and_grad"):
        return made  # type: ignore[no-any-return]
    try:
        import torch

        from fedloom.torch import TorchModel
    except ImportError:
        raise SiteError(
            f"--model: {reference!r} returned {type(made).__name__}, not a fedloom "
            "Model; a torch.nn.Module needs pip install 'fedloom[torch]'"
        ) from None
    if not isinstance(made, torch.nn.Module):
        raise SiteError(
            f"--model: {reference!r} returned {type(made).__name__}; expected a fedloom Model "
            "or a torch.nn.Module"
        )
    return TorchModel(made, loss=loss or "cross_entropy")


@dataclass
class SiteProgram:
    """The client program on this site's data, keeping its state between rounds.

    ``broadcast`` is the run's broadcast codec: a broadcast that arrives encoded starts training
    from its decoding, the very vector the server decoded for its own records
    (:func:`fedloom.engine.payloads.encode_broadcast` decodes with the same codec). With a delta
    broadcast (``delta_window`` set) the program keeps the last model it trained from and
    rebuilds each round's model from the chain of changes the server sends
    (:func:`fedloom.compression.chain.apply_links`, as the server does), or takes the whole
    model when the server sends that."""

    program: ClientProgram
    data: SiteData
    state: ClientState = field(default_factory=dict)
    broadcast: Codec | None = None
    delta_window: int | None = None
    held: tuple[int, Vector, bytes] | None = None
    """With a delta broadcast: the round, model and digest of the last model trained from."""
    kept: KeptState | None = None
    """Where the state goes after every training task (None: it lives in memory only)."""

    def train(self, broadcast: Broadcast) -> ClientResult:
        if broadcast.delta_from is not None:
            broadcast = replace(broadcast, params=self._replay(broadcast), payload=None)
        elif broadcast.payload is not None:
            broadcast = replace(broadcast, params=self._decode(broadcast.payload), payload=None)
        if self.delta_window is not None:
            model = np.array(broadcast.params, dtype=np.float32, copy=True)
            self.held = (broadcast.round, model, model_digest(model))
        result, self.state = self.program.run(
            broadcast, self.data.x_train, self.data.y_train, self.state
        )
        if self.kept is not None:
            self.kept.save(self.state, broadcast.round)
        return result

    def held_model(self) -> tuple[int, bytes] | None:
        """The round and digest of the model this site holds from a delta broadcast."""
        return None if self.held is None else (self.held[0], self.held[2])

    def _replay(self, broadcast: Broadcast) -> Vector:
        codec = self._codec()
        if self.held is None or self.held[0] != broadcast.delta_from:
            holds = "no model" if self.held is None else f"the model of round {self.held[0]}"
            self.held = None
            raise ValueError(
                f"the server sent changes from round {broadcast.delta_from}'s model, but this "
                f"site holds {holds}; it will be sent the whole model next"
            )
        assert broadcast.payload is not None
        return apply_links(self.held[1], unpack_chain(broadcast.payload), codec)

    def _decode(self, payload: bytes) -> Vector:
        return self._codec().decode(payload, self.program.work.model.layout.size)

    def _codec(self) -> Codec:
        if self.broadcast is None:
            raise ValueError(
                "the server sent an encoded model, but the run's configuration names no "
                "broadcast codec to decode it"
            )
        return self.broadcast

    def evaluate(self, params: Vector) -> Evaluation:
        if len(self.data.y_test) == 0:
            return Evaluation(0)
        metrics = self.program.evaluate(params, self.data.x_test, self.data.y_test)
        return Evaluation(len(self.data.y_test), metrics)


@dataclass(frozen=True)
class KeptState:
    """A site's state file for one run and training configuration (see
    :mod:`fedloom.deploy.site_state`)."""

    file: SiteStateFile
    run: str
    fingerprint: str

    def save(self, state: ClientState, round: int) -> None:
        """Write ``state`` after ``round``; a failed write is logged and the stale file removed,
        so a restart starts afresh rather than from an older round's state."""
        try:
            self.file.save(state, run=self.run, round=round, fingerprint=self.fingerprint)
        except (OSError, ValueError) as error:
            log.error(
                "%s: cannot write the client state to %s (%s); a restart will start afresh",
                self.file.site, self.file.path, error,
            )  # fmt: skip
            with contextlib.suppress(OSError):
                self.file.path.unlink(missing_ok=True)


def site_program(
    config: TrainingConfig,
    model: Model,
    data: SiteData,
    *,
    state: SiteStateFile | None = None,
    run: str | None = None,
) -> SiteProgram:
    """What the site runs for the server's ``config``. With a ``state`` file and the ``run``'s
    id, the program starts from the state kept there for this run and configuration (anything
    else in the file is refused, logged, and the site starts afresh) and keeps it there after
    every training task."""
    algorithm = site_algorithm(config, model)
    program = SiteProgram(
        algorithm.client,
        data,
        broadcast=algorithm.broadcast,
        delta_window=algorithm.broadcast_window,
    )
    if state is not None and run is not None:
        kept = KeptState(state, run, fingerprint(config, model.layout))
        saved = state.load(run=run, fingerprint=kept.fingerprint, size=model.layout.size)
        if saved is not None:
            program.state = saved.state
        program.kept = kept
    return program
