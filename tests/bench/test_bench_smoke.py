"""The benchmark's own machinery (``bench/``) on seconds-long workloads; Flower is not run here.

``make bench`` is not part of ``make test``: these tests only check that the driver launches
the plain loop and fedloom in process, measures them, reads their results and renders a table.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("psutil")

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench() -> dict[str, ModuleType]:
    """The driver's modules, imported the way ``python bench/run.py`` imports them."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    names = ("run", "workloads", "shared_data", "render")
    return {name: importlib.import_module(name) for name in names}


@pytest.fixture(scope="module")
def quick_w1(
    bench: dict[str, ModuleType], tmp_path_factory: pytest.TempPathFactory
) -> tuple[object, Path]:
    workload = bench["workloads"].quick(bench["workloads"].W1)
    data = tmp_path_factory.mktemp("bench") / "W1.npz"
    bench["shared_data"].write_digits(workload, data)
    return workload, data


def test_data_file_holds_exactly_fedloom_partition(
    bench: dict[str, ModuleType], quick_w1: tuple[object, Path]
) -> None:
    workload, data = quick_w1
    expected = bench["shared_data"].split_digits(workload)
    read = bench["workloads"].read_partition(data)
    assert len(read.xs) == len(expected.clients) == 20
    for client, x, y in zip(expected.clients, read.xs, read.ys, strict=True):
        np.testing.assert_array_equal(x, client.x_train)
        np.testing.assert_array_equal(y, client.y_train)
    np.testing.assert_array_equal(read.test_y, expected.test_y)
    assert read.num_classes == 10


@pytest.mark.parametrize("system", ["plain", "fedloom-inprocess"])
def test_quick_run_gives_a_measured_row(
    bench: dict[str, ModuleType],
    quick_w1: tuple[object, Path],
    tmp_path: Path,
    system: str,
) -> None:
    run = bench["run"]
    workload, data = quick_w1
    row = run.run_one(
        run.SYSTEMS[system],
        workload,
        data=data,
        python=Path(sys.executable),
        directory=tmp_path,
        timeout=60,
    )
    assert row.ok, row.status
    assert 0 < row.round_seconds <= row.wall_seconds
    assert 0 < row.startup_seconds < row.wall_seconds
    assert row.peak_rss_mb > 50  # a Python process with PyTorch loaded
    # 3 rounds of FedAvg on 10 clients learn something: chance is 0.1.
    assert 0.2 < row.accuracy <= 1.0

    summary = run.summarize([row], workload, system)
    page = bench["render"].markdown(
        command="python bench/run.py --quick",
        machine={"cpus": "2"},
        workloads=[(workload, "")],
        summaries={workload.name: [summary]},
        flower_error=None,
        repeats=(1, 1),
    )
    assert f"| {system} | {row.wall_seconds:.1f} | {row.round_seconds:.3f} |" in page


def test_impossible_client_count_falls_back_to_what_the_partitioner_accepts(
    bench: dict[str, ModuleType],
) -> None:
    per_class = replace(bench["workloads"].W2, partition="dirichlet")
    workload, note = bench["shared_data"].feasible(per_class)
    assert per_class.cohort <= workload.clients < per_class.clients
    assert "impossible" in note
    assert len(bench["shared_data"].split_digits(workload).clients) == workload.clients


def test_w2_has_its_thousand_clients_through_label_mixtures(
    bench: dict[str, ModuleType],
) -> None:
    w2 = bench["workloads"].W2
    workload, note = bench["shared_data"].feasible(w2)
    assert workload == w2
    assert "dirichlet_mixture(0.5)" in note
    clients = bench["shared_data"].split_digits(workload).clients
    assert len(clients) == 1000
    assert min(c.num_train for c in clients) >= 1
