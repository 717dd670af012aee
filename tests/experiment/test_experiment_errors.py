"""Bad run files fail with one line naming the file, the line, the key and what is accepted."""

from __future__ import annotations

from pathlib import Path

import pytest

import fedloom.data
from fedloom.experiment import (
    Experiment,
    ExperimentError,
    TrainSpec,
    build,
    load_experiment,
    validate_file,
)

BASE = """\
name = "base"

[data]
dataset = "digits"
clients = 10

[data.partition]
kind = "dirichlet"
alpha = 0.5

[model]
kind = "softmax"

[train]
lr = 0.1
epochs = 1

[algorithm]
name = "fedprox"
mu = 0.01

[[stages]]
kind = "clip"
bound = 5.0

[run]
rounds = 2
cohort = 5
"""


def line_of(text: str, fragment: str) -> int:
    """The 1-based line of ``text`` that contains ``fragment``."""
    (number,) = [n for n, line in enumerate(text.splitlines(), 1) if fragment in line]
    return number


def error_for(text: str) -> ExperimentError:
    with pytest.raises(ExperimentError) as raised:
        Experiment.from_toml(text, source="exp.toml")
    return raised.value


def edited(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new, 1)


def test_the_base_file_is_valid() -> None:
    assert Experiment.from_toml(BASE).algorithm.options == {"mu": 0.01}


def test_out_of_range_value_names_file_line_key_and_bound() -> None:
    text = edited("lr = 0.1", "lr = -0.1")
    assert str(error_for(text)) == (
        f"exp.toml:{line_of(text, 'lr =')}: key 'train.lr': must be a finite number > 0, got -0.1"
    )


@pytest.mark.parametrize(
    ("old", "new", "key", "expected"),
    [
        ("lr = 0.1", 'lr = "fast"', "train.lr", 'got "fast" (a string)'),
        ("epochs = 1", "epochs = true", "train.epochs", "an integer >= 1, got true (a boolean)"),
        ("epochs = 1", "epochs = 1.5", "train.epochs", "an integer >= 1, got 1.5 (a float)"),
        ("clients = 10", 'clients = "10"', "data.clients", 'got "10" (a string)'),
        ("mu = 0.01", 'mu = "small"', "algorithm.mu", 'must be a number, got "small" (a string)'),
        ("bound = 5.0", "bound = [5.0]", "stages[0].bound", "must be a number, got [5.0]"),
        ("cohort = 5", "cohort = true", "run.cohort", "got true (a boolean)"),
        ("rounds = 2", "rounds = 2\nfederated_eval = 1", "run.federated_eval", "a boolean"),
        ('kind = "softmax"', 'kind = "mlp"\nhidden = 64', "model.hidden", "an array of layer"),
    ],
)
def test_wrong_types_name_the_expected_type(old: str, new: str, key: str, expected: str) -> None:
    text = edited(old, new)
    message = str(error_for(text))
    fragment = new.splitlines()[-1]
    assert message.startswith(f"exp.toml:{line_of(text, fragment)}: key '{key}': ")
    assert expected in message


@pytest.mark.parametrize(
    ("old", "new", "key", "expected"),
    [
        ("alpha = 0.5", "alpha = 0", "data.partition.alpha", "must be a finite number > 0, got 0"),
        ("clients = 10", "clients = 10\nholdout = 1.0", "data.holdout", "in [0, 1), got 1.0"),
        ("cohort = 5", "cohort = 11", "run.cohort", "at most data.clients = 10, got 11"),
        ("cohort = 5", "cohort = 1.5", "run.cohort", "a number in (0, 1], got 1.5"),
        ("mu = 0.01", "mu = -1.0", "algorithm.mu", "must be a finite number >= 0, got -1.0"),
        ("bound = 5.0", "bound = 0.0", "stages[0].bound", "must be a finite number > 0, got 0.0"),
        ('kind = "softmax"', 'kind = "cnn"', "model.kind", 'one of "mlp", "softmax"'),
        ('name = "fedprox"', 'name = "fedprox2"', "algorithm.name", 'did you mean "fedprox"?'),
        ('name = "base"', 'name = "my run"', "name", "letters, digits"),
        ('kind = "softmax"', 'kind = "linear"', "model.kind", "needs a regression dataset"),
        ('kind = "softmax"', 'kind = "softmax"\nloss = "mse"', "model.loss", '"mlp" or "factory"'),
        ('kind = "softmax"', 'kind = "mlp"\nhidden = [8]\nloss = "mse"', "model.loss", "numeric"),
        (
            'kind = "softmax"',
            'kind = "mlp"\nhidden = [8]\nloss = "bce_with_logits"',
            "model.loss",
            "two",
        ),
        ('kind = "softmax"', 'kind = "mlp"\nhidden = [8, 0]', "model.hidden", "got 0"),
        ("epochs = 1", "epochs = 1\nsteps = 5", "train.steps", "set epochs or steps, not both"),
        ("epochs = 1", "epochs = 1\noptimizer = 'adam'\nmomentum = 0.9", "train.momentum", "Adam"),
    ],
)
def test_out_of_range_values_say_what_is_accepted(
    old: str, new: str, key: str, expected: str
) -> None:
    text = edited(old, new)
    message = str(error_for(text))
    fragment = new.splitlines()[-1]
    assert message.startswith(f"exp.toml:{line_of(text, fragment)}: key '{key}': ")
    assert expected in message


