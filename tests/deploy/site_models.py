"""Models the test sites name with ``--model`` (each site chooses its own code)."""

from __future__ import annotations

import time

from fedloom.linear import SoftmaxRegression


def digits_softmax() -> SoftmaxRegression:
    return SoftmaxRegression(features=64, classes=10)


def wrong_size() -> SoftmaxRegression:
    return SoftmaxRegression(features=63, classes=10)


def large() -> SoftmaxRegression:
    """About 2.6 million parameters (10 MB): larger than the test server's message limit."""
    return SoftmaxRegression(features=64 * 4000, classes=10)


class SlowSoftmax(SoftmaxRegression):
    """Softmax regression that takes 50 ms a step: a site slow enough to be killed mid-round."""

    def loss_and_grad(self, params, x, y):  # type: ignore[no-untyped-def]
        time.sleep(0.05)
        return super().loss_and_grad(params, x, y)


def slow_digits() -> SoftmaxRegression:
    return SlowSoftmax(features=64, classes=10)
