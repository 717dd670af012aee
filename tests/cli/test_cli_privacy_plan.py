"""``fedloom privacy plan`` in a real subprocess, checked against dp-accounting directly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dp_accounting
import pytest
from click.testing import CliRunner
from dp_accounting import rdp

from fedloom.cli import cli

SRC = Path(__file__).resolve().parents[2] / "src"


def _fedloom(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run(
        [sys.executable, "-m", "fedloom", "privacy", "plan", *args],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


def _rdp_epsilon(rate: float, z: float, rounds: int, delta: float) -> float:
    event = dp_accounting.PoissonSampledDpEvent(rate, dp_accounting.GaussianDpEvent(z))
    return float(rdp.RdpAccountant().compose(event, rounds).get_epsilon(delta))


def test_plan_calibrates_the_noise_for_a_target_epsilon() -> None:
    done = _fedloom(
        "--population", "5000", "--rate", "0.05", "--rounds", "50", "--epsilon", "2",
        "--delta", "1e-5", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    z = answer["noise_multiplier"]
    assert _rdp_epsilon(0.05, z, 50, 1e-5) <= 2.0
    assert _rdp_epsilon(0.05, z * 0.98, 50, 1e-5) > 2.0
    assert answer["epsilon"] == pytest.approx(_rdp_epsilon(0.05, z, 50, 1e-5))
    assert answer["expected_cohort"] == pytest.approx(250.0)


def test_plan_reports_the_epsilon_a_configuration_spends() -> None:
    done = _fedloom(
        "--population", "1000", "--rate", "0.1", "--rounds", "30", "--noise-multiplier", "1.2",
        "--delta", "1e-4",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    expected = _rdp_epsilon(0.1, 1.2, 30, 1e-4)
    assert f"epsilon:           {expected:.4f} at delta = 0.0001 (rdp)" in done.stdout


def test_plan_accounts_a_fixed_cohort_as_sampling_without_replacement() -> None:
    done = _fedloom(
        "--population", "200", "--cohort", "20", "--rounds", "10", "--noise-multiplier", "1.0",
        "--delta", "1e-3", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    event = dp_accounting.SampledWithoutReplacementDpEvent(
        200, 20, dp_accounting.GaussianDpEvent(0.5)
    )
    accountant = rdp.RdpAccountant(
        neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE
    )
    expected = accountant.compose(event, 10).get_epsilon(1e-3)
    assert json.loads(done.stdout)["epsilon"] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "0.1", "--noise-multiplier", "0"], "--noise-multiplier must be > 0"),
        (["--rate", "0.1", "--epsilon", "-1"], "epsilon must be a finite number > 0"),
        (["--rate", "0.1", "--epsilon", "1", "--delta", "1.5"], "--delta must be in (0, 1)"),
        (["--rate", "1.5", "--epsilon", "1"], "rate must be in (0.0, 1.0]"),
        (["--rate", "0.1", "--cohort", "5", "--epsilon", "1"], "exactly one of --rate"),
        (["--rate", "0.1"], "exactly one of --epsilon"),
    ],
)
def test_bad_questions_get_one_error_line_and_status_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(
        cli, ["privacy", "plan", "--population", "100", "--rounds", "5", *args]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert message in result.stderr


def test_a_delta_not_below_one_over_population_warns() -> None:
    done = _fedloom(
        "--population", "50", "--rate", "0.1", "--rounds", "5", "--noise-multiplier", "1",
        "--delta", "0.05",
    )  # fmt: skip
    assert done.returncode == 0
    assert "WARNING: delta=0.05 is not smaller than 1/population = 0.02" in done.stderr
