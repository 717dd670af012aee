"""Codecs in run files: ``[[stages]]`` kinds and ``[algorithm] broadcast``; bytes in the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedloom.compression import QSGD, Rotated, TopK, Uniform
from fedloom.experiment import Experiment, ExperimentError
from fedloom.reporting import RunSeries, comparison_rows
from fedloom.runner import run_experiment
from fedloom.store import RunStore

RUN = """
name = "compressed"
[data]
dataset = "digits"
clients = 6
[model]
kind = "softmax"
[train]
lr = 0.1
batch_size = 16
[algorithm]
name = "fedavg"
{broadcast}
[[stages]]
kind = "clip"
bound = 5.0
[[stages]]
{stage}
[run]
rounds = 2
cohort = 3
federated_eval = false
"""


def experiment(stage: str, broadcast: str = "") -> Experiment:
    return Experiment.from_toml(RUN.format(stage=stage, broadcast=broadcast))


def test_codec_stages_and_broadcast_build_and_round_trip() -> None:
    given = experiment(
        'kind = "qsgd"\nlevels = 4\nrotate = true\nblock = 64\nerror_feedback = true',
        'broadcast = { kind = "uniform", bits = 8 }',
    )
    assert Experiment.from_toml(given.to_toml()) == given
    from fedloom.experiment.build import build

    algorithm = build(given).algorithm
    codec = algorithm.stages[1].codec  # type: ignore[attr-defined]
    assert codec == Rotated(QSGD(4, 512), 64)
    assert algorithm.stages[1].error_feedback  # type: ignore[attr-defined]
    assert algorithm.broadcast == Uniform(8)
    top = build(experiment('kind = "top_k"\nfraction = 0.1', 'broadcast = "float16"')).algorithm
    assert top.stages[1].codec == TopK(fraction=0.1)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("stage", "broadcast", "where", "message"),
    [
        ('kind = "uniform"\nbits = 9', "", "stages[1].bits", "from 1 to 8, got 9"),
        ('kind = "top_k"\nk = 3\nfraction = 0.5', "", "stages[1]", "exactly one of k"),
        ('kind = "qsgd"\nlevel = 3', "", "stages[1]", "level"),
        ('kind = "clip"\nbound = 1.0', 'broadcast = "zip"', "algorithm.broadcast.kind", "zip"),
        (
            'kind = "clip"\nbound = 1.0',
            'broadcast = { kind = "top_k", k = 5 }',
            "algorithm.broadcast.error_feedback",
            "client updates only",
        ),
        (
            'kind = "clip"\nbound = 1.0',
            'broadcast = { kind = "uniform", delta_window = 0 }',
            "algorithm.broadcast.delta_window",
            "integer >= 1",
        ),
    ],
)
def test_bad_codec_options_name_their_key(
    stage: str, broadcast: str, where: str, message: str
) -> None:
    with pytest.raises(ExperimentError) as caught:
        experiment(stage, broadcast)
    assert where in str(caught.value)
    assert message in str(caught.value)


def test_bytes_from_payloads_are_in_the_store_and_the_report(tmp_path: Path) -> None:
    given = experiment('kind = "uniform"\nbits = 2', 'broadcast = "bfloat16"')
    with RunStore.open(tmp_path / "runs.db") as store:
        outcome = run_experiment(given, store)
        stored = store.rounds(outcome.run_id)
        info = store.run(outcome.run_id)
    # Softmax on digits: 650 parameters. Up: 163 bytes of 2-bit codes, 9 of params, 18 envelope;
    # down: 650 bfloat16 values and the envelope. Three clients a round.
    for record in stored:
        assert record.metrics["bytes_up"] == 3 * (163 + 9 + 18)
        assert record.metrics["bytes_down"] == 3 * (2 * 650 + 18)
    header, rows = comparison_rows([RunSeries(info, stored)])
    row = dict(zip(header, rows[0], strict=True))
    assert float(row["MB up"]) == pytest.approx(2 * 3 * 190 / 1e6, abs=0.005)


def test_a_delta_broadcast_builds_from_its_table_and_runs(tmp_path: Path) -> None:
    given = experiment(
        'kind = "uniform"\nbits = 8',
        'broadcast = { kind = "uniform", bits = 8, delta_window = 4 }',
    )
    assert Experiment.from_toml(given.to_toml()) == given
    from fedloom.experiment.build import build

    algorithm = build(given).algorithm
    assert (algorithm.broadcast, algorithm.broadcast_window) == (Uniform(8), 4)
    lossless = build(
        experiment('kind = "uniform"', 'broadcast = { kind = "float32", delta_window = 1 }')
    )
    assert lossless.algorithm.broadcast_window == 1
    with RunStore.open(tmp_path / "runs.db") as store:
        outcome = run_experiment(given, store)
        stored = store.rounds(outcome.run_id)
    assert stored[0].metrics["bytes_down"] == 3 * 4 * 650  # first contact: the whole model
