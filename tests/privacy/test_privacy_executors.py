"""The same private algorithm gives the same model in one process and in a process pool."""

from __future__ import annotations

import numpy as np
import pytest

import fedloom as fl
from fedloom import privacy
from fedloom.data import FederatedData

SAMPLING = privacy.fixed_sampling(population=40, count=10)


@pytest.mark.parametrize(
    "stage",
    [
        privacy.distributed_gaussian(
            clip=0.5, noise_multiplier=1.0, sampling=SAMPLING, min_clients=8
        ),
    ],
    ids=["distributed"],
)
def test_private_rounds_match_across_executors(
    digits_40: FederatedData, softmax_work: fl.LocalSGD, stage: object
) -> None:
    algorithm = fl.fedavg(softmax_work).with_privacy(stage)  # type: ignore[arg-type]
    options = {"rounds": 2, "cohort": 10, "min_cohort": 8, "federated_eval": False}
    here = fl.simulate(algorithm, digits_40, **options)  # type: ignore[arg-type]
    pool = fl.simulate(algorithm, digits_40, executor="process", **options)  # type: ignore[arg-type]
    np.testing.assert_array_equal(here.params, pool.params)
    assert here.metric("dp.epsilon") == pool.metric("dp.epsilon")
