"""The ``[model]``, ``[train]``, ``[algorithm]``, ``[[stages]]`` and ``[run]`` tables.

Each is a frozen dataclass checked when it is made, so a bad value fails before any data is
loaded. Where fedloom already has a constructor that validates (a recipe, a stage, local SGD),
the spec builds it on a placeholder model and reports its complaint against the right key.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from fedloom.algorithms import ALGORITHMS, Algorithm
from fedloom.client import LocalSGD
from fedloom.core.model import Model
from fedloom.engine import Schedule, Target, poisson, schedule
from fedloom.engine.buffered import Buffered
from fedloom.executors import EXECUTORS
from fedloom.experiment import checks
from fedloom.experiment.checks import Options
from fedloom.experiment.compression_spec import (
    BROADCAST_OPTION,
    CODEC_STAGES,
    broadcast_codec,
    broadcast_window,
)
from fedloom.experiment.errors import ExperimentError, KeyPath
from fedloom.experiment.reducer_spec import build_reducer
from fedloom.linear import SoftmaxRegression
from fedloom.secagg import secure_sum
from fedloom.stages import Stage, clip_by_norm

MODEL_KINDS = ("mlp", "softmax", "linear", "factory")
"""``mlp`` and ``factory`` are PyTorch modules; ``softmax`` and ``linear`` are plain NumPy."""
TORCH_KINDS = ("mlp", "factory")
LOSSES = ("cross_entropy", "mse", "bce_with_logits")
"""The losses of :class:`fedloom.torch.TorchModel` (kept here so checking needs no PyTorch)."""
FACTORY = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")

_APPLIES_TO = {"hidden": ("mlp",), "factory": ("factory",), "loss": TORCH_KINDS}
_REQUIRED = {"mlp": ("hidden",), "factory": ("factory",)}

STAGES: dict[str, Callable[..., Stage]] = {
    "clip": clip_by_norm,
    "secure_sum": secure_sum,
    **CODEC_STAGES,
}
"""Update stages by the name ``stages[i].kind`` takes, in data order."""

# Local SGD needs a model to exist; checking its options needs none in particular.
PLACEHOLDER_MODEL: Model = SoftmaxRegression(features=1, classes=2)


@dataclass(frozen=True)
class ModelSpec:
    """``[model]``: the model's kind; its input size and classes come from the data.

    ``mlp`` needs ``hidden`` (layer widths, ``[]`` for none). ``factory`` names a zero-argument
    callable returning a ``torch.nn.Module`` as ``"package.module:function"``, imported (never
    unpickled) when the experiment is built. ``loss`` applies to the PyTorch kinds; it defaults
    to cross-entropy for classification and mean squared error for regression.
    """

    kind: str
    hidden: tuple[int, ...] | None = None
    factory: str | None = None
    loss: str | None = None

    SECTION: ClassVar[KeyPath] = ("model",)

    def __post_init__(self) -> None:
        at = self.SECTION
        checks.choice((*at, "kind"), self.kind, MODEL_KINDS)
        if self.hidden is not None:
            if not isinstance(self.hidden, list | tuple):
                raise ExperimentError(
                    (*at, "hidden"),
                    f"must be an array of layer widths, got {checks.show(self.hidden)} "
                    f"({checks.kind_of(self.hidden)})",
                )
            widths = tuple(checks.integer((*at, "hidden"), w, minimum=1) for w in self.hidden)
            object.__setattr__(self, "hidden", widths)
        if self.factory is not None:
            checks.text((*at, "factory"), self.factory)
            if not FACTORY.match(self.factory):
                raise ExperimentError(
                    (*at, "factory"),
                    f'must be "package.module:function", got {checks.show(self.factory)}',
                )
        if self.loss is not None:
            checks.choice((*at, "loss"), self.loss, LOSSES)
        for name, kinds in _APPLIES_TO.items():
            if getattr(self, name) is not None and self.kind not in kinds:
                owners = " or ".join(checks.show(k) for k in kinds)
                raise ExperimentError(
                    (*at, name),
                    f"applies only to kind {owners}, not {checks.show(self.kind)}; remove it",
                )
        for name in _REQUIRED.get(self.kind, ()):
            if getattr(self, name) is None:
                raise ExperimentError(
                    (*at, name), f"required for kind {checks.show(self.kind)}, missing"
                )

    def loss_for(self, task: str) -> str | None:
        """The PyTorch loss the model trains with on a ``task`` ("classification" or
        "regression") dataset: ``loss`` if set, else cross-entropy or mean squared error;
        ``None`` for the NumPy kinds, whose loss is their own."""
        if self.kind not in TORCH_KINDS:
            return None
        return self.loss or ("mse" if task == "regression" else "cross_entropy")


@dataclass(frozen=True)
class TrainSpec:
    """``[train]``: local training on each client (:class:`fedloom.LocalSGD`).

    Set ``epochs`` or ``steps``, not both; with neither, one epoch.
    """

    lr: float
    epochs: int | None = None
    steps: int | None = None
    batch_size: int = 32
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0

    SECTION: ClassVar[KeyPath] = ("train",)

    def __post_init__(self) -> None:
        at = self.SECTION
        object.__setattr__(self, "lr", checks.number((*at, "lr"), self.lr, low=0, low_open=True))
        for name in ("epochs", "steps"):
            if getattr(self, name) is not None:
                checks.integer((*at, name), getattr(self, name), minimum=1)
        if self.epochs is not None and self.steps is not None:
            raise ExperimentError((*at, "steps"), "set epochs or steps, not both")
        checks.integer((*at, "batch_size"), self.batch_size, minimum=1)
        checks.choice((*at, "optimizer"), self.optimizer, ("sgd", "adam"))
        momentum = checks.number((*at, "momentum"), self.momentum, low=0, high=1, high_open=True)
        object.__setattr__(self, "momentum", momentum)
        decay = checks.number((*at, "weight_decay"), self.weight_decay, low=0)
        object.__setattr__(self, "weight_decay", decay)
        self.work(PLACEHOLDER_MODEL)

    def work(self, model: Model) -> LocalSGD:
        """Local SGD on ``model`` with these options."""
        options = {k: getattr(self, k) for k in ("lr", "epochs", "steps", "batch_size")}
        options |= {k: getattr(self, k) for k in ("optimizer", "momentum", "weight_decay")}
        try:
            return LocalSGD(model, **options)
        except ValueError as error:
            raise checks.blamed(self.SECTION, options, error) from None


@dataclass(frozen=True)
class AlgorithmSpec:
    """``[algorithm]``: a recipe of :data:`fedloom.ALGORITHMS` and its keyword options.

    ``reducer`` replaces the recipe's reducer with one of :data:`fedloom.robust.REDUCERS`,
    with ``attackers`` and ``reducer_options`` (see :mod:`fedloom.experiment.reducer_spec`).
    """

    name: str
    options: Options = field(default_factory=dict)
    reducer: str | None = None
    attackers: int | None = None
    reducer_options: Options | None = None

    SECTION: ClassVar[KeyPath] = ("algorithm",)

    def __post_init__(self) -> None:
        checks.choice((*self.SECTION, "name"), self.name, ALGORITHMS)
        recipe = ALGORITHMS[self.name]
        given = {k: v for k, v in self.options.items() if k != BROADCAST_OPTION}
        options: dict[str, Any] = checks.options(
            self.SECTION,
            given,
            recipe,
            provided=("work",),
            table_keys=("name", "reducer", "attackers", "reducer_options", BROADCAST_OPTION),
        )
        if BROADCAST_OPTION in self.options:
            broadcast_codec(self.SECTION, self.options[BROADCAST_OPTION])
            broadcast_window(self.SECTION, self.options[BROADCAST_OPTION])
            options[BROADCAST_OPTION] = self.options[BROADCAST_OPTION]
        object.__setattr__(self, "options", options)
        build_reducer(self.reducer, self.attackers, self.reducer_options)
        self.build(TrainSpec(lr=0.1).work(PLACEHOLDER_MODEL))

    def build(self, work: LocalSGD, stages: tuple[StageSpec, ...] = ()) -> Algorithm:
        """The algorithm with ``work`` on the clients and ``stages`` in its pipeline."""
        options = {k: v for k, v in self.options.items() if k != BROADCAST_OPTION}
        try:
            algorithm = ALGORITHMS[self.name](work, **options)
        except ValueError as error:
            raise checks.blamed(
                self.SECTION, options, error, fallback=(*self.SECTION, "name")
            ) from None
        reducer = build_reducer(self.reducer, self.attackers, self.reducer_options)
        if BROADCAST_OPTION in self.options:
            codec = broadcast_codec(self.SECTION, self.options[BROADCAST_OPTION])
            window = broadcast_window(self.SECTION, self.options[BROADCAST_OPTION])
            try:
                algorithm = algorithm.with_broadcast(codec, delta_window=window)
            except ValueError as error:
                raise ExperimentError((*self.SECTION, BROADCAST_OPTION), str(error)) from None
        try:
            if reducer is not None:
                algorithm = algorithm.with_reducer(reducer)
            return algorithm.with_stages(*(stage.build() for stage in stages))
        except ValueError as error:
            raise ExperimentError(("stages",), str(error)) from None


@dataclass(frozen=True)
class StageSpec:
    """One ``[[stages]]`` table: an update stage (``kind``) and its keyword options."""

    kind: str
    options: Options = field(default_factory=dict)

    SECTION: ClassVar[KeyPath] = ("stages",)

    def __post_init__(self) -> None:
        checks.choice((*self.SECTION, "kind"), self.kind, STAGES)
        options = checks.options(
            self.SECTION, self.options, STAGES[self.kind], table_keys=("kind",)
        )
        object.__setattr__(self, "options", options)
        self.build()

    def build(self) -> Stage:
        """The stage this table describes."""
        try:
            return STAGES[self.kind](**self.options)
        except ValueError as error:
            raise checks.blamed(self.SECTION, self.options, error) from None


@dataclass(frozen=True)
class TargetSpec:
    """``[run.target]``: stop once ``metric`` reaches ``value``.

    ``higher_is_better`` defaults to true unless the metric's name contains ``loss``.
    """

    metric: str
    value: float
    higher_is_better: bool | None = None

    SECTION: ClassVar[KeyPath] = ("run", "target")

    def __post_init__(self) -> None:
        if not checks.text((*self.SECTION, "metric"), self.metric):
            raise ExperimentError((*self.SECTION, "metric"), 'must name a metric, got ""')
        object.__setattr__(self, "value", checks.number((*self.SECTION, "value"), self.value))
        if self.higher_is_better is not None:
            checks.flag((*self.SECTION, "higher_is_better"), self.higher_is_better)

    def target(self) -> Target:
        """The engine's stopping rule."""
        higher = self.higher_is_better
        return Target(
            self.metric, self.value, "loss" not in self.metric if higher is None else higher
        )


