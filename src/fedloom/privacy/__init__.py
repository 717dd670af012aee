"""Differential privacy for federated training, accounted only by ``dp-accounting``.

- Central user-level DP: :class:`CentralGaussian` (DP-FedAvg, McMahan et al. 2018), optionally
  with :class:`AdaptiveClipping` (Andrew et al. 2021).
- Distributed DP: :class:`DistributedGaussian` (the distributed discrete Gaussian, Kairouz,
  Liu and Steinke 2021): clients quantize and add integer noise shares before the sum.
- Accounting: :mod:`fedloom.privacy.accounting` describes rounds as ``dp_accounting`` events
  and turns them into (ε, δ); :class:`PrivacyBudget` bounds a run.
- Local record-level DP-SGD lives in :mod:`fedloom.torch.dpsgd` (it needs PyTorch and Opacus).

See ``docs/privacy.md`` for what each mechanism guarantees and what it does not.
"""

from fedloom.privacy.accounting import (
    ACCOUNTANTS,
    calibrate_noise,
    epsilon,
    make_accountant,
    sampled_gaussian,
    spent,
)
from fedloom.privacy.budget import PrivacyBudget, budget, default_delta
from fedloom.privacy.central import AdaptiveClipping, CentralGaussian, central_gaussian
from fedloom.privacy.distributed import DistributedGaussian, distributed_gaussian
from fedloom.privacy.protocol import NoiseStage
from fedloom.privacy.sampling import (
    FixedSampling,
    PoissonSampling,
    Sampling,
    fixed_sampling,
    poisson_sampling,
)

__all__ = [
    "ACCOUNTANTS",
    "AdaptiveClipping",
    "CentralGaussian",
    "DistributedGaussian",
    "FixedSampling",
    "NoiseStage",
    "PoissonSampling",
    "PrivacyBudget",
    "Sampling",
    "budget",
    "calibrate_noise",
    "central_gaussian",
    "default_delta",
    "distributed_gaussian",
    "epsilon",
    "fixed_sampling",
    "make_accountant",
    "poisson_sampling",
    "sampled_gaussian",
    "spent",
]
