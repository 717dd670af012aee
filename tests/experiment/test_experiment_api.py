"""The Python face of run files: the dataclass tree, what it builds, and what it imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fedloom.experiment as fx
from fedloom.data import load_csv, mnist1d
from fedloom.engine.sampling import FixedCount, Fraction, Poisson
from fedloom.experiment import (
    AlgorithmSpec,
    DataSpec,
    Experiment,
    ExperimentError,
    ModelSpec,
    PartitionSpec,
    RunSpec,
    StageSpec,
    TargetSpec,
    TrainSpec,
    build,
    load_experiment,
)
from fedloom.experiment.checks import keyword_options
from fedloom.linear import LinearRegression, SoftmaxRegression

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_all_is_the_public_surface() -> None:
    assert sorted(fx.__all__) == sorted(
        [
            "DATASETS", "MODEL_KINDS", "PARTITIONS", "STAGES", "AlgorithmSpec", "Built",
            "DataSpec", "DevicesSpec", "Experiment", "ExperimentError", "ModelSpec",
            "PartitionSpec", "RunSpec", "StageSpec", "TargetSpec", "TrainSpec", "build",
            "load_experiment", "locate", "validate_file",
        ]
    )  # fmt: skip
    assert issubclass(ExperimentError, ValueError)


def test_importing_and_checking_needs_no_torch_or_interface_libraries() -> None:
    code = (
        "import sys; from fedloom.experiment import *; "
        f"e = load_experiment({str(EXAMPLES / 'synthetic-fedadam.toml')!r}); build(e); "
        "print(sorted(m for m in ('torch', 'click', 'rich', 'matplotlib', 'sqlite3', "
        "'fedloom.store', 'fedloom.cli') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_python_tree_equals_the_run_file() -> None:
    experiment = Experiment(
        name="digits-fedprox",
        description="FedProx (mu = 0.01) on digits, Dirichlet(0.1) label skew over 50 clients",
        data=DataSpec("digits", clients=50, partition=PartitionSpec("dirichlet", {"alpha": 0.1})),
        model=ModelSpec("mlp", hidden=[64]),  # type: ignore[arg-type]
        train=TrainSpec(lr=0.2, epochs=2, batch_size=16),
        algorithm=AlgorithmSpec("fedprox", {"mu": 0.01}),
        run=RunSpec(rounds=30, cohort=50, seed=0, federated_eval=False),
    )
    assert experiment == load_experiment(EXAMPLES / "digits-fedprox.toml")
    assert experiment.model.hidden == (64,)  # arrays are kept as tuples


def test_option_bags_follow_the_functions_signatures() -> None:
    assert keyword_options(fx.DATASETS["mnist1d"].loader, fx.DATASETS["mnist1d"].provided) == [
        "num_samples"
    ]
    assert set(keyword_options(load_csv)) == {
        "path", "target", "group", "features", "classification",
    }  # fmt: skip
    assert fx.DATASETS["mnist1d"].loader is mnist1d
    with pytest.raises(ExperimentError, match=r"^key 'data.seed_of_data': unknown key"):
        DataSpec("digits", 5, options={"seed_of_data": 1})


def test_losses_match_the_torch_adapter() -> None:
    pytest.importorskip("torch")
    from fedloom.experiment.specs import LOSSES
    from fedloom.torch.model import LOSSES as TORCH_LOSSES

    assert LOSSES == TORCH_LOSSES


def test_schedule_carries_sampling_and_target() -> None:
    def run(**options: object) -> RunSpec:
        return RunSpec(rounds=5, **options)  # type: ignore[arg-type]

    assert run(cohort=3).schedule().cohort == FixedCount(3)
    assert run(cohort=0.5).schedule().cohort == Fraction(0.5)
    plan = run(poisson=0.2, target=TargetSpec("test_loss", 0.1)).schedule()
    assert plan.cohort == Poisson(0.2)
    assert plan.target is not None
    assert (plan.target.metric, plan.target.threshold) == ("test_loss", 0.1)
    assert plan.target.higher_is_better is False  # a loss: lower is better
    accuracy = run(cohort=1, target=TargetSpec("test_accuracy", 0.9)).schedule().target
    assert accuracy is not None
    assert accuracy.higher_is_better is True


def write_csv(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = ["a,b,c,site,y"]
    for i in range(60):
        a, b, c = rng.normal(size=3)
        rows.append(f"{a},{b},{c},s{i % 4},{2 * a - b + 0.5}")
    file = folder / "table.csv"
    file.write_text("\n".join(rows) + "\n")
    return file


REGRESSION = """\
name = "csv-linear"
[data]
dataset = "csv"
path = "table.csv"
target = "y"
group = "site"
classification = false
clients = 4
[data.partition]
kind = "natural"
[model]
kind = "{kind}"
{extra}
[train]
lr = 0.05
steps = 5
[algorithm]
name = "fedavg"
[run]
rounds = 2
cohort = 1.0
"""


def test_numpy_models_are_sized_from_the_data(tmp_path: Path) -> None:
    write_csv(tmp_path)
    run_file = tmp_path / "run.toml"
    run_file.write_text(REGRESSION.format(kind="linear", extra=""))
    built = build(load_experiment(run_file))
    assert built.algorithm.work.model == LinearRegression(features=3)
    assert len(built.data) == 4  # one client per site
    softmax = build(load_experiment(EXAMPLES / "synthetic-fedadam.toml"))
    assert softmax.algorithm.work.model == SoftmaxRegression(features=60, classes=10)


def test_an_mlp_on_regression_data_defaults_to_mse(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    write_csv(tmp_path)
    run_file = tmp_path / "run.toml"
    run_file.write_text(REGRESSION.format(kind="mlp", extra="hidden = [8]"))
    model = build(load_experiment(run_file)).algorithm.work.model
    assert model.loss == "mse"  # type: ignore[attr-defined]
    assert model.layout.size == 3 * 8 + 8 + 8 * 1 + 1


def test_relative_data_paths_resolve_against_the_run_file(tmp_path: Path) -> None:
    run_file = tmp_path / "sub" / "run.toml"
    run_file.parent.mkdir()
    run_file.write_text(REGRESSION.format(kind="linear", extra=""))
    assert load_experiment(run_file).data.options["path"] == str(tmp_path / "sub" / "table.csv")
    unresolved = Experiment.from_toml(run_file.read_text())
    assert unresolved.data.options["path"] == "table.csv"


def test_stages_build_in_data_order() -> None:
    experiment = load_experiment(EXAMPLES / "breast-cancer-poisson.toml")
    assert experiment.stages == (StageSpec("clip", {"bound": 1.0}),)
    (stage,) = build(experiment).algorithm.stages
    assert stage.name == "clip"
