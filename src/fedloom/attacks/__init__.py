"""Attack testing in simulation: a share of the clients runs a chosen attack.

Update attacks: :class:`SignFlip`, :class:`Scaling`, :class:`GaussianNoise`, and the
omniscient :class:`LittleIsEnough` (Baruch et al. 2019) and :class:`InnerProduct` (Xie et al.
2020); data poisoning: :class:`LabelFlip`; both at once: the model-replacement
:class:`Backdoor` (Bagdasaryan et al. 2020), measured by ``test_backdoor_accuracy``.
:func:`simulate_under_attack` runs one; :data:`ATTACKS` names them. See docs/robustness.md.
"""

from __future__ import annotations

from collections.abc import Callable

from fedloom.attacks.backdoor import Backdoor
from fedloom.attacks.forged import (
    GaussianNoise,
    InnerProduct,
    LabelFlip,
    LittleIsEnough,
    RoundView,
    Scaling,
    SignFlip,
)
from fedloom.attacks.harness import (
    Attack,
    AttackedExecutor,
    AttackOutcome,
    malicious_clients,
    poisoned,
    simulate_under_attack,
)

ATTACKS: dict[str, Callable[..., Attack]] = {
    "sign_flip": SignFlip,
    "scaling": Scaling,
    "gaussian": GaussianNoise,
    "label_flip": LabelFlip,
    "alie": LittleIsEnough,
    "ipm": InnerProduct,
    "backdoor": Backdoor,
}
"""Every attack by name."""

__all__ = [
    "ATTACKS",
    "Attack",
    "AttackOutcome",
    "AttackedExecutor",
    "Backdoor",
    "GaussianNoise",
    "InnerProduct",
    "LabelFlip",
    "LittleIsEnough",
    "RoundView",
    "Scaling",
    "SignFlip",
    "malicious_clients",
    "poisoned",
    "simulate_under_attack",
]
