"""Helpers for the CLI tests: a tiny experiment and the real command in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


def fedloom(*args: str | Path, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the real ``fedloom`` command in a subprocess."""
    env = {**os.environ, "FEDLOOM_RUNS": str(cwd / "runs"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "fedloom", *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"fedloom {args} failed ({result.returncode}):\n{result.stderr}")
    return result
