"""Flower's own virtual environment, made by the benchmark the first time it is needed.

PyTorch is pinned and installed first: 2.13.0 is the CPU build this project's machines carry
as a local wheel, while an unpinned or newer torch would download a multi-GB CUDA build.
Flower is pinned too, so the comparison does not move under the benchmark: ``run_simulation``
is deprecated in favour of ``flwr run`` (which would reinstall the app's dependencies).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TORCH = "torch==2.13.0"
FLOWER = "flwr[simulation]==1.42.0"


def python_in(venv: Path) -> Path:
    return venv / "bin" / "python"


def ready(venv: Path) -> bool:
    probe = [str(python_in(venv)), "-c", "import flwr.simulation, torch, numpy"]
    return python_in(venv).exists() and subprocess.run(probe, capture_output=True).returncode == 0


def ensure(venv: Path, log: Path) -> str | None:
    """Make ``venv`` with Flower if it is not usable yet; None on success, else the error."""
    if ready(venv):
        return None
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(python_in(venv)), "-m", "pip", "install", "--quiet", TORCH],
        [str(python_in(venv)), "-m", "pip", "install", "--quiet", FLOWER, "scikit-learn"],
    ]
    with log.open("w") as out:
        for step in steps:
            print("  $", " ".join(step), flush=True)
            done = subprocess.run(step, stdout=out, stderr=subprocess.STDOUT)
            if done.returncode != 0:
                return f"`{' '.join(step)}` exited with {done.returncode}: {_tail(log)}"
    return None if ready(venv) else f"Flower does not import after installing: {_tail(log)}"


def version(venv: Path, package: str) -> str:
    code = f"from importlib.metadata import version; print(version({package!r}))"
    done = subprocess.run([str(python_in(venv)), "-c", code], capture_output=True, text=True)
    return done.stdout.strip() or "?"


def _tail(log: Path, lines: int = 5) -> str:
    text = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return " / ".join(text[-lines:])
