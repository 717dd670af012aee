"""Attacks: what a malicious client does to its data before training and to its update after.

Each attack is a frozen dataclass with two halves, like a stage: ``poison`` changes the
client's training data (identity for attacks on updates alone) and ``forge`` turns the update
it trained into the one it sends. The harness (:mod:`fedloom.attacks.harness`) calls them.

Threat model: the malicious clients collude, and the attacks marked *omniscient* ("a little is
enough", inner-product manipulation) read the honest clients' updates of the same round, as in
their papers. A real attacker would estimate those statistics from its own clients' honest
updates; the omniscient one is the stronger, worst-case version that defences are tested on.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from fedloom.core import validate
from fedloom.core.layout import Vector
from fedloom.data import ClientData

Matrix = npt.NDArray[np.float32]


@dataclass(frozen=True)
class RoundView:
    """What a malicious client knows when it forges its update.

    ``own`` is the update it honestly trained (on its possibly poisoned data); ``benign`` the
    honest clients' updates of this round, ``[k, d]`` (used only by omniscient attacks);
    ``cohort`` how many clients the round sampled; ``attackers`` how many of them are malicious.
    """

    own: Vector
    benign: Matrix
    cohort: int
    attackers: int


def unchanged(client: ClientData, classes: int | None, seed: int) -> ClientData:
    """The client's data as it is: the ``poison`` half of attacks on updates alone."""
    return client


@dataclass(frozen=True)
class SignFlip:
    """Send ``−scale ·`` the honest update (a classic Byzantine baseline). With the default
    ``scale = 4`` and a fifth of the cohort malicious, the plain mean's step is about zero or
    reversed."""

    scale: float = 4.0
    name: str = "sign_flip"

    def __post_init__(self) -> None:
        validate.positive("scale", self.scale)

    def poison(self, client: ClientData, classes: int | None, seed: int) -> ClientData:
        return unchanged(client, classes, seed)

    def forge(self, view: RoundView, rng: np.random.Generator) -> Vector:
        return (-self.scale * view.own).astype(np.float32)


@dataclass(frozen=True)
class Scaling:
    """Send ``factor ·`` the honest update: a few large updates dominate a mean and overshoot."""

    factor: float = 100.0
    name: str = "scaling"

    def __post_init__(self) -> None:
        validate.positive("factor", self.factor)

    def poison(self, client: ClientData, classes: int | None, seed: int) -> ClientData:
        return unchanged(client, classes, seed)

    def forge(self, view: RoundView, rng: np.random.Generator) -> Vector:
        return (self.factor * view.own).astype(np.float32)


@dataclass(frozen=True)
class GaussianNoise:
    """Send a draw from ``N(0, sigma² I)`` instead of an update."""

    sigma: float = 1.0
    name: str = "gaussian"

    def __post_init__(self) -> None:
        validate.positive("sigma", self.sigma)

    def poison(self, client: ClientData, classes: int | None, seed: int) -> ClientData:
        return unchanged(client, classes, seed)

    def forge(self, view: RoundView, rng: np.random.Generator) -> Vector:
        return rng.normal(0.0, self.sigma, size=view.own.shape).astype(np.float32)


@dataclass(frozen=True)
class LabelFlip:
    """Train on flipped labels, ``y → classes − 1 − y``, and send that honest-looking update
    (a data-poisoning attack; the update itself is not touched)."""

    name: str = "label_flip"

    def poison(self, client: ClientData, classes: int | None, seed: int) -> ClientData:
        if classes is None:
            raise ValueError("label_flip needs a classification dataset; this one is regression")
        flipped = (classes - 1 - np.asarray(client.y_train)).astype(client.y_train.dtype)
        return ClientData(client.client_id, client.x_train, flipped, client.x_test, client.y_test)

    def forge(self, view: RoundView, rng: np.random.Generator) -> Vector:
        return view.own


@dataclass(frozen=True)
class LittleIsEnough:
    """ "A little is enough" (Baruch, Baruch and Goldberg, *A Little Is Enough: Circumventing
    Defenses For Distributed Learning*, NeurIPS 2019). *Omniscient.*

    Every malicious client sends ``μ − z σ``, the honest updates' coordinate-wise mean shifted
    by ``z`` standard deviations: small enough to pass as honest, coordinated enough to steer.
    ``z`` defaults to the paper's ``Φ⁻¹((n − s)/n)`` with ``s = ⌊n/2 + 1⌋ − f``.
    """

    z: float | None = None
    name: str = "alie"

    def __post_init__(self) -> None:
        if self.z is not None:
            validate.positive("z", self.z)

    def poison(self, client: ClientData, classes: int | None, seed: int) -> ClientData:
        return unchanged(client, classes, seed)

    def z_for(self, n: int, f: int) -> float:
        """The shift in standard deviations for a cohort of ``n`` with ``f`` attackers."""
        if self.z is not None:
            return self.z
        s = n // 2 + 1 - f
        p = min(max((n - s) / n, 1e-6), 1 - 1e-6)
        return max(NormalDist().inv_cdf(p), 0.0)

    def forge(self, view: RoundView, rng: np.random.Generator) -> Vector:
        benign = _benign(view)
        mean = benign.mean(axis=0)
        std = benign.std(axis=0)
        forged: Vector = (mean - self.z_for(view.cohort, view.attackers) * std).astype(np.float32)
        return forged


@dataclass(frozen=True)
class InnerProduct:
    """Inner-product manipulation (Xie, Koyejo and Gupta, *Fall of Empires: Breaking
    Byzantine-tolerant SGD by Inner Product Manipulation*, UAI 2020). *Omniscient.*

    Every malicious client sends ``−epsilon · μ``, minus a multiple of the honest mean, so the
    aggregate's inner product with the true descent direction turns negative.
    """

    epsilon: float = 0.5
    name: str = "ipm"

    def __post_init__(self) -> None:
        validate.positive("epsilon", self.epsilon)

    def poison(self, client: ClientData, classes: int | None, seed: int) -> ClientData:
        return unchanged(client, classes, seed)

    def forge(self, view: RoundView, rng: np.random.Generator) -> Vector:
        forged: Vector = (-self.epsilon * _benign(view).mean(axis=0)).astype(np.float32)
        return forged


def _benign(view: RoundView) -> npt.NDArray[np.float64]:
    if len(view.benign) == 0:  # a cohort of attackers only: they know no honest update
        return view.own[None, :].astype(np.float64)
    return view.benign.astype(np.float64)
