"""Any valid experiment, written as TOML and read back, is the same experiment."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fedloom import ALGORITHMS
from fedloom.experiment import (
    AlgorithmSpec,
    DataSpec,
    Experiment,
    ModelSpec,
    PartitionSpec,
    RunSpec,
    StageSpec,
    TargetSpec,
    TrainSpec,
    load_experiment,
)
from fedloom.experiment.checks import OptionValue, keyword_options

unit = st.floats(0.0, 1.0, exclude_max=True)
positive = st.floats(1e-6, 10.0)
words = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
# Text that TOML strings must escape: quotes, backslashes, newlines, control characters.
anything = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20)


@st.composite
def datasets(draw: st.DrawFn) -> tuple[str, dict[str, OptionValue]]:
    dataset = draw(
        st.sampled_from(["digits", "breast_cancer", "mnist1d", "synthetic", "csv", "npz"])
    )
    options: dict[str, OptionValue] = {}
    if dataset == "mnist1d" and draw(st.booleans()):
        options["num_samples"] = 10 * draw(st.integers(1, 1000))
    if dataset == "synthetic":
        options |= {"alpha": draw(st.floats(0, 5)), "beta": draw(st.floats(0, 5))}
        if draw(st.booleans()):
            options["classes"] = draw(st.integers(2, 20))
    if dataset in ("csv", "npz"):
        options["path"] = draw(anything.filter(bool))
        names = ("target", "group", "features") if dataset == "csv" else ("x", "y", "groups")
        for name in names:
            if name == "features":
                value: OptionValue = draw(st.lists(anything, max_size=3))
            else:
                value = draw(anything)
            if name == "target" or draw(st.booleans()):
                options[name] = value
        if draw(st.booleans()):
            options["classification"] = draw(st.booleans())
    return dataset, options


PARTITION_OPTIONS: dict[str, dict[str, st.SearchStrategy[OptionValue]]] = {
    "iid": {},
    "dirichlet": {"alpha": positive, "min_size": st.integers(0, 5)},
    "shards": {"per_client": st.integers(1, 5)},
    "quantity_skew": {"exponent": st.floats(0, 3), "min_size": st.integers(0, 5)},
    "natural": {},
}
RECIPE_OPTIONS: dict[str, st.SearchStrategy[OptionValue]] = {
    "server_lr": positive,
    "momentum": unit,
    "beta1": unit,
    "beta2": unit,
    "tau": st.floats(0, 1),
}


def some_of(
    draw: st.DrawFn, options: dict[str, st.SearchStrategy[OptionValue]]
) -> dict[str, OptionValue]:
    """A drawn subset of ``options``, each with a drawn value."""
    keys = draw(st.sets(st.sampled_from(sorted(options)))) if options else set()
    return {key: draw(options[key]) for key in sorted(keys)}


def partition_kinds(dataset: str, options: dict[str, OptionValue]) -> list[str | None]:
    if dataset == "synthetic":
        return [None, "natural"]
    kinds: list[str | None] = [None, "iid", "shards", "quantity_skew"]
    if options.get("classification") is not False:
        kinds.append("dirichlet")
    if options.keys() & {"group", "groups"}:
        kinds.append("natural")
    return kinds


@st.composite
def experiments(draw: st.DrawFn) -> Experiment:
    dataset, options = draw(datasets())
    clients = draw(st.integers(1, 100))
    kind = draw(st.sampled_from(partition_kinds(dataset, options)))
    partition = None
    if kind is not None:
        partition_options = some_of(draw, PARTITION_OPTIONS[kind])
        if kind == "dirichlet":
            partition_options["alpha"] = draw(positive)
        partition = PartitionSpec(kind, partition_options)
    data = DataSpec(
        dataset=dataset,
        clients=clients,
        test_fraction=draw(unit),
        holdout=draw(unit),
        partition=partition,
        seed=draw(st.none() | st.integers(0, 2**31)),
        options=options,
    )
    if data.task == "regression":
        numpy_kind, losses = "linear", ["mse"]
    else:
        numpy_kind, losses = "softmax", ["cross_entropy"]
        losses += ["bce_with_logits"] if data.num_classes in (None, 2) else []
    model_kind = draw(st.sampled_from([numpy_kind, "mlp", "factory"]))
    model = ModelSpec(
        model_kind,
        hidden=tuple(draw(st.lists(st.integers(1, 512), max_size=3)))
        if model_kind == "mlp"
        else None,
        factory="pkg.models:make" if model_kind == "factory" else None,
        loss=None if model_kind == numpy_kind else draw(st.sampled_from([None, *losses])),
    )
    name = draw(st.sampled_from(sorted(ALGORITHMS)))
    plain_sgd = name in ("scaffold", "fednova")
    optimizer = "sgd" if plain_sgd else draw(st.sampled_from(["sgd", "adam"]))
    length = draw(st.sampled_from(["epochs", "steps", None]))
    train = TrainSpec(
        lr=draw(positive),
        epochs=draw(st.integers(1, 10)) if length == "epochs" else None,
        steps=draw(st.integers(1, 100)) if length == "steps" else None,
        batch_size=draw(st.integers(1, 256)),
        optimizer=optimizer,
        momentum=0.0 if plain_sgd or optimizer == "adam" else draw(unit),
        weight_decay=draw(st.floats(0, 1)),
    )
    accepted = keyword_options(ALGORITHMS[name], ("work",))
    algorithm_options = some_of(draw, {k: v for k, v in RECIPE_OPTIONS.items() if k in accepted})
    if name == "fedprox":
        algorithm_options["mu"] = draw(st.floats(0, 1))
    sampling = draw(st.sampled_from(["count", "fraction", "poisson"]))
    cohort: int | float | None = None
    if sampling == "count":
        cohort = draw(st.integers(1, clients))
    elif sampling == "fraction":
        cohort = draw(st.floats(1e-3, 1.0))
    target = st.builds(TargetSpec, words, st.floats(-1e6, 1e6), st.none() | st.booleans())
    run = RunSpec(
        rounds=draw(st.integers(1, 1000)),
        cohort=cohort,
        poisson=draw(st.floats(1e-3, 1.0)) if sampling == "poisson" else None,
        seed=draw(st.integers(0, 2**31)),
        min_cohort=draw(st.integers(1, clients)),
        eval_every=draw(st.integers(1, 10)),
        federated_eval=draw(st.booleans()),
        checkpoint_every=draw(st.integers(1, 10)),
        target=draw(st.none() | target),
    )
    clips = draw(st.lists(positive, max_size=1))  # stage names are unique: at most one clip
    return Experiment(
        name=draw(st.from_regex(r"[A-Za-z0-9._-]{1,20}", fullmatch=True)),
        description=draw(anything),
        data=data,
        model=model,
        train=train,
        algorithm=AlgorithmSpec(name, algorithm_options),
        run=run,
        stages=tuple(StageSpec("clip", {"bound": bound}) for bound in clips),
    )


@settings(max_examples=150, deadline=None)
@given(experiments())
def test_every_valid_experiment_round_trips_exactly(experiment: Experiment) -> None:
    text = experiment.to_toml()
    again = Experiment.from_toml(text)
    assert again == experiment
    assert again.to_toml() == text


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(experiments())
def test_save_then_load_is_equal(tmp_path: Path, experiment: Experiment) -> None:
    path = experiment.data.options.get("path")
    assume(path is None or Path(str(path)).is_absolute())  # relative paths resolve against the file
    file = tmp_path / "run.toml"
    experiment.save(file)
    assert load_experiment(file) == experiment
