"""``Experiment``: a whole federated run as one value, and its run file.

The Python tree and the TOML file are two faces of one thing: whatever the file says, the
dataclasses say, and ``Experiment.from_toml(e.to_toml()) == e``. Everything is checked when the
tree is made, parts against each other too (a softmax model needs a classification dataset, a
cohort cannot outnumber the clients), so a bad file fails before any data is loaded.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fedloom.experiment import checks
from fedloom.experiment.data_spec import DataSpec
from fedloom.experiment.devices_spec import DevicesSpec
from fedloom.experiment.errors import ExperimentError
from fedloom.experiment.policy_spec import check_policies
from fedloom.experiment.privacy_spec import PrivacySpec
from fedloom.experiment.reducer_spec import min_cohort
from fedloom.experiment.specs import (
    PLACEHOLDER_MODEL,
    TORCH_KINDS,
    AlgorithmSpec,
    ModelSpec,
    RunSpec,
    StageSpec,
    TrainSpec,
)
from fedloom.policy import FederationPolicy, SitePolicy

if TYPE_CHECKING:
    from fedloom.privacy import Sampling

NAME = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass(frozen=True)
class Origin:
    """Where an experiment was read from, so later errors (at build time) can name the line."""

    source: str
    text: str


@dataclass(frozen=True)
class Experiment:
    """A federated experiment: data, model, local training, algorithm, stages and run.

    ``origin`` records the file it was read from; it is not part of the value (two experiments
    that say the same thing are equal wherever they came from).
    """

    name: str
    data: DataSpec
    model: ModelSpec
    train: TrainSpec
    algorithm: AlgorithmSpec
    run: RunSpec
    stages: tuple[StageSpec, ...] = ()
    description: str = ""
    devices: DevicesSpec | None = None
    policy: FederationPolicy | None = None
    sites: tuple[SitePolicy, ...] = ()
    privacy: PrivacySpec | None = None
    origin: Origin | None = field(default=None, compare=False, repr=False, kw_only=True)

    def __post_init__(self) -> None:
        checks.text(("name",), self.name)
        if not NAME.match(self.name):
            raise ExperimentError(
                ("name",),
                "must use only letters, digits, '.', '_' and '-' (it names files and runs), "
                f"got {checks.show(self.name)}",
            )
        checks.text(("description",), self.description)
        parts = (
            ("data", DataSpec),
            ("model", ModelSpec),
            ("train", TrainSpec),
            ("algorithm", AlgorithmSpec),
            ("run", RunSpec),
        )
        for key, spec in parts:
            if not isinstance(getattr(self, key), spec):
                raise ExperimentError(
                    (key,), f"must be a {spec.__name__}, got {getattr(self, key)!r}"
                )
        stages = tuple(self.stages)
        for index, stage in enumerate(stages):
            if not isinstance(stage, StageSpec):
                raise ExperimentError(("stages", index), f"must be a StageSpec, got {stage!r}")
        object.__setattr__(self, "stages", stages)
        if self.devices is not None and not isinstance(self.devices, DevicesSpec):
            raise ExperimentError(("devices",), f"must be a DevicesSpec, got {self.devices!r}")
        if self.privacy is not None and not isinstance(self.privacy, PrivacySpec):
            raise ExperimentError(("privacy",), f"must be a PrivacySpec, got {self.privacy!r}")
        self._check_model_fits_task()
        self._check_cohort()
        algorithm = self.algorithm.build(self.train.work(PLACEHOLDER_MODEL), self.stages)
        if self.run.buffered is not None:
            self._check_buffered(has_correction=algorithm.correction is not None)
        object.__setattr__(self, "sites", tuple(self.sites))
        check_policies(self)
        if self.privacy is not None:
            self.privacy.check_local(
                model_kind=self.model.kind, algorithm=self.algorithm.name, train=self.train
            )
            if self.run.checkpoint_every != 1 and self.privacy.mechanism != "local":
                raise ExperimentError(
                    ("run", "checkpoint_every"),
                    "must be 1 with differential privacy: a resumed run repeats the rounds "
                    "after its last checkpoint with fresh noise, spending privacy the "
                    f"accountant would not see; got {self.run.checkpoint_every}",
                )
            needed = self.privacy.min_clients
            if needed is not None and self.run.min_cohort < needed:
                raise ExperimentError(
                    ("run", "min_cohort"),
                    f"must be at least privacy.min_clients = {needed}: every sum must carry "
                    f"that many clients' noise shares, got {self.run.min_cohort}",
                )
            try:
                noise = self.privacy.stage(self.privacy_sampling())
            except ValueError as error:
                raise ExperimentError(("privacy",), str(error)) from None
            if noise is not None:
                try:  # the noise stage must fit the [[stages]] (a secure sum's ring, say)
                    algorithm.with_privacy(noise)
                except ValueError as error:
                    raise ExperimentError(("stages",), str(error)) from None
            self.privacy.check_plan(self.privacy_sampling(), self.run.rounds)

    def privacy_sampling(self, population: int | None = None) -> Sampling:
        """The run's cohort sampling as ``[privacy]``'s accountant sees it, over ``population``
        clients (by default all of them; fewer when policies leave some out)."""
        assert self.privacy is not None
        return self.privacy.sampling(
            clients=self.data.clients if population is None else population,
            cohort=self.run.cohort,
            rate=self.run.poisson,
        )

    def _check_model_fits_task(self) -> None:
        data, model = self.data, self.model
        fix = "set classification = false in [data]" if data.dataset in ("csv", "npz") else ""
        if model.kind == "softmax" and data.task == "regression":
            raise ExperimentError(
                ("model", "kind"),
                "softmax is a classifier and needs a classification dataset; this one is "
                'regression (classification = false): use kind = "linear"',
            )
        if model.kind == "linear" and data.task == "classification":
            hint = fix or 'use kind = "softmax" or "mlp"'
            raise ExperimentError(
                ("model", "kind"),
                f"linear is least-squares regression and needs a regression dataset; "
                f"{data.dataset} is a classification dataset: {hint}",
            )
        if model.kind not in TORCH_KINDS or model.loss is None:
            return  # the default loss follows the task
        loss, at = model.loss, ("model", "loss")
        if loss == "mse" and data.task == "classification":
            raise ExperimentError(
                at,
                f'loss "mse" regresses numeric targets, but {data.dataset} is a classification '
                'dataset: use "cross_entropy"' + (f" or {fix}" if fix else ""),
            )
        if loss != "mse" and data.task == "regression":
            raise ExperimentError(
                at,
                f"loss {checks.show(loss)} needs class labels, but this dataset is regression "
                '(classification = false): use loss = "mse"',
            )
        if loss == "bce_with_logits" and data.num_classes not in (None, 2):
            raise ExperimentError(
                at,
                f'loss "bce_with_logits" is for two classes, but {data.dataset} has '
                f'{data.num_classes}: use "cross_entropy"',
            )

    def _check_cohort(self) -> None:
        clients = self.data.clients
        cohort = self.run.cohort
        if isinstance(cohort, int) and cohort > clients:
            raise ExperimentError(
                ("run", "cohort"),
                f"must be at most data.clients = {clients}, got {cohort} "
                "(a float in (0, 1] is a share of the clients)",
            )
        keep = None if self.devices is None else self.devices.keep
        if keep is not None and not (isinstance(cohort, int) and cohort > keep):
            raise ExperimentError(
                ("devices", "keep"),
                f"over-selection keeps the first {keep} of a larger fixed cohort: set run.cohort "
                f"to a count above {keep}, got {checks.show(cohort)}",
            )
        if self.run.min_cohort > clients:
            raise ExperimentError(
                ("run", "min_cohort"),
                f"must be at most data.clients = {clients}, got {self.run.min_cohort}",
            )
        spec = self.algorithm
        needed = min_cohort(spec.reducer, spec.attackers, spec.reducer_options)
        if needed > 1 and (self.run.min_cohort < needed or needed > clients):
            raise ExperimentError(
                ("run", "min_cohort"),
                f"reducer {spec.reducer} with attackers={spec.attackers} needs at least "
                f"{needed} updates a round: set min_cohort >= {needed} (and a cohort and "
                f"data.clients at least that large), got min_cohort = {self.run.min_cohort}",
            )

    def _check_buffered(self, *, has_correction: bool) -> None:
        """What FedBuff does not define: server-side correction state, round deadlines."""
        if has_correction:
            raise ExperimentError(
                ("run", "buffered"),
                f"{self.algorithm.name} keeps server-side state per round (SCAFFOLD, FedNova), "
                "which buffered asynchronous aggregation does not define; use fedavg, fedprox "
                "or an adaptive server optimizer, or remove [run.buffered]",
            )
        devices = self.devices
        if devices is None:
            return
        rules = {
            "deadline": devices.deadline is not None,
            "keep": devices.keep is not None,
            "partial_work": devices.partial_work,
            "availability": devices.availability != 1.0,
            "dropout": devices.dropout != 0.0,
        }
        for key, used in rules.items():
            if used:
                raise ExperimentError(
                    ("devices", key),
                    "applies to synchronous rounds; with [run.buffered] the devices only time "
                    "the clients (speed, bandwidth, seconds_per_example, trace): remove it",
                )

    @classmethod
    def from_toml(
        cls, text: str, *, source: str = "<string>", base_dir: Path | None = None
    ) -> Experiment:
        """Read an experiment from run-file text; relative data paths resolve against
        ``base_dir`` (when given). Raises :class:`ExperimentError` naming line and key."""
        from fedloom.experiment.runfile import parse

        return parse(text, source=source, base_dir=base_dir)

    def to_toml(self) -> str:
        """This experiment as run-file text."""
        from fedloom.experiment.runfile import dump

        return dump(self)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write this experiment's run file to ``path``."""
        Path(path).write_text(self.to_toml(), encoding="utf-8")

    def located(self, error: ExperimentError) -> ExperimentError:
        """``error`` placed in the file this experiment was read from, when it was."""
        if self.origin is None:
            return error
        return error.at(self.origin.source, self.origin.text)


def load_experiment(path: str | os.PathLike[str]) -> Experiment:
    """Read and check the run file at ``path``; relative data paths resolve against its folder."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as error:
        raise ExperimentError(
            (), f"cannot read the run file: {error.strerror or error}", str(path)
        ) from None
    return Experiment.from_toml(text, source=str(path), base_dir=file.parent)


def validate_file(path: str | os.PathLike[str]) -> Experiment:
    """Parse and check a run file without loading any data or training (``fedloom validate``).

    Beyond :func:`load_experiment`, a ``factory`` model's callable is imported (not called), so
    a mistyped path fails here rather than at the start of the run.
    """
    from fedloom.experiment.build import resolve_factory

    experiment = load_experiment(path)
    if experiment.model.factory is not None:
        try:
            resolve_factory(experiment.model.factory)
        except ExperimentError as error:
            raise experiment.located(error) from None
    return experiment