@dataclass(frozen=True)
class BufferedSpec:
    """``[run.buffered]``: train asynchronously with FedBuff (Nguyen et al. 2022) instead of in
    synchronous rounds. ``run.cohort`` clients are in flight at once, each server step averages
    ``buffer_size`` updates weighted by staleness, and ``run.rounds`` counts server steps.
    """

    buffer_size: int
    staleness: str = "sqrt"
    max_staleness: int | None = None

    SECTION: ClassVar[KeyPath] = ("run", "buffered")

    def __post_init__(self) -> None:
        at = self.SECTION
        checks.integer((*at, "buffer_size"), self.buffer_size, minimum=1)
        checks.choice((*at, "staleness"), self.staleness, ("sqrt", "constant"))
        if self.max_staleness is not None:
            checks.integer((*at, "max_staleness"), self.max_staleness, minimum=0)


@dataclass(frozen=True)
class RunSpec:
    """``[run]``: rounds, who takes part, seeds, evaluation and checkpoint cadence, stopping.

    Exactly one of ``cohort`` (an int: that many clients; a float in (0, 1]: that share of them)
    or ``poisson`` (each client joins with that probability) is set.
    """

    rounds: int
    cohort: int | float | None = None
    poisson: float | None = None
    seed: int = 0
    min_cohort: int = 1
    eval_every: int = 1
    federated_eval: bool = True
    checkpoint_every: int = 1
    executor: str = "inprocess"
    target: TargetSpec | None = None
    buffered: BufferedSpec | None = None

    SECTION: ClassVar[KeyPath] = ("run",)

    def __post_init__(self) -> None:
        at = self.SECTION
        checks.integer((*at, "rounds"), self.rounds, minimum=1)
        if (self.cohort is None) == (self.poisson is None):
            both = self.cohort is not None
            raise ExperimentError(
                (*at, "poisson" if both else "cohort"),
                "set exactly one of cohort (a count or a fraction) or poisson (a rate), "
                + ("not both" if both else "got neither"),
            )
        if isinstance(self.cohort, float):
            checks.number((*at, "cohort"), self.cohort, low=0, high=1, low_open=True)
        elif self.cohort is not None:
            _check_count(self.cohort)
        if self.poisson is not None:
            rate = checks.number((*at, "poisson"), self.poisson, low=0, high=1, low_open=True)
            object.__setattr__(self, "poisson", rate)
        checks.integer((*at, "seed"), self.seed, minimum=0)
        for name in ("min_cohort", "eval_every", "checkpoint_every"):
            checks.integer((*at, name), getattr(self, name), minimum=1)
        checks.flag((*at, "federated_eval"), self.federated_eval)
        checks.choice((*at, "executor"), self.executor, EXECUTORS)
        if self.target is not None and not isinstance(self.target, TargetSpec):
            raise ExperimentError(
                (*at, "target"), f"must be a TargetSpec (a [run.target] table), got {self.target!r}"
            )
        if self.buffered is not None:
            self._check_buffered(self.buffered)

    def _check_buffered(self, buffered: BufferedSpec) -> None:
        at = self.SECTION
        if not isinstance(buffered, BufferedSpec):
            raise ExperimentError(
                (*at, "buffered"), f"must be a [run.buffered] table, got {buffered!r}"
            )
        if not isinstance(self.cohort, int) or isinstance(self.cohort, bool):
            raise ExperimentError(
                (*at, "poisson" if self.poisson is not None else "cohort"),
                "with [run.buffered], cohort is the count of clients in flight at once (an "
                f"integer); got {checks.show(self.cohort if self.poisson is None else 'poisson')}",
            )
        if buffered.buffer_size > self.cohort:
            raise ExperimentError(
                (*at, "buffered", "buffer_size"),
                f"can never fill with cohort = {self.cohort} clients in flight: use a "
                f"buffer_size of at most {self.cohort}, got {buffered.buffer_size}",
            )
        if self.target is not None:
            raise ExperimentError(
                (*at, "target"), "a target does not apply to buffered (FedBuff) training yet"
            )

    def buffered_plan(self) -> Buffered:
        """FedBuff's settings for a ``[run.buffered]`` run (raises ValueError for other runs)."""
        if self.buffered is None or not isinstance(self.cohort, int):
            raise ValueError("this run has no [run.buffered] table")
        return Buffered(
            concurrency=self.cohort,
            buffer_size=self.buffered.buffer_size,
            updates=self.rounds,
            seed=self.seed,
            staleness="sqrt" if self.buffered.staleness == "sqrt" else "constant",
            max_staleness=self.buffered.max_staleness,
            eval_every=self.eval_every,
        )

    def schedule(self) -> Schedule:
        """The engine's schedule for this run."""
        cohort: Any = self.cohort if self.poisson is None else poisson(self.poisson)
        return schedule(
            rounds=self.rounds,
            cohort=cohort,
            seed=self.seed,
            min_cohort=self.min_cohort,
            eval_every=self.eval_every,
            federated_eval=self.federated_eval,
            target=None if self.target is None else self.target.target(),
        )


def _check_count(cohort: object) -> None:
    if isinstance(cohort, bool) or not isinstance(cohort, int):
        raise ExperimentError(
            ("run", "cohort"),
            "must be an integer count >= 1 or a fraction in (0, 1], got "
            f"{checks.show(cohort)} ({checks.kind_of(cohort)})",
        )
    checks.integer(("run", "cohort"), cohort, minimum=1)
