"""Serve an algorithm value from Python: ``fl.serve(algorithm, ...)``, as ``fl.simulate`` runs one.

No code travels, so the sites cannot be sent the algorithm itself. :func:`describe` writes its
client side as the typed configuration a site builds its program from (the recipe's name, local
SGD's settings, FedProx's ``mu``, every stage a run file can name — ``clip``, the codecs,
``secure_sum`` — central DP's clipping, and the broadcast codec with its delta window), then
builds that program as a site would, on the same model, and refuses the algorithm unless the
two are the same: a site can only ever run exactly what the server's algorithm would run in
simulation.
What the server keeps to itself (its optimizer, the reducer, the noise) is never described.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING

from fedloom.algorithms import ALGORITHMS, Algorithm
from fedloom.client import LocalSGD
from fedloom.client.work import Array
from fedloom.compression import Codec, Rotated, compress
from fedloom.core.layout import Vector
from fedloom.deploy.live import FederationLive
from fedloom.deploy.server import Plan, ServerOptions, serve_plan
from fedloom.deploy.training import flat_options, site_algorithm
from fedloom.engine import Target, schedule
from fedloom.engine.sampling import Sampler
from fedloom.experiment.compression_spec import BROADCAST_CODECS, BROADCAST_OPTION, DELTA_WINDOW
from fedloom.experiment.specs import STAGES
from fedloom.policy import Admission, RunTerms
from fedloom.runner import Outcome, RoundObserver
from fedloom.stages import Stage
from fedloom.store import RunStore, code_version
from fedloom.store.audit import digest
from fedloom.transport import PrivacyOptions, StageOptions, TrainingConfig
from fedloom.transport.config import Scalar, check_scalars

if TYPE_CHECKING:
    from fedloom.privacy import PrivacyBudget

_TRAIN_FIELDS = ("lr", "epochs", "steps", "batch_size", "optimizer", "momentum", "weight_decay")


def describe(algorithm: Algorithm, *, loss: str | None = None) -> TrainingConfig:
    """``algorithm``'s client side as the configuration sites build their program from;
    ValueError naming what cannot be described, or why the sites' program would differ.
    ``loss`` names the PyTorch loss sites train a ``torch.nn.Module`` with."""
    work = algorithm.work
    if not isinstance(work, LocalSGD):
        raise ValueError(
            f"the client work is {type(work).__name__}; sites build fedloom.local_sgd from values "
            "(no code travels), so serve an algorithm made with fl.local_sgd"
        )
    if algorithm.name not in ALGORITHMS:
        raise ValueError(
            f"algorithm {algorithm.name!r} is not a recipe sites know; accepted: "
            f"{sorted(ALGORITHMS)}"
        )
    train = {k: getattr(work, k) for k in _TRAIN_FIELDS if getattr(work, k) is not None}
    options: dict[str, object] = {"mu": work.prox_mu} if algorithm.name == "fedprox" else {}
    if algorithm.broadcast is not None:
        options[BROADCAST_OPTION] = _broadcast_table(
            algorithm.broadcast, algorithm.broadcast_window
        )
    privacy: PrivacyOptions | None = None
    stages: list[StageOptions] = []
    for position, stage in enumerate(algorithm.stages):
        central = _central_dp(stage)
        if central is not None and position == 0:
            privacy = central
            continue
        kind = _described(f"stage {stage.name!r} ({type(stage).__name__})", stage, STAGES)
        stages.append(StageOptions(kind, _options(stage, STAGES[kind])))
    config = TrainingConfig(
        algorithm.name,
        train,
        check_scalars("algorithm", flat_options(options)),
        stages=tuple(stages),
        loss=loss,
        privacy=privacy,
    )
    _check_same_program(algorithm, config)
    return config


def _central_dp(stage: Stage) -> PrivacyOptions | None:
    """Central DP-FedAvg's client half, if ``stage`` is its stage (dp-accounting is imported
    only when a stage is private)."""
    if not stage.traits.private:
        return None
    from fedloom.privacy import CentralGaussian

    if not isinstance(stage, CentralGaussian):
        return None
    adaptive = stage.adaptive
    if adaptive is None:
        return PrivacyOptions("gaussian", stage.clip, stage.noise_multiplier)
    return PrivacyOptions(
        "gaussian", stage.clip, stage.noise_multiplier,
        adaptive.target_quantile, adaptive.learning_rate, adaptive.count_stddev,
    )  # fmt: skip


def _described(
    what: str,
    stage: Stage,
    kinds: Mapping[str, Callable[..., Stage]],
    same: Callable[[Stage], bool] | None = None,
) -> str:
    """The run-file kind whose factory, given ``stage``'s own settings, builds ``stage`` again
    (or a stage ``same`` accepts); ValueError naming ``what`` when none does (a stage of the
    user's own, say)."""
    for kind, factory in kinds.items():
        try:
            built = factory(**_options(stage, factory))
        except (TypeError, ValueError):
            continue
        if same(built) if same is not None else built == stage:
            return kind
    raise ValueError(
        f"{what} cannot be described to sites: no run-file kind builds it (accepted: "
        f"{sorted(kinds)}, each with its factory's options); sites build their program from "
        "values, so serve stages made by fedloom's own factories"
    )


def _broadcast_table(codec: Codec, window: int | None) -> dict[str, Scalar]:
    """The run file's ``broadcast`` table for ``codec`` (and a delta broadcast's ``window``)."""
    stage = compress(codec)
    kind = _described(
        "the broadcast codec", stage, BROADCAST_CODECS, lambda b: getattr(b, "codec", None) == codec
    )
    table: dict[str, Scalar] = {"kind": kind}
    table.update(_options(stage, BROADCAST_CODECS[kind]))
    table.pop("name", None)  # a stage's, not a codec's (error_feedback stays: always false here)
    if window is not None:
        table[DELTA_WINDOW] = window
    return table


def _options(stage: Stage, factory: Callable[..., Stage]) -> dict[str, Scalar]:
    """``factory``'s keyword arguments, read off ``stage`` (and off a codec stage's codec: a
    rotated codec's inner settings, ``rotate`` and ``block``) by the arguments' names; unset
    (None) ones are left to their defaults."""
    found: dict[str, object] = dict(vars(stage))
    codec = getattr(stage, "codec", None)
    if codec is not None:
        rotated = isinstance(codec, Rotated)
        found.update(vars(codec.inner) if rotated else vars(codec))
        found["rotate"] = rotated
        if rotated:
            found["block"] = codec.block
    names = inspect.signature(factory).parameters
    return {
        k: v
        for k, v in found.items()
        if k in names and v is not None and isinstance(v, bool | int | float | str)
    }


def _check_same_program(algorithm: Algorithm, config: TrainingConfig) -> None:
    """Refuse ``config`` unless a site building from it runs ``algorithm``'s client program."""
    work = algorithm.work
    try:
        rebuilt = site_algorithm(config, work.model)
    except ValueError as error:
        raise ValueError(
            f"sites could not build this algorithm's client program: {error}"
        ) from None
    skip = 1 if config.privacy is not None else 0  # the noise's sampling is the server's only
    if rebuilt.client.work != work or rebuilt.client.stages[skip:] != algorithm.stages[skip:]:
        raise ValueError(
            "sites would build a different client program from this algorithm's description "
            f"(they would run {rebuilt.client.work!r} with stages {rebuilt.client.stages!r}); "
            "build the algorithm with a recipe (fl.fedavg, fl.fedprox, …) on fl.local_sgd"
        )
    if (rebuilt.broadcast, rebuilt.broadcast_window) != (
        algorithm.broadcast,
        algorithm.broadcast_window,
    ):
        raise ValueError(
            "sites would decode the broadcast differently from this algorithm's description "
            f"(with {rebuilt.broadcast!r}, delta window {rebuilt.broadcast_window})"
        )


def serve_algorithm(
    algorithm: Algorithm,
    store: RunStore,
    options: ServerOptions,
    *,
    rounds: int,
    cohort: int | float | Sampler,
    seed: int = 0,
    min_cohort: int = 1,
    eval_every: int = 1,
    federated_eval: bool = True,
    target: Target | tuple[str, float] | None = None,
    budget: PrivacyBudget | None = None,
    test: tuple[Array, Array] | None = None,
    loss: str | None = None,
    name: str = "python",
    model_id: str | None = None,
    resume: str | None = None,
    new: bool = False,
    on_round: RoundObserver | None = None,
    on_listening: Callable[[int, str], None] | None = None,
    live: FederationLive | None = None,
) -> Outcome:
    """Train ``algorithm`` on the sites that join, as :func:`fedloom.simulate` trains it on
    simulated clients: the same schedule arguments, client ``i`` is the site ``options.sites[i]``.

    ``test`` (features, labels) is the held-out set the server evaluates on (None: none).
    ``name`` and the algorithm's description go to the run store; ``model_id`` is the model id
    the run's terms state to sites with their own policy (default: the model's class). Rounds,
    refusals, restarts and the dashboard work as for :func:`fedloom.deploy.serve`.
    """
    training = describe(algorithm, loss=loss)
    plan_ = schedule(
        rounds=rounds, cohort=cohort, seed=seed, min_cohort=min_cohort, eval_every=eval_every,
        federated_eval=federated_eval, target=target, budget=budget,
    )  # fmt: skip
    plan_.cohort.check(len(options.sites))
    model = algorithm.work.model
    private = training.privacy is not None
    epsilon = None if not private else math.inf if budget is None else budget.max_epsilon
    terms = RunTerms(
        algorithm=algorithm.name,
        model=model_id or f"{type(model).__module__}.{type(model).__qualname__}",
        secure_aggregation=any(s.traits.secure_sum for s in algorithm.stages),
        epsilon=epsilon,
        delta=None if not private or budget is None else budget.delta,
    )
    config = _config_text(training, rounds, seed, cohort, min_cohort)
    evaluate = None
    if test is not None:
        x, y = test

        def evaluate(params: Vector) -> Mapping[str, float]:
            return model.evaluate(params, x, y)

    privacy = training.privacy
    clip = None if privacy is None else (privacy.clip, privacy.target_quantile is not None)
    plan = Plan(
        name=name, config=config, algorithm=algorithm, schedule=plan_,
        checkpoint_every=1, training=training, terms=terms, evaluate=evaluate,
        admitted=Admission(tuple(range(len(options.sites))), ()),
        facts={
            "name": name, "config_sha256": digest(config.encode()),
            "code_version": code_version(), "algorithm": algorithm.name,
            "reducer": type(algorithm.reducer).__name__, "attackers": [],
            "stages": [s.name for s in algorithm.stages], "clients": len(options.sites),
            "rounds": rounds,
        },
        policy_min=1, cohort=cohort if isinstance(cohort, int) else 1, clip=clip,
    )  # fmt: skip
    return serve_plan(
        plan, store, options, resume=resume, new=new, on_round=on_round,
        on_listening=on_listening, live=live,
    )  # fmt: skip


def _config_text(
    training: TrainingConfig, rounds: int, seed: int, cohort: object, min_cohort: int
) -> str:
    """What the store keeps as the run's configuration: the sites' description and the
    schedule, as text (a server restarted with the same values resumes the run)."""
    described = {
        "algorithm": training.algorithm, "train": dict(training.train),
        "algorithm_options": dict(training.algorithm_options),
        "stages": [{"kind": s.kind, **s.options} for s in training.stages],
        "privacy": None if training.privacy is None else asdict(training.privacy),
        "rounds": rounds, "seed": seed, "cohort": repr(cohort), "min_cohort": min_cohort,
    }  # fmt: skip
    return json.dumps(described, sort_keys=True, default=str)