@pytest.mark.parametrize(
    ("old", "new", "key", "suggestion"),
    [
        ('name = "base"', 'name = "base"\nnmae = "x"', "nmae", "name"),
        ("epochs = 1", "epoch = 1", "train.epoch", "epochs"),
        ("clients = 10", "client = 10", "data.client", "clients"),
        ("alpha = 0.5", "alpah = 0.5", "data.partition.alpah", "alpha"),
        ("bound = 5.0", "bund = 5.0", "stages[0].bund", "bound"),
        (
            "cohort = 5",
            "cohort = 5\n[run.target]\nmetric = 'x'\nvalu = 1",
            "run.target.valu",
            "value",
        ),
    ],
)
def test_unknown_keys_list_the_accepted_ones_and_suggest(
    old: str, new: str, key: str, suggestion: str
) -> None:
    text = edited(old, new)
    message = str(error_for(text))
    fragment = new.splitlines()[-1]
    assert message.startswith(f"exp.toml:{line_of(text, fragment)}: key '{key}': unknown key; ")
    assert "accepted keys in" in message
    assert message.endswith(f'did you mean "{suggestion}"?')


def test_unknown_algorithm_option_lists_the_recipes_options() -> None:
    text = edited("mu = 0.01", "mu = 0.01\nserver_rl = 1.0")
    message = str(error_for(text))
    assert message == (
        f"exp.toml:{line_of(text, 'server_rl')}: key 'algorithm.server_rl': unknown key; "
        "accepted keys in [algorithm]: name, reducer, attackers, reducer_options, broadcast, mu, "
        "server_lr; "
        'did you mean "server_lr"?'
    )


def test_a_recipes_required_option_is_required() -> None:
    text = edited("mu = 0.01", "")
    assert str(error_for(text)) == (
        f"exp.toml:{line_of(text, '[algorithm]')}: key 'algorithm.mu': "
        "required by fedprox(), missing"
    )


def test_both_cohort_and_poisson() -> None:
    text = edited("cohort = 5", "cohort = 5\npoisson = 0.1")
    message = str(error_for(text))
    assert message.startswith(f"exp.toml:{line_of(text, 'poisson')}: key 'run.poisson': ")
    assert "exactly one of cohort" in message
    assert "not both" in message


def test_missing_table_and_missing_key() -> None:
    no_train = edited("[train]\nlr = 0.1\nepochs = 1\n", "")
    assert str(error_for(no_train)) == "exp.toml: key 'train': required, missing"
    no_lr = edited("lr = 0.1\n", "")
    assert str(error_for(no_lr)) == (
        f"exp.toml:{line_of(no_lr, '[train]')}: key 'train.lr': required, missing"
    )


def test_malformed_toml_gives_the_line() -> None:
    text = edited("rounds = 2", "rounds = = 2")
    message = str(error_for(text))
    assert message.startswith(f"exp.toml:{line_of(text, 'rounds')}: invalid TOML at column")


def test_cross_checks_name_a_key() -> None:
    scaffold = edited('name = "fedprox"\nmu = 0.01', 'name = "scaffold"')
    scaffold = scaffold.replace("epochs = 1", "epochs = 1\nmomentum = 0.9")
    message = str(error_for(scaffold))
    assert message.startswith(f"exp.toml:{line_of(scaffold, 'scaffold')}: key 'algorithm.name'")
    assert "plain SGD" in message
    two_clips = BASE + '\n[[stages]]\nkind = "clip"\nbound = 1.0\n'
    message = str(error_for(two_clips))
    assert "key 'stages': stage names must be unique" in message
    synthetic = edited('dataset = "digits"', 'dataset = "synthetic"\nalpha = 1\nbeta = 1')
    message = str(error_for(synthetic))
    assert "key 'data.partition.kind': the synthetic dataset makes one client per" in message
    natural = edited('kind = "dirichlet"\nalpha = 0.5', 'kind = "natural"')
    assert '"natural" needs examples with groups' in str(error_for(natural))


