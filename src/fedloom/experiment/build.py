"""From an :class:`~fedloom.experiment.Experiment` to the things the engine runs.

:func:`build` loads and splits the data, makes the model to fit it (input size and classes come
from the data), checks that it does by evaluating it on two training examples, and assembles
the algorithm and the schedule. PyTorch is imported only for the ``mlp`` and ``factory`` kinds.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from fedloom import data as fd
from fedloom.algorithms import Algorithm
from fedloom.core.model import Model
from fedloom.engine import Schedule
from fedloom.experiment import checks
from fedloom.experiment.data_spec import DATASETS, DataSpec
from fedloom.experiment.errors import ExperimentError, KeyPath
from fedloom.experiment.experiment import Experiment
from fedloom.experiment.specs import ModelSpec
from fedloom.linear import LinearRegression, SoftmaxRegression

# Exceptions a model raises on data of the wrong shape (PyTorch: RuntimeError, IndexError).
_MISFIT = (ValueError, RuntimeError, IndexError, TypeError)


@dataclass(frozen=True)
class Built:
    """An experiment made real: federated data, the algorithm, the engine's schedule, and how
    many rounds pass between checkpoints."""

    data: fd.FederatedData
    algorithm: Algorithm
    schedule: Schedule
    checkpoint_every: int


def build(experiment: Experiment, *, population: int | None = None) -> Built:
    """Load the data, make the model and check it fits, and assemble the algorithm.

    ``population`` is how many clients the run will draw its cohorts from, when that is not
    ``data.clients`` (policies left some out; a deployment has its sites): a privacy stage's
    accountant must see the sampling the engine really does.

    Raises :class:`ExperimentError` (placed in the run file when the experiment came from one)
    for a missing data file, a dataset the loader refuses, or a model that does not fit.
    """
    try:
        plan = experiment.run.schedule()
        data = load_data(experiment.data, default_seed=experiment.run.seed)
        model = make_model(experiment.model, data)
        check_fit(experiment.model, model, data, seed=experiment.run.seed)
        work = experiment.train.work(model)
        algorithm = experiment.algorithm.build(work, experiment.stages)
        if experiment.privacy is not None:
            stage = experiment.privacy.stage(experiment.privacy_sampling(population))
            if stage is None:  # local DP-SGD: the clients' work, not a stage
                work_ = experiment.privacy.local_work(model, experiment.train)
                algorithm = replace(algorithm, work=work_)
            else:
                algorithm = algorithm.with_privacy(stage)
                plan = replace(plan, budget=experiment.privacy.budget())
    except ExperimentError as error:
        raise experiment.located(error) from None
    return Built(data, algorithm, plan, experiment.run.checkpoint_every)


def load_data(spec: DataSpec, *, default_seed: int) -> fd.FederatedData:
    """The dataset ``spec`` names, split over its clients (generated datasets: drawn with the
    data seed, which defaults to ``default_seed``)."""
    seed = default_seed if spec.seed is None else spec.seed
    kind = DATASETS[spec.dataset]
    split = {
        "clients": spec.clients,
        "seed": seed,
        "test_fraction": spec.test_fraction,
        "holdout": spec.holdout,
    }
    options: dict[str, Any] = dict(spec.options)
    path = options.get("path")
    at: KeyPath = ("data", "path") if path is not None else ("data", "dataset")
    try:
        loaded = kind.loader(**{k: split[k] for k in kind.provided}, **options)
        if isinstance(loaded, fd.FederatedData):
            return loaded
        partition = fd.iid() if spec.partition is None else spec.partition.partitioner()
        return loaded.split(partition, **split)  # type: ignore[no-any-return]
    except FileNotFoundError:
        raise ExperimentError(at, f"the data file {str(path)!r} does not exist") from None
    except ImportError as error:
        raise ExperimentError(("data", "dataset"), str(error)) from None
    except ValueError as error:
        raise checks.blamed(("data",), {**split, **options}, error, fallback=at) from None


def make_model(spec: ModelSpec, data: fd.FederatedData) -> Model:
    """The model ``spec`` describes, sized for ``data``'s inputs and classes."""
    features = int(np.prod(data.clients[0].x_train.shape[1:]))
    classes = data.num_classes
    try:
        if spec.kind == "softmax":
            assert classes is not None  # the Experiment checked the task
            return SoftmaxRegression(features=features, classes=classes)
        if spec.kind == "linear":
            return LinearRegression(features=features)
    except ValueError as error:
        raise _misfit(spec, data, error) from None
    try:
        from fedloom.torch import TorchModel, mlp
    except ImportError:
        raise ExperimentError(
            ("model", "kind"),
            f"{checks.show(spec.kind)} is a PyTorch model: pip install 'fedloom[torch]'",
        ) from None
    loss = spec.loss_for("regression" if classes is None else "classification") or "mse"
    if spec.kind == "mlp":
        assert spec.hidden is not None
        outputs = classes if loss == "cross_entropy" and classes is not None else 1
        return TorchModel(mlp(features, spec.hidden, outputs), loss=loss)
    assert spec.factory is not None
    return TorchModel(resolve_factory(spec.factory), loss=loss)


def resolve_factory(reference: str) -> Callable[[], Any]:
    """Import ``"package.module:function"`` (a dotted attribute path after the colon)."""
    module_name, _, attribute = reference.partition(":")
    at: KeyPath = ("model", "factory")
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ExperimentError(at, f"cannot import module {module_name!r}: {error}") from None
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise ExperimentError(
                at, f"module {module_name!r} has no attribute {attribute!r} ({reference!r})"
            )
        found = getattr(found, part)
    if not callable(found):
        raise ExperimentError(
            at, f"{reference!r} must be a callable returning a torch.nn.Module, got {found!r}"
        )
    return found  # type: ignore[no-any-return]


def check_fit(spec: ModelSpec, model: Model, data: fd.FederatedData, *, seed: int) -> None:
    """Evaluate the fresh model on two training examples; turn a shape error into a message.

    The second example is one with the largest label, so an output layer too narrow for the
    classes fails here too.
    """
    client = data.clients[0]
    x, y = client.x_train, client.y_train
    rows = [0, int(np.argmax(y))] if data.num_classes is not None else [0, min(1, len(y) - 1)]
    try:
        model.evaluate(model.init(seed), x[rows], y[rows])
    except _MISFIT as error:
        raise _misfit(spec, data, error) from None


def _misfit(spec: ModelSpec, data: fd.FederatedData, error: Exception) -> ExperimentError:
    shape = data.clients[0].x_train.shape[1:]
    inputs = f"{shape[0]} features" if len(shape) == 1 else f"inputs of shape {shape}"
    classes = data.num_classes
    outputs = f"{classes} classes" if classes is not None else "a numeric (regression) target"
    detail = {"mlp": f" (hidden = {checks.show(spec.hidden)})", "factory": f" {spec.factory}"}
    return ExperimentError(
        ("model",),
        f"model {spec.kind}{detail.get(spec.kind, '')} does not fit the data: {error}; "
        f"the data has {inputs} and {outputs}",
    )
