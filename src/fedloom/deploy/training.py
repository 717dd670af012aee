"""An experiment's training settings as wire configuration, and back into a client program.

The server turns the experiment's ``[train]``, ``[algorithm]`` and ``[[stages]]`` tables into a
:class:`~fedloom.transport.config.TrainingConfig`; a site turns that back into the same specs,
which validate every value again, and builds the client program on the model it chose itself.
"""

from __future__ import annotations

from fedloom.algorithms import ClientProgram
from fedloom.core.model import Model
from fedloom.experiment import AlgorithmSpec, Experiment, ExperimentError, StageSpec, TrainSpec
from fedloom.transport.config import StageOptions, TrainingConfig, check_scalars

_TRAIN_FIELDS = ("lr", "epochs", "steps", "batch_size", "optimizer", "momentum", "weight_decay")


def training_config(experiment: Experiment, *, task: str) -> TrainingConfig:
    """What sites need to train ``experiment``; ``task`` is ``"classification"`` or
    ``"regression"`` (it picks the default PyTorch loss)."""
    train = {k: getattr(experiment.train, k) for k in _TRAIN_FIELDS}
    try:
        return TrainingConfig(
            algorithm=experiment.algorithm.name,
            train={k: v for k, v in train.items() if v is not None},
            algorithm_options=check_scalars("algorithm", experiment.algorithm.options),
            stages=tuple(
                StageOptions(s.kind, check_scalars(f"stage {s.kind}", s.options))
                for s in experiment.stages
            ),
            loss=experiment.model.loss_for(task),
        )
    except ValueError as error:
        raise ExperimentError(("algorithm",), f"cannot be sent to sites: {error}") from None


def client_program(config: TrainingConfig, model: Model) -> ClientProgram:
    """The client program ``config`` describes, on ``model``; ValueError naming a bad value."""
    try:
        train = TrainSpec(**dict(config.train))  # type: ignore[arg-type]
        stages = tuple(StageSpec(s.kind, dict(s.options)) for s in config.stages)
        algorithm = AlgorithmSpec(config.algorithm, dict(config.algorithm_options))
        return algorithm.build(train.work(model), stages).client
    except (ExperimentError, TypeError) as error:
        raise ValueError(f"the server's training configuration: {error}") from None
