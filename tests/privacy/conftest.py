from __future__ import annotations

import logging

import pytest

import fedloom as fl
from fedloom.data import FederatedData

# dp-accounting logs through absl when it skips an RDP order it cannot compute; that is expected.
logging.getLogger("absl").setLevel(logging.ERROR)


@pytest.fixture(scope="session")
def digits_40() -> FederatedData:
    return fl.data.digits().split(fl.data.iid(), clients=40, seed=0)


@pytest.fixture(scope="session")
def softmax_work() -> fl.LocalSGD:
    return fl.local_sgd(fl.SoftmaxRegression(features=64, classes=10), lr=0.2, batch_size=16)
