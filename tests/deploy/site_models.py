"""Models the test sites name with ``--model`` (each site chooses its own code)."""

from __future__ import annotations

from fedloom.linear import SoftmaxRegression


def digits_softmax() -> SoftmaxRegression:
    return SoftmaxRegression(features=64, classes=10)


def wrong_size() -> SoftmaxRegression:
    return SoftmaxRegression(features=63, classes=10)


def large() -> SoftmaxRegression:
    """About 2.6 million parameters (10 MB): larger than the test server's message limit."""
    return SoftmaxRegression(features=64 * 4000, classes=10)
