"""Optimizers on flat vectors, as ``init`` / ``update`` pairs with explicit state.

On the server they turn the cohort's averaged update (the pseudo-gradient Δ, new minus old, a
descent direction) into the step added to the global model, following Reddi et al., *Adaptive
Federated Optimization*, ICLR 2021, Algorithm 2::

    m_t = β1 m_{t-1} + (1 - β1) Δ_t
    v_t = v_{t-1} + Δ_t²                                   (Adagrad)
    v_t = v_{t-1} - (1 - β2) Δ_t² sign(v_{t-1} - Δ_t²)     (Yogi)
    v_t = β2 v_{t-1} + (1 - β2) Δ_t²                       (Adam)
    x_{t+1} = x_t + η m_t / (√v_t + τ)

with ``v_{-1} = τ²`` and no bias correction, as in the paper. ``sgd`` is FedAvg's
``x + η Δ`` and ``momentum`` is FedAvgM's ``v = β v + Δ; x + η v`` (Hsu et al. 2019,
*Measuring the Effects of Non-Identical Data Distribution for Federated Visual Classification*).

Clients reuse the same objects for local training by passing the negative gradient as Δ; the
torch-style Adam used there sets ``bias_correction=True`` and ``initial_v=0``.

No optimizer state lives on an optimizer object: ``update`` returns the new state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from fedloom.core import validate
from fedloom.core.layout import Vector


@dataclass(frozen=True)
class OptimizerState:
    """Moments of an optimizer; ``None`` where the optimizer keeps none."""

    count: int = 0
    m: Vector | None = None
    v: Vector | None = None


class Optimizer(Protocol):
    """``(Δ, state) → (step, state)``: the step is added to the parameters."""

    def init(self, params: Vector) -> OptimizerState: ...

    def update(self, delta: Vector, state: OptimizerState) -> tuple[Vector, OptimizerState]: ...


@dataclass(frozen=True)
class SGD:
    """``step = lr · Δ`` (FedAvg with server learning rate ``lr``)."""

    lr: float = 1.0

    def __post_init__(self) -> None:
        validate.positive("lr", self.lr)

    def init(self, params: Vector) -> OptimizerState:
        return OptimizerState()

    def update(self, delta: Vector, state: OptimizerState) -> tuple[Vector, OptimizerState]:
        step = (np.float32(self.lr) * delta).astype(np.float32, copy=False)
        return step, OptimizerState(count=state.count + 1)


@dataclass(frozen=True)
class Momentum:
    """Heavy-ball momentum: ``v = β v + Δ``, ``step = lr · v`` (FedAvgM); ``nesterov`` optional."""

    lr: float = 1.0
    beta: float = 0.9
    nesterov: bool = False

    def __post_init__(self) -> None:
        validate.positive("lr", self.lr)
        validate.in_range("beta", self.beta, 0.0, 1.0, high_open=True)

    def init(self, params: Vector) -> OptimizerState:
        return OptimizerState(m=np.zeros_like(params, dtype=np.float32))

    def update(self, delta: Vector, state: OptimizerState) -> tuple[Vector, OptimizerState]:
        assert state.m is not None, "Momentum.update needs the state from Momentum.init"
        beta = np.float32(self.beta)
        m = beta * state.m + delta
        direction = delta + beta * m if self.nesterov else m
        step = (np.float32(self.lr) * direction).astype(np.float32, copy=False)
        return step, OptimizerState(count=state.count + 1, m=m.astype(np.float32, copy=False))


AdaptiveRule = Literal["adam", "yogi", "adagrad"]


@dataclass(frozen=True)
class Adaptive:
    """Adam, Yogi or Adagrad, exactly as in Reddi et al. 2021, Algorithm 2.

    ``tau`` is the paper's adaptivity constant τ (it plays the role of Adam's ε); ``initial_v`` is
    ``v_{-1}``, τ² when left as None as the paper prescribes. ``bias_correction`` gives
    Kingma & Ba's Adam (used for clients' local Adam); the paper's server optimizers have none.
    """

    rule: AdaptiveRule
    lr: float
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    initial_v: float | None = None
    bias_correction: bool = False

    def __post_init__(self) -> None:
        validate.one_of("rule", self.rule, ("adam", "yogi", "adagrad"))
        validate.positive("lr", self.lr)
        validate.in_range("beta1", self.beta1, 0.0, 1.0, high_open=True)
        validate.in_range("beta2", self.beta2, 0.0, 1.0, high_open=True)
        validate.non_negative("tau", self.tau)
        if self.initial_v is not None:
            validate.non_negative("initial_v", self.initial_v)
        if self.bias_correction and self.rule != "adam":
            raise ValueError(f"bias_correction applies to rule='adam' only, got rule={self.rule!r}")

    def init(self, params: Vector) -> OptimizerState:
        v0 = self.tau**2 if self.initial_v is None else self.initial_v
        return OptimizerState(
            m=np.zeros_like(params, dtype=np.float32),
            v=np.full_like(params, v0, dtype=np.float32),
        )

    def update(self, delta: Vector, state: OptimizerState) -> tuple[Vector, OptimizerState]:
        assert state.m is not None and state.v is not None, "update needs the state from init"
        b1, b2 = np.float32(self.beta1), np.float32(self.beta2)
        one_minus_b1, one_minus_b2 = np.float32(1 - self.beta1), np.float32(1 - self.beta2)
        sq = delta * delta
        m = b1 * state.m + one_minus_b1 * delta
        if self.rule == "adagrad":
            v = state.v + sq
        elif self.rule == "yogi":
            v = state.v - one_minus_b2 * sq * np.sign(state.v - sq)
        else:
            v = b2 * state.v + one_minus_b2 * sq
        count = state.count + 1
        m_hat, v_hat = m, v
        if self.bias_correction:
            m_hat = m / np.float32(1 - self.beta1**count)
            v_hat = v / np.float32(1 - self.beta2**count)
        step = np.float32(self.lr) * m_hat / (np.sqrt(v_hat) + np.float32(self.tau))
        return step.astype(np.float32, copy=False), OptimizerState(
            count=count, m=m.astype(np.float32), v=v.astype(np.float32, copy=False)
        )


def sgd(lr: float = 1.0) -> SGD:
    """Plain server step ``lr · Δ``: FedAvg when ``lr = 1``."""
    return SGD(lr=lr)


def momentum(lr: float = 1.0, beta: float = 0.9, *, nesterov: bool = False) -> Momentum:
    """Server momentum (FedAvgM)."""
    return Momentum(lr=lr, beta=beta, nesterov=nesterov)


def adam(lr: float, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3) -> Adaptive:
    """FedAdam's server optimizer (Reddi et al. 2021)."""
    return Adaptive("adam", lr=lr, beta1=beta1, beta2=beta2, tau=tau)


def yogi(lr: float, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3) -> Adaptive:
    """FedYogi's server optimizer (Reddi et al. 2021; Zaheer et al. 2018)."""
    return Adaptive("yogi", lr=lr, beta1=beta1, beta2=beta2, tau=tau)


def adagrad(lr: float, beta1: float = 0.0, tau: float = 1e-3) -> Adaptive:
    """FedAdagrad's server optimizer (Reddi et al. 2021); ``beta1 = 0`` gives plain Adagrad."""
    return Adaptive("adagrad", lr=lr, beta1=beta1, tau=tau)
