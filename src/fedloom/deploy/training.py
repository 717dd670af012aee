"""An experiment's training settings as wire configuration, and back into a client program.

The server turns the experiment's ``[train]``, ``[algorithm]``, ``[[stages]]`` and ``[privacy]``
tables into a :class:`~fedloom.transport.config.TrainingConfig`; a site turns that back into the
same specs, which validate every value again, and builds the client program on the model it
chose itself: with central DP, the privacy stage first, exactly as a simulation puts it.
A ``broadcast`` codec table travels as scalars (``broadcast = "uniform"``, ``broadcast.bits =
8``) and is folded back on the site, which decodes each encoded model with that codec.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedloom.algorithms import Algorithm, ClientProgram
from fedloom.core.model import Model
from fedloom.experiment import AlgorithmSpec, Experiment, ExperimentError, StageSpec, TrainSpec
from fedloom.experiment.compression_spec import BROADCAST_OPTION
from fedloom.experiment.privacy_spec import PrivacySpec
from fedloom.stages import Stage
from fedloom.transport.config import PrivacyOptions, StageOptions, TrainingConfig, check_scalars

_TRAIN_FIELDS = ("lr", "epochs", "steps", "batch_size", "optimizer", "momentum", "weight_decay")


def training_config(experiment: Experiment, *, task: str) -> TrainingConfig:
    """What sites need to train ``experiment``; ``task`` is ``"classification"`` or
    ``"regression"`` (it picks the default PyTorch loss)."""
    train = {k: getattr(experiment.train, k) for k in _TRAIN_FIELDS}
    try:
        return TrainingConfig(
            algorithm=experiment.algorithm.name,
            train={k: v for k, v in train.items() if v is not None},
            algorithm_options=check_scalars(
                "algorithm", flat_options(experiment.algorithm.options)
            ),
            stages=tuple(
                StageOptions(s.kind, check_scalars(f"stage {s.kind}", s.options))
                for s in experiment.stages
            ),
            loss=experiment.model.loss_for(task),
            privacy=_privacy(experiment.privacy),
        )
    except ValueError as error:
        raise ExperimentError(("algorithm",), f"cannot be sent to sites: {error}") from None


def _privacy(spec: PrivacySpec | None) -> PrivacyOptions | None:
    """``[privacy]``'s client half, for the mechanisms sites run (see :func:`check_deployable`)."""
    if spec is None:
        return None
    check_deployable(spec)
    return PrivacyOptions(
        spec.mechanism, spec.clip, spec.noise_multiplier,
        spec.target_quantile, spec.clip_learning_rate, spec.count_stddev,
    )  # fmt: skip


def check_deployable(spec: PrivacySpec) -> None:
    """Refuse, naming ``privacy.mechanism`` and why, a mechanism whose client half sites do not
    run yet."""
    reasons = {
        "distributed": "the distributed discrete Gaussian needs every site to add its noise "
        "share inside secure aggregation, which deployed sites do not do yet",
        "local": "record-level DP-SGD would run in each site's own training loop, and the "
        "server could not check that it did",
    }
    if spec.mechanism in reasons:
        raise ExperimentError(
            ("privacy", "mechanism"),
            f"{spec.mechanism!r} cannot be deployed yet: {reasons[spec.mechanism]}; deploy "
            '"gaussian" (central DP: sites clip, the server adds noise and checks every '
            "update's norm), or run this experiment in simulation (`fedloom run`)",
        )


def site_algorithm(config: TrainingConfig, model: Model) -> Algorithm:
    """The algorithm ``config`` describes, on ``model``: its client program and its broadcast
    codec are what a site uses; ValueError naming a bad value."""
    try:
        train = TrainSpec(**dict(config.train))  # type: ignore[arg-type]
        stages = tuple(StageSpec(s.kind, dict(s.options)) for s in config.stages)
        algorithm = AlgorithmSpec(config.algorithm, _nested(config.algorithm_options))
        built = algorithm.build(train.work(model), stages)
        if config.privacy is None:
            return built
        return built.with_privacy(_clipping(config.privacy))
    except (ExperimentError, TypeError) as error:
        raise ValueError(f"the server's training configuration: {error}") from None


def _clipping(options: PrivacyOptions) -> Stage:
    """The run's privacy stage as a site runs it: only its client half (clipping, and the
    adaptive bound's report) is ever called here. The server's sampling is not the site's to
    know, so it stands in with a placeholder the client half never reads."""
    from fedloom import privacy

    spec = PrivacySpec(
        options.mechanism, options.clip, options.noise_multiplier,
        options.target_quantile, options.clip_learning_rate, options.count_stddev,
    )  # fmt: skip
    stage = spec.stage(privacy.poisson_sampling(population=1, rate=1.0))
    assert stage is not None  # "gaussian": PrivacyOptions accepts nothing else
    return stage


def client_program(config: TrainingConfig, model: Model) -> ClientProgram:
    """The client program ``config`` describes, on ``model``; ValueError naming a bad value."""
    return site_algorithm(config, model).client


_PREFIX = BROADCAST_OPTION + "."


def flat_options(options: Mapping[str, object]) -> dict[str, object]:
    """``broadcast = { kind = "uniform", bits = 8 }`` as the scalars ``broadcast = "uniform"``
    and ``broadcast.bits = 8``, which cross the wire; other options as they are."""
    flat = {k: v for k, v in options.items() if k != BROADCAST_OPTION}
    table = options.get(BROADCAST_OPTION)
    if isinstance(table, Mapping):
        flat[BROADCAST_OPTION] = table.get("kind")
        flat.update({_PREFIX + k: v for k, v in table.items() if k != "kind"})
    elif table is not None:
        flat[BROADCAST_OPTION] = table
    return flat


def _nested(options: Mapping[str, object]) -> dict[str, Any]:
    """:func:`flat_options`'s options folded back into the ``broadcast`` table."""
    nested: dict[str, Any] = {k: v for k, v in options.items() if not k.startswith(_PREFIX)}
    extra = {k[len(_PREFIX) :]: v for k, v in options.items() if k.startswith(_PREFIX)}
    if extra:
        nested[BROADCAST_OPTION] = {"kind": options.get(BROADCAST_OPTION), **extra}
    return nested
