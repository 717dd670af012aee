from __future__ import annotations

import pytest

import fedloom as fl
from fedloom.data import FederatedData


@pytest.fixture(scope="session")
def digits_iid() -> FederatedData:
    return fl.data.digits().split(fl.data.iid(), clients=10, seed=0)


@pytest.fixture(scope="session")
def softmax() -> fl.SoftmaxRegression:
    return fl.SoftmaxRegression(features=64, classes=10)
