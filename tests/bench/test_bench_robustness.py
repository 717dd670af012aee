"""``bench/robustness.py`` (part of ``make bench``) on one round: it trains, attacks and
renders its table; the full table is not run here."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_the_robustness_table_renders(tmp_path: Path) -> None:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    robustness = importlib.import_module("robustness")
    out = tmp_path / "table.md"
    robustness.main(["--rounds", "1", "--reducers", "mean,median", "--attacks",
                     "sign_flip,backdoor", "--out", str(out)])  # fmt: skip
    text = out.read_text()
    assert "| reducer | none | sign_flip | backdoor |" in text
    rows = [line for line in text.splitlines() if line.startswith(("| mean", "| median"))]
    assert len(rows) == 2
    assert all("(bd " in row for row in rows)
    with pytest.raises(SystemExit):
        robustness.main(["--reducers", "nope"])