def test_softmax_on_a_regression_dataset_is_refused_before_loading(tmp_path: Path) -> None:
    text = edited('dataset = "digits"', 'dataset = "csv"\npath = "none.csv"\ntarget = "y"')
    text = text.replace("clients = 10", "clients = 10\nclassification = false")
    text = text.replace('kind = "dirichlet"\nalpha = 0.5', 'kind = "iid"')
    message = str(error_for(text))
    assert message.startswith(f"exp.toml:{line_of(text, 'softmax')}: key 'model.kind': ")
    assert "softmax is a classifier" in message
    assert 'kind = "linear"' in message
    linear = text.replace('kind = "softmax"', 'kind = "linear"')
    assert Experiment.from_toml(linear).data.task == "regression"


def test_validation_loads_no_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def refuse() -> None:
        raise AssertionError("data was loaded during validation")

    monkeypatch.setattr(fedloom.data, "digits", refuse)
    file = tmp_path / "exp.toml"
    file.write_text(BASE)
    assert validate_file(file).data.dataset == "digits"


def test_missing_data_file_names_the_path_and_line(tmp_path: Path) -> None:
    text = edited('dataset = "digits"', 'dataset = "csv"\npath = "data/missing.csv"\ntarget = "y"')
    file = tmp_path / "exp.toml"
    file.write_text(text)
    experiment = validate_file(file)  # checking the file does not open the data
    missing = tmp_path / "data" / "missing.csv"
    assert experiment.data.options["path"] == str(missing)
    with pytest.raises(ExperimentError) as raised:
        build(experiment)
    assert str(raised.value) == (
        f"{file}:{line_of(text, 'missing.csv')}: key 'data.path': the data file "
        f"{str(missing)!r} does not exist"
    )


FACTORIES = """\
from torch import nn


def wrong_input():
    return nn.Sequential(nn.Linear(7, 16), nn.ReLU(), nn.Linear(16, 10))


def too_few_classes():
    return nn.Linear(64, 3)


def right():
    return nn.Linear(64, 10)
"""


@pytest.fixture
def factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    pytest.importorskip("torch")
    (tmp_path / "experiment_test_factories.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "experiment_test_factories"


def factory_run(tmp_path: Path, reference: str) -> tuple[Path, str]:
    text = edited('kind = "softmax"', f'kind = "factory"\nfactory = "{reference}"')
    file = tmp_path / "exp.toml"
    file.write_text(text)
    return file, text


def test_a_model_that_does_not_fit_the_data(factories: str, tmp_path: Path) -> None:
    file, text = factory_run(tmp_path, f"{factories}:wrong_input")
    experiment = validate_file(file)
    with pytest.raises(ExperimentError) as raised:
        build(experiment)
    message = str(raised.value)
    assert message.startswith(f"{file}:{line_of(text, '[model]')}: key 'model': model factory ")
    assert "does not fit the data: mat1 and mat2 shapes cannot be multiplied" in message
    assert message.endswith("; the data has 64 features and 10 classes")


def test_a_model_with_too_few_outputs_does_not_fit(factories: str, tmp_path: Path) -> None:
    file, _ = factory_run(tmp_path, f"{factories}:too_few_classes")
    with pytest.raises(ExperimentError, match=r"does not fit the data: .*10 classes$"):
        build(load_experiment(file))


def test_a_factory_that_fits_builds(factories: str, tmp_path: Path) -> None:
    file, _ = factory_run(tmp_path, f"{factories}:right")
    built = build(load_experiment(file))
    assert built.algorithm.work.model.layout.size == 64 * 10 + 10


def test_a_mistyped_factory_fails_validation(factories: str, tmp_path: Path) -> None:
    file, text = factory_run(tmp_path, f"{factories}:rigth")
    with pytest.raises(ExperimentError) as raised:
        validate_file(file)
    assert str(raised.value).startswith(f"{file}:{line_of(text, 'rigth')}: key 'model.factory': ")
    assert "has no attribute 'rigth'" in str(raised.value)


def test_python_constructors_raise_the_same_errors() -> None:
    with pytest.raises(ExperimentError, match=r"^key 'train.lr': must be a finite number > 0"):
        TrainSpec(lr=-0.1)
    with pytest.raises(ExperimentError, match=r"^key 'train.batch_size': must be an integer"):
        TrainSpec(lr=0.1, batch_size=True)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ExperimentError, match="cannot read the run file"):
        load_experiment(tmp_path / "absent.toml")
