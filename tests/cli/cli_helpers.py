"""Helpers for the CLI tests: a tiny experiment and the real command in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import fedloom as fedloom_package

EXPERIMENT = """
name = "{name}"

[data]
dataset = "digits"
clients = 20
test_fraction = 0.2
holdout = 0.2

[data.partition]
kind = "dirichlet"
alpha = 0.5

[model]
kind = "softmax"

[train]
lr = 0.5
epochs = {epochs}
batch_size = 16

[algorithm]
name = "{algorithm}"

[run]
rounds = {rounds}
cohort = 10
seed = 3
checkpoint_every = {checkpoint_every}
"""


def experiment_text(
    name: str = "tiny", algorithm: str = "fedavg", rounds: int = 4, epochs: int = 1,
    checkpoint_every: int = 1,
) -> str:  # fmt: skip
    return EXPERIMENT.format(
        name=name, algorithm=algorithm, rounds=rounds, epochs=epochs,
        checkpoint_every=checkpoint_every,
    )  # fmt: skip


def command_env(cwd: Path) -> dict[str, str]:
    """The environment of a ``fedloom`` subprocess run in ``cwd``: its run store under ``cwd``,
    and the fedloom these tests import (a relative ``PYTHONPATH=src`` would not survive the
    change of directory and would import another checkout's fedloom)."""
    env = {**os.environ, "FEDLOOM_RUNS": str(cwd / "runs"), "OMP_NUM_THREADS": "1"}
    source = str(Path(fedloom_package.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([source, *filter(None, [env.get("PYTHONPATH")])])
    return env


def fedloom(*args: str | Path, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the real ``fedloom`` command in a subprocess."""
    env = command_env(cwd)
    result = subprocess.run(
        [sys.executable, "-m", "fedloom", *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"fedloom {args} failed ({result.returncode}):\n{result.stderr}")
    return result
