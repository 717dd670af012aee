"""``[privacy] mechanism = "distributed"`` with a ``secure_sum`` stage in a run file: the noise
shares go through SecAgg+, the run matches the plain-sum run exactly, and a secure sum in another
ring is refused at ``stages``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from fedloom.experiment import Experiment, ExperimentError, build
from fedloom.runner import run_experiment
from fedloom.store import RunStore

logging.getLogger("absl").setLevel(logging.ERROR)

PLAIN = """\
name = "ddg"

[data]
dataset = "digits"
clients = 40

[model]
kind = "softmax"

[train]
lr = 0.1

[algorithm]
name = "fedavg"

[run]
rounds = 2
cohort = 10
min_cohort = 8
federated_eval = false

[privacy]
mechanism = "distributed"
clip = 1.0
noise_multiplier = 1.0
min_clients = 8
bits = 18
max_epsilon = 1000.0
delta = 1e-3
"""

SECURE = PLAIN + '\n[[stages]]\nkind = "secure_sum"\nclip = 1.0\nbits = 18\n'


def test_distributed_dp_runs_in_front_of_the_secure_sum(tmp_path: Path) -> None:
    experiment = Experiment.from_toml(SECURE)
    assert Experiment.from_toml(experiment.to_toml()) == experiment
    assert [s.name for s in build(experiment).algorithm.stages] == ["ddg", "secure_sum"]
    with RunStore.open(tmp_path / "plain.db") as store:
        plain = run_experiment(Experiment.from_toml(PLAIN), store).history
    with RunStore.open(tmp_path / "secure.db") as store:
        secure = run_experiment(experiment, store).history
    assert all(r.aborted is None for r in secure.records)
    assert secure.metric("secagg.survivors") == [10.0, 10.0]
    np.testing.assert_array_equal(secure.params, plain.params)
    assert secure.metric("dp.epsilon") == plain.metric("dp.epsilon")
    assert secure.metric("dp.delta") == [1e-3, 1e-3]


def test_a_secure_sum_in_another_ring_is_refused_at_stages() -> None:
    other = SECURE.replace("clip = 1.0\nbits = 18\n", "clip = 1.0\nbits = 32\n")
    assert other.count("bits = 32") == 1
    with pytest.raises(ExperimentError, match="give 'secure_sum' bits=18") as caught:
        Experiment.from_toml(other)
    assert "'stages'" in str(caught.value)
