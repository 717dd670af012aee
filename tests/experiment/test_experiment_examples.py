"""The shipped run files validate, round-trip, build, and run a round through the engine."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedloom.engine import train
from fedloom.executors import InProcessExecutor
from fedloom.experiment import Built, Experiment, build, validate_file

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FILES = sorted(EXAMPLES.glob("*.toml"))
DIGITS = ("digits-fedavg", "digits-fedprox", "digits-scaffold")


def test_the_promised_examples_ship() -> None:
    assert {f.stem for f in FILES} >= {
        *DIGITS,
        "synthetic-fedadam",
        "breast-cancer-poisson",
        "mnist1d-fednova",
    }


@pytest.fixture(scope="module", params=FILES, ids=lambda f: f.stem)
def example(request: pytest.FixtureRequest) -> tuple[Experiment, Built]:
    if "mlp" in request.param.read_text():
        pytest.importorskip("torch")
    experiment = validate_file(request.param)
    return experiment, build(experiment)


def test_example_round_trips(example: tuple[Experiment, Built]) -> None:
    experiment, _ = example
    text = experiment.to_toml()
    assert Experiment.from_toml(text) == experiment
    assert Experiment.from_toml(text).to_toml() == text


def test_example_is_named_after_its_file(example: tuple[Experiment, Built]) -> None:
    experiment, _ = example
    assert experiment.origin is not None
    assert Path(experiment.origin.source).stem == experiment.name


def test_example_builds_what_it_says(example: tuple[Experiment, Built]) -> None:
    experiment, built = example
    assert len(built.data) == experiment.data.clients
    assert built.algorithm.name == experiment.algorithm.name
    # A [privacy] table puts its noise stage first in the pipeline.
    assert len(built.algorithm.stages) == len(experiment.stages) + (experiment.privacy is not None)
    assert built.schedule.rounds == experiment.run.rounds
    assert built.schedule.seed == experiment.run.seed
    assert built.checkpoint_every == experiment.run.checkpoint_every


def test_example_runs_a_round(example: tuple[Experiment, Built]) -> None:
    _, built = example
    model = built.algorithm.work.model
    history = train(
        built.algorithm,
        InProcessExecutor(built.algorithm.client, built.data.clients, catch=False),
        replace(built.schedule, rounds=1),
        population=[c.client_id for c in built.data.clients],
        evaluate=lambda params: model.evaluate(params, built.data.test_x, built.data.test_y),
    )
    (record,) = history.records
    assert record.aborted is None
    assert math.isfinite(record.metrics["test_loss"])


def test_digits_examples_differ_only_in_the_algorithm() -> None:
    first, *others = (validate_file(EXAMPLES / f"{name}.toml") for name in DIGITS)
    for other in others:
        assert other.algorithm != first.algorithm
        same = replace(
            other, name=first.name, description=first.description, algorithm=first.algorithm
        )
        assert same == first


def test_digits_setup_is_the_readme_comparison() -> None:
    pytest.importorskip("torch")
    experiment = validate_file(EXAMPLES / "digits-fedprox.toml")
    built = build(experiment)
    assert experiment.algorithm.options == {"mu": 0.01}
    assert experiment.data.partition is not None
    assert experiment.data.partition.options == {"alpha": 0.1}
    assert built.schedule.cohort.sample(50, np.random.default_rng(0)).size == 50
    # Linear(64, 64), ReLU, Linear(64, 10): weights and biases.
    assert built.algorithm.work.model.layout.size == 64 * 64 + 64 + 64 * 10 + 10
