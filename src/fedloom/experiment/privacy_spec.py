"""``[privacy]``: user-level differential privacy and its budget (see :mod:`fedloom.privacy`).

```toml
[privacy]
mechanism = "gaussian"    # central DP-FedAvg (McMahan et al. 2018)
clip = 1.0                # L2 bound on each client's update (the initial one when adaptive)
noise_multiplier = 1.1    # z: noise std z·clip on the sum of the cohort's clipped updates
target_quantile = 0.5     # set to clip adaptively (Andrew et al. 2021) …
clip_learning_rate = 0.2  # … with this geometric learning rate …
count_stddev = 2.5        # … and this noise on the count of unclipped updates
max_epsilon = 8.0         # the budget: refuse a plan that would spend more …
delta = 1e-5              # … at this delta (well below 1 / data.clients)
accountant = "rdp"        # rdp | pld
stop_early = false        # true: run until the budget allows no more rounds
```

``mechanism = "distributed"`` is the distributed discrete Gaussian (Kairouz et al. 2021): clients
add integer noise shares; it needs ``min_clients`` (the fewest shares in any sum; the run's
``min_cohort`` must be at least that) and takes ``bits`` (the modulus ``2^bits``, default 20).
Its ε depends on the model's size, so its budget is checked when the run starts rather than
when the file is read.

``mechanism = "local"`` is record-level DP-SGD on every client through Opacus
(:mod:`fedloom.torch.dpsgd`): ``clip`` is the per-example gradient bound, ``noise_multiplier``
DP-SGD's ``z``, ``delta`` (optional) the δ each client's own ε is reported at; ``[train]`` gives
``lr``, ``epochs`` and ``batch_size`` (plain SGD). There is no run budget: each client reports
its own ε as ``local_dp.epsilon``.

The mechanism's sampling is the run's: ``run.poisson`` is accounted as Poisson sampling,
``run.cohort`` as fixed-size sampling without replacement. dp-accounting is imported only when
a file has this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from fedloom.client.work import ClientWork
from fedloom.core.model import Model
from fedloom.experiment import checks
from fedloom.experiment.errors import ExperimentError, KeyPath
from fedloom.experiment.specs import TrainSpec

if TYPE_CHECKING:
    from fedloom.privacy import CentralGaussian, DistributedGaussian, PrivacyBudget, Sampling

MECHANISMS = ("gaussian", "distributed", "local")
"""``gaussian``: central DP-FedAvg; ``distributed``: the distributed discrete Gaussian;
``local``: record-level DP-SGD on each client (Opacus)."""
LOCAL_ALGORITHMS = ("fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad")
"""Recipes that only pick a server optimizer, so their client work can be DP-SGD."""
ADAPTIVE_KEYS = ("target_quantile", "clip_learning_rate", "count_stddev")


@dataclass(frozen=True)
class PrivacySpec:
    """The ``[privacy]`` table; ``max_epsilon`` and ``delta`` together make the budget."""

    mechanism: str
    clip: float
    noise_multiplier: float
    target_quantile: float | None = None
    clip_learning_rate: float | None = None
    count_stddev: float | None = None
    max_epsilon: float | None = None
    delta: float | None = None
    accountant: str = "rdp"
    stop_early: bool = False
    min_clients: int | None = None
    bits: int | None = None

    SECTION: ClassVar[KeyPath] = ("privacy",)

    def __post_init__(self) -> None:
        at = self.SECTION
        checks.choice((*at, "mechanism"), self.mechanism, MECHANISMS)
        checks.number((*at, "clip"), self.clip, low=0, low_open=True)
        checks.number((*at, "noise_multiplier"), self.noise_multiplier, low=0)
        if self.noise_multiplier == 0:
            raise ExperimentError(
                (*at, "noise_multiplier"),
                "must be > 0: a noise multiplier of 0 adds no noise, so no epsilon can be "
                "claimed; remove the [privacy] table to train without differential privacy",
            )
        given = [k for k in ADAPTIVE_KEYS if getattr(self, k) is not None]
        if given and len(given) < len(ADAPTIVE_KEYS):
            missing = next(k for k in ADAPTIVE_KEYS if getattr(self, k) is None)
            raise ExperimentError(
                (*at, missing),
                f"adaptive clipping needs all of {', '.join(ADAPTIVE_KEYS)}; {missing} is missing",
            )
        if self.target_quantile is not None:
            checks.number((*at, "target_quantile"), self.target_quantile, low=0, high=1)
            checks.number(
                (*at, "clip_learning_rate"), self.clip_learning_rate, low=0, low_open=True
            )
            checks.number((*at, "count_stddev"), self.count_stddev, low=0, low_open=True)
        if self.max_epsilon is not None and self.delta is None:
            raise ExperimentError(
                (*at, "delta"), "a budget needs both max_epsilon and delta; this one is missing"
            )
        if self.max_epsilon is not None:
            checks.number((*at, "max_epsilon"), self.max_epsilon, low=0, low_open=True)
        if self.delta is not None:
            checks.number((*at, "delta"), self.delta, low=0, high=1, low_open=True, high_open=True)
        checks.choice((*at, "accountant"), self.accountant, ("rdp", "pld"))
        checks.flag((*at, "stop_early"), self.stop_early)
        if self.mechanism == "local":
            for key in (*ADAPTIVE_KEYS, "min_clients", "bits", "max_epsilon"):
                if getattr(self, key) is not None:
                    reason = (
                        "local DP-SGD has no run budget: each client reports its own epsilon "
                        "(local_dp.epsilon); keep delta to choose the delta it is reported at"
                        if key == "max_epsilon"
                        else 'applies only to mechanisms "gaussian" and "distributed"'
                    )
                    raise ExperimentError((*at, key), f"{reason}; remove it")
            return
        if self.delta is not None and self.max_epsilon is None:
            raise ExperimentError(
                (*at, "max_epsilon"),
                "a budget needs both max_epsilon and delta; this one is missing",
            )
        if self.mechanism == "distributed":
            if given:
                raise ExperimentError(
                    (*at, given[0]), 'adaptive clipping applies to mechanism "gaussian" only'
                )
            if self.min_clients is None:
                raise ExperimentError(
                    (*at, "min_clients"), 'required for mechanism "distributed", missing'
                )
            checks.integer((*at, "min_clients"), self.min_clients, minimum=1)
            if self.bits is not None:
                checks.integer((*at, "bits"), self.bits, minimum=4)
        else:
            for key in ("min_clients", "bits"):
                if getattr(self, key) is not None:
                    raise ExperimentError(
                        (*at, key), 'applies only to mechanism "distributed"; remove it'
                    )
        try:
            self._stage_from(None)
        except ValueError as error:
            blame = "count_stddev" if self.target_quantile is not None else "clip"
            raise checks.blamed(at, self._keys(), error, fallback=(*at, blame)) from None

    def _keys(self) -> dict[str, object]:
        keys = ("clip", "noise_multiplier", "min_clients", "bits", *ADAPTIVE_KEYS)
        return {k: getattr(self, k) for k in keys}

    def _stage_from(self, sampling: Sampling | None) -> CentralGaussian | DistributedGaussian:
        from fedloom import privacy

        if self.mechanism == "distributed":
            assert self.min_clients is not None
            placeholder = privacy.poisson_sampling(population=1, rate=1.0)
            return privacy.distributed_gaussian(
                clip=self.clip,
                noise_multiplier=self.noise_multiplier,
                sampling=placeholder if sampling is None else sampling,
                min_clients=self.min_clients if sampling is not None else 1,
                bits=20 if self.bits is None else self.bits,
            )

        adaptive = None
        if self.target_quantile is not None:
            assert self.clip_learning_rate is not None and self.count_stddev is not None
            adaptive = privacy.AdaptiveClipping(
                self.target_quantile, self.clip_learning_rate, self.count_stddev
            )
        placeholder = privacy.poisson_sampling(population=1, rate=1.0)
        return privacy.central_gaussian(
            clip=self.clip,
            noise_multiplier=self.noise_multiplier,
            sampling=placeholder if sampling is None else sampling,
            adaptive=adaptive,
        )

    def sampling(self, *, clients: int, cohort: int | float | None, rate: float | None) -> Sampling:
        """The run's cohort sampling as the accountant must see it."""
        from fedloom import privacy

        if rate is not None:
            return privacy.poisson_sampling(population=clients, rate=rate)
        assert cohort is not None
        count = cohort if isinstance(cohort, int) else max(1, round(cohort * clients))
        return privacy.fixed_sampling(population=clients, count=count)

    def stage(self, sampling: Sampling) -> CentralGaussian | DistributedGaussian | None:
        """The noise stage for a run that samples its cohorts by ``sampling`` (``None`` for
        local DP-SGD, which is client work rather than a stage)."""
        return None if self.mechanism == "local" else self._stage_from(sampling)

    def check_local(self, *, model_kind: str, algorithm: str, train: TrainSpec) -> None:
        """Refuse what local DP-SGD cannot honour, naming the key."""
        if self.mechanism != "local":
            return
        if model_kind not in ("mlp", "factory"):
            raise ExperimentError(
                ("model", "kind"),
                f'local DP-SGD trains PyTorch models (kind "mlp" or "factory"), got '
                f"{checks.show(model_kind)}",
            )
        if algorithm not in LOCAL_ALGORITHMS:
            raise ExperimentError(
                ("algorithm", "name"),
                f"local DP-SGD replaces the client work, so it combines only with "
                f"{', '.join(LOCAL_ALGORITHMS)}; got {checks.show(algorithm)}",
            )
        refused = {
            "steps": train.steps is not None,
            "optimizer": train.optimizer != "sgd",
            "momentum": train.momentum != 0,
            "weight_decay": train.weight_decay != 0,
        }
        for key, bad in refused.items():
            if bad:
                raise ExperimentError(
                    ("train", key),
                    "local DP-SGD runs plain SGD for whole epochs (lr, epochs, batch_size); "
                    "remove it",
                )

    def local_work(self, model: Model, train: TrainSpec) -> ClientWork:
        """DP-SGD client work on ``model`` with ``train``'s lr, epochs and batch size."""
        from fedloom.torch import TorchModel
        from fedloom.torch.dpsgd import DPSGDWork

        assert isinstance(model, TorchModel)
        return DPSGDWork(
            model, lr=train.lr, noise_multiplier=self.noise_multiplier, max_grad_norm=self.clip,
            batch_size=train.batch_size, epochs=train.epochs or 1, delta=self.delta,
            accountant=self.accountant,
        )  # fmt: skip

    def budget(self) -> PrivacyBudget | None:
        """The run's budget, if the table sets one."""
        if self.max_epsilon is None or self.delta is None:
            return None
        from fedloom.privacy import PrivacyBudget

        return PrivacyBudget(self.max_epsilon, self.delta, self.accountant, self.stop_early)

    def check_plan(self, sampling: Sampling, rounds: int) -> None:
        """Refuse, at ``privacy.max_epsilon``, a plan that would spend more than the budget."""
        budget = self.budget()
        if budget is None or self.mechanism == "distributed":
            return  # the distributed mechanism's ε needs the model's size: checked at the start
        from fedloom.engine.privacy_guard import PrivacyGuard
        from fedloom.engine.sampling import FixedCount, Poisson, Sampler
        from fedloom.privacy import PoissonSampling

        sampler: Sampler = (
            Poisson(sampling.rate)
            if isinstance(sampling, PoissonSampling)
            else FixedCount(sampling.count)
        )
        try:
            PrivacyGuard.start(
                (self._stage_from(sampling),), budget, sampler=sampler,
                population=sampling.population, rounds_done=0, rounds_planned=rounds,
                min_cohort=1,
            )  # fmt: skip
        except ValueError as error:
            raise ExperimentError((*self.SECTION, "max_epsilon"), str(error)) from None
