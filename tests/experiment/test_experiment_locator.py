"""The locator maps a key path to the line that defines it, since tomllib reports none."""

from __future__ import annotations

import pytest

from fedloom.experiment import locate
from fedloom.experiment.errors import ExperimentError, key_name, toml_syntax_error

TEXT = """\
# a comment
name = "demo"            # line 2
description = '''
[not.a.header]
'''
[data]                   # line 6
dataset = "digits"
  clients = 5            # line 8, indented
partition.kind = "iid"   # line 9, a dotted key

[model]                  # line 11
kind = "mlp"
hidden = [
  64,
]

[run]                    # line 17
rounds = 3
[run.target]             # line 19
metric = "test_accuracy" # line 20

[[stages]]               # line 22
kind = "clip"
bound = 5.0              # line 24

[[ stages ]]             # line 26
kind = "clip"
"bound" = 1.0            # line 28
[stages.extra]           # line 29
flag = true              # line 30

[train]                  # line 32
lr = 0.1
"""


@pytest.mark.parametrize(
    ("path", "line"),
    [
        (("name",), 2),
        (("description",), 3),
        (("data",), 6),
        (("data", "dataset"), 7),
        (("data", "clients"), 8),
        (("data", "partition", "kind"), 9),
        (("data", "partition", "alpha"), 9),  # an absent key inside a dotted-key table
        (("model", "hidden"), 13),
        (("run", "rounds"), 18),
        (("run", "target", "metric"), 20),
        (("run", "target"), 19),
        (("run", "target", "value"), 19),  # absent: its table's header
        (("stages", 0, "bound"), 24),
        (("stages", 1, "bound"), 28),
        (("stages", 1, "kind"), 27),
        (("stages", 1), 26),
        (("stages", 1, "extra", "flag"), 30),
        (("train", "lr"), 33),
        (("train", "epochs"), 32),
        (("algorithm", "name"), None),  # no such table
    ],
)
def test_locate_finds_each_keys_line(path: tuple[str | int, ...], line: int | None) -> None:
    assert locate(TEXT, path) == line


def test_a_header_inside_a_multiline_string_is_not_a_table() -> None:
    assert locate(TEXT, ("not", "a", "header")) is None


def test_key_names_show_array_positions() -> None:
    assert key_name(("stages", 1, "bound")) == "stages[1].bound"
    assert key_name(("train", "lr")) == "train.lr"


def test_error_message_leads_with_file_and_line() -> None:
    error = ExperimentError(("train", "lr"), "must be a finite number > 0, got -0.1")
    assert str(error) == "key 'train.lr': must be a finite number > 0, got -0.1"
    placed = error.at("run.toml", TEXT)
    assert str(placed) == "run.toml:33: key 'train.lr': must be a finite number > 0, got -0.1"
    assert isinstance(placed, ValueError)
    assert str(ExperimentError(("x",), "bad").at("f.toml", TEXT)) == "f.toml: key 'x': bad"


def test_errors_from_a_stage_table_gain_its_position() -> None:
    error = ExperimentError(("stages", "bound"), "bad").in_array("stages", 1)
    assert error.path == ("stages", 1, "bound")
    assert error.at("f.toml", TEXT).line == 28


def test_syntax_errors_keep_tomllib_line_and_column() -> None:
    import tomllib

    with pytest.raises(tomllib.TOMLDecodeError) as raised:
        tomllib.loads("a = 1\nb = [1,\nc = 3\n")
    error = toml_syntax_error(raised.value, "f.toml")
    assert error.line == 3
    assert str(error).startswith("f.toml:3: invalid TOML at column 1:")
